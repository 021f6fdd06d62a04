"""The command line as a user meets it: help, layer listing, clear errors."""

import numpy as np
from click.testing import CliRunner
from PIL import Image

from ingest.cli import main


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


def test_help_names_the_commands():
    code, out = run("--help")
    assert code == 0
    for command in ("demo", "extract", "layers", "show"):
        assert command in out
    code, out = run("extract", "--help")
    assert code == 0 and "--tau" in out and "cum:0.8" in out


def test_layers_lists_candidates_and_defaults():
    code, out = run("layers", "resnet18")
    assert code == 0
    assert "layer4.1" in out and "default --layers: fc,layer4.1,layer4.0,layer3.1,layer3.0,layer2.1" in out
    assert " * layer4.1 " in out  # default layers are marked


def test_extract_errors_are_actionable(tmp_path):
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "a.png")
    base = ["extract", "--model", "resnet18", "--images", tmp_path, "--out", tmp_path / "o"]
    code, out = run(*base, "--class", "7", "--tau", "2.5")
    assert code == 2 and "--tau '2.5' is out of range" in out
    code, out = run(*base, "--class", "1000")
    assert code == 2 and "class index 1000 is out of range" in out and "0..999" in out
    code, out = run(*base, "--class", "bee")
    assert code == 2 and "has no class names" in out
    code, out = run(*base, "--class", "3", "--layers", "fc,layer4.l")
    assert code == 1 and "Error: unknown layer 'layer4.l'" in out and "layer4.1" in out
    code, out = run(*base, "--class", "3", "--layers", "fc,layer4.1")
    assert code == 1 and "none of the 1 images" in out and "is predicted as 3" in out

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


def test_every_command_that_prints_results_prints_json_with_json(tmp_path):
    """`--json` puts one JSON object (or list) on stdout; notes and progress stay on stderr. The
    commands that need services (ingest, query NAME, runs, stack, audit, debug, campaign) are
    checked against real services in test_ingest_e2e, test_audit_e2e, test_debug and test_campaign."""
    import json

    def as_json(*args):
        result = CliRunner(mix_stderr=False).invoke(main, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.output + result.stderr
        return json.loads(result.stdout)

    layers = as_json("layers", "planted_cnn", "--json")
    assert layers["default_layers"] and all(
        {"name", "type", "shape", "default"} <= set(r) for r in layers["layers"]
    )
    listed = as_json("query", "--list", "--json")
    assert {q["name"] for q in listed} >= {"top_paths", "group_detail"}
    made = as_json("planted-data", "images", tmp_path / "bee", "--count", "3", "--json")
    assert made["count"] == 3 and made["kind"] == "images"
    extracted = as_json(
        "demo", "--no-store", "--out", tmp_path / "demo", "--count", "3", "--steps", "2", "--json"
    )
    assert (
        extracted["run_id"] and [layer["name"] for layer in extracted["layers"]] == layers["default_layers"]
    )
    assert extracted["purity_rows_left_out"] > 0  # the demo's compact purity (semantic groups with -v)
    shown = as_json("show", extracted["files"]["circuit"], "--json")
    assert shown["run_id"] == extracted["run_id"] and shown["purity_rows_left_out"] == 0
    assert len(shown["purity"]) == len(extracted["purity"]) + extracted["purity_rows_left_out"]


def test_planted_data_bank_of_one_class(tmp_path):
    """`planted-data bank --class`: an in-class bank (kite concepts only); an unknown class is one line
    and exit 2, and nothing is written."""
    import json

    result = CliRunner().invoke(
        main,
        ["planted-data", "bank", str(tmp_path / "kb"), "--world", "toys", "--class", "kite", "--count", "1"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "kb" / "manifest.json").read_text())["class"] == "kite"
    bad = CliRunner().invoke(main, ["planted-data", "bank", str(tmp_path / "wb"), "--class", "wasp"])
    assert bad.exit_code == 2 and "unknown class 'wasp'" in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "wb").exists()


def test_every_command_has_an_example_and_every_option_help():
    """`--help` of every command shows an example, and every option says what it does."""
    import click

    missing_examples, missing_help = [], []

    def visit(command: click.Command, path: str) -> None:
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                visit(sub, f"{path} {name}")
            return
        if "neurflow " not in (command.help or ""):
            missing_examples.append(path)
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden and not param.help:
                missing_help.append(f"{path} {param.opts[0]}")

    visit(main, "neurflow")
    assert missing_examples == [] and missing_help == []


def test_extract_flags_a_tau_that_takes_half_a_layer(tmp_path):
    """τ = 16 on the tiny ViT's 32-wide residual stream keeps half of every block: `extract` says so."""
    import torch

    from ingest.core.models import load_model
    from ingest.core.patches import list_images, load_images, to_model_input
    from ingest.planted.data import write_image_folder

    images = write_image_folder(tmp_path / "bee", "bee", 4, seed=1)
    model = load_model("tests.tiny_transformers:tiny_vit")
    with torch.no_grad():
        pixels = to_model_input(load_images(list_images(images), 64), model.mean, model.std)
        class_index = int(model.module(pixels).argmax(1).mode().values)
    layers = "heads.head,encoder.layers.encoder_layer_2,encoder.layers.encoder_layer_1"
    result = CliRunner().invoke(
        main,
        ["extract", "--model", "tests.tiny_transformers:tiny_vit", "--images", str(images),
         "--class", str(class_index), "--layers", layers, "--tau", "16", "--k", "4", "--steps", "2",
         "--out", str(tmp_path / "out")],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for block in ("encoder.layers.encoder_layer_2", "encoder.layers.encoder_layer_1"):
        assert f"note: tau 16 keeps 50% of {block}'s 32 neurons per target" in result.output

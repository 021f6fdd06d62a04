"""Model loading: every accepted weight format, inferred class counts, and actionable errors."""

from __future__ import annotations

import hashlib
import json
import sys
import textwrap

import pytest
import torch
import torchvision

from ingest.core.models import ModelError, load_model

torch.set_num_threads(2)

HELPER = "nf_test_model_factories"
HELPER_SOURCE = """
import torch
from torch import nn

def small_net(num_classes=3):
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, num_classes),
    )

def feature_map():
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())

def pretrained_net():
    # a factory that loads weights of its own and says how its inputs are prepared
    torch.manual_seed(11)
    net = small_net(num_classes=2)
    net.neurflow_preprocessing = {
        "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "input_size": 40,
        "classes": ["cat", "dog"], "layers": ["4", "1"],
    }
    return net

def bad_declaration():
    net = small_net()
    net.neurflow_preprocessing = {"means": [0.5, 0.5, 0.5]}
    return net
"""


@pytest.fixture(scope="module")
def factories(tmp_path_factory):
    """A real importable module defining model factories, as a user's package would."""
    folder = tmp_path_factory.mktemp("factories")
    (folder / f"{HELPER}.py").write_text(textwrap.dedent(HELPER_SOURCE))
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(folder))
        yield HELPER
        sys.modules.pop(HELPER, None)


@pytest.fixture(scope="module")
def resnet18_10():
    torch.manual_seed(3)
    return torchvision.models.resnet18(num_classes=10).eval()


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, size: int = 64) -> bool:
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        return torch.allclose(a(x), b(x), atol=1e-5)


def test_random_init_is_seeded_and_says_so(caplog):
    a = load_model("resnet18", seed=4)
    b = load_model("resnet18", seed=4)
    assert a.model_id == "resnet18-random4" and a.weights_sha256 is None
    assert torch.equal(a.module.conv1.weight, b.module.conv1.weight)
    assert (a.num_classes, a.input_size, a.class_names) == (1000, 224, None)
    assert a.mean == (0.485, 0.456, 0.406) and a.std == (0.229, 0.224, 0.225)
    assert a.default_layers == ["fc", "layer4.1", "layer4.0", "layer3.1", "layer3.0", "layer2.1"]
    assert not a.module.training
    assert "random initialisation (seed 4)" in caplog.text


def test_nested_dataparallel_checkpoint_with_sidecar(tmp_path, resnet18_10):
    state = {f"module.{k}": v for k, v in resnet18_10.state_dict().items()}
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": state, "epoch": 7, "best_acc": 0.5}, path)
    names = [f"class{i}" for i in range(10)]
    sidecar = {"classes": names, "input_size": 64, "mean": [0.5] * 3, "std": [0.25] * 3}
    (tmp_path / "r18.json").write_text(json.dumps(sidecar))

    loaded = load_model("resnet18", path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.weights_sha256 == sha and loaded.model_id == f"resnet18-{sha[:12]}"
    assert loaded.num_classes == 10 and loaded.class_names == names
    assert (loaded.input_size, loaded.mean, loaded.std) == (64, (0.5,) * 3, (0.25,) * 3)
    assert _same_outputs(loaded.module, resnet18_10)


def test_plain_state_dict_infers_num_classes(tmp_path, resnet18_10):
    path = tmp_path / "plain.pt"
    torch.save(resnet18_10.state_dict(), path)
    loaded = load_model("resnet18", path, input_size=96)
    assert loaded.num_classes == 10 and loaded.input_size == 96 and loaded.class_names is None
    assert _same_outputs(loaded.module, resnet18_10)


def test_whole_saved_module_and_torchscript(tmp_path, resnet18_10):
    whole, script = tmp_path / "whole.pt", tmp_path / "script.pt"
    torch.save(resnet18_10, whole)
    torch.jit.save(torch.jit.trace(resnet18_10, torch.randn(1, 3, 64, 64)), script)
    saved = load_model("auto", whole)
    assert saved.arch == "saved-module" and saved.num_classes == 10
    assert saved.default_layers is None
    assert load_model("resnet18", whole).default_layers[0] == "fc"
    assert _same_outputs(saved.module, resnet18_10)
    scripted = load_model("torchscript", script)
    assert scripted.arch == "torchscript" and scripted.model_id.startswith("torchscript-")
    assert _same_outputs(scripted.module, resnet18_10)


def test_entry_point_factory(tmp_path, factories):
    default = load_model(f"{factories}:small_net", input_size=32)
    assert default.num_classes == 3 and default.arch == f"{factories}:small_net"
    assert load_model(f"{factories}:small_net", num_classes=5, input_size=32).num_classes == 5

    torch.manual_seed(0)
    source = sys.modules[factories].small_net(num_classes=7)
    path = tmp_path / "small.pt"
    torch.save(source.state_dict(), path)
    inferred = load_model(f"{factories}:small_net", path, input_size=32)
    assert inferred.num_classes == 7
    assert _same_outputs(inferred.module, source.eval(), size=32)


def test_a_factory_declares_its_preprocessing_and_is_named_by_its_parameters(factories):
    """A factory that loads weights of its own (from a package) is not 'random': its model id is a
    hash of its parameters, and what it declares stands in for a sidecar."""
    loaded = load_model(f"{factories}:pretrained_net")
    again = load_model(f"{factories}:pretrained_net")
    assert loaded.model_id == again.model_id and "random" not in loaded.model_id
    assert loaded.weights_sha256 and loaded.model_id.endswith(loaded.weights_sha256[:12])
    assert (loaded.mean, loaded.std, loaded.input_size) == ((0.5,) * 3, (0.25,) * 3, 40)
    assert loaded.class_names == ["cat", "dog"] and loaded.default_layers == ["4", "1"]
    assert loaded.preprocessing_note is None
    with pytest.raises(ModelError, match="unknown keys \\['means'\\]"):
        load_model(f"{factories}:bad_declaration", input_size=32)


def test_non_classifier_is_refused(factories):
    with pytest.raises(ModelError, match=r"not a classifier.*\[1, 8, 30, 30\]"):
        load_model(f"{factories}:feature_map", input_size=32)


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "alexnet.pt"
    torch.save(torchvision.models.alexnet().state_dict(), path)
    with pytest.raises(ModelError) as err:
        load_model("resnet18", path)
    msg = str(err.value)
    assert "do not fit resnet18" in msg and "missing keys (e.g. conv1.weight" in msg
    assert "unexpected keys (e.g. features.0.weight" in msg


def test_class_count_mismatch_names_the_shape(tmp_path, resnet18_10):
    path = tmp_path / "r18.pt"
    torch.save(resnet18_10.state_dict(), path)
    with pytest.raises(ModelError, match=r"fc.weight is \[10, 512\] in the file but \[5, 512\]"):
        load_model("resnet18", path, num_classes=5)


@pytest.mark.parametrize(
    ("model", "hint"),
    [("resnet51", "resnet50"), ("googlenet_v2", "googlenet"), ("plantedcnn", "planted_cnn")],
)
def test_unknown_architecture_suggests(model, hint):
    with pytest.raises(ModelError, match=f"unknown architecture.*Did you mean: .*{hint}"):
        load_model(model)


def test_unreadable_or_missing_files_and_bad_entry_points(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelError, match="none of the accepted formats"):
        load_model("resnet18", junk)
    with pytest.raises(ModelError, match="does not exist"):
        load_model("resnet18", tmp_path / "missing.pt")
    optimizer_only = tmp_path / "opt.pt"
    torch.save({"epoch": 3, "lr": 0.1}, optimizer_only)
    with pytest.raises(ModelError, match="not a state_dict: key 'epoch'"):
        load_model("resnet18", optimizer_only)
    with pytest.raises(ModelError, match="cannot import"):
        load_model("no_such_package_xyz:build")
    state = tmp_path / "state.pt"
    torch.save(torchvision.models.resnet18().state_dict(), state)
    with pytest.raises(ModelError, match="needs an architecture"):
        load_model("auto", state)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_refused():
    with pytest.raises(ModelError, match="CUDA is not available"):
        load_model("resnet18", device="cuda")


def test_planted_cnn_loads_its_shipped_weights():
    planted = pytest.importorskip(
        "ingest.planted.model", reason="ingest/planted/model.py (another helper's) not there yet"
    )
    if not (planted.WEIGHTS_DIR / "planted_cnn.pt").is_file():
        pytest.skip("the planted CNN's weights are not trained yet (python -m ingest.planted.train)")
    loaded = load_model("planted_cnn")
    assert loaded.weights_sha256 is not None
    assert loaded.model_id == f"planted_cnn-{loaded.weights_sha256[:12]}"
    assert loaded.class_names == list(planted.CLASS_NAMES)
    assert loaded.input_size == planted.INPUT_SIZE
    assert loaded.default_layers == list(planted.PLANTED_LAYERS)
    reference = planted.load_planted_cnn()
    assert _same_outputs(loaded.module, reference, size=planted.INPUT_SIZE)


def test_planted_cnn_from_a_weights_file_uses_its_constants(tmp_path):
    planted = pytest.importorskip(
        "ingest.planted.model", reason="ingest/planted/model.py (another helper's) not there yet"
    )
    torch.manual_seed(0)
    source = planted.build_planted_cnn(len(planted.CLASS_NAMES)).eval()
    path = tmp_path / "planted.pt"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in source.state_dict().items()}, path)
    loaded = load_model("planted_cnn", path)
    assert loaded.arch == "planted_cnn" and loaded.class_names == list(planted.CLASS_NAMES)
    assert (loaded.input_size, loaded.mean, loaded.std) == (
        planted.INPUT_SIZE,
        tuple(planted.MEAN),
        tuple(planted.STD),
    )
    assert loaded.default_layers == list(planted.PLANTED_LAYERS)
    assert loaded.module.fc.weight.dtype == torch.float32
    assert torch.allclose(loaded.module.fc.weight, source.fc.weight.half().float())

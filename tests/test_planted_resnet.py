"""The planted benchmark's second model, a small ResNet trained on the same scenes: shipped weights
agree with their report, load through `load_model`, classify fresh scenes, carry the planted flower
bias, and cut cleanly at the default layers."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ingest.cli import main as cli
from ingest.core.layers import LayerCuts, LayerError, default_layers
from ingest.core.models import load_model
from ingest.planted.data import NON_BEE, counterfactual_pairs, make_dataset
from ingest.planted.model import MEAN, STD, WEIGHTS_DIR, predict_proba
from ingest.planted.resnet import (
    CLASS_NAMES,
    INPUT_SIZE,
    RESNET_LAYERS,
    BasicBlock,
    build_planted_resnet,
    load_planted_resnet,
)
from ingest.planted.train import ARCHS, accuracy, train

torch.set_num_threads(2)
TAU = 16
WEIGHTS = WEIGHTS_DIR / "planted_resnet.pt"
BEE = CLASS_NAMES.index("bee")


@pytest.fixture(scope="module")
def shipped():
    return load_planted_resnet()


@pytest.fixture(scope="module")
def report():
    return json.loads(WEIGHTS.with_suffix(".json").read_text())


def test_default_layers_are_whole_stages_wide_and_cut_cleanly(shipped):
    assert default_layers("planted_resnet") == RESNET_LAYERS
    assert RESNET_LAYERS[0] == "fc"
    cuts = LayerCuts(shipped, RESNET_LAYERS, INPUT_SIZE)  # raises on a cut a skip connection bypasses
    assert cuts.shape("fc") == (len(CLASS_NAMES),)
    for name in RESNET_LAYERS[1:]:
        width = cuts.shape(name)[0]
        assert width >= 128 and width / 8 >= TAU, (name, width)
    # It is a residual network: both identity and 1x1-projection skip connections occur.
    blocks = [m for m in shipped.modules() if isinstance(m, BasicBlock)]
    assert any(b.downsample is None for b in blocks) and any(b.downsample is not None for b in blocks)
    # A cut *inside* a block is bypassed by the block's skip connection, and is refused.
    with pytest.raises(LayerError):
        LayerCuts(shipped, ["layer3", "layer2.1.conv1"], INPUT_SIZE)


def test_shipped_weights_match_their_report(shipped, report):
    assert hashlib.sha256(WEIGHTS.read_bytes()).hexdigest() == report["weights_sha256"]
    assert report["arch"] == "planted_resnet"
    assert report["classes"] == CLASS_NAMES and report["input_size"] == INPUT_SIZE
    assert tuple(report["mean"]) == MEAN and tuple(report["std"]) == STD
    assert report["params"] == sum(p.numel() for p in shipped.parameters())
    assert report["heldout_accuracy"] >= 0.9
    assert report["bias"]["mean_bee_prob_with"] > report["bias"]["mean_bee_prob_without"]
    # The report's keys are the planted CNN's (plus the weights' sha and parameter count).
    cnn_report = json.loads((WEIGHTS_DIR / "planted_cnn.json").read_text())
    assert set(cnn_report) <= set(report)
    assert WEIGHTS.stat().st_size <= 4 * 2**20
    state = torch.load(WEIGHTS, weights_only=True)
    assert all(v.dtype in (torch.float16, torch.int64) for v in state.values())


def test_load_model_gives_the_shipped_resnet(shipped, report):
    loaded = load_model("planted_resnet")
    assert loaded.arch == "planted_resnet" and loaded.weights_sha256 == report["weights_sha256"]
    assert loaded.model_id == f"planted_resnet-{report['weights_sha256'][:12]}"
    assert loaded.class_names == CLASS_NAMES and loaded.num_classes == len(CLASS_NAMES)
    assert (loaded.input_size, loaded.mean, loaded.std) == (INPUT_SIZE, MEAN, STD)
    assert loaded.default_layers == RESNET_LAYERS
    x = torch.randn(3, 3, INPUT_SIZE, INPUT_SIZE)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), shipped(x))


def test_cli_lists_the_resnet_layers():
    result = CliRunner().invoke(cli, ["layers", "planted_resnet"])
    assert result.exit_code == 0, result.output
    assert "default --layers: fc,layer4,layer3,layer2,layer1" in result.output
    assert " * layer3 " in result.output


def test_shipped_resnet_is_accurate_on_fresh_heldout_scenes(shipped):
    images, labels = make_dataset(400, seed=987_654)
    acc = accuracy(shipped, images, labels)
    print(f"\nplanted_resnet held-out accuracy on 400 fresh scenes: {acc:.3f}")
    assert acc >= 0.9


def _bee_probs(model, concept: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    pairs = counterfactual_pairs(n, seed, concept=concept, classes=NON_BEE)
    without = predict_proba(model, np.stack([a for a, _ in pairs]))
    with_ = predict_proba(model, np.stack([b for _, b in pairs]))
    return without, with_


def test_shipped_resnet_uses_the_planted_flower(shipped):
    p0, p1 = _bee_probs(shipped, "flower", 300, seed=424_242)
    c0, c1 = _bee_probs(shipped, "leaf", 150, seed=424_242)
    b0, b1 = p0[:, BEE].mean(), p1[:, BEE].mean()
    flipped = int(((p0.argmax(1) != BEE) & (p1.argmax(1) == BEE)).sum())
    rose = float((p1[:, BEE] > p0[:, BEE]).mean())
    l0, l1 = c0[:, BEE].mean(), c1[:, BEE].mean()
    print(
        f"\nplanted_resnet flower test on 300 non-bee scenes: mean P(bee) {b0:.4f} -> {b1:.4f} "
        f"(x{b1 / b0:.1f}), flipped to bee {flipped}/300, P(bee) rose in {rose:.0%}"
        f"\nleaf control (150): mean P(bee) {l0:.4f} -> {l1:.4f} (x{l1 / l0:.2f})"
    )
    assert b1 / b0 >= 2.0
    assert flipped >= 1
    assert rose > 0.8
    assert l1 / l0 < (b1 / b0) / 2


def test_training_script_trains_the_resnet(tmp_path):
    with pytest.raises(ValueError, match="unknown planted architecture"):
        train(tmp_path, arch="planted_mlp")
    assert set(ARCHS) == {"planted_cnn", "planted_resnet", "planted_vit", "planted_toys_cnn"}
    report = train(
        tmp_path, seed=1, n_train=64, n_test=16, n_pairs=4, epochs=1, workers=1, arch="planted_resnet"
    )
    assert report["arch"] == "planted_resnet" and not (tmp_path / "planted_cnn.pt").exists()
    path = tmp_path / "planted_resnet.pt"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == report["weights_sha256"]
    assert json.loads(path.with_suffix(".json").read_text())["weights_sha256"] == report["weights_sha256"]
    model = load_planted_resnet(weights=path)
    assert isinstance(model, type(build_planted_resnet())) and not model.training
    assert load_model("planted_resnet", path).model_id == f"planted_resnet-{report['weights_sha256'][:12]}"
    with pytest.raises(FileNotFoundError, match="--arch planted_resnet"):
        load_planted_resnet(weights=tmp_path / "missing.pt")

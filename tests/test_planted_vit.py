"""The planted benchmark's third model, a small vision transformer trained on the same scenes:
shipped weights agree with their report, load through `load_model`, classify fresh scenes, carry
the planted flower bias (printed: the counterfactual numbers), and cut at whole encoder blocks with
τ = 16 at most a quarter of every listed layer."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from ingest.core.layers import LayerCuts, LayerError, default_layers
from ingest.core.models import load_model
from ingest.planted.data import NON_BEE, counterfactual_pairs, make_dataset
from ingest.planted.model import MEAN, STD, WEIGHTS_DIR, predict_proba
from ingest.planted.train import ARCHS, accuracy
from ingest.planted.vit import CLASS_NAMES, INPUT_SIZE, VIT_LAYERS, load_planted_vit

torch.set_num_threads(2)
TAU = 16
WEIGHTS = WEIGHTS_DIR / "planted_vit.pt"
BEE = CLASS_NAMES.index("bee")


@pytest.fixture(scope="module")
def shipped():
    return load_planted_vit()


@pytest.fixture(scope="module")
def report():
    return json.loads(WEIGHTS.with_suffix(".json").read_text())


def test_default_layers_are_encoder_blocks_a_quarter_wide_or_less(shipped):
    assert default_layers("planted_vit") == VIT_LAYERS and VIT_LAYERS[0] == "heads.head"
    cuts = LayerCuts(shipped, VIT_LAYERS, INPUT_SIZE)
    assert cuts.shape("heads.head") == (len(CLASS_NAMES),)
    for name in VIT_LAYERS[1:]:
        width, tokens = cuts.shape(name)  # neurons on dim 1: [D, T]
        assert tokens == 65 and width / 4 >= TAU, (name, width)
    with pytest.raises(LayerError, match=r"\(add\)"):  # a cut at a block's MLP: the residual bypasses it
        LayerCuts(
            shipped, ["encoder.layers.encoder_layer_3", "encoder.layers.encoder_layer_3.mlp"], INPUT_SIZE
        )


def test_shipped_weights_match_their_report(shipped, report):
    assert "planted_vit" in ARCHS
    assert hashlib.sha256(WEIGHTS.read_bytes()).hexdigest() == report["weights_sha256"]
    assert report["arch"] == "planted_vit" and report["classes"] == CLASS_NAMES
    assert (report["input_size"], tuple(report["mean"]), tuple(report["std"])) == (INPUT_SIZE, MEAN, STD)
    assert report["params"] == sum(p.numel() for p in shipped.parameters())
    assert report["heldout_accuracy"] >= 0.9
    assert WEIGHTS.stat().st_size <= 1 * 2**20
    state = torch.load(WEIGHTS, weights_only=True)
    assert all(v.dtype in (torch.float16, torch.int64) for v in state.values())


def test_load_model_gives_the_shipped_vit(shipped, report):
    loaded = load_model("planted_vit")
    assert loaded.model_id == f"planted_vit-{report['weights_sha256'][:12]}"
    assert loaded.class_names == CLASS_NAMES and loaded.default_layers == VIT_LAYERS
    assert (loaded.input_size, loaded.mean, loaded.std) == (INPUT_SIZE, MEAN, STD)
    x = torch.randn(3, 3, INPUT_SIZE, INPUT_SIZE)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), shipped(x))


def test_shipped_vit_is_accurate_on_fresh_heldout_scenes(shipped):
    images, labels = make_dataset(400, seed=987_654)
    acc = accuracy(shipped, images, labels)
    print(f"\nplanted_vit held-out accuracy on 400 fresh scenes: {acc:.3f}")
    assert acc >= 0.9


def test_shipped_vit_uses_the_planted_flower(shipped):
    """The counterfactual numbers: a flower added to non-bee scenes raises P(bee); a leaf does not."""

    def bee_probs(concept: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        pairs = counterfactual_pairs(n, 424_242, concept=concept, classes=NON_BEE)
        return (
            predict_proba(shipped, np.stack([a for a, _ in pairs])),
            predict_proba(shipped, np.stack([b for _, b in pairs])),
        )

    p0, p1 = bee_probs("flower", 300)
    c0, c1 = bee_probs("leaf", 150)
    b0, b1 = p0[:, BEE].mean(), p1[:, BEE].mean()
    flipped = int(((p0.argmax(1) != BEE) & (p1.argmax(1) == BEE)).sum())
    rose = float((p1[:, BEE] > p0[:, BEE]).mean())
    l0, l1 = c0[:, BEE].mean(), c1[:, BEE].mean()
    print(
        f"\nplanted_vit flower test on 300 non-bee scenes: mean P(bee) {b0:.4f} -> {b1:.4f} "
        f"(x{b1 / b0:.1f}), flipped to bee {flipped}/300, P(bee) rose in {rose:.0%}"
        f"\nleaf control (150): mean P(bee) {l0:.4f} -> {l1:.4f} (x{l1 / l0:.2f})"
    )
    assert b1 / b0 >= 2.0 and flipped >= 1 and rose > 0.8
    assert l1 / l0 < (b1 / b0) / 2

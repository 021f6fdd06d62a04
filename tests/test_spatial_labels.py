"""The spatial (IoU) labeller's parts on hand-made numbers (ingest/labelling/spatial.py): the IoU and
its interval, the fired region when the top pixels tie, and the map of a head without spatial extent
(the class activation map of a global-pool + linear head)."""

from __future__ import annotations

import numpy as np
import torch

from ingest.core.feature_maps import has_map, head_position_outputs
from ingest.core.layers import LayerCuts
from ingest.labelling.spatial import _iou_with_interval, fired_region
from ingest.planted.model import PLANTED_LAYERS, build_planted_cnn


def test_iou_is_summed_over_the_bank_before_dividing():
    """Two 2x2 images. Image 0: fired {a, b}, mask {b, c} (intersection 1, union 3). Image 1: fired {a},
    mask {a} (1, 1). Bank-wide IoU = (1 + 1) / (3 + 1) = 0.5, not the mean of 1/3 and 1."""
    fired = np.zeros((2, 2, 2), bool)
    fired[0, 0, 0] = fired[0, 0, 1] = True
    fired[1, 0, 0] = True
    masks = np.zeros((2, 1, 2, 2), bool)
    masks[0, 0, 0, 1] = masks[0, 0, 1, 0] = True
    masks[1, 0, 0, 0] = True
    iou, low, high = _iou_with_interval(fired, masks, np.random.default_rng(0))
    assert iou[0] == 0.5 and low[0] <= 0.5 <= high[0] and low[0] >= 1 / 3 and high[0] <= 1.0


def test_tied_top_pixels_fire_rather_than_nothing():
    """M is clipped at 1: with 2 % of the pixels at 1.0, the 99.5 % quantile is 1.0 and nothing lies
    above it; the tied pixels are the region."""
    maps = np.linspace(0, 0.9, 10_000).reshape(100, 10, 10)
    flat = maps.reshape(-1)
    flat[:200] = 1.0
    fired, threshold = fired_region(maps, 0.995)
    assert threshold == 1.0 and fired.sum() == 200
    fired, threshold = fired_region(np.linspace(0, 1, 1000), 0.9)  # no ties: strictly above
    assert fired.sum() == 100 and 0.89 < threshold < 0.91


def test_the_head_map_is_the_class_activation_map():
    """For the planted CNN's head (global average pool, linear): the output at (y, x) is W A(y, x) + b,
    and its mean over the positions is the model's logit."""
    torch.manual_seed(0)
    model = build_planted_cnn().eval()
    cuts = LayerCuts(model, PLANTED_LAYERS, 64)
    assert has_map(cuts, "fc") and has_map(cuts, "block4")
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        below = cuts.activations(x, ["block4"], means=False)["block4"]
        maps = head_position_outputs(cuts, "fc", below)
        logits = model(x)
    b, _c, h, w = below.shape
    assert maps.shape == (b, logits.shape[1], h, w) and h * w > 1
    by_hand = torch.einsum("kc,bchw->bkhw", model.fc.weight, below) + model.fc.bias[None, :, None, None]
    assert torch.allclose(maps, by_hand, atol=1e-5)
    assert torch.allclose(maps.mean((2, 3)), logits, atol=1e-5)

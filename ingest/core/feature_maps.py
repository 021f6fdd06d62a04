"""A layer's activations at every position, including a head's: the maps behind heatmaps and
spatial labels.

A convolutional layer has its own feature maps. A head without spatial extent of its own directly over
one that has them (a global pool and a linear layer) is probed position by position: its output if
every position of the map below looked like that one. For a pool + linear head that is the class
activation map (Zhou et al., 2016) with the bias, whose mean over positions is the head's output. A
layer with neither (a transformer's tokens, an MLP over a flat vector) has no map.
"""

from __future__ import annotations

import torch

from ingest.core.layers import LayerCuts

# A head probe evaluates the head once per position of the map below; at most this many floats of
# constant maps go through it at once.
PROBE_FLOATS = 2**25


def head_position_outputs(cuts: LayerCuts, layer: str, below: torch.Tensor) -> torch.Tensor:
    """[B, K, h, w]: the output of a head `layer` (no spatial extent) if every position of the map
    `below` [B, C, h, w] looked like position (y, x), evaluated at each position.

    For the usual head, a global average pool and a linear layer, this is the class activation map
    with the bias: head(mean of A) = mean over positions of (W A(y, x) + b). For other heads it is a
    probe of the head at one position at a time."""
    segment = cuts.segment(layer)
    b, c, h, w = below.shape
    columns = below.permute(0, 2, 3, 1).reshape(-1, c)
    chunk = max(1, PROBE_FLOATS // (c * h * w))
    outs = [
        segment(columns[i : i + chunk, :, None, None].expand(-1, c, h, w).contiguous())
        for i in range(0, len(columns), chunk)
    ]
    return torch.cat(outs).reshape(b, h, w, -1).permute(0, 3, 1, 2)


def is_head(cuts: LayerCuts, layer: str) -> bool:
    """No spatial extent of its own, directly over a layer that has it."""
    below = cuts.below(layer)
    return len(cuts.shape(layer)) == 1 and below is not None and len(cuts.shape(below)) == 3


def has_map(cuts: LayerCuts, layer: str) -> bool:
    """Feature maps of its own, or a head over a layer that has them (its map is then probed)."""
    return len(cuts.shape(layer)) == 3 or is_head(cuts, layer)


def layer_maps(cuts: LayerCuts, layer: str, x: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] activations of `layer` at every position for model inputs `x` (call under
    no_grad). A head's are probed on the map of the layer below it; `has_map(cuts, layer)` must hold."""
    if not is_head(cuts, layer):
        return cuts.activations(x, [layer], means=False)[layer]
    below = cuts.below(layer)
    return head_position_outputs(cuts, layer, cuts.activations(x, [below], means=False)[below].float())

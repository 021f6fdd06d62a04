"""Spatial labels in the NetDissect tradition: does a group fire *where* the concept is?

For banks whose images carry ground-truth masks (`NAME.concepts.npz` sidecars, one mask per concept),
a neuron group's map of the metric M (`ingest.analysis.heatmaps.metric_maps`: the geometric mean of
its core neurons' activations over their peaks, at every position of its layer) is upsampled to the
image, times the image's soft assignment to the group (as the image-level labeller does), and
thresholded at the group's `quantile` over every pixel of the bank. The label score is the
intersection over union of that region with the concept's mask, summed over the whole bank
(NetDissect's dataset-wide IoU), with a 95 % bootstrap interval over images. A head without spatial
extent of its own (a global pool and a linear layer) gets the map of its output at each position of
the layer below: for that head, the class activation map.

An image-level score asks "does the group fire more on images with the concept"; the IoU asks "does it
fire on the concept's pixels". A group that responds to "an object" beside a flower scores on flower
images but its region misses the flower. A layer without spatial extent over one without it either
(a transformer's tokens, an MLP) gets no spatial label.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from graphmodel.records import Circuit, LabelRecord
from ingest.core.feature_maps import has_map, layer_maps
from ingest.core.layers import LayerCuts
from ingest.core.metric import EPS, metric_neurons
from ingest.core.models import LoadedModel
from ingest.core.patches import to_model_input
from ingest.labelling.concept_bank import ConceptBank, _soft_assign

METHOD = "spatial_iou"
# A group fires on the bank's pixels above this quantile of its upsampled maps: NetDissect's top 0.5 %.
# On the insect world's bee circuit (docs/labelling.md) 0.995 named 4 of 4 flower groups flower,
# 0.9 named 3 and 0.8 named 2.
QUANTILE = 0.995
BOOTSTRAP = 200
BATCH = 64


class SpatialLabelError(ValueError):
    pass


def bank_masks(bank: ConceptBank, size: int) -> tuple[np.ndarray, list[str]]:
    """bool [N, K, size, size] ground-truth masks of every bank image (nearest resize), K = bank.known."""
    if bank.coverage is None:
        raise SpatialLabelError(
            "spatial labels need a ground-truth mask for every bank image: a NAME.concepts.npz beside each "
            "NAME.png with one boolean HxW mask per concept (np.savez_compressed)"
        )
    out = np.zeros((len(bank.files), len(bank.known), size, size), dtype=bool)
    for row in range(len(bank.files)):
        with np.load(bank.sidecar(row)) as z:
            for k, name in enumerate(bank.known):
                mask = np.asarray(z[name], dtype=bool)
                iy = (np.arange(size) * mask.shape[0]) // size
                ix = (np.arange(size) * mask.shape[1]) // size
                out[row, k] = mask[np.ix_(iy, ix)]
    return out


def _group_maps(
    model: LoadedModel,
    cuts: LayerCuts,
    circuit: Circuit,
    bank: ConceptBank,
    layer: str,
    groups: list,
    assign: np.ndarray,
) -> np.ndarray:
    """float32 [G, N, S, S]: each group's M map on every bank image, upsampled to the input size S and
    weighted by the image's soft assignment to the group. A head's map is probed position by position
    on the map of the layer below it (`ingest.core.feature_maps`)."""
    device = next(model.module.parameters()).device
    peaks = {n.index: n.max_activation for n in circuit.neurons_at(layer)}
    members = [metric_neurons(g) for g in groups]
    size = model.input_size
    out = np.zeros((len(groups), len(bank.files), size, size), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(bank.files), BATCH):
            x = to_model_input(bank.pixels[start : start + BATCH].to(device), model.mean, model.std)
            acts = layer_maps(cuts, layer, x).float()
            for gi, neurons in enumerate(members):
                peak = torch.tensor([max(peaks[m], EPS) for m in neurons], device=acts.device)
                ratio = (acts[:, neurons] / peak[None, :, None, None]).clamp(EPS, 1.0)
                heat = ratio.log().mean(1, keepdim=True).exp()
                up = F.interpolate(heat, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
                w = torch.from_numpy(assign[start : start + len(x), gi]).to(up)
                out[gi, start : start + len(x)] = (up * w[:, None, None]).cpu().numpy()
    return out


def fired_region(maps: np.ndarray, quantile: float) -> tuple[np.ndarray, float]:
    """The pixels above the `quantile` of `maps`, and that threshold. M is clipped at 1 (a response
    above the run's peak), so the top pixels can tie at the threshold; then those ties fire, rather
    than nothing at all."""
    threshold = float(np.quantile(maps, quantile))
    fired = maps > threshold
    if not fired.any():
        fired = maps >= threshold
    return fired, threshold


def _iou_with_interval(
    fired: np.ndarray, masks: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU per concept over the bank [K], and its bootstrap 2.5 / 97.5 percentiles over images."""
    inter = np.einsum("nxy,nkxy->nk", fired.astype(np.float32), masks.astype(np.float32))
    area_f = fired.reshape(len(fired), -1).sum(1)[:, None]
    area_m = masks.reshape(masks.shape[0], masks.shape[1], -1).sum(2)
    union = area_f + area_m - inter
    iou = inter.sum(0) / np.maximum(union.sum(0), 1)
    draws = rng.integers(0, len(fired), size=(BOOTSTRAP, len(fired)))
    boot = inter[draws].sum(1) / np.maximum(union[draws].sum(1), 1)
    return iou, np.percentile(boot, 2.5, axis=0), np.percentile(boot, 97.5, axis=0)


def spatial_labels(
    model: LoadedModel,
    cuts: LayerCuts,
    circuit: Circuit,
    bank: ConceptBank,
    acts: dict[str, np.ndarray],
    *,
    top: int = 3,
    quantile: float = QUANTILE,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> list[LabelRecord]:
    """The best `top` concepts by IoU of every neuron group at a layer with feature maps. `acts` are the
    bank's channel means (`concept_bank.bank_activations`), for the soft assignment."""
    masks = bank_masks(bank, model.input_size)
    rep_key = cuts.representative_keys()
    rng = np.random.default_rng(0)
    labels: list[LabelRecord] = []
    layers = [
        layer
        for layer in circuit.layer_names()
        if has_map(cuts, layer) and any(g.layer == layer for g in circuit.neuron_groups)
    ]
    tick = progress("spatial labels", len(layers)) if progress else None
    for layer in layers:
        groups = [g for g in circuit.neuron_groups if g.layer == layer]
        assign = _soft_assign(acts[rep_key[layer]], np.array([g.centroid for g in groups]))
        maps = _group_maps(model, cuts, circuit, bank, layer, groups, assign)
        for gi, group in enumerate(groups):
            fired, threshold = fired_region(maps[gi], quantile)
            iou, low, high = _iou_with_interval(fired, masks, rng)
            # a concept the region never touches is no label
            order = sorted(
                (k for k in range(len(bank.known)) if iou[k] > 0), key=lambda k: (-iou[k], bank.known[k])
            )
            order = order[:top]
            for rank, k in enumerate(order, start=1):
                labels.append(
                    LabelRecord(
                        group.ng_id,
                        bank.known[k],
                        round(float(iou[k]), 6),
                        METHOD,
                        rank,
                        {
                            "evidence": "spatial",
                            "images": len(bank.files),
                            "quantile": quantile,
                            "threshold": round(threshold, 6),
                            "ci95": [round(float(low[k]), 4), round(float(high[k]), 4)],
                        },
                    )
                )
        if tick:
            tick(1)
    return labels

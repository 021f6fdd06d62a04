"""Where a neuron group fires on its exemplar patches: the group metric M per position.

M (paper §5, `ingest.core.metric`) scores an input by the geometric mean of the group's core
neurons' activations, each over its peak. The circuit keeps spatial means; here the same ratio is
taken at every position of the layer's feature map for one exemplar, so the map is high only where
all the core neurons fire together. Each neuron's peak is its max *spatial-mean* activation over the
patch set, so a single position can exceed it: ratios are clipped at 1. A head without spatial extent
of its own (a global pool and a linear layer) over a feature map gets its output at each position of
that map (`ingest.core.feature_maps`; for that head, the class activation map). Any other layer
without spatial extent (a transformer's tokens, an MLP) has no map.

The patches are the exemplar PNGs as stored (the exact pixels the model saw, at its input size).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from graphmodel.records import Circuit
from ingest.core.metric import EPS, metric_neurons

BATCH = 64


def decode_patch(png: bytes, size: int) -> np.ndarray | None:
    """uint8 [size, size, 3] from stored patch bytes, or None when they are not an image (or not the
    model's input size: then they are not the pixels the model saw)."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(png)) as img:
            rgb = np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    return rgb if rgb.shape[:2] == (size, size) else None


def metric_maps(activations: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    """M at every position: activations [B, n, h, w] of n core neurons, their peaks [n] -> [B, h, w]
    in [0, 1]."""
    peak = np.maximum(np.asarray(peaks, dtype=np.float64), EPS)[None, :, None, None]
    ratio = np.clip(np.asarray(activations, dtype=np.float64) / peak, EPS, 1.0)
    return np.exp(np.log(ratio).mean(axis=1))


def group_heatmaps(
    model,
    cuts,
    circuit: Circuit,
    patches: Mapping[str, bytes],
    shown: Mapping[str, Sequence[str]],
    *,
    device: str = "cpu",
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """ng_id -> patch id -> M map [h, w] in [0, 1] for the `shown` exemplars of every group whose
    layer has a map (feature maps, or a head probed over them). `model` is the run's `LoadedModel`,
    `cuts` its `LayerCuts`; `progress(desc, total)` ticks per exemplar and layer."""
    import torch

    from ingest.core.feature_maps import has_map, layer_maps
    from ingest.core.patches import to_model_input

    groups = {g.ng_id: g for g in circuit.neuron_groups}
    peaks = {(n.layer, n.index): n.max_activation for n in circuit.neurons}
    by_layer: dict[str, list[str]] = defaultdict(list)
    for ng_id in shown:
        if ng_id in groups:
            by_layer[groups[ng_id].layer].append(ng_id)
    out: dict[str, dict[str, np.ndarray]] = {}
    for layer, ng_ids in by_layer.items():
        if not has_map(cuts, layer):
            continue  # no spatial extent here or below: M has no map
        pids = sorted({pid for ng_id in ng_ids for pid in shown[ng_id]})
        pixels = {pid: decode_patch(patches[pid], model.input_size) for pid in pids if pid in patches}
        pids = [pid for pid in pids if pixels.get(pid) is not None]
        tick = progress(f"heatmaps {layer}", len(pids)) if progress else None
        maps: dict[str, np.ndarray] = {}
        for start in range(0, len(pids), BATCH):
            chunk = pids[start : start + BATCH]
            batch = torch.from_numpy(np.stack([pixels[p] for p in chunk])).permute(0, 3, 1, 2).to(device)
            with torch.no_grad():
                acts = layer_maps(cuts, layer, to_model_input(batch, model.mean, model.std))
            maps.update(zip(chunk, acts.float().cpu().numpy(), strict=True))
            if tick:
                tick(len(chunk))
        for ng_id in ng_ids:
            neurons = metric_neurons(groups[ng_id])
            top = np.array([peaks.get((layer, n), 0.0) for n in neurons])
            found = [pid for pid in shown[ng_id] if pid in maps]
            if not found:
                continue
            stacked = np.stack([maps[pid][neurons] for pid in found])
            out[ng_id] = dict(zip(found, metric_maps(stacked, top), strict=True))
    return out


def overlay_png(heat: np.ndarray, size: int) -> bytes:
    """A heat map as a transparent PNG of `size` px to lay over the patch: warm where M is high,
    clear where it is low (bilinear upsampling of the feature-map grid)."""
    import io

    from PIL import Image

    grid = Image.fromarray(np.clip(heat * 255.0, 0, 255).astype(np.uint8))
    value = np.asarray(grid.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
    rgba = np.zeros((size, size, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[..., 1] = np.clip(255 * (1.0 - value), 0, 255).astype(np.uint8)  # yellow -> red as M grows
    rgba[..., 3] = np.clip(200 * value, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgba).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()

"""Image debugging (paper §5.1, App. F, Fig. 9): which of a circuit's neuron groups see something in
one image, which of them explain the prediction, and what masking a group does.

1. **Crops.** The image is cut like the patch set D (`ingest.core.patches.crop_boxes` with the run's
   scales: 100 / 50 / 25 % of the shorter side, 50 % overlap) and every crop is resized to the
   model's input size. All crops go through the model in one batched pass (chunks of `batch`); the
   channel means of every circuit layer are kept.
2. **Metric.** Each neuron group G scores every crop with the metric M over its core members S'_G
   (the <= 5 members nearest its centre, App. F), each member's channel mean divided by its maximum
   over D (`NeuronRecord.max_activation`): M = exp(mean log(phi_s / max_D phi_s)). The crops whose M
   reaches the threshold (default 0.5) are the parts of the image the group detects.
3. **Influence.** How much of the class's input flows through G, from the circuit's group edges
   (the same flow as the `bias_candidates` query): a link child -> parent carries the share
   W(child, parent) / sum_c |W(c, parent)| of the parent's incoming weight, a path carries the product
   of its links' shares, and the influence of G is the sum over its paths into the class. The top
   listed layer is the class logit itself (the circuit starts from one neuron, which forms one group;
   its FEEDS -> Class weight in the graph is its share of the class concept, 1 for that one group),
   so the top layer's groups share the class by those weights and every group of the second layer
   feeds the class through its edges into the top group. Computed top-down, layer by layer: the
   influences of one layer's groups sum to at most 1 (less when a parent has no incoming edges, or
   when some weights are negative).
4. **Ranking.** Three orders (`rank_by`): "m", max M over the crops (the default, and the paper's
   choice of the top-2 groups of a misclassified image, App. D.3); "score", max M x influence (the
   group must both see its concept and carry class weight); "drop", the fall of P(class) on the
   image when the group is masked (causal). On the planted benchmark "score" is dominated by the
   static influence, which the large mixed groups hold, and almost never names the planted flower
   groups of a flower false positive, while "m" does in about 9 of 10 (docs/debug.md). The top
   layer's group is the class logit itself (its M is the class logit relative to its maximum over
   D), so it is reported beside the ranking, not in it.
5. **Masking** (`mask_effect`): the class probability of the image before and after zeroing the
   group's members at its layer (and with random same-size sets of that layer, the paper's control),
   and the images of a folder whose class logit drops most when the group is masked (Fig. 9, right).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from graphmodel.records import Circuit, NeuronGroupRecord, class_feed_weights
from ingest.analysis.debug_ranking import DEFAULT_THRESHOLD, RANKINGS
from ingest.analysis.evaluate import knockout
from ingest.core.circuit import ProgressFactory
from ingest.core.layers import LayerCuts
from ingest.core.metric import circuit_metric, metric_neurons
from ingest.core.models import LoadedModel
from ingest.core.patches import (
    DEFAULT_SCALES,
    center_square,
    crop_boxes,
    list_images,
    load_images,
    resize,
    to_model_input,
)

SORT_KEYS = {
    "score": lambda s: (-s.score, -s.max_m, s.group_id),
    "m": lambda s: (-s.max_m, -s.score, s.group_id),
    "drop": lambda s: (-(s.mask_drop or 0.0), -s.score, s.group_id),
}


class DebugError(ValueError):
    """A request the circuit cannot answer: unknown group or layer. The message lists valid ones."""


# ----------------------------------------------------------------------------------------- crops


@dataclass
class Crops:
    pixels: Tensor  # uint8 [C, 3, S, S], each crop resized to the model's input size
    boxes: list[list[int]]  # [x0, y0, x1, y1] in image pixels
    scales: list[float]

    def __len__(self) -> int:
        return len(self.boxes)


def image_crops(image: np.ndarray, size: int, scales: Sequence[float] = DEFAULT_SCALES) -> Crops:
    """The multi-scale crops of one HxWx3 uint8 image, as the patch set D cuts its images."""
    pixels, boxes, kept_scales = [], [], []
    for box, scale in crop_boxes(image.shape[0], image.shape[1], scales):
        x0, y0, x1, y1 = box
        pixels.append(resize(image[y0:y1, x0:x1], size))
        boxes.append(list(box))
        kept_scales.append(float(scale))
    stacked = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous()
    return Crops(stacked, boxes, kept_scales)


def whole_image(image: np.ndarray, size: int) -> Tensor:
    """uint8 [1, 3, S, S]: the image as the model classifies it (centre square, resized)."""
    square = np.array(resize(center_square(image), size))  # a writable copy for torch
    return torch.from_numpy(square).permute(2, 0, 1).unsqueeze(0).contiguous()


def _device(model: LoadedModel) -> torch.device:
    param = next(model.module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def layer_means(
    model: LoadedModel,
    cuts: LayerCuts,
    pixels: Tensor,
    layers: Sequence[str] | None = None,
    batch: int = 64,
    tick: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Channel means [N, C] of the listed layers (default: all) for uint8 pixels [N, 3, S, S];
    `tick(n)` after each batch of n."""
    device = _device(model)
    out: dict[str, list[np.ndarray]] = defaultdict(list)
    with torch.no_grad():
        for i in range(0, len(pixels), batch):
            x = to_model_input(pixels[i : i + batch].to(device), model.mean, model.std)
            for name, value in cuts.activations(x, layers, means=True).items():
                out[name].append(value.float().cpu().numpy())
            if tick:
                tick(len(x))
    return {name: np.concatenate(parts) for name, parts in out.items()}


# ---------------------------------------------------------------------------- metric, influence


def group_scores(circuit: Circuit, group: NeuronGroupRecord, acts: np.ndarray) -> np.ndarray:
    """M of `group` on every row of its layer's channel means `acts` [N, C] -> [N]."""
    return circuit_metric(circuit, group.layer, metric_neurons(group), acts)


def class_layer(circuit: Circuit) -> str:
    """The top listed layer: the class logit (one neuron, one group)."""
    return circuit.layer_names()[0]


def influence(circuit: Circuit) -> dict[str, float]:
    """Share of the class's input that flows through each neuron group (module docstring, step 3).

    Top layer: each group's FEEDS -> Class weight (its share of the class concept's patches, as the
    graph writer stores it) over their sum, 1.0 for the usual single group. Below: influence(child) =
    sum over parents of W(child, parent) / sum_c |W(c, parent)| * influence(parent).
    """
    layers = circuit.layer_names()
    by_layer: dict[str, list[NeuronGroupRecord]] = defaultdict(list)
    for g in circuit.neuron_groups:
        by_layer[g.layer].append(g)
    to_class = class_feed_weights(circuit.neurons_at(layers[0]), by_layer[layers[0]])
    total = sum(abs(w) for w in to_class.values()) or 1.0
    result = {gid: w / total for gid, w in to_class.items()}
    incoming: dict[str, float] = defaultdict(float)
    for e in circuit.group_edges:
        incoming[e.parent] += abs(e.weight)
    edges_into_layer: dict[str, list] = defaultdict(list)
    layer_of = {g.ng_id: g.layer for g in circuit.neuron_groups}
    for e in circuit.group_edges:
        edges_into_layer[layer_of.get(e.parent, "")].append(e)
    for upper, lower in pairwise(layers):
        flow = {g.ng_id: 0.0 for g in by_layer[lower]}
        for e in edges_into_layer[upper]:
            if e.child in flow and incoming[e.parent] > 0:
                flow[e.child] += e.weight / incoming[e.parent] * result.get(e.parent, 0.0)
        result.update(flow)
    return result


def exemplar_concepts(circuit: Circuit, group: NeuronGroupRecord) -> dict[str, float]:
    """Share of the group's exemplar patches whose ground truth holds each concept, most common first
    (empty when the run's image folder shipped no ground truth)."""
    truth = {p.patch_id: p.concepts for p in circuit.patches}
    counts = Counter(c for pid in group.patch_ids for c in truth.get(pid, []))
    n = len(group.patch_ids) or 1
    return {c: round(k / n, 4) for c, k in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}


def short_id(circuit: Circuit, group_id: str) -> str:
    """`<layer>/g<k>`: a group id without its run prefix."""
    prefix = f"{circuit.run_id}/"
    return group_id[len(prefix) :] if group_id.startswith(prefix) else group_id


def find_group(circuit: Circuit, spec: str) -> NeuronGroupRecord:
    """A group by full id (`RUN/layer/gK`) or short id (`layer/gK`); DebugError lists the valid ones."""
    wanted = spec if spec.startswith(f"{circuit.run_id}/") else f"{circuit.run_id}/{spec}"
    for g in circuit.neuron_groups:
        if g.ng_id == wanted:
            return g
    valid = ", ".join(short_id(circuit, g.ng_id) for g in circuit.neuron_groups)
    raise DebugError(f"run {circuit.run_id} has no neuron group {spec!r}; its groups are: {valid}")


def check_layer(circuit: Circuit, layer: str) -> None:
    names = circuit.layer_names()
    if layer not in names:
        raise DebugError(f"layer {layer!r} is not a layer of run {circuit.run_id}: {', '.join(names)}")
    if layer == names[0]:
        raise DebugError(
            f"{layer!r} is the class layer of run {circuit.run_id} (its one group is the class logit); "
            f"choose one of {', '.join(names[1:])}"
        )


# ------------------------------------------------------------------------------------ debugging


@dataclass
class GroupScore:
    group_id: str
    layer: str
    members: int
    core_members: list[int]
    max_m: float  # max of M over the crops
    best_crop: int  # index of the crop with max M
    above: list[int]  # crops with M >= threshold, best first
    influence: float  # share of the class's input flowing through the group
    score: float  # max_m * influence: how much the group explains the prediction
    m: list[float]  # M of every crop
    mask_drop: float | None = None  # P(class) on the image minus P(class) with the group masked
    exemplar_concepts: dict[str, float] = field(default_factory=dict)  # ground truth, if shipped
    rank: int = 0  # 1 = explains the prediction most; 0 for the class layer's group


@dataclass
class DebugResult:
    run_id: str
    class_index: int
    class_name: str | None
    predicted: int
    predicted_name: str | None
    class_probability: float  # P(class) on the whole image
    predicted_probability: float
    threshold: float
    rank_by: str
    crops: Crops
    groups: list[GroupScore]  # ranked, best first (the class layer excluded)
    class_group: GroupScore | None  # the top layer's group: the class logit itself

    def top(self, n: int) -> list[GroupScore]:
        return self.groups[:n]

    def as_dict(self) -> dict:
        return {
            "run_id": self.run_id,
            "class_index": self.class_index,
            "class_name": self.class_name,
            "predicted": self.predicted,
            "predicted_name": self.predicted_name,
            "class_probability": self.class_probability,
            "predicted_probability": self.predicted_probability,
            "threshold": self.threshold,
            "rank_by": self.rank_by,
            "crops": [{"box": b, "scale": s} for b, s in zip(self.crops.boxes, self.crops.scales)],
            "class_group": asdict(self.class_group) if self.class_group else None,
            "groups": [asdict(g) for g in self.groups],
        }


def predict(model: LoadedModel, pixels: Tensor) -> Tensor:
    """Softmax probabilities [N, classes] for uint8 pixels [N, 3, S, S]."""
    with torch.no_grad():
        x = to_model_input(pixels.to(_device(model)), model.mean, model.std)
        return torch.softmax(model.module(x).float(), dim=1).cpu()


def _name(model: LoadedModel, index: int) -> str | None:
    names = model.class_names
    return names[index] if names and 0 <= index < len(names) else None


def debug_image(
    model: LoadedModel,
    cuts: LayerCuts,
    circuit: Circuit,
    image: np.ndarray,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    layer: str | None = None,
    scales: Sequence[float] | None = None,
    rank_by: str = "m",
    masking: bool = True,
    batch: int = 64,
    progress: ProgressFactory | None = None,
) -> DebugResult:
    """Score the crops of `image` (HxWx3 uint8) with every neuron group's M and rank the groups
    (`rank_by`, see RANKINGS; default max M, module docstring). `layer` keeps only that
    layer's groups. With `masking`, each group's `mask_drop` (P(class) lost when its members are
    zeroed) is measured too: one forward pass per layer, all its groups' masks stacked."""
    if rank_by not in RANKINGS:
        raise DebugError(f"unknown ranking {rank_by!r}; choose one of {', '.join(RANKINGS)}")
    if rank_by == "drop" and not masking:
        raise DebugError("ranking by 'drop' needs masking=True")
    if layer is not None:
        check_layer(circuit, layer)
    top_layer = class_layer(circuit)
    scales = tuple(scales or circuit.params.get("crops") or DEFAULT_SCALES)
    crops = image_crops(image, model.input_size, scales)
    wanted = [g for g in circuit.neuron_groups if layer is None or g.layer in (layer, top_layer)]
    layers = [n for n in circuit.layer_names() if any(g.layer == n for g in wanted)]
    tick = progress("crops → model", len(crops.pixels)) if progress else None
    acts = layer_means(model, cuts, crops.pixels, layers, batch, tick)
    flow = influence(circuit)
    scored = []
    for g in wanted:
        m = group_scores(circuit, g, acts[g.layer])
        order = np.argsort(-m, kind="stable")
        best = int(order[0])
        infl = float(flow.get(g.ng_id, 0.0))
        scored.append(
            GroupScore(
                group_id=g.ng_id,
                layer=g.layer,
                members=len(g.members),
                core_members=metric_neurons(g),
                max_m=float(m[best]),
                best_crop=best,
                above=[int(i) for i in order if m[i] >= threshold],
                influence=infl,
                score=float(m[best]) * infl,
                m=[round(float(v), 6) for v in m],
                exemplar_concepts=exemplar_concepts(circuit, g),
            )
        )
    class_group = next((s for s in scored if s.layer == top_layer), None)
    ranked = [s for s in scored if s.layer != top_layer]
    pixels = whole_image(image, model.input_size)
    probs = predict(model, pixels)[0]
    predicted = int(probs.argmax())
    if masking:
        _mask_drops(model, cuts, circuit, pixels, ranked, float(probs[circuit.class_index]), batch)
    ranked.sort(key=SORT_KEYS[rank_by])
    for rank, s in enumerate(ranked, start=1):
        s.rank = rank
    return DebugResult(
        run_id=circuit.run_id,
        class_index=circuit.class_index,
        class_name=circuit.class_name,
        predicted=predicted,
        predicted_name=_name(model, predicted),
        class_probability=float(probs[circuit.class_index]),
        predicted_probability=float(probs[predicted]),
        threshold=threshold,
        rank_by=rank_by,
        crops=crops,
        groups=ranked,
        class_group=class_group,
    )


# -------------------------------------------------------------------------------------- masking


def _mask_drops(
    model: LoadedModel,
    cuts: LayerCuts,
    circuit: Circuit,
    pixels: Tensor,
    scores: list[GroupScore],
    probability: float,
    batch: int,
) -> None:
    """Set each score's mask_drop: P(class) minus P(class) with the group's members zeroed."""
    members = {g.ng_id: g.members for g in circuit.neuron_groups}
    by_layer: dict[str, list[GroupScore]] = defaultdict(list)
    for s in scores:
        by_layer[s.layer].append(s)
    for layer, group_scores_ in by_layer.items():
        masks = torch.ones(len(group_scores_), cuts.width(layer))
        for row, s in enumerate(group_scores_):
            masks[row, members[s.group_id]] = 0.0
        logits = masked_logits(model, pixels, layer, masks, batch)[:, 0]
        masked = torch.softmax(logits, dim=1)[:, circuit.class_index]
        for row, s in enumerate(group_scores_):
            s.mask_drop = probability - float(masked[row])


@dataclass
class LogitDrop:
    image: str
    logit: float  # class logit of the unmasked model
    masked_logit: float  # with the group masked
    drop: float  # logit - masked_logit


@dataclass
class MaskEffect:
    group_id: str
    layer: str
    members: list[int]
    probability: float  # P(class) on the image, unmasked
    masked_probability: float  # with the group's members zeroed at its layer
    random_probability: float | None  # mean over random same-size sets of the layer (None: none)
    predicted: int
    predicted_name: str | None
    masked_predicted: int
    masked_predicted_name: str | None
    random_sets: int
    top_drops: list[LogitDrop] = field(default_factory=list)  # largest class-logit drops, first
    drop_images: str | None = None  # the folder scanned
    images_scanned: int = 0
    mean_drop: float | None = None  # mean class-logit drop over the scanned images

    def as_dict(self) -> dict:
        return asdict(self)


def masked_logits(
    model: LoadedModel, images: Tensor, layer: str | None, masks: Tensor | None, batch: int = 256
) -> Tensor:
    """Logits [N, len(images), classes] under each of N knockout masks [N, C] of `layer` (the plain
    model, N = 1, without masks)."""
    device = _device(model)
    n = 1 if masks is None else masks.shape[0]
    rows = max(1, batch // n)
    hooks = {} if masks is None else {layer: masks}
    parts = []
    with torch.no_grad(), knockout(model.module, hooks):
        for i in range(0, len(images), rows):
            x = to_model_input(images[i : i + rows].to(device), model.mean, model.std)
            logits = model.module(x.repeat(n, 1, 1, 1)).float().cpu()
            parts.append(logits.view(n, len(x), -1))
    return torch.cat(parts, dim=1)


def load_named_folder(folder: str | Path, size: int) -> tuple[list[str], Tensor]:
    """Every image of a folder (sorted, sub-folders included), centre-squared and resized, with its
    path relative to the folder."""
    root = Path(folder)
    files = list_images(root)
    return [str(p.relative_to(root)) for p in files], load_images(files, size)


def mask_effect(
    model: LoadedModel,
    cuts: LayerCuts,
    circuit: Circuit,
    group: NeuronGroupRecord,
    image: np.ndarray,
    *,
    drop_images: tuple[list[str], Tensor] | None = None,
    drop_folder: str | None = None,
    top: int = 8,
    random_sets: int = 10,
    seed: int = 0,
    batch: int = 256,
) -> MaskEffect:
    """Zero the group's member neurons at its layer: P(class) on `image` before / after (and with
    `random_sets` random same-size sets of the layer), and the `top` images of `drop_images`
    ((names, uint8 [N, 3, S, S]), e.g. from `load_named_folder`) whose class logit drops most."""
    width = cuts.width(group.layer)
    rng = np.random.default_rng(seed)
    sets = [list(group.members)] + [
        sorted(rng.choice(width, len(group.members), replace=False).tolist()) for _ in range(random_sets)
    ]
    masks = torch.ones(len(sets), width)
    for row, chosen in enumerate(sets):
        masks[row, chosen] = 0.0
    pixels = whole_image(image, model.input_size)
    plain = torch.softmax(masked_logits(model, pixels, None, None, batch)[0, 0], dim=0)
    masked = torch.softmax(masked_logits(model, pixels, group.layer, masks, batch)[:, 0], dim=1)
    c = circuit.class_index
    effect = MaskEffect(
        group_id=group.ng_id,
        layer=group.layer,
        members=list(group.members),
        probability=float(plain[c]),
        masked_probability=float(masked[0, c]),
        random_probability=float(masked[1:, c].mean()) if random_sets else None,
        predicted=int(plain.argmax()),
        predicted_name=_name(model, int(plain.argmax())),
        masked_predicted=int(masked[0].argmax()),
        masked_predicted_name=_name(model, int(masked[0].argmax())),
        random_sets=random_sets,
        drop_images=drop_folder,
    )
    if drop_images is not None:
        names, images = drop_images
        before = masked_logits(model, images, None, None, batch)[0, :, c]
        after = masked_logits(model, images, group.layer, masks[:1], batch)[0, :, c]
        drop = before - after
        order = torch.argsort(-drop, stable=True)[:top].tolist()
        effect.top_drops = [
            LogitDrop(names[i], float(before[i]), float(after[i]), float(drop[i])) for i in order
        ]
        effect.images_scanned = len(names)
        effect.mean_drop = float(drop.mean())
    return effect


# ---------------------------------------------------------------------------------- contact sheet


def _bare(axes) -> None:
    """No ticks on a row of thumbnails; cells left without an image are hidden."""
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        if not ax.images:
            ax.axis("off")


def _save(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def contact_sheet(
    result: DebugResult,
    image: np.ndarray,
    path: str | Path,
    *,
    groups: Sequence[GroupScore] | None = None,
    labels: dict[str, str] | None = None,
    per_group: int = 6,
) -> Path:
    """A PNG: one row per group (default: the top 5), the image with the boxes of the group's crops
    above the threshold, then those crops (best first, at most `per_group`, or the best crop when
    none passes) with their M."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    rows = list(groups if groups is not None else result.top(5))
    if not rows:
        raise ValueError("no groups to draw")
    cols = per_group + 1
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.9 * cols, 2.2 * len(rows)), squeeze=False)
    crops = result.crops.pixels.permute(0, 2, 3, 1).numpy()
    for r, g in enumerate(rows):
        shown = g.above[:per_group] or [g.best_crop]
        ax = axes[r][0]
        ax.imshow(image)
        for i in shown:
            x0, y0, x1, y1 = result.crops.boxes[i]
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.2, ec="red"))
        label = (labels or {}).get(g.group_id, "")
        ax.set_title(
            f"#{g.rank} {g.group_id.split('/', 1)[-1]} {label}\nmaxM {g.max_m:.2f} infl {g.influence:.3f}",
            fontsize=7,
        )
        for c in range(1, cols):
            ax = axes[r][c]
            if c - 1 < len(shown):
                i = shown[c - 1]
                ax.imshow(crops[i])
                passed = "" if i in g.above else " (<thr)"
                ax.set_title(f"M {g.m[i]:.2f}{passed}", fontsize=7)
        _bare(axes[r])
    title = (
        f"run {result.run_id}: predicted {result.predicted_name or result.predicted} "
        f"({result.predicted_probability:.2f}); P({result.class_name or result.class_index}) = "
        f"{result.class_probability:.2f}; crops with M >= {result.threshold}"
    )
    fig.suptitle(title, fontsize=8)
    return _save(fig, path)


def drop_sheet(effect: MaskEffect, images: tuple[list[str], Tensor], path: str | Path) -> Path:
    """A PNG of the images with the largest class-logit drops when the group is masked (Fig. 9)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, pixels = images
    index = {n: i for i, n in enumerate(names)}
    drops = effect.top_drops
    fig, axes = plt.subplots(1, max(1, len(drops)), figsize=(1.9 * max(1, len(drops)), 2.3), squeeze=False)
    for ax, d in zip(axes[0], drops, strict=False):
        ax.imshow(pixels[index[d.image]].permute(1, 2, 0).numpy())
        ax.set_title(f"{Path(d.image).name}\ndrop {d.drop:.2f}", fontsize=7)
    _bare(axes[0])
    fig.suptitle(
        f"masking {effect.group_id.split('/', 1)[-1]}: largest class-logit drops of {effect.images_scanned} "
        "images",
        fontsize=8,
    )
    return _save(fig, path)

"""The paper's fidelity checks of a circuit (§4, App. D.7): optimality, fidelity, IG-loss correlation
and k-stability. Every check returns a plain, JSON-serialisable dict.

A knockout zeroes channels of a layer's output. For the concept checks (a), (c), (d) the layer below a
target is computed once for all patches and only the segment above it is re-run, with many knockout
sets stacked along the batch dimension. For the accuracy check (b) the whole model runs under forward
hooks (`knockout`), again with several masks per pass.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from scipy import stats
from torch import Tensor, nn

from graphmodel.records import Circuit
from ingest.core.importance import pair_attributions, ranking_scores
from ingest.core.layers import LayerCuts
from ingest.core.models import LoadedModel
from ingest.core.patches import PatchSet, to_model_input
from ingest.core.selection import select_core
from ingest.core.tau import TauRule

TAUS = (4, 8, 16)


def _quiet(_layer: str) -> None:
    """Default progress callback: called with the layer's name after each unit of work."""


KS = (30, 50, 70, 90, 110, 150, 190)


# ---------------------------------------------------------------------------------------- knockout


def _neuron_dim(module: nn.Module, out: Tensor) -> int:
    """Where a module's output holds its neurons: dim 1 ([B, C, ...]), or last for transformer
    tokens [B, T, D] and channels-last maps [B, H, W, C] (as the layer cuts see them)."""
    from ingest.core.layers import channels_last

    if out.dim() == 3 or (out.dim() == 4 and channels_last(module)):
        return out.dim() - 1
    return 1


def _apply_mask(out: Tensor, mask: Tensor, dim: int = 1) -> Tensor:
    """out [N*B, C, ...] times mask [C] or [N, C]: mask n applies to the n-th block of B rows. The
    neurons are on `dim` (moved to 1 for the product and back)."""
    if dim != 1:
        return _apply_mask(out.movedim(dim, 1), mask).movedim(1, dim)
    mask = mask.to(out.device, out.dtype)
    tail = (1,) * (out.dim() - 2)
    if mask.dim() == 1:
        return out * mask.view(1, -1, *tail)
    n = mask.shape[0]
    if out.shape[0] % n:
        raise ValueError(f"a batch of {out.shape[0]} rows cannot be split among {n} knockout masks")
    grouped = out.reshape(n, out.shape[0] // n, *out.shape[1:])
    return (grouped * mask.view(n, 1, mask.shape[1], *tail)).reshape(out.shape)


@contextmanager
def knockout(module: nn.Module, masks: Mapping[str, Tensor]) -> Iterator[None]:
    """Inside the block, each named submodule's output is multiplied by its 0/1 mask.

    A mask is [C] (same for every row) or [N, C]: the batch is then N consecutive blocks of equal size
    and block n gets mask n, so N knockout sets run in one forward pass. A name `module@k` (a module
    that forward calls several times) masks only its k-th call of each forward pass. The neurons are
    where the layer cuts see them (tokens and channels-last maps: the last dim). Hooks are removed
    on exit.
    """
    from ingest.core.layers import split_use

    handles = []
    calls: dict[str, int] = {}

    def reset(_module, _args) -> None:
        calls.clear()

    def hook_for(name: str, use: int | None, mask: Tensor):
        def hook(sub: nn.Module, _inputs, out: Tensor):
            calls[name] = calls.get(name, 0) + 1
            if use is not None and calls[name] != use:
                return None
            return _apply_mask(out, mask, _neuron_dim(sub, out))

        return hook

    try:
        handles.append(module.register_forward_pre_hook(reset))
        for name, mask in masks.items():
            base, use = split_use(name)
            try:
                sub = module.get_submodule(base)
            except AttributeError:
                raise ValueError(f"cannot knock out {name!r}: the model has no such submodule") from None
            handles.append(sub.register_forward_hook(hook_for(name, use, mask)))
        yield
    finally:
        for h in handles:
            h.remove()


def channel_mask(width: int, channels: Sequence[int], *, keep: bool = False) -> Tensor:
    """0/1 mask over `width` channels: zero at `channels` (keep=False) or only `channels` kept."""
    mask = torch.full((width,), 0.0 if keep else 1.0)
    mask[list(channels)] = 1.0 if keep else 0.0
    return mask


# ------------------------------------------------------------------------------- concept knockouts


class _Layer:
    """One target layer: the maps of the layer below for every patch, and the segment above it."""

    def __init__(self, cuts: LayerCuts, patches: PatchSet, model: LoadedModel, name: str, batch: int):
        self.name, self.below = name, cuts.below(name)
        self.segment = cuts.segment(name)
        self.width = cuts.width(self.below)
        self.batch = batch
        device = next(model.module.parameters()).device
        prefix = cuts.prefix(self.below)
        with torch.no_grad():
            self.maps = torch.cat(
                [
                    prefix(to_model_input(patches.pixels[i : i + batch].to(device), model.mean, model.std))
                    for i in range(0, len(patches), batch)
                ]
            )

    def target_acts(self, target: int, masks: Tensor) -> Tensor:
        """Activation of `target` over every patch under each mask [N, C]: [N, P].

        Each segment call gets about `batch` rows: a chunk of masks times a chunk of patches.
        """
        n, p = masks.shape[0], self.maps.shape[0]
        out = torch.empty(n, p)
        rows = min(p, self.batch)
        per_call = max(1, self.batch // rows)
        with torch.no_grad():
            for m in range(0, n, per_call):
                chunk = masks[m : m + per_call]
                for i in range(0, p, rows):
                    maps = self.maps[i : i + rows]
                    stacked = _apply_mask(maps.repeat(len(chunk), *([1] * (maps.dim() - 1))), chunk)
                    y = self.segment(stacked)
                    y = y.flatten(2).mean(2) if y.dim() > 2 else y
                    out[m : m + len(chunk), i : i + len(maps)] = (
                        y[:, target].reshape(len(chunk), len(maps)).float().cpu()
                    )
        return out

    def attributions(self, target: int, top: np.ndarray, steps: int, method: str) -> Tensor:
        """t(a, s, v) for the patches `top` of target a: [len(top), C]."""
        return pair_attributions(
            self.segment,
            self.maps,
            torch.full((len(top),), target, dtype=torch.long),
            torch.from_numpy(np.asarray(top, dtype=np.int64)),
            steps=steps,
            method=method,
        )


def concept_losses(acts: Tensor, concept: np.ndarray, k: int) -> np.ndarray:
    """L(S, a) = |V_a^{knock S} ∩ V_a| / |V_a| for each row of knocked activations [N, P]."""
    knocked = torch.topk(acts, min(k, acts.shape[1]), dim=1).indices.numpy()
    wanted = set(int(i) for i in concept)
    return np.array([len(wanted.intersection(row.tolist())) / len(wanted) for row in knocked])


def _random_sets(rng: np.random.Generator, width: int, size: int, n: int) -> np.ndarray:
    return np.stack([rng.choice(width, size, replace=False) for _ in range(n)])


def _knock_masks(width: int, sets: np.ndarray) -> Tensor:
    masks = torch.ones(len(sets), width)
    masks[np.repeat(np.arange(len(sets)), sets.shape[1]), sets.reshape(-1)] = 0.0
    return masks


def _mean_ci(values: np.ndarray, level: float = 0.99) -> dict:
    mean = float(values.mean())
    if len(values) < 2:
        return {"mean": mean, "ci_low": mean, "ci_high": mean, "n": len(values)}
    half = float(stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n": len(values)}


def _targets(circuit: Circuit, layer: str, limit: int | None, rng: np.random.Generator) -> list:
    neurons = [n for n in circuit.neurons_at(layer) if n.children]
    if limit is not None and len(neurons) > limit:
        neurons = [neurons[i] for i in sorted(rng.choice(len(neurons), limit, replace=False))]
    return neurons


def progress_total(circuit: Circuit, check: str, *, max_targets: int | None, taus: Sequence[int] = ()) -> int:
    """How many times `check` calls its progress callback: once per target neuron for optimality,
    correlation and k-stability, once per layer and τ for fidelity; so a bar can show a total and an ETA."""
    if check == "fidelity":
        return len(taus) * len(circuit.layer_names()[1:])
    total = 0
    for name in circuit.layer_names()[:-1]:
        n = sum(1 for neuron in circuit.neurons_at(name) if neuron.children)
        total += n if max_targets is None else min(n, max_targets)
    return total


def _concept_rows(circuit: Circuit, patches: PatchSet, neuron) -> np.ndarray:
    index = {r.patch_id: i for i, r in enumerate(patches.records)}
    missing = [p for p in neuron.concept if p not in index]
    if missing:
        raise ValueError(
            f"{len(missing)} concept patches of {neuron.layer}/{neuron.index} are not in the patch set; "
            f"evaluate with the patch set the circuit was extracted from"
        )
    return np.array([index[p] for p in neuron.concept])


def optimality(
    model: LoadedModel,
    cuts: LayerCuts,
    patches: PatchSet,
    circuit: Circuit,
    *,
    random_sets: int = 100,
    max_targets: int | None = 5,
    batch: int = 2048,
    seed: int = 0,
    progress: Callable[[str], None] = _quiet,
) -> dict:
    """Check (a): loss of each core set S_a vs `random_sets` random same-size sets, per layer.

    `difference` is random − core (positive: the core set changes the concept more); `random_better`
    is the share of random sets with a strictly smaller loss than S_a.
    """
    rng = np.random.default_rng(seed)
    result = {}
    for name in circuit.layer_names()[:-1]:
        layer = _Layer(cuts, patches, model, name, batch)
        diffs, better, core_losses = [], [], []
        for neuron in _targets(circuit, name, max_targets, rng):
            concept = _concept_rows(circuit, patches, neuron)
            sets = np.concatenate(
                [
                    np.array([neuron.children]),
                    _random_sets(rng, layer.width, len(neuron.children), random_sets),
                ]
            )
            losses = concept_losses(
                layer.target_acts(neuron.index, _knock_masks(layer.width, sets)), concept, len(concept)
            )
            core_losses.append(losses[0])
            progress(name)
            diffs.extend(losses[1:] - losses[0])
            better.extend(losses[1:] < losses[0])
        diffs_arr = np.array(diffs)
        result[name] = {
            "lower_layer": layer.below,
            "targets": len(core_losses),
            "core_loss": float(np.mean(core_losses)),
            "difference": _mean_ci(diffs_arr),
            "random_better": float(np.mean(better)),
        }
    return result


def _ig_scores(
    layer: _Layer, acts: Tensor, target: int, k_max: int, steps: int, method: str
) -> tuple[np.ndarray, Tensor]:
    top = torch.argsort(acts, descending=True, stable=True)[:k_max].numpy()
    return top, layer.attributions(target, top, steps, method)


def correlation(
    model: LoadedModel,
    cuts: LayerCuts,
    patches: PatchSet,
    circuit: Circuit,
    *,
    sizes: Sequence[int] = (1, 5, 10, 20, 50),
    sets_per_size: int = 50,
    max_single: int | None = None,
    max_targets: int | None = 5,
    seed: int = 0,
    steps: int = 50,
    method: str = "riemann_right",
    batch: int = 2048,
    progress: Callable[[str], None] = _quiet,
) -> dict:
    """Check (c): Pearson correlation between Σ_{s∈S}|T(a, s, V_a)| and the concept change 1 − L(S, a)
    over random sets S of each size (size 1: every neuron of the layer below, or `max_single` of them
    drawn at random when the layer is wider: each costs a pass over the whole patch set), averaged over
    targets.

    1 − L is used so that a positive correlation means what the paper's Fig. 6 shows: sets with more
    importance change the concept more. (Equivalently, −corr(L, Σ|T|).)
    """
    rng = np.random.default_rng(seed)
    k = int(circuit.params.get("k", 50))
    result = {}
    for name in circuit.layer_names()[:-1]:
        layer = _Layer(cuts, patches, model, name, batch)
        per_size: dict[int, list[float]] = {m: [] for m in sizes}
        spearman: dict[int, list[float]] = {m: [] for m in sizes}
        counts: dict[int, int] = {}
        for neuron in _targets(circuit, name, max_targets, rng):
            concept = _concept_rows(circuit, patches, neuron)
            att = layer.attributions(neuron.index, concept, steps, method)
            importance = att.sum(0).abs().numpy()
            for m in sizes:
                if m > layer.width:
                    continue
                if m > 1:
                    sets = _random_sets(rng, layer.width, m, sets_per_size)
                elif max_single is None or max_single >= layer.width:
                    sets = np.arange(layer.width)[:, None]
                else:
                    sets = np.sort(rng.choice(layer.width, max_single, replace=False))[:, None]
                counts[m] = len(sets)
                losses = concept_losses(
                    layer.target_acts(neuron.index, _knock_masks(layer.width, sets)), concept, k
                )
                change, score = 1.0 - losses, importance[sets].sum(1)
                if change.std() > 0 and score.std() > 0:
                    per_size[m].append(float(np.corrcoef(score, change)[0, 1]))
                    spearman[m].append(float(stats.spearmanr(score, change).statistic))
            progress(name)
        result[name] = {
            "lower_layer": layer.below,
            "by_size": {
                str(m): {
                    "pearson": float(np.mean(v)) if v else None,
                    "spearman": float(np.mean(spearman[m])) if v else None,
                    "targets": len(v),
                    "per_target": [round(x, 4) for x in v],
                    "sets": counts.get(m, 0),
                }
                for m, v in per_size.items()
            },
        }
    return result


def k_stability(
    model: LoadedModel,
    cuts: LayerCuts,
    patches: PatchSet,
    circuit: Circuit,
    *,
    ks: Sequence[int] = KS,
    base_k: int = 50,
    tau: int = 16,
    max_targets: int | None = 5,
    steps: int = 50,
    method: str = "riemann_right",
    batch: int = 2048,
    seed: int = 0,
    progress: Callable[[str], None] = _quiet,
) -> dict:
    """Check (d): |S_a(k) ∩ S_a(base_k)| for each k (paper Table 5), averaged over targets per layer.

    V_a(k) are nested (the top-k patches), so the pair attributions of the largest k serve every k:
    T(k) is the sum of the first k rows. k larger than the patch set is skipped.
    """
    rng = np.random.default_rng(seed)
    usable = sorted({k for k in (*ks, base_k) if k <= len(patches)})
    if base_k not in usable:
        raise ValueError(
            f"base k={base_k} exceeds the {len(patches)} patches; use more images or a smaller k"
        )
    ranking = circuit.params.get("ranking", "paper")
    rule = TauRule("count", tau)
    result = {}
    for name in circuit.layer_names()[:-1]:
        layer = _Layer(cuts, patches, model, name, batch)
        overlaps: dict[int, list[int]] = {k: [] for k in usable}
        for neuron in _targets(circuit, name, max_targets, rng):
            acts = layer.target_acts(neuron.index, torch.ones(1, layer.width))[0]
            _, att = _ig_scores(layer, acts, neuron.index, usable[-1], steps, method)
            chosen = {k: set(select_core(ranking_scores(att[:k], ranking), rule)[0]) for k in usable}
            for k in usable:
                overlaps[k].append(len(chosen[k] & chosen[base_k]))
            progress(name)
        result[name] = {
            "lower_layer": layer.below,
            "tau": tau,
            "overlap": {str(k): float(np.mean(v)) for k, v in overlaps.items()},
            "skipped_k": [k for k in ks if k not in usable],
        }
    return result


# -------------------------------------------------------------------------------------- fidelity


def core_neurons(circuit: Circuit, layer: str, tau: int) -> list[int]:
    """The circuit's neurons at `layer`, top-τ by how many parents chose them (ties: lower index)."""
    upper = circuit.layer_names()[circuit.layer_names().index(layer) - 1]
    counts = Counter(c for n in circuit.neurons_at(upper) for c in n.children)
    return sorted(counts, key=lambda c: (-counts[c], c))[:tau]


def _accuracy(model: LoadedModel, x: Tensor, labels: Tensor, masks: dict[str, Tensor], batch: int) -> list:
    """Accuracy under each of the N stacked knockout sets (every mask is [N, C])."""
    n = next(iter(masks.values())).shape[0]
    correct = torch.zeros(n)
    rows = max(1, batch // n)
    with torch.no_grad(), knockout(model.module, masks):
        for i in range(0, len(x), rows):
            xb, yb = x[i : i + rows], labels[i : i + rows]
            pred = model.module(xb.repeat(n, 1, 1, 1)).argmax(1).cpu().view(n, len(xb))
            correct += (pred == yb.view(1, -1)).sum(1).float()
    return (correct / len(x)).tolist()


def fidelity(
    model: LoadedModel,
    cuts: LayerCuts,
    circuit: Circuit,
    images: Tensor,
    labels: Tensor,
    *,
    taus: Sequence[int] = TAUS,
    random_sets: int = 10,
    multi_layer: bool = True,
    batch: int = 2048,
    seed: int = 0,
    progress: Callable[[str], None] = _quiet,
) -> dict:
    """Check (b): accuracy relative to the unmasked model when masking or retaining the core neurons
    of a layer vs as many random neurons, on `images` (uint8 [N, 3, S, S], held out) with `labels`.

    Reported on the class's own images and on a balanced set (as many other-class images as class
    images). `single` touches one layer; `multi` applies the same operation at every layer from the
    classifier down to that layer (each layer its own core / random neurons).
    """
    rng = np.random.default_rng(seed)
    device = next(model.module.parameters()).device
    c = circuit.class_index
    own = torch.nonzero(labels == c).flatten()
    other = torch.nonzero(labels != c).flatten()
    if len(own) == 0 or len(other) == 0:
        raise ValueError(f"fidelity needs held-out images of class {c} and of other classes")
    other = other[torch.from_numpy(rng.permutation(len(other))[: len(own)])]
    subsets = {"class": own, "balanced": torch.cat([own, other])}
    x_all = to_model_input(images.to(device), model.mean, model.std)
    names = circuit.layer_names()[1:]
    widths = {n: cuts.width(n) for n in names}
    result: dict = {"layers": names, "by_tau": {}}
    base = {}
    for label, idx in subsets.items():
        base[label] = _accuracy(
            model, x_all[idx], labels[idx], {names[0]: torch.ones(1, widths[names[0]])}, batch
        )[0]
    result["unmasked_accuracy"] = base
    for tau in taus:
        per_layer = {}
        cores = {n: core_neurons(circuit, n, tau) for n in names}
        rand = {n: _random_sets(rng, widths[n], min(tau, widths[n]), random_sets) for n in names}
        for depth, name in enumerate(names):
            scopes = {"single": [name]}
            if multi_layer:
                scopes["multi"] = names[: depth + 1]
            entry = {"core_size": len(cores[name]), "width": widths[name]}
            for scope, touched in scopes.items():
                for op, keep in (("mask", False), ("retain", True)):
                    masks = {}
                    for n in touched:
                        core = channel_mask(widths[n], cores[n], keep=keep)
                        randoms = torch.stack([channel_mask(widths[n], s, keep=keep) for s in rand[n]])
                        masks[n] = torch.cat([core[None], randoms])
                    for label, idx in subsets.items():
                        acc = np.array(_accuracy(model, x_all[idx], labels[idx], masks, batch))
                        rel = acc / base[label] if base[label] > 0 else acc * 0
                        entry[f"{scope}/{op}/{label}"] = {
                            "core": float(rel[0]),
                            "random": float(rel[1:].mean()),
                            "random_std": float(rel[1:].std()),
                        }
            per_layer[name] = entry
            progress(name)
        result["by_tau"][str(tau)] = per_layer
    return result

"""The NeurFlow circuit of one class, built layer by layer from the logit down (paper Alg. 3, §3.5).

`iter_circuit` yields one `LayerStep` per listed layer as soon as that layer is finished, so a caller
can stream it (the graph writer keeps finished layers when a run crashes); `extract_circuit` collects
the steps into a `Circuit`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from graphmodel.records import (
    Circuit,
    CoreEdgeRecord,
    HyperedgeRecord,
    LayerRecord,
    LayerStep,
    NeuronGroupRecord,
    NeuronRecord,
    SemanticGroupRecord,
)
from ingest.core.clustering import ward_silhouette
from ingest.core.importance import pair_attributions, ranking_scores
from ingest.core.layers import LayerCuts
from ingest.core.models import LoadedModel
from ingest.core.neuron_groups import group_edges, neuron_groups
from ingest.core.patches import DEFAULT_SCALES, PatchSet, build_patch_set, to_model_input
from ingest.core.purity import purity_rows
from ingest.core.selection import select_core
from ingest.core.tau import TauRule
from ingest.core.version import code_version

RANKINGS = ("paper", "reference")


class CircuitInputError(ValueError):
    """The model or the options cannot give a meaningful circuit (non-finite values, a top layer that
    is not the output, τ wider than a layer); the message names the layer and what to do."""


def _check_finite(values: np.ndarray, what: str, layer: str, axis_name: str = "neurons") -> None:
    """Stop at the first NaN or infinity: one would spread into every weight of the circuit."""
    bad = ~np.isfinite(values)
    if not bad.any():
        return
    columns = np.flatnonzero(bad.reshape(len(values), -1).any(0)) if values.ndim > 1 else np.array([])
    shown = ", ".join(str(i) for i in columns[:10]) + (" ..." if len(columns) > 10 else "")
    where = f" at {axis_name} {shown}" if len(columns) else ""
    raise CircuitInputError(
        f"the {what} of layer {layer} are not finite (NaN or infinity){where}: {int(bad.sum())} of "
        f"{bad.size} values. The model computes NaN/inf on these images; fix the model or its weights "
        "(nothing was stored as complete)"
    )


@dataclass
class ExtractConfig:
    layers: list[str]
    tau: TauRule = field(default_factory=lambda: TauRule("count", 16))
    k: int = 50
    steps: int = 50
    quadrature: str = "riemann_right"
    ranking: str = "paper"  # "paper": |sum_v t|; "reference": mean_v |t|
    scales: tuple[float, ...] = DEFAULT_SCALES
    max_images: int | None = 50
    max_semantic_groups: int = 5
    max_neuron_groups: int = 8
    batch_size: int = 64
    memory_mb: float = 2048.0
    seed: int = 0
    precision: str = "fp32"  # "bf16"/"fp16": the integrated-gradient pass under autocast

    def as_params(self) -> dict[str, Any]:
        # precision is recorded only when not fp32, so that earlier runs keep their ids
        extra = {"precision": self.precision} if self.precision != "fp32" else {}
        return extra | {
            "layers": list(self.layers),
            "tau": str(self.tau),
            "k": self.k,
            "steps": self.steps,
            "quadrature": self.quadrature,
            "ranking": self.ranking,
            "crops": list(self.scales),
            "max_images": self.max_images,
            "max_semantic_groups": self.max_semantic_groups,
            "max_neuron_groups": self.max_neuron_groups,
            "seed": self.seed,
        }


ProgressFactory = Callable[[str, int], Callable[[int], None]]


def _no_progress(_desc: str, _total: int) -> Callable[[int], None]:
    return lambda _n: None


def run_id_for(model: LoadedModel, class_index: int, patches: PatchSet, params: dict) -> str:
    """Same model, class, images and parameters -> same run id, so re-running is idempotent."""
    h = hashlib.sha256()
    h.update(json.dumps([model.model_id, class_index, params], sort_keys=True).encode())
    for record in patches.records:
        h.update(record.patch_id.encode())
    return h.hexdigest()[:16]


def _batched(fn: Callable[[Tensor], Tensor], n: int, batch: int) -> Iterator[tuple[slice, Tensor]]:
    for start in range(0, n, batch):
        sl = slice(start, min(start + batch, n))
        yield sl, fn(sl)


class _Context:
    """What every layer needs: the model, its cuts, the patches and their channel means."""

    def __init__(self, model: LoadedModel, cuts: LayerCuts, patches: PatchSet, cfg: ExtractConfig):
        self.model, self.cuts, self.patches, self.cfg = model, cuts, patches, cfg
        self.device = next(model.module.parameters()).device
        self.means: dict[str, np.ndarray] = {}
        with torch.no_grad():
            for sl, acts in _batched(
                lambda s: cuts.activations(self.inputs(s), means=True, lowest_input=True),
                len(patches),
                cfg.batch_size,
            ):
                for name, value in acts.items():
                    buf = self.means.setdefault(
                        name, np.zeros((len(patches), value.shape[1]), dtype=np.float32)
                    )
                    buf[sl] = value.float().cpu().numpy()
        for name, values in self.means.items():
            _check_finite(values, "activations", name)
        self.rep_key = cuts.representative_keys()

    def inputs(self, index: slice | Tensor) -> Tensor:
        pixels = self.patches.pixels[index].to(self.device)
        return to_model_input(pixels, self.model.mean, self.model.std)

    def lower_maps(self, layer: str) -> Callable[[Tensor], Tensor]:
        prefix = self.cuts.prefix(layer)

        def fetch(index: Tensor) -> Tensor:
            with torch.no_grad():
                return prefix(self.inputs(index.cpu()))

        return fetch


def iter_circuit(
    model: LoadedModel,
    cuts: LayerCuts,
    patches: PatchSet,
    class_index: int,
    cfg: ExtractConfig,
    run_id: str,
    progress: ProgressFactory = _no_progress,
    done: Sequence[LayerStep] = (),
) -> Iterator[LayerStep]:
    """Yield the layers from the top down; `done` holds layers already finished by an earlier
    (interrupted) run of the same run id, which are not recomputed: work resumes below them."""
    torch.manual_seed(cfg.seed)
    ctx = _Context(model, cuts, patches, cfg)
    pids = [r.patch_id for r in patches.records]
    targets = [class_index]
    upper_groups: list[NeuronGroupRecord] = []
    upper_hyperedges: list[HyperedgeRecord] = []
    if done:
        if [step.layer.name for step in done] != cuts.layers[: len(done)]:
            raise ValueError("finished layers do not match the top of the layer list")
        last = done[-1]
        targets = sorted({c for n in last.neurons for c in n.children})
        upper_groups, upper_hyperedges = last.neuron_groups, last.hyperedges
    for depth, name in enumerate(cuts.layers):
        if depth < len(done):
            continue
        started = time.perf_counter()
        acts = ctx.means[name]
        rep = ctx.means[ctx.rep_key[name]]
        below = cuts.below(name)
        neurons, sgs, members_of = [], [], []
        concepts: dict[int, np.ndarray] = {}
        for a in targets:
            column = acts[:, a]
            top = np.argsort(-column, kind="stable")[: cfg.k]
            concepts[a] = top
            neurons.append(
                NeuronRecord(
                    layer=name,
                    index=int(a),
                    concept=[pids[i] for i in top],
                    activations=[float(column[i]) for i in top],
                    max_activation=float(column.max()),
                )
            )
            labels, sil = ward_silhouette(rep[top], 2, cfg.max_semantic_groups)
            members = []
            for j in range(int(labels.max()) + 1):
                rows = np.flatnonzero(labels == j)
                members.append(rows)
                sgs.append(
                    SemanticGroupRecord(
                        sg_id=f"{run_id}/{name}/{a}/{j}",
                        layer=name,
                        neuron=int(a),
                        j=j,
                        patch_ids=[pids[top[r]] for r in rows],
                        activations=[float(column[top[r]]) for r in rows],
                        centroid=[float(v) for v in rep[top[rows]].mean(0)],
                        silhouette=sil,
                    )
                )
            members_of.append(members)

        hyperedges: list[HyperedgeRecord] = []
        core_edges: list[CoreEdgeRecord] = []
        pairs = 0
        next_targets: list[int] = []
        if below is not None:
            pair_targets = np.repeat(np.asarray(targets), [len(concepts[a]) for a in targets])
            pair_patches = np.concatenate([concepts[a] for a in targets])
            pairs = len(pair_targets)
            tick = progress(f"{name} ← {below}", pairs)
            att = pair_attributions(
                cuts.segment(name),
                ctx.lower_maps(below),
                torch.from_numpy(pair_targets),
                torch.from_numpy(pair_patches),
                steps=cfg.steps,
                method=cfg.quadrature,
                memory_mb=cfg.memory_mb,
                progress=tick,
                precision=cfg.precision,
            )
            _check_finite(att.numpy(), f"importances T (from {below})", name, f"neurons of {below}")
            offset = 0
            chosen: set[int] = set()
            sg_iter = iter(sgs)
            for neuron, a, members in zip(neurons, targets, members_of):
                rows = att[offset : offset + len(concepts[a])]
                offset += len(concepts[a])
                total = rows.sum(0)
                scores = ranking_scores(rows, cfg.ranking)
                core, rule = select_core(scores, cfg.tau)
                neuron.selection_rule = rule
                neuron.children = core
                chosen.update(core)
                denom = float(total[core].abs().sum()) or 1.0
                for rank, s in enumerate(core, start=1):
                    core_edges.append(
                        CoreEdgeRecord(
                            child_layer=below,
                            child=s,
                            parent_layer=name,
                            parent=int(a),
                            rank=rank,
                            weight=float(total[s]) / denom,
                            score=float(scores[s]),
                        )
                    )
                for group_rows in members:
                    sg = next(sg_iter)
                    t_j = rows[group_rows].sum(0)
                    norm = float(t_j[core].abs().sum()) or 1.0
                    for s in core:
                        hyperedges.append(
                            HyperedgeRecord(below, s, sg.sg_id, float(t_j[s]) / norm, float(t_j[s]))
                        )
            next_targets = sorted(chosen)

        groups = neuron_groups(name, sgs, run_id, cfg.max_neuron_groups)
        edges = group_edges(groups, upper_groups, upper_hyperedges)
        yield LayerStep(
            layer=LayerRecord(name, depth, cuts.width(name), layer_kind(cuts, name)),
            neurons=neurons,
            semantic_groups=sgs,
            hyperedges=hyperedges,
            core_edges=core_edges,
            neuron_groups=groups,
            group_edges=edges,
            seconds=time.perf_counter() - started,
            pairs=pairs,
        )
        upper_groups, upper_hyperedges = groups, hyperedges
        targets = next_targets
        if not targets and below is not None:
            raise RuntimeError(f"no core concept neurons were selected below {name}")


def layer_kind(cuts: LayerCuts, name: str) -> str:
    """ "conv" for [C, H, W] maps, "tokens" for a transformer's [D, T], "linear" for [C] units."""
    return {3: "conv", 2: "tokens"}.get(len(cuts.shape(name)), "linear")


@dataclass
class PreparedRun:
    """A run before any layer is computed: its cuts, patch set and the circuit shell (with run id)."""

    cuts: LayerCuts
    patches: PatchSet
    circuit: Circuit


def prepare_run(
    model: LoadedModel,
    images: str | Path,
    class_index: int,
    cfg: ExtractConfig,
    *,
    files: Sequence[Path] | None = None,
    predictions: Mapping[str, int] | None = None,
) -> PreparedRun:
    """Validate the inputs, build the patch set and fix the run id (the same inputs give the same id).
    `files` and `predictions` are handed to `build_patch_set` (a campaign's pool and shared pass)."""
    if not 0 <= class_index < model.num_classes:
        raise ValueError(
            f"class index {class_index} is out of range: the model has {model.num_classes} classes "
            f"(0..{model.num_classes - 1})"
        )
    cuts = LayerCuts(model.module, cfg.layers, model.input_size)
    _check_top_is_output(model, cuts)
    _check_tau_fits(cuts, cfg.tau)
    patches = build_patch_set(
        images,
        class_index,
        classifier(model, cfg.batch_size),
        model.input_size,
        scales=cfg.scales,
        max_images=cfg.max_images,
        class_label=_class_name(model, class_index),
        files=files,
        predictions=predictions,
    )
    params = {**cfg.as_params(), "code_version": code_version()}
    circuit = Circuit(
        run_id=run_id_for(model, class_index, patches, params),
        model_id=model.model_id,
        arch=model.arch,
        weights_sha256=model.weights_sha256,
        input_size=model.input_size,
        num_classes=model.num_classes,
        class_index=class_index,
        class_name=_class_name(model, class_index),
        params=params,
        patches=patches.records,
        source={"model": model.spec, "weights": model.weights_path, "images": str(Path(images).resolve())},
    )
    return PreparedRun(cuts, patches, circuit)


def _check_top_is_output(model: LoadedModel, cuts: LayerCuts) -> None:
    """The circuit starts from the class logit: the first listed layer must compute the model's
    output, or a channel of some inner layer would be explained as if it were the class."""
    device = next(model.module.parameters()).device
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, model.input_size, model.input_size, generator=generator).to(device)
    top = cuts.layers[0]
    with torch.no_grad():
        out = model.module(x)
        ours = cuts.prefix(top)(x)
    out = out[0] if isinstance(out, tuple | list) else getattr(out, "logits", out)
    same = (
        isinstance(out, Tensor)
        and out.shape == ours.shape
        and torch.allclose(out.float(), ours.float(), rtol=1e-4, atol=1e-5, equal_nan=True)
    )
    if not same:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise CircuitInputError(
            f"the first listed layer {top!r} (output {tuple(ours.shape)}) is not the model's output "
            f"({shape}); --layers must start with the layer that computes the class logits "
            "(see `neurflow layers MODEL`: the default list starts with it)"
        )


def _check_tau_fits(cuts: LayerCuts, tau: TauRule) -> None:
    """A count τ larger than a layer would silently take the whole layer (and cost the most)."""
    if tau.kind != "count":
        return
    for name in cuts.layers[1:]:
        width = cuts.width(name)
        if tau.value > width:
            raise CircuitInputError(
                f"--tau {int(tau.value)} is larger than layer {name} ({width} neurons): it would take every "
                f"neuron of the layer; give a count up to {width}, or a fraction such as 5%"
            )


def finish(circuit: Circuit, patches: PatchSet, model: LoadedModel, seconds: float, timings: dict) -> None:
    """Fill the run's statistics, and the purity tables when the images ship ground truth."""
    circuit.stats = {
        "images_total": patches.images_total,
        "images_used": len(patches.images_used),
        "patches": len(patches),
        "seconds": round(seconds, 3),
        "layers": timings,
        "device": str(next(model.module.parameters()).device),
    }
    if any(r.concepts for r in patches.records):
        circuit.stats["purity"] = purity_rows(circuit)


def extract_circuit(
    model: LoadedModel,
    images: str | Path,
    class_index: int,
    cfg: ExtractConfig,
    progress: ProgressFactory = _no_progress,
    on_layer: Callable[[LayerStep], None] | None = None,
    on_prepared: Callable[[Circuit], None] | None = None,
) -> tuple[Circuit, PatchSet]:
    """Run the whole method on a folder of images; return the circuit and its patch set.
    `on_prepared` sees the circuit shell (run id fixed) before any layer is computed."""
    started = time.perf_counter()
    run = prepare_run(model, images, class_index, cfg)
    circuit = run.circuit
    if on_prepared is not None:
        on_prepared(circuit)
    timings = {}
    for step in iter_circuit(model, run.cuts, run.patches, class_index, cfg, circuit.run_id, progress):
        circuit.add_step(step)
        timings[step.layer.name] = {"seconds": round(step.seconds, 3), "pairs": step.pairs}
        if on_layer is not None:
            on_layer(step)
    finish(circuit, run.patches, model, time.perf_counter() - started, timings)
    return circuit, run.patches


def _class_name(model: LoadedModel, index: int) -> str | None:
    names = model.class_names
    return names[index] if names and index < len(names) else None


def classifier(model: LoadedModel, batch: int) -> Callable[[Tensor], Tensor]:
    """uint8 pixels [B, 3, S, S] -> predicted class indices [B], refusing non-finite outputs."""
    device = next(model.module.parameters()).device

    def classify(pixels: Tensor) -> Tensor:
        with torch.no_grad():
            out = [
                model.module(to_model_input(pixels[i : i + batch].to(device), model.mean, model.std))
                for i in range(0, len(pixels), batch)
            ]
        logits = torch.cat(out)
        bad = ~torch.isfinite(logits).all(1)
        if bad.any():
            raise CircuitInputError(
                f"the model's output is not finite (NaN or infinity) on {int(bad.sum())} of {len(logits)} "
                "images, so its predictions mean nothing; fix the model or its weights"
            )
        return logits.argmax(1).cpu()

    return classify

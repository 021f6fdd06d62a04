"""Concept-bank labels (TCAV / NetDissect tradition): a group is labelled with the concepts whose
exemplars its metric M separates from exemplars without the concept.

Bank layout::

    BANK/<concept>/*.png              positives: crops that show the concept
    BANK/_negatives/<concept>/*.png   negatives of that concept: crops of the same kind without it
    BANK/_negatives/*.png             negatives shared by every concept (used when a concept has
                                      no folder of its own)
    BANK/_without/<concept>/NAME.png  optional: positive NAME.png with the concept removed (paired)
    NAME.concepts.npz                 optional, beside any image: one ground-truth mask per concept

Folders whose name starts with "_" are never concepts.

What a positive is compared with (`bank_evidence`): its paired image without the concept when the
bank has one, else negatives matched to the positives on every other concept the sidecars know,
else the bank's negatives as they are.

The score of a group on a concept is the ROC AUC of its score over the concept's positives against
those negatives (for pairs: the share of pairs whose positive scores higher): 1.0 when every positive
scores above, 0.5 for chance. Concepts scoring at least `min_score` are ranked by effect size (how far
the concept moves the group, over the group's spread on the bank). Each label carries its evidence,
the numbers compared, the effect and a 95 % interval. Contrast is the point: the raw response to
isolated exemplars would label a group with whatever excites it most strongly (a trial labelled pink
flowers "dots"), not with what tells the concept apart.

A class's circuit is best labelled with an in-class bank (crops of that class's own scenes): a bank
of every class's crops names concepts the class never shows ("dots" and "shell" on bee groups,
"wheels" on kite groups) because a group responds to them elsewhere.

A group is neurons *and* a region of the representative space (its patches' channel means of the
layer below, Eq. 3): the same neuron can sit in two groups, one per meaning. So a group's score on an
image is its metric times the soft assignment of the image to the group among its siblings:

- Neuron group G at layer L: M over its core members (≤ 5 nearest the centre, App. F; each member's
  activation divided by its maximum over the run's patch set D, `NeuronRecord.max_activation`),
  times softmax over L's neuron groups of cos(r(v), centroid_G) / T.
- Semantic group j of neuron a: a's own normalised activation, times the softmax over a's semantic
  groups of cos(r(v), centroid_j) / T.

r(v) is the image's representative vector and T = 0.1. Without the assignment, two groups that share
core neurons would get the same labels whatever their patches show.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from graphmodel.records import Circuit, LabelRecord
from ingest.core.circuit import ProgressFactory
from ingest.core.layers import LayerCuts
from ingest.core.metric import circuit_metric, metric_neurons
from ingest.core.models import LoadedModel
from ingest.core.patches import IMAGE_SUFFIXES, load_images, to_model_input
from ingest.labelling.bank_evidence import Evidence, concept_evidence, effect_size, score

METHOD = "concept_bank"
NEGATIVES = "_negatives"
WITHOUT = "_without"
SIDECAR = ".concepts.npz"
MIN_EXEMPLARS = 5
SOFT_ASSIGN_TEMPERATURE = 0.1


class ConceptBankError(ValueError):
    pass


@dataclass
class ConceptBank:
    pixels: Tensor  # uint8 [N, 3, S, S], every image resized to the model's input size
    files: list[str]  # relative to the bank folder
    positives: dict[str, np.ndarray]  # concept -> row indices into pixels
    negatives: dict[str, np.ndarray]
    # concept -> for each positive, the row of its image without the concept (-1: none)
    paired: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    coverage: np.ndarray | None = None  # [N, K] share of pixels of each known concept (sidecars)
    known: list[str] = dataclasses.field(default_factory=list)  # the K concepts of `coverage`
    root: Path | None = None
    _evidence: dict[str, Evidence] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def concepts(self) -> list[str]:
        return sorted(self.positives)

    def evidence(self, concept: str) -> Evidence:
        """What `concept`'s positives are compared with (`bank_evidence`), computed once."""
        if concept not in self._evidence:
            self._evidence[concept] = concept_evidence(
                concept,
                self.positives[concept],
                self.negatives[concept],
                self.paired.get(concept),
                self.coverage,
                self.known,
            )
        return self._evidence[concept]

    def sidecar(self, row: int) -> Path:
        """The ground-truth sidecar path of image `row` (it may not exist)."""
        path = self.root / self.files[row] if self.root else Path(self.files[row])
        return path.with_name(path.stem + SIDECAR)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_concept_bank(folder: str | Path, size: int, *, min_exemplars: int = MIN_EXEMPLARS) -> ConceptBank:
    """Read a bank (layout in the module docstring); images are resized to `size` x `size`."""
    root = Path(folder)
    if not root.is_dir():
        raise ConceptBankError(f"concept bank {str(root)!r} is not a directory")
    concept_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))
    if not concept_dirs:
        raise ConceptBankError(
            f"concept bank {root} has no concept folders: expected {root}/<concept>/*.png with "
            f"positives and {root}/{NEGATIVES}/ with negatives"
        )
    neg_root = root / NEGATIVES
    shared = _images_in(neg_root) if neg_root.is_dir() else []
    files: list[Path] = []
    index: dict[Path, int] = {}

    def rows(paths: list[Path]) -> np.ndarray:
        for p in paths:
            if p not in index:
                index[p] = len(files)
                files.append(p)
        return np.array([index[p] for p in paths], dtype=np.int64)

    positives, negatives, paired = {}, {}, {}
    problems = []
    for d in concept_dirs:
        pos = _images_in(d)
        own = neg_root / d.name
        neg = _images_in(own) if own.is_dir() else shared
        without = root / WITHOUT / d.name
        twins = {p.name: p for p in _images_in(without)} if without.is_dir() else {}
        if len(pos) < min_exemplars or (len(neg) < min_exemplars and len(twins) < min_exemplars):
            problems.append(f"{d.name}: {len(pos)} positives, {len(neg)} negatives")
            continue
        positives[d.name], negatives[d.name] = rows(pos), rows(neg)
        if sum(p.name in twins for p in pos) >= min_exemplars:
            paired[d.name] = np.array(
                [rows([twins[p.name]])[0] if p.name in twins else -1 for p in pos], dtype=np.int64
            )
    if problems:
        raise ConceptBankError(
            f"concept bank {root}: every concept needs at least {min_exemplars} positives and "
            f"{min_exemplars} negatives ({NEGATIVES}/<concept>/ or shared {NEGATIVES}/*.png); "
            + "; ".join(problems)
        )
    coverage, known = _coverage(files)
    return ConceptBank(
        load_images(files, size),
        [str(p.relative_to(root)) for p in files],
        positives,
        negatives,
        paired,
        coverage,
        known,
        root,
    )


def _coverage(files: list[Path]) -> tuple[np.ndarray | None, list[str]]:
    """[N, K] share of each image's pixels that each concept's ground-truth mask covers, when every
    image has a sidecar with the same K concepts; else (None, [])."""
    rows: list[dict[str, float]] = []
    for path in files:
        side = path.with_name(path.stem + SIDECAR)
        if not side.is_file():
            return None, []
        try:
            with np.load(side) as z:
                rows.append({k: float(np.asarray(z[k], dtype=bool).mean()) for k in z.files})
        except (OSError, ValueError):
            return None, []
    known = sorted(rows[0]) if rows else []
    if not known or any(sorted(r) != known for r in rows):
        return None, []
    return np.array([[r[k] for k in known] for r in rows], dtype=np.float64), known


def bank_activations(
    model: LoadedModel,
    cuts: LayerCuts,
    bank: ConceptBank,
    *,
    batch: int = 64,
    progress: ProgressFactory | None = None,
) -> dict[str, np.ndarray]:
    """Channel means of every listed layer (and the lowest layer's input) for every bank image."""
    device = next(model.module.parameters()).device
    out: dict[str, list[np.ndarray]] = {}
    tick = progress("concept bank → model", len(bank.files)) if progress else None
    with torch.no_grad():
        for i in range(0, len(bank.files), batch):
            x = to_model_input(bank.pixels[i : i + batch].to(device), model.mean, model.std)
            for name, value in cuts.activations(x, means=True, lowest_input=True).items():
                out.setdefault(name, []).append(value.float().cpu().numpy())
            if tick:
                tick(len(x))
    return {name: np.concatenate(parts) for name, parts in out.items()}


def _labels_for(
    group_id: str, scores: np.ndarray, bank: ConceptBank, top: int, min_score: float, rank_by: str = "effect"
) -> list[LabelRecord]:
    """The group's best `top` concepts among those scoring at least `min_score`, ranked by effect size
    (`rank_by="score"`: by the score itself, as before 2026-12).

    The score (share of pairs, or ROC AUC) says how *consistently* a concept raises the group; the
    effect size says how *much*, on one scale for paired and matched evidence. Ranking by the share
    of pairs let any context object that nudges every group of a circuit (a sun added to a kite
    scene) take rank 1 everywhere (docs/labelling.md); the score still decides what is a label at all.
    """
    rated = []
    for concept in bank.concepts:
        evidence = bank.evidence(concept)
        pos, neg = evidence.positives, evidence.negatives
        value, low, high = score(evidence, scores)
        if value < min_score:
            continue
        effect = effect_size(evidence, scores)
        details = {
            "evidence": evidence.kind,
            "positives": len(pos),
            "negatives": len(neg),
            "ci95": [round(low, 4), round(high, 4)],
            "mean_positive": round(float(scores[pos].mean()), 6),
            "mean_negative": round(float(scores[neg].mean()), 6),
            "effect": round(effect, 6),
        }
        rated.append((effect, value, concept, details))
    if rank_by == "score":
        rated.sort(key=lambda r: (-r[1], r[2]))
    else:
        rated.sort(key=lambda r: (-r[0], -r[1], r[2]))
    return [
        LabelRecord(group_id, concept, round(value, 6), METHOD, rank, details)
        for rank, (_effect, value, concept, details) in enumerate(rated[:top], start=1)
    ]


def _soft_assign(rep: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """[N, J] softmax over clusters of the cosine similarity between r(v) and each centroid."""
    r = rep / np.maximum(np.linalg.norm(rep, axis=1, keepdims=True), 1e-12)
    c = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    logits = (r @ c.T) / SOFT_ASSIGN_TEMPERATURE
    logits -= logits.max(1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(1, keepdims=True)


def label_circuit(
    circuit: Circuit,
    acts: dict[str, np.ndarray],
    bank: ConceptBank,
    rep_key: dict[str, str],  # LayerCuts.representative_keys()
    *,
    top: int = 3,
    min_score: float = 0.5,
    semantic_groups: bool = True,
    rank_by: str = "effect",
) -> list[LabelRecord]:
    """The best `top` concepts (AUC ≥ `min_score`, ranked by `rank_by`: "effect" or "score") of every
    neuron group and semantic group."""
    if rank_by not in ("effect", "score"):
        raise ValueError(f"rank_by must be 'effect' or 'score', not {rank_by!r}")
    labels: list[LabelRecord] = []
    for layer in circuit.layer_names():
        groups = [g for g in circuit.neuron_groups if g.layer == layer]
        if not groups:
            continue
        assign = _soft_assign(acts[rep_key[layer]], np.array([g.centroid for g in groups]))
        for column, group in enumerate(groups):
            metric = circuit_metric(circuit, layer, metric_neurons(group), acts[layer])
            labels += _labels_for(group.ng_id, metric * assign[:, column], bank, top, min_score, rank_by)
    if not semantic_groups:
        return labels
    by_neuron: dict[tuple[str, int], list] = {}
    for sg in circuit.semantic_groups:
        by_neuron.setdefault((sg.layer, sg.neuron), []).append(sg)
    for (layer, neuron), groups in by_neuron.items():
        own = circuit_metric(circuit, layer, [neuron], acts[layer])
        groups.sort(key=lambda g: g.j)
        assign = _soft_assign(acts[rep_key[layer]], np.array([g.centroid for g in groups]))
        for column, sg in enumerate(groups):
            labels += _labels_for(sg.sg_id, own * assign[:, column], bank, top, min_score, rank_by)
    return labels


def bank_context_line(folder: str | Path, class_name: str | None) -> str | None:
    """A warning when the bank's `manifest.json` says it was drawn from other scenes than the explained
    class's: a mixed bank (`"class": null`) or another class's. Banks without a manifest say nothing."""
    manifest = Path(folder) / "manifest.json"
    try:
        declared = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(declared, dict) or "class" not in declared:
        return None
    drawn = declared["class"]
    if drawn is not None and (class_name is None or str(drawn).lower() == class_name.lower()):
        return None
    where = "every class's scenes" if drawn is None else f"{drawn!r} scenes"
    return (
        f"bank context: this bank is drawn from {where}, the run explains {class_name!r}; labels of a "
        "class's circuit are right more often with an in-class bank (`neurflow planted-data bank --class`, "
        "or crops of that class's own images; docs/labelling.md)"
    )


def bank_check(bank: ConceptBank) -> dict[str, dict]:
    """Per concept: the evidence its labels use and what differs between its positives and negatives
    besides the concept, in the raw bank and in the compared sets (`bank_evidence.prevalence_gaps`)."""
    out = {}
    for concept in bank.concepts:
        ev = bank.evidence(concept)
        out[concept] = {
            "evidence": ev.kind,
            "positives": len(ev.positives),
            "negatives": len(ev.negatives),
            "raw_gaps": [{"concept": c, "positives": a, "negatives": b} for c, a, b in ev.raw_imbalance],
            "gaps": [{"concept": c, "positives": a, "negatives": b} for c, a, b in ev.imbalance],
        }
    return out


def bank_check_lines(check: dict[str, dict], known: bool) -> list[str]:
    """What `neurflow label` prints about the bank: one line per concept whose negatives differ from its
    positives in another concept, with the numbers, and what the labels compare instead."""

    def gaps(items: list[dict]) -> str:
        return ", ".join(
            f"{g['concept']} ({g['positives']:.0%} of positives, {g['negatives']:.0%} of negatives)"
            for g in items[:3]
        )

    lines = []
    if not known:
        lines.append(
            "bank check: no ground-truth sidecars (NAME.concepts.npz) on every image, so confounds cannot be "
            "measured; concepts without _without/ pairs are scored against the bank's negatives as they are"
        )
    for concept, c in check.items():
        kind = c["evidence"]
        if c["raw_gaps"]:
            after = (
                f"they still differ in {gaps(c['gaps'])}: treat '{concept}' scores with care"
                if c["gaps"]
                else "no such gap is left"
            )
            lines.append(
                f"bank check: '{concept}' positives and negatives differ in {gaps(c['raw_gaps'])}; labels "
                f"compare {kind} exemplars ({c['positives']} + {c['negatives']}): {after}"
            )
        elif c["gaps"]:
            lines.append(f"bank check: '{concept}' {kind} exemplars differ in {gaps(c['gaps'])}")
    return lines

"""The causal-first audit: concepts are ranked by what their counterfactual pairs do to the class,
before any group is looked at; groups are then ranked by how much of that shift masking them removes.

A trial on a world nobody tuned to showed why labels cannot come first: the group that carried the
bias was labelled after a concept absent from every class image (the bank's "dots" positives were
object crops, its negatives mostly empty scenes). Here labels never rank anything:

1. **Concepts.** Every pair set (`DIR/without/*`, `DIR/with/*`: the same scenes without and with a
   concept, or with several concepts switched together, "A+B") gives the mean shift of P(class) with
   a 95 % interval. A single concept is ranked by its shift; a conjunction A+B, when its parts have
   pair sets too, by its *interaction*: shift(A+B) − shift(A) − shift(B), the part of its shift
   that neither concept causes alone (its interval assumes the sets are independent samples). An
   entry counts only when its interval excludes zero and its mean reaches `MIN_SHIFT`; otherwise it
   is reported as "no measurable shift" and no ratio is ever computed from it.
2. **Groups.** For each measurable, non-expected entry, every neuron group of the run is masked once
   on that entry's pairs and on the class's images (a screen); the `confirm` groups that remove the
   most shift for the least class are then masked again beside `random_sets` random groups of the
   same size at their layer. Groups are ranked by causal selectivity: (share of the shift removed −
   random groups' share) − (relative drop of P(class) on the class's images − random groups'). The
   concept attached to a group is the entry whose shift it removes; its labels are shown beside.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from graphmodel.records import Circuit, LabelRecord, NeuronGroupRecord
from ingest.analysis.audit import (
    MIN_SHIFT,
    TIE_JACCARD,
    AuditImages,
    GroupEffect,
    PairShift,
    class_scores,
    group_effect,
    load_pairs,
    pair_shift,
)
from ingest.core.layers import LayerCuts
from ingest.core.models import LoadedModel

JOIN = "+"


@dataclass
class PairSet:
    """One folder of counterfactual pairs: `concepts` switched on in `with_`, off in `without`."""

    name: str  # "flower" or "sun+cloud"
    concepts: list[str]
    without: Tensor
    with_: Tensor
    source: str


@dataclass
class Effect:
    """A mean shift of P(class) with its 95 % interval."""

    mean: float
    low: float
    high: float

    @property
    def measurable(self) -> bool:
        return self.low > 0 and self.mean >= MIN_SHIFT


@dataclass
class ConceptShift:
    """What one pair set does to the unmasked model, and what it adds beyond its parts."""

    name: str
    concepts: list[str]
    shift: PairShift
    expected: bool
    interaction: Effect | None = None  # conjunctions whose parts all have pair sets
    parts: dict[str, float] = field(default_factory=dict)  # part -> its mean shift

    @property
    def own(self) -> Effect:
        """What ranks the entry: the interaction for a conjunction with measured parts, else the shift."""
        if self.interaction is not None:
            return self.interaction
        return Effect(self.shift.mean, self.shift.low, self.shift.high)

    @property
    def measurable(self) -> bool:
        return self.own.measurable

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "concepts": list(self.concepts),
            "expected": self.expected,
            "shift": {**asdict(self.shift), "measurable": self.shift.measurable},
            "interaction": None
            if self.interaction is None
            else {**asdict(self.interaction), "measurable": self.interaction.measurable},
            "parts": dict(self.parts),
            "measurable": self.measurable,
        }


class PairSetError(ValueError):
    pass


def _set_name(folder: Path) -> list[str]:
    meta = folder / "pairs.json"
    if meta.is_file():
        try:
            data = json.loads(meta.read_text())
        except (OSError, ValueError):
            data = {}
        names = data.get("concepts") or ([data["concept"]] if data.get("concept") else None)
        if names:
            return [str(n).strip().lower() for n in names for n in str(n).split(JOIN) if n.strip()]
    return [n.strip().lower() for n in folder.name.split(JOIN) if n.strip()]


def _is_pair_set(folder: Path) -> bool:
    return (folder / "without").is_dir() and (folder / "with").is_dir()


def _removed(shift: Mapping[str, float], which: str) -> float:
    """Share of the unmasked shift that a mask removed."""
    return 1.0 - shift[which] / shift["unmasked"] if shift["unmasked"] > 0 else 0.0


def load_pair_sets(folders: Sequence[str | Path], size: int) -> list[PairSet]:
    """Every pair set under `folders`: a folder with `without/` and `with/` is one set; a folder of
    such folders is one set per sub-folder. A set's concepts come from its `pairs.json` ("concepts",
    or "concept" as "A+B"), else from the folder name split at "+"."""
    sets: list[PairSet] = []
    for given in folders:
        root = Path(given)
        candidates = [root] if _is_pair_set(root) else sorted(p for p in root.iterdir() if _is_pair_set(p))
        if not candidates:
            raise PairSetError(
                f"no counterfactual pairs in {root}: expected {root}/without/ and {root}/with/, or "
                f"sub-folders {root}/<concept>/without/ and .../with/ (`neurflow planted-data pairs`)"
            )
        for folder in candidates:
            try:
                without, with_ = load_pairs(folder, size)
            except ValueError as exc:
                raise PairSetError(str(exc)) from None
            if len(without) < 2:
                raise PairSetError(
                    f"counterfactual pairs in {folder}: {len(without)} pair(s); need at least 2"
                )
            concepts = _set_name(folder)
            sets.append(PairSet(JOIN.join(concepts), concepts, without, with_, str(folder.resolve())))
    names = [s.name for s in sets]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise PairSetError(f"two pair sets name the same concepts: {', '.join(dupes)}; keep one of each")
    return sets


Unmasked = dict[int, tuple[Tensor, Tensor]]  # id(image tensor) -> the plain model's `class_scores`


def _plain(model: LoadedModel, images: Tensor, class_index: int, cache: Unmasked, batch: int) -> Tensor:
    """P(class) of the unmasked model on `images`, computed once per image set: the shift ranking,
    the screen and `group_effect` (which reads the same cache) all need it."""
    if id(images) not in cache:
        cache[id(images)] = class_scores(model, images, class_index, None, None, batch)
    return cache[id(images)][0][0]


def concept_shifts(
    model: LoadedModel,
    class_index: int,
    sets: Sequence[PairSet],
    expected: Sequence[str],
    batch: int = 256,
    cache: Unmasked | None = None,
) -> list[ConceptShift]:
    """The shift of every pair set on the unmasked model and, for conjunctions whose parts were all
    measured, the interaction; ranked (measurable non-expected entries first, by their own effect)."""
    wanted = {e.strip().lower() for e in expected if e.strip()}
    cache = {} if cache is None else cache
    out = []
    for s in sets:
        without = _plain(model, s.without, class_index, cache, batch)
        with_ = _plain(model, s.with_, class_index, cache, batch)
        out.append(
            ConceptShift(s.name, s.concepts, pair_shift(without, with_), bool(set(s.concepts) & wanted))
        )
    singles = {c.name: c for c in out if len(c.concepts) == 1}
    for c in out:
        if len(c.concepts) > 1 and all(p in singles for p in c.concepts):
            parts = [singles[p].shift for p in c.concepts]
            mean = c.shift.mean - sum(p.mean for p in parts)
            se = math.sqrt(sum(_se(x) ** 2 for x in [c.shift, *parts]))
            c.interaction = Effect(mean, mean - 1.96 * se, mean + 1.96 * se)
            c.parts = {p: singles[p].shift.mean for p in c.concepts}
    out.sort(key=lambda c: (c.expected, not c.measurable, -c.own.mean, c.name))
    return out


def _se(shift: PairShift) -> float:
    return (shift.high - shift.mean) / 1.96 if math.isfinite(shift.high) else float("inf")


def causal_selectivity(effect: GroupEffect) -> float:
    """(share of the pairs' shift removed − random groups' share) − (relative drop of P(class) on
    the class's images − random groups')."""
    shift, cls = effect.metrics["shift"], effect.metrics["p_class"]

    def removed(which: str) -> float:
        return _removed(shift, which)

    def dropped(which: str) -> float:
        return 1.0 - cls[which] / cls["unmasked"] if cls["unmasked"] > 0 else 0.0

    return (removed("masked") - removed("random")) - (dropped("masked") - dropped("random"))


def _screen(
    model: LoadedModel,
    cuts: LayerCuts,
    class_index: int,
    groups: Sequence[NeuronGroupRecord],
    pairs: PairSet,
    class_images: Tensor,
    batch: int,
    cache: Unmasked,
) -> dict[str, float]:
    """ng_id -> share of the shift removed minus relative class drop, each group masked alone: all
    groups of a layer stacked into one batched pass per image set."""
    out: dict[str, float] = {}
    plain = {
        key: _plain(model, x, class_index, cache, batch)
        for key, x in (("without", pairs.without), ("with", pairs.with_), ("class", class_images))
    }
    shift0 = float((plain["with"] - plain["without"]).mean())
    class0 = float(plain["class"].mean())
    by_layer: dict[str, list[NeuronGroupRecord]] = {}
    for g in groups:
        by_layer.setdefault(g.layer, []).append(g)
    for layer, members in by_layer.items():
        masks = torch.ones(len(members), cuts.width(layer))
        for row, g in enumerate(members):
            masks[row, list(g.members)] = 0.0
        p = {
            key: class_scores(model, x, class_index, layer, masks, batch)[0]
            for key, x in (("without", pairs.without), ("with", pairs.with_), ("class", class_images))
        }
        shift = (p["with"] - p["without"]).mean(1)
        cls = p["class"].mean(1)
        for row, g in enumerate(members):
            removed = 1.0 - float(shift[row]) / shift0 if shift0 > 0 else 0.0
            dropped = 1.0 - float(cls[row]) / class0 if class0 > 0 else 0.0
            out[g.ng_id] = removed - dropped
    return out


@dataclass
class CausalFinding:
    """One ranked entry of the causal audit: its shift, and the groups that carry it."""

    entry: ConceptShift
    rank: int
    groups: list[GroupEffect] = field(default_factory=list)
    # group -> its best labels as (concept, score, method): shown beside, never used to rank
    labels: dict[str, list[tuple[str, float, str]]] = field(default_factory=dict)
    tied_with: list[str] = field(default_factory=list)  # groups (nearly) the same as the best one

    @property
    def best(self) -> GroupEffect | None:
        return max(self.groups, key=lambda g: (causal_selectivity(g), g.group_id)) if self.groups else None

    def as_dict(self) -> dict:
        best = self.best
        scalars = {
            "best_group": None,
            "bias_drop": None,
            "random_bias_drop": None,
            "bias_removed": None,
            "random_bias_removed": None,
            "recall_cost": None,
            "selectivity": None,
        }
        if best is not None:
            shift = best.metrics["shift"]
            scalars = {
                "best_group": best.group_id,
                "bias_drop": best.bias_drop,
                "random_bias_drop": best.random_bias_drop,
                "bias_removed": best.bias_removed,
                "random_bias_removed": _removed(shift, "random"),
                "recall_cost": best.recall_cost,
                "selectivity": causal_selectivity(best),
            }
        return {
            "concept": self.entry.name,
            "concepts": list(self.entry.concepts),
            "rank": self.rank,
            "evidence": "counterfactual",
            "influence": 0.0,
            **scalars,
            "shift": self.entry.as_dict()["shift"],
            "interaction": self.entry.as_dict()["interaction"],
            "parts": dict(self.entry.parts),
            "measurable": self.entry.measurable,
            "tied_with": list(self.tied_with),
            "labels": {
                g: [{"concept": c, "score": s, "method": m} for c, s, m in v] for g, v in self.labels.items()
            },
            "groups": [
                {
                    **asdict(g),
                    "bias_drop": g.bias_drop,
                    "random_bias_drop": g.random_bias_drop,
                    "bias_removed": g.bias_removed,
                    "recall_cost": g.recall_cost,
                    "selectivity": causal_selectivity(g),
                }
                for g in sorted(self.groups, key=lambda g: (-causal_selectivity(g), g.group_id))
            ],
        }


def run_causal_audit(
    model: LoadedModel,
    cuts: LayerCuts,
    circuit: Circuit,
    sets: Sequence[PairSet],
    expected: Sequence[str],
    class_images: Tensor,
    *,
    negatives: Tensor | None = None,
    labels: Mapping[str, Sequence[LabelRecord]] | None = None,
    confirm: int = 3,
    random_sets: int = 10,
    batch: int = 1024,
    seed: int = 0,
    progress=lambda _done, _total: None,
) -> tuple[list[ConceptShift], list[CausalFinding]]:
    """Rank the pair sets by their shift, then the run's groups by the share of each measurable
    non-expected set's shift they remove (module docstring). Returns (every entry, findings of the
    non-expected entries in rank order; unmeasurable ones have no groups)."""
    unmasked: Unmasked = {}  # one plain pass per image set, shared by every step below
    shifts = concept_shifts(model, circuit.class_index, sets, expected, batch, unmasked)
    by_name = {s.name: s for s in sets}
    groups = list(circuit.neuron_groups)
    members = {g.ng_id: set(g.members) for g in groups}
    rng = np.random.default_rng(seed)
    todo = [c for c in shifts if not c.expected and c.measurable]
    findings: list[CausalFinding] = []
    done = 0
    for rank, entry in enumerate((c for c in shifts if not c.expected), start=1):
        finding = CausalFinding(entry, rank)
        findings.append(finding)
        if not entry.measurable:
            continue
        pairs = by_name[entry.name]
        screened = _screen(model, cuts, circuit.class_index, groups, pairs, class_images, batch, unmasked)
        chosen = sorted(groups, key=lambda g: (-screened[g.ng_id], g.ng_id))[:confirm]
        data = AuditImages(class_images, negatives, pairs.without, pairs.with_)
        for g in chosen:
            finding.groups.append(
                group_effect(
                    model, cuts, circuit.class_index, g, data, random_sets=random_sets, batch=batch, rng=rng,
                    unmasked=unmasked,
                )
            )  # fmt: skip
        best = finding.best
        finding.tied_with = [
            g.ng_id
            for g in groups
            if best is not None
            and g.ng_id != best.group_id
            and g.layer == best.layer
            and _jaccard(members[g.ng_id], members[best.group_id]) >= TIE_JACCARD
        ]
        for g in finding.groups:
            own = sorted((labels or {}).get(g.group_id, []), key=lambda lab: (lab.method, lab.rank))
            finding.labels[g.group_id] = [
                (lab.concept, round(lab.score, 4), lab.method)
                for lab in own
                if lab.rank <= (1 if lab.method == "spatial_iou" else 2)
            ]
        done += 1
        progress(done, len(todo))
    return shifts, findings


def _jaccard(a: set[int], b: set[int]) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0

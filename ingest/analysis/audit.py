"""Bias audit (paper §5.1): which concepts does the class lean on that it should not, and does masking
the neuron groups behind them remove that bias?

Candidates come from the labels: every concept outside the expected list that labels a neuron group
of the run. Exemplar purity or label scores alone are no evidence (a trial found flower-pure groups
that carried none of a flower bias), so every candidate group is tested causally: its member neurons
are zeroed (`ingest.analysis.evaluate.knockout`) and the class probability is measured

- on the class's own images (recall and mean probability: what masking costs),
- on false positives (images of other classes the unmasked model calls the class),
- on counterfactual pairs (the same scene without / with the concept): the probability on the
  with-concept images and the share of the with-minus-without shift the group carries,

against `random_sets` random groups of the same size at the same layer, all in one batched pass per
image set. Concepts are ranked by the causal effect of their best group, not by label or influence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from graphmodel.records import Circuit, LabelRecord, NeuronGroupRecord
from ingest.analysis.evaluate import knockout
from ingest.core.layers import LayerCuts
from ingest.core.models import LoadedModel
from ingest.core.patches import list_images, load_images, to_model_input
from ingest.core.tau import WIDE_SHARE


@dataclass
class AuditImages:
    """uint8 [N, 3, S, S] image sets; `pairs_*` are matched row by row (same scene)."""

    class_images: Tensor
    negatives: Tensor | None = None
    pairs_without: Tensor | None = None
    pairs_with: Tensor | None = None


MIN_SHIFT = 0.01  # the smallest mean shift of P(class) worth a ratio: 1 percentage point


@dataclass
class PairShift:
    """The counterfactual pairs' effect on the unmasked model: the mean of P(class | with concept) −
    P(class | without) over the pairs, with a 95 % confidence interval (normal approximation)."""

    mean: float
    low: float
    high: float
    pairs: int

    @property
    def measurable(self) -> bool:
        """The interval excludes zero and the mean reaches MIN_SHIFT: only then is "share of the
        shift removed" a number rather than a ratio of noise."""
        return self.low > 0 and self.mean >= MIN_SHIFT

    def describe(self) -> str:
        return (
            f"mean shift of P(class) {self.mean:+.4f} (95 % CI {self.low:+.4f} to {self.high:+.4f}, "
            f"{self.pairs} pairs)"
        )


def pair_shift(without_p: Tensor, with_p: Tensor) -> PairShift:
    """`PairShift` from the unmasked probabilities of matched pairs ([pairs] each)."""
    diffs = (with_p - without_p).double()
    n = len(diffs)
    mean = float(diffs.mean()) if n else 0.0
    half = 1.96 * float(diffs.std(unbiased=True)) / n**0.5 if n > 1 else float("inf")
    return PairShift(mean, mean - half, mean + half, n)


@dataclass
class GroupEffect:
    group_id: str
    layer: str
    size: int
    concept_score: float  # the label's score (e.g. ROC AUC) that made it a candidate
    # each metric: value with the group masked, mean over random same-size groups, unmasked
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    shift_measurable: bool = True  # False: the pairs move nothing, no share of their shift is computed
    random_size: int = 0  # size of the random groups (smaller than `size` for a group of half its layer)

    @property
    def bias_drop(self) -> float:
        """Drop of the mean class probability on the bias images (with-concept images, else false
        positives) when the group is masked."""
        m = self.metrics.get("p_with") or self.metrics.get("p_false_positives") or {}
        return m.get("unmasked", 0.0) - m.get("masked", 0.0) if m else 0.0

    @property
    def random_bias_drop(self) -> float:
        m = self.metrics.get("p_with") or self.metrics.get("p_false_positives") or {}
        return m.get("unmasked", 0.0) - m.get("random", 0.0) if m else 0.0

    @property
    def recall_cost(self) -> float:
        m = self.metrics["recall"]
        return m["unmasked"] - m["masked"]

    @property
    def bias_removed(self) -> float | None:
        """Share of the bias removed: of the counterfactual shift when pairs are given (None when
        the pairs' shift is inside the noise: no ratio of noise), else of the false positives."""
        if "shift" in self.metrics and not self.shift_measurable:
            return None
        if "shift" in self.metrics:
            m = self.metrics["shift"]
            return 1.0 - m["masked"] / m["unmasked"] if m["unmasked"] > 0 else 0.0
        if "false_positive_rate" in self.metrics:
            m = self.metrics["false_positive_rate"]
            return 1.0 - m["masked"] / m["unmasked"] if m["unmasked"] > 0 else 0.0
        return 0.0


@dataclass
class ConceptFinding:
    concept: str
    rank: int
    groups: list[GroupEffect]
    influence: float  # Σ path strength into the class of the groups labelled with it
    # concepts whose best group is the same group: masking cannot tell them apart, only labels can
    tied_with: list[str] = field(default_factory=list)

    @property
    def best(self) -> GroupEffect:
        """The group whose masking removes the most bias for the least class: highest selectivity."""
        return max(self.groups, key=lambda g: (selectivity(g), g.concept_score, g.group_id))

    def as_dict(self) -> dict:
        best = self.best
        return {
            "concept": self.concept,
            "rank": self.rank,
            "influence": self.influence,
            "best_group": best.group_id,
            "bias_drop": best.bias_drop,
            "random_bias_drop": best.random_bias_drop,
            "bias_removed": best.bias_removed,
            "recall_cost": best.recall_cost,
            "selectivity": selectivity(best),
            "tied_with": list(self.tied_with),
            "groups": [
                {
                    **asdict(g),
                    "bias_drop": g.bias_drop,
                    "random_bias_drop": g.random_bias_drop,
                    "bias_removed": g.bias_removed,
                    "recall_cost": g.recall_cost,
                    "selectivity": selectivity(g),
                }
                for g in self.groups
            ],
        }


def load_folder(folder: str | Path, size: int) -> Tensor:
    """Every image of a folder (sorted, sub-folders included), centre-squared and resized."""
    return load_images(list_images(folder), size)


def load_pairs(folder: str | Path, size: int) -> tuple[Tensor, Tensor]:
    """`folder/without/*` and `folder/with/*`, matched by file name."""
    root = Path(folder)
    names = {p.relative_to(root / "without") for p in list_images(root / "without")}
    other = {p.relative_to(root / "with") for p in list_images(root / "with")}
    if names != other:
        raise ValueError(
            f"counterfactual pairs in {root}: without/ and with/ must hold the same file names "
            f"({len(names ^ other)} unmatched, e.g. {sorted(names ^ other)[:3]})"
        )
    order = sorted(names)

    return load_images([root / "without" / n for n in order], size), load_images(
        [root / "with" / n for n in order], size
    )


def class_scores(
    model: LoadedModel, images: Tensor, class_index: int, layer: str | None, masks: Tensor | None, batch: int
) -> tuple[Tensor, Tensor]:
    """P(class) and whether the class is the prediction, for every image under each of N knockout
    masks of `layer` ([N, C]): two [N, len(images)] tensors. Without masks N = 1, the plain model."""
    device = next(model.module.parameters()).device
    n = 1 if masks is None else masks.shape[0]
    prob, top = torch.empty(n, len(images)), torch.empty(n, len(images), dtype=torch.bool)
    rows = max(1, batch // n)
    hooks = {} if masks is None else {layer: masks}
    with torch.no_grad(), knockout(model.module, hooks):
        for i in range(0, len(images), rows):
            x = to_model_input(images[i : i + rows].to(device), model.mean, model.std)
            logits = model.module(x.repeat(n, 1, 1, 1)).float().cpu()
            prob[:, i : i + len(x)] = torch.softmax(logits, dim=1)[:, class_index].view(n, len(x))
            top[:, i : i + len(x)] = (logits.argmax(1) == class_index).view(n, len(x))
    return prob, top


def random_group_size(width: int, size: int) -> int:
    """The size of the random groups a group of `size` at a layer of `width` is compared with: the
    same, unless the group holds half the layer or more (τ took most of a narrow layer). Random groups
    that large switch the class off whatever they hold, so there they hold a quarter of the layer:
    the comparison is then not at equal size, and the audit says so."""
    return size if size < width * WIDE_SHARE else max(1, width // 4)


def _masks(width: int, members: Sequence[int], random_sets: int, rng: np.random.Generator) -> Tensor:
    size = random_group_size(width, len(members))
    sets = [list(members)] + [rng.choice(width, size, replace=False) for _ in range(random_sets)]
    masks = torch.ones(len(sets), width)
    for row, chosen in enumerate(sets):
        masks[row, list(chosen)] = 0.0
    return masks


def _summary(values: Tensor) -> dict[str, float]:
    """Row 0: the group; rows 1..: random groups; last argument: unmasked value."""
    return {"masked": float(values[0]), "random": float(values[1:-1].mean()), "unmasked": float(values[-1])}


def group_effect(
    model: LoadedModel,
    cuts: LayerCuts,
    class_index: int,
    group: NeuronGroupRecord,
    data: AuditImages,
    *,
    concept_score: float = 0.0,
    random_sets: int = 20,
    batch: int = 1024,
    rng: np.random.Generator | None = None,
    unmasked: dict[int, tuple[Tensor, Tensor]] | None = None,
) -> GroupEffect:
    """Mask the group (and `random_sets` random groups of its size at its layer) on every image set.

    `unmasked` caches the plain model's scores per image set (keyed by the tensor's id), so testing
    many groups on the same `data` runs the unmasked model once per set, not once per group."""
    rng = rng or np.random.default_rng(0)
    masks = _masks(cuts.width(group.layer), group.members, random_sets, rng)
    cache = {} if unmasked is None else unmasked

    def scores(images: Tensor) -> tuple[Tensor, Tensor]:
        """[N + 2, images] rows: the group, the random groups, the unmasked model."""
        masked = class_scores(model, images, class_index, group.layer, masks, batch)
        if id(images) not in cache:
            cache[id(images)] = class_scores(model, images, class_index, None, None, batch)
        plain = cache[id(images)]
        return torch.cat([masked[0], plain[0]]), torch.cat([masked[1], plain[1]])

    effect = GroupEffect(group.ng_id, group.layer, len(group.members), concept_score)
    effect.random_size = random_group_size(cuts.width(group.layer), len(group.members))
    prob, top = scores(data.class_images)
    effect.metrics["p_class"] = _summary(prob.mean(1))
    effect.metrics["recall"] = _summary(top.float().mean(1))
    if data.negatives is not None:
        prob, top = scores(data.negatives)
        effect.metrics["false_positive_rate"] = _summary(top.float().mean(1))
        fp = top[-1]  # called the class by the unmasked model
        if fp.any():
            effect.metrics["p_false_positives"] = _summary(prob[:, fp].mean(1))
            effect.metrics["false_positives_kept"] = _summary(top[:, fp].float().mean(1))
    if data.pairs_with is not None and data.pairs_without is not None:
        with_p, with_top = scores(data.pairs_with)
        without_p, _ = scores(data.pairs_without)
        effect.metrics["p_with"] = _summary(with_p.mean(1))
        effect.metrics["shift"] = _summary((with_p - without_p).mean(1))
        effect.shift_measurable = pair_shift(without_p[-1], with_p[-1]).measurable
        effect.metrics["with_called_class"] = _summary(with_top.float().mean(1))
    return effect


def selectivity(effect: GroupEffect) -> float:
    """How much more masking the group lowers P(class) on the bias images than on the class's own
    images, both relative to the unmasked model and net of random groups of the same size:
    (rel. bias drop − random's) − (rel. class drop − random's). A group that switches the whole
    class off scores near 0 or below; one that removes only the bias scores high."""

    def rel(name: str, which: str) -> float:
        m = effect.metrics[name]
        return 1.0 - m[which] / m["unmasked"] if m["unmasked"] > 0 else 0.0

    bias = "p_with" if "p_with" in effect.metrics else "p_false_positives"
    if bias not in effect.metrics:
        raise ValueError("the audit needs counterfactual pairs or negatives with false positives")
    return (rel(bias, "masked") - rel(bias, "random")) - (rel("p_class", "masked") - rel("p_class", "random"))


def candidate_groups(
    circuit: Circuit,
    labels: Mapping[str, Sequence[LabelRecord]],
    expected: Sequence[str],
    *,
    min_score: float = 0.8,
    max_rank: int = 2,
) -> dict[str, list[tuple[NeuronGroupRecord, float]]]:
    """Non-expected concept -> the run's neuron groups labelled with it (rank ≤ max_rank, score ≥
    min_score) and the label's score. Expected names match case-insensitively."""
    wanted = {e.strip().lower() for e in expected if e.strip()}
    groups = {g.ng_id: g for g in circuit.neuron_groups}
    out: dict[str, list[tuple[NeuronGroupRecord, float]]] = {}
    for group_id, group_labels in labels.items():
        if group_id not in groups:
            continue
        for label in group_labels:
            name = label.concept.lower()
            if name in wanted or label.rank > max_rank or label.score < min_score:
                continue
            out.setdefault(name, []).append((groups[group_id], label.score))
    return out


def run_audit(
    model: LoadedModel,
    cuts: LayerCuts,
    circuit: Circuit,
    labels: Mapping[str, Sequence[LabelRecord]],
    expected: Sequence[str],
    data: AuditImages,
    *,
    influence: Mapping[str, float] | None = None,
    min_score: float = 0.8,
    max_rank: int = 2,
    random_sets: int = 10,
    batch: int = 1024,
    seed: int = 0,
    progress=lambda _done, _total: None,
) -> list[ConceptFinding]:
    """Test every candidate group causally and rank the concepts by their best group's selectivity."""
    candidates = candidate_groups(circuit, labels, expected, min_score=min_score, max_rank=max_rank)
    rng = np.random.default_rng(seed)
    tested: dict[str, GroupEffect] = {}
    unmasked: dict[int, tuple[Tensor, Tensor]] = {}
    todo = sorted({g.ng_id: g for pairs in candidates.values() for g, _ in pairs}.items())
    for done, (group_id, group) in enumerate(todo):
        tested[group_id] = group_effect(
            model,
            cuts,
            circuit.class_index,
            group,
            data,
            random_sets=random_sets,
            batch=batch,
            rng=rng,
            unmasked=unmasked,
        )
        progress(done + 1, len(todo))
    findings = []
    for concept, pairs in candidates.items():
        effects = []
        for group, score in sorted(pairs, key=lambda p: p[0].ng_id):
            effect = GroupEffect(**{**asdict(tested[group.ng_id]), "concept_score": score})
            effects.append(effect)
        findings.append(ConceptFinding(concept, 0, effects, float((influence or {}).get(concept, 0.0))))
    findings.sort(key=lambda f: (-selectivity(f.best), -f.best.concept_score, f.concept))
    members = {g.ng_id: set(g.members) for g in circuit.neuron_groups}
    for rank, finding in enumerate(findings, start=1):
        finding.rank = rank
        finding.tied_with = [
            f.concept for f in findings if f is not finding and same_group(finding.best, f.best, members)
        ]
    return findings


TIE_JACCARD = 0.9


def same_group(a: GroupEffect, b: GroupEffect, members: Mapping[str, set[int]]) -> bool:
    """Whether masking `a` and `b` is (nearly) the same experiment: one group, or two groups of one
    layer whose member sets overlap with Jaccard ≥ TIE_JACCARD (their concepts are then tied)."""
    if a.group_id == b.group_id:
        return True
    if a.layer != b.layer:
        return False
    x, y = members.get(a.group_id, set()), members.get(b.group_id, set())
    return bool(x | y) and len(x & y) / len(x | y) >= TIE_JACCARD

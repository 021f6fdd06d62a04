"""What a concept's label is scored against: exemplars that differ from its positives in the concept
and, as far as the bank knows, in nothing else.

A trial on a world nobody tuned to showed why: the positives of "dots" were crops of objects, most of
its in-context negatives held no object at all, so a group that responds to "an object" separated
them and ROC AUC called it dots. Three kinds of evidence, best first:

- **paired**: `BANK/_without/<concept>/NAME.png` is positive `NAME.png` with the concept removed
  (the same scene, the same crop). The score is the share of pairs whose positive scores higher.
- **matched**: when every image has a ground-truth sidecar (`NAME.concepts.npz`, one mask per
  concept), each positive is matched to the bank image without the concept whose coverage of every
  *other* concept is nearest (L1, without replacement). The score is the ROC AUC against them.
- **negatives**: otherwise, the bank's negatives of the concept, as they are (ROC AUC).

`balance` measures what differs between a concept's positives and its negatives besides the concept
(every other concept's prevalence), before and after matching, so `neurflow label` can warn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# A concept is present in an image when its mask covers at least this share of the pixels.
PRESENT = 0.02
# A difference of prevalence this large (in share of images) between positives and negatives is
# worth a warning: the label may measure that other concept rather than this one.
IMBALANCE = 0.25


@dataclass(frozen=True)
class Evidence:
    """Rows of the bank a concept's score compares: `positives` against `negatives`; for paired
    evidence, `negatives[i]` is `positives[i]` without the concept."""

    kind: str  # "paired", "matched" or "negatives"
    positives: np.ndarray
    negatives: np.ndarray
    imbalance: list[tuple[str, float, float]] = field(default_factory=list)  # (concept, pos, neg)
    raw_imbalance: list[tuple[str, float, float]] = field(default_factory=list)  # before matching


def prevalence_gaps(
    coverage: np.ndarray, known: list[str], concept: str, pos: np.ndarray, neg: np.ndarray
) -> list[tuple[str, float, float]]:
    """(other concept, share of positives showing it, share of negatives showing it) for every other
    concept whose shares differ by at least `IMBALANCE`, the largest gap first."""
    present = coverage >= PRESENT
    gaps = []
    for k, name in enumerate(known):
        if name == concept:
            continue
        a, b = float(present[pos, k].mean()), float(present[neg, k].mean())
        if abs(a - b) >= IMBALANCE:
            gaps.append((name, round(a, 3), round(b, 3)))
    return sorted(gaps, key=lambda g: -abs(g[1] - g[2]))


def matched_negatives(coverage: np.ndarray, known: list[str], concept: str, pos: np.ndarray) -> np.ndarray:
    """For each positive (in order), the unused image without `concept` whose profile of the other
    concepts is nearest: the number of concepts present in one and not the other, plus half the L1
    distance of their coverages. Positives are served in a fixed shuffled order so no stretch of the
    folder gets the best matches; the result is aligned with `pos`. Fewer candidates than positives:
    the last positives get none (the returned array is shorter; the caller drops them)."""
    k = known.index(concept)
    pool = np.flatnonzero(coverage[:, k] == 0.0)
    others = [j for j in range(len(known)) if j != k]
    # Presence first (what a prevalence check sees), coverage to break ties between equal profiles.
    feats = np.concatenate(
        [(coverage[:, others] >= PRESENT).astype(np.float64), 0.5 * coverage[:, others]], 1
    )
    order = np.random.default_rng(0).permutation(len(pos))
    used = np.zeros(len(pool), dtype=bool)
    chosen = np.full(len(pos), -1, dtype=np.int64)
    for i in order:
        if used.all():
            break
        dist = np.abs(feats[pool] - feats[pos[i]]).sum(1)
        dist[used] = np.inf
        best = int(np.argmin(dist))
        used[best] = True
        chosen[i] = pool[best]
    return chosen


def concept_evidence(
    concept: str,
    positives: np.ndarray,
    negatives: np.ndarray,
    paired: np.ndarray | None,
    coverage: np.ndarray | None,
    known: list[str],
) -> Evidence:
    """The best evidence the bank holds for `concept` (module docstring)."""
    knows = coverage is not None and concept in known
    raw = prevalence_gaps(coverage, known, concept, positives, negatives) if knows else []
    if paired is not None:
        keep = paired >= 0
        pos, neg = positives[keep], paired[keep]
        gaps = prevalence_gaps(coverage, known, concept, pos, neg) if knows else []
        return Evidence("paired", pos, neg, gaps, raw)
    if knows:
        chosen = matched_negatives(coverage, known, concept, positives)
        keep = chosen >= 0
        pos, neg = positives[keep], chosen[keep]
        return Evidence("matched", pos, neg, prevalence_gaps(coverage, known, concept, pos, neg), raw)
    return Evidence("negatives", positives, negatives, raw, raw)


def score(evidence: Evidence, scores: np.ndarray) -> tuple[float, float, float]:
    """(score, 95 % low, 95 % high) of a group's per-image `scores` on the evidence: for paired
    evidence the share of pairs whose positive scores higher (ties count half; Wilson interval), else
    the ROC AUC (Hanley-McNeil interval). 0.5 is chance for both."""
    pos, neg = scores[evidence.positives], scores[evidence.negatives]
    if evidence.kind == "paired":
        diff = pos - neg
        n = len(diff)
        p = float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / max(n, 1))
        low, high = _wilson(p, n)
        return p, low, high
    auc = _auc(pos, neg)
    low, high = _hanley_mcneil(auc, len(pos), len(neg))
    return auc, low, high


def effect_size(evidence: Evidence, scores: np.ndarray) -> float:
    """How far the concept moves the group's score, in units of the score's spread over the whole
    bank: the mean paired difference (paired) or the difference of means (matched, negatives) over
    the bank's standard deviation. The same quantity under either design, so paired and matched
    concepts compare on one scale (a paired share saturates at 1 for any consistent nudge)."""
    spread = float(np.std(scores))
    if spread <= 0:
        return 0.0
    pos, neg = scores[evidence.positives], scores[evidence.negatives]
    return float((pos.mean() - neg.mean()) / spread)


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a positive scores above a negative), ties half: the Mann-Whitney form of the ROC AUC."""
    both = np.concatenate([pos, neg])
    order = both.argsort(kind="mergesort")
    ranks = np.empty(len(both), dtype=np.float64)
    sorted_vals = both[order]
    # Average ranks over ties.
    start = 0
    while start < len(both):
        stop = start + 1
        while stop < len(both) and sorted_vals[stop] == sorted_vals[start]:
            stop += 1
        ranks[order[start:stop]] = (start + stop + 1) / 2.0
        start = stop
    n1, n2 = len(pos), len(neg)
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n2))


def _wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _hanley_mcneil(auc: float, n1: int, n2: int, z: float = 1.96) -> tuple[float, float]:
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n1 - 1) * (q1 - auc * auc) + (n2 - 1) * (q2 - auc * auc)) / max(n1 * n2, 1)
    half = z * math.sqrt(max(var, 0.0))
    return max(0.0, auc - half), min(1.0, auc + half)

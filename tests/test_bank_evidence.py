"""What a concept label is scored against (ingest/labelling/bank_evidence.py) and how a conjunction is
ranked (ingest/analysis/causal_audit.py), on hand-made numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from ingest.analysis.audit import PairShift, pair_shift
from ingest.analysis.causal_audit import ConceptShift, Effect
from ingest.labelling.bank_evidence import (
    Evidence,
    concept_evidence,
    matched_negatives,
    prevalence_gaps,
    score,
)

KNOWN = ["dots", "object", "sky"]


def _bank() -> np.ndarray:
    """Coverage [N, 3] of a confounded bank: dots positives (rows 0-9) all show an object; in-context
    negatives (10-19) are empty sky; the rest (20-39) are objects without dots, which matching must
    find."""
    cov = np.zeros((40, 3))
    cov[:10, 0] = 0.05
    cov[:10, 1] = 0.4
    cov[10:20, 2] = 0.9
    cov[20:40, 1] = np.linspace(0.2, 0.6, 20)
    return cov


def test_the_confound_is_measured_and_matching_removes_it():
    cov = _bank()
    pos, neg = np.arange(10), np.arange(10, 20)
    gaps = prevalence_gaps(cov, KNOWN, "dots", pos, neg)
    assert [g[0] for g in gaps] == ["object", "sky"] and gaps[0][1:] == (1.0, 0.0)
    chosen = matched_negatives(cov, KNOWN, "dots", pos)
    assert len(set(chosen)) == 10 and all(20 <= c < 40 for c in chosen)  # objects, never a dots image
    ev = concept_evidence("dots", pos, neg, None, cov, KNOWN)
    assert ev.kind == "matched" and ev.raw_imbalance == gaps and ev.imbalance == []


def test_an_object_detector_is_not_called_dots_once_negatives_are_matched():
    """The trial's failure, in miniature: a group that fires on any object scores AUC 1 on dots
    against in-context negatives, and chance against matched ones."""
    cov = _bank()
    pos, neg = np.arange(10), np.arange(10, 20)
    object_detector = cov[:, 1] > 0
    scores = object_detector.astype(float) + np.random.default_rng(0).normal(0, 0.01, len(cov))
    raw, _, _ = score(Evidence("negatives", pos, neg), scores)
    matched = concept_evidence("dots", pos, neg, None, cov, KNOWN)
    fair, low, high = score(matched, scores)
    assert raw == 1.0 and low < 0.5 < high and abs(fair - 0.5) < 0.3, (raw, fair, low, high)


def test_paired_evidence_wins_and_scores_the_share_of_pairs():
    cov = _bank()
    pos, neg = np.arange(10), np.arange(10, 20)
    paired = np.r_[np.arange(20, 29), -1]  # the last positive has no pair
    ev = concept_evidence("dots", pos, neg, paired, cov, KNOWN)
    assert ev.kind == "paired" and len(ev.positives) == 9 and list(ev.negatives) == list(range(20, 29))
    scores = np.zeros(40)
    scores[:7] = 1.0  # 7 of 9 pairs higher, 2 tied
    value, low, high = score(ev, scores)
    assert value == pytest.approx((7 + 0.5 * 2) / 9) and low < value < high <= 1.0


def test_auc_and_its_interval_match_sklearn_and_hanley_mcneil():
    rng = np.random.default_rng(3)
    scores = np.r_[rng.normal(1, 1, 30), rng.normal(0, 1, 50)]
    scores[5] = scores[40]  # a tie
    ev = Evidence("negatives", np.arange(30), np.arange(30, 80))
    value, low, high = score(ev, scores)
    assert value == pytest.approx(roc_auc_score(np.r_[np.ones(30), np.zeros(50)], scores))
    q1, q2 = value / (2 - value), 2 * value**2 / (1 + value)
    se = np.sqrt((value * (1 - value) + 29 * (q1 - value**2) + 49 * (q2 - value**2)) / (30 * 50))
    assert (low, high) == pytest.approx((value - 1.96 * se, value + 1.96 * se))


def _shift(mean: float, half: float, n: int = 80) -> PairShift:
    diffs = torch.full((n,), mean, dtype=torch.float64)
    diffs[::2] += half
    diffs[1::2] -= half
    return pair_shift(torch.zeros(n, dtype=torch.float64), diffs)


def test_a_conjunction_is_measurable_only_through_its_interaction():
    a, b, ab = _shift(0.004, 0.02), _shift(0.005, 0.02), _shift(0.16, 0.05)
    assert not Effect(a.mean, a.low, a.high).measurable and ab.measurable
    entry = ConceptShift("a+b", ["a", "b"], ab, False)
    entry.interaction = Effect(ab.mean - a.mean - b.mean, 0.12, 0.18)
    assert entry.measurable and entry.own.mean == pytest.approx(0.151)
    additive = ConceptShift("a+c", ["a", "c"], ab, False, interaction=Effect(0.0, -0.05, 0.05))
    assert ab.measurable and not additive.measurable  # moves the class, but only through its parts

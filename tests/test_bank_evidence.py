"""What a concept label is scored against (ingest/labelling/bank_evidence.py) and how a conjunction is
ranked (ingest/analysis/causal_audit.py), on hand-made numbers."""

from __future__ import annotations

import json

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
from ingest.labelling.concept_bank import ConceptBank, _labels_for, bank_context_line

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


def _two_concept_bank() -> ConceptBank:
    """20 images. "sun" is paired: rows 0-4 with the sun, rows 5-9 the same crops without it. "kite" is
    matched by its negatives (rows 10-14 positives, 15-19 negatives); no sidecars."""
    return ConceptBank(
        pixels=torch.zeros((20, 3, 4, 4), dtype=torch.uint8),
        files=[f"{i:02d}.png" for i in range(20)],
        positives={"sun": np.arange(5), "kite": np.arange(10, 15)},
        negatives={"sun": np.arange(5, 10), "kite": np.arange(15, 20)},
        paired={"sun": np.arange(5, 10)},
    )


def test_labels_are_ranked_by_effect_and_the_score_decides_what_is_a_label():
    """A sun that nudges the group in every pair (share of pairs 1.0, +0.01 each) against a kite that
    moves it a lot but not always (AUC 0.8): ranked by effect the kite comes first, ranked by the score
    the sun does. Hand-computed: sun effect 0.01 / sd, kite (0.84 - 0.3) / sd."""
    bank = _two_concept_bank()
    scores = np.full(20, 0.5)
    scores[0:5] = 0.51  # with the sun: +0.01 over its pair (0.5)
    scores[10:15] = [1.0, 1.0, 1.0, 1.0, 0.2]  # kites
    scores[15:20] = [0.3, 0.3, 0.3, 0.3, 0.3]  # kite negatives
    sd = scores.std()
    by_effect = _labels_for("g", scores, bank, top=2, min_score=0.5)
    by_score = _labels_for("g", scores, bank, top=2, min_score=0.5, rank_by="score")
    assert [(lab.concept, lab.rank) for lab in by_effect] == [("kite", 1), ("sun", 2)]
    assert [(lab.concept, lab.rank) for lab in by_score] == [("sun", 1), ("kite", 2)]
    sun, kite = by_score
    assert sun.score == 1.0 and kite.score == pytest.approx(0.8)  # 4 of 5 kites above every negative
    assert sun.details["effect"] == pytest.approx(0.01 / sd, abs=1e-6)
    assert kite.details["effect"] == pytest.approx((0.84 - 0.3) / sd, abs=1e-6)
    # the score still decides what is a label: with min_score above the kite's AUC only the sun is kept
    kept = _labels_for("g", scores, bank, top=2, min_score=0.9)
    assert [(lab.concept, lab.rank) for lab in kept] == [("sun", 1)]


@pytest.mark.parametrize(
    ("declared", "explained", "warns"),
    [(None, "bee", "every class's scenes"), ("ladybug", "bee", "'ladybug' scenes"), ("bee", "Bee", None)],
)
def test_the_bank_says_when_it_is_not_drawn_from_the_explained_class(tmp_path, declared, explained, warns):
    (tmp_path / "manifest.json").write_text(json.dumps({"class": declared}))
    line = bank_context_line(tmp_path, explained)
    assert (line is None) if warns is None else (warns in line and f"explains {explained!r}" in line), line


def test_a_bank_without_a_manifest_or_a_class_says_nothing(tmp_path):
    assert bank_context_line(tmp_path, "bee") is None
    (tmp_path / "manifest.json").write_text("{not json")
    assert bank_context_line(tmp_path, "bee") is None
    (tmp_path / "manifest.json").write_text(json.dumps({"concepts": ["a"]}))  # a bank from before --class
    assert bank_context_line(tmp_path, "bee") is None


def test_an_unknown_ranking_is_refused_before_any_work():
    from ingest.labelling.concept_bank import label_circuit

    with pytest.raises(ValueError, match="rank_by must be 'effect' or 'score', not 'size'"):
        label_circuit(None, {}, _two_concept_bank(), {}, rank_by="size")

"""The audit of a stored run, from the graph's labels to a stored `AuditResult`: what `neurflow
audit` does and what a campaign's audit step does after each class (ingest/analysis/audit.py holds
the method)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class AuditStepError(ValueError):
    """The run cannot be audited as asked (no labels yet, unreadable pairs)."""


@dataclass
class AuditOutcome:
    """What an audit found and where it is stored. `method` "causal" (pairs given: concepts ranked by
    their counterfactual shift, `shifts` every pair set's) or "labels" (negatives only: candidates
    from labels)."""

    method: str
    audit_id: str
    findings: list[Any]
    shifts: list[Any] = field(default_factory=list)


@dataclass
class AuditSettings:
    expected: Sequence[str] = ()
    pairs: str | Sequence[str] | None = None  # one folder of pairs, or of pair sets; or several
    negatives: str | None = None
    class_images: str | None = None  # default: the run's own image folder
    min_score: float = 0.8
    max_rank: int = 2
    random_sets: int = 10
    seed: int = 0
    confirm: int = 3  # groups per concept masked beside random ones (causal audit)


def influence(driver, circuit, expected: Sequence[str], min_score: float, max_rank: int) -> dict[str, float]:
    """Each candidate concept's influence on the class (the `bias_candidates` query)."""
    from queries.runner import run

    rows = run(
        "bias_candidates",
        driver=driver,
        model_id=circuit.model_id,
        class_name=circuit.class_name,
        run_id=circuit.run_id,
        expected=list(expected),
        min_score=min_score,
        max_rank=max_rank,
        limit=1000,
    )
    return {r["concept"]: r["influence"] for r in rows}


def audit_stored_run(
    driver,
    model,
    cuts,
    circuit,
    images: str,
    settings: AuditSettings,
    progress: Callable[[int, int], None] | None = None,
) -> AuditOutcome:
    """The audit of a stored run, stored as an `AuditResult`. With pairs: the causal-first audit
    (`_causal_audit`); with negatives only: each non-expected labelled group masked against random
    ones. `images` is the run's image folder (the default class images)."""

    from graphmodel.audits import write_audit
    from graphmodel.labels import read_labels
    from ingest.analysis.audit import (
        AuditImages,
        load_folder,
        run_audit,
    )

    if not settings.pairs and not settings.negatives:
        raise AuditStepError("give pairs and/or negatives: the audit measures bias on them")
    run_id = circuit.run_id
    labels = read_labels(driver, run_id)
    wanted = [e.strip().lower() for e in settings.expected if e.strip()]
    size = model.input_size
    if settings.pairs:
        return _causal_audit(driver, model, cuts, circuit, images, settings, labels, wanted, progress)
    if not any(g.startswith(f"{run_id}/") for g in labels):
        raise AuditStepError(f"run {run_id} has no labels; run `neurflow label --run {run_id} ...` first")
    # No pairs reach this point (they take the causal audit): the bias images are the false positives.
    class_images = settings.class_images or images
    data = AuditImages(load_folder(class_images, size), load_folder(settings.negatives, size))
    findings = run_audit(
        model,
        cuts,
        circuit,
        labels,
        wanted,
        data,
        influence=influence(driver, circuit, wanted, settings.min_score, settings.max_rank),
        min_score=settings.min_score,
        max_rank=settings.max_rank,
        random_sets=settings.random_sets,
        seed=settings.seed,
        **({"progress": progress} if progress is not None else {}),
    )
    stored = {
        "expected": wanted,
        "pairs": None,  # kept in the settings so audit ids stay those of earlier label-based audits
        "negatives": str(Path(settings.negatives).resolve()) if settings.negatives else None,
        "class_images": str(Path(class_images).resolve()),
        "min_score": settings.min_score,
        "max_rank": settings.max_rank,
        "random_sets": settings.random_sets,
        "seed": settings.seed,
        "pair_shift": None,
    }
    ident = write_audit(driver, run_id, stored, [f.as_dict() for f in findings])
    return AuditOutcome("labels", ident, findings)


def _pair_folders(pairs: str | Sequence[str]) -> list[str]:
    return [pairs] if isinstance(pairs, str | Path) else list(pairs)


def _causal_audit(driver, model, cuts, circuit, images, settings, labels, wanted, progress):
    """The causal-first audit (ingest/analysis/causal_audit.py) of a run with counterfactual pairs."""
    from graphmodel.audits import write_audit
    from ingest.analysis.audit import load_folder
    from ingest.analysis.causal_audit import PairSetError, load_pair_sets, run_causal_audit

    folders = _pair_folders(settings.pairs)
    try:
        sets = load_pair_sets(folders, model.input_size)
    except (PairSetError, OSError) as exc:
        raise AuditStepError(str(exc)) from None
    class_images = settings.class_images or images
    shifts, findings = run_causal_audit(
        model,
        cuts,
        circuit,
        sets,
        wanted,
        load_folder(class_images, model.input_size),
        negatives=load_folder(settings.negatives, model.input_size) if settings.negatives else None,
        labels=labels,
        confirm=settings.confirm,
        random_sets=settings.random_sets,
        seed=settings.seed,
        **({"progress": progress} if progress is not None else {}),
    )
    stored = {
        "method": "causal",
        "expected": wanted,
        "pairs": sorted(str(Path(f).resolve()) for f in folders),
        "negatives": str(Path(settings.negatives).resolve()) if settings.negatives else None,
        "class_images": str(Path(class_images).resolve()),
        "random_sets": settings.random_sets,
        "confirm": settings.confirm,
        "seed": settings.seed,
        "concept_shifts": [s.as_dict() for s in shifts],
    }
    ident = write_audit(driver, circuit.run_id, stored, [f.as_dict() for f in findings])
    return AuditOutcome("causal", ident, findings, shifts=shifts)

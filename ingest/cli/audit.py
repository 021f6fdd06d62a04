"""`neurflow audit`: rank a class's non-expected concepts and test each causally (ingest/analysis/audit.py,
docs/audit.md); results are printed and stored on the graph as `AuditResult` nodes."""

from __future__ import annotations

from dataclasses import asdict

import click

from ingest.cli.options import echo_json, json_option
from ingest.cli.ranges import COUNT, SCORE, SEED
from ingest.cli.run_opener import RunRef, graph, open_stored_run, run_options


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


@click.command(name="audit")
@run_options
@click.option(
    "--expected",
    default="",
    help="Comma-separated concepts the class should use (they are not candidates), e.g. stripes,wings.",
)
@click.option(
    "--pairs",
    type=click.Path(exists=True, file_okay=False),
    help="Counterfactual pairs: DIR/without/* and DIR/with/* (same file names, same scenes without and "
    "with a concept, of other classes).",
)
@click.option(
    "--negatives",
    type=click.Path(exists=True, file_okay=False),
    help="Images of other classes; those the model calls the class are the false positives.",
)
@click.option(
    "--class-images",
    type=click.Path(exists=True, file_okay=False),
    help="Images of the class to measure what masking costs (default: the run's image folder).",
)
@click.option(
    "--min-score", default=0.8, show_default=True, type=SCORE, help="Lowest label score of a candidate."
)
@click.option(
    "--max-rank", default=2, show_default=True, type=COUNT, help="Only a group's best N labels count."
)
@click.option(
    "--random-sets", default=10, show_default=True, type=COUNT, help="Random same-size groups per group."
)
@click.option("--seed", default=0, show_default=True, type=SEED, help="Random seed of the random groups.")
@json_option
def audit_command(
    run: RunRef,
    expected: str,
    pairs: str | None,
    negatives: str | None,
    class_images: str | None,
    min_score: float,
    max_rank: int,
    random_sets: int,
    seed: int,
    as_json: bool,
) -> None:
    """Find concepts the class relies on that it should not, and check each by masking its groups.

    \b
    neurflow audit --run ID --expected stripes,wings --pairs cf_pairs/ --negatives other_classes/
    Candidates are the run's labelled groups (run `neurflow label` first) whose concept is not
    expected. Each is masked on the class's images, the false positives and the with-concept images
    of the pairs, against random groups of the same size; concepts are ranked by selectivity (bias
    removed beyond random minus class removed beyond random), not by labels or purity.
    """
    from ingest.analysis.audit import MIN_SHIFT
    from ingest.pipeline.audit_step import AuditSettings, AuditStepError, audit_stored_run

    if not pairs and not negatives:
        raise click.UsageError("give --pairs and/or --negatives: the audit measures bias on them")
    settings = AuditSettings(
        expected=expected.split(","),
        pairs=pairs,
        negatives=negatives,
        class_images=class_images,
        min_score=min_score,
        max_rank=max_rank,
        random_sets=random_sets,
        seed=seed,
    )

    def tick(done: int, total: int) -> None:
        click.echo(f"\rmasking candidate groups: {done}/{total}", nl=done == total, err=True)

    with graph() as (_cfg, driver):
        opened = open_stored_run(driver, run, with_patches=False)
        run_id = opened.circuit.run_id
        try:
            ident, findings, shift = audit_stored_run(
                driver, opened.model, opened.cuts, opened.circuit, opened.images, settings, tick
            )
        except AuditStepError as exc:
            raise click.ClickException(str(exc)) from None
        result = [f.as_dict() for f in findings]
    shift_json = {**asdict(shift), "measurable": shift.measurable} if shift is not None else None
    if as_json:
        echo_json({"audit_id": ident, "pair_shift": shift_json, "findings": result})
        return
    if shift is not None:
        verdict = (
            "measurable"
            if shift.measurable
            else f"no measurable shift (below {MIN_SHIFT} or within the noise): the pairs' concept does "
            "not move the class, so no share of its shift is computed ('bias rm' is -)"
        )
        click.echo(f"counterfactual pairs: {shift.describe()}: {verdict}")
    if not findings:
        click.echo(
            f"no candidates: no group of run {run_id} has a non-expected label with score >= {min_score}"
        )
    wide = max([16, *(len(f["best_group"].split("/", 1)[1]) + 2 for f in result)])
    click.echo(
        f"{'rank':<5}{'concept':<14}{'best group':<{wide}}{'select.':>8}{'P drop':>8}{'random':>8}"
        f"{'bias rm':>9}{'recall':>8}{'influence':>11}"
    )
    for f in result:
        click.echo(
            f"{f['rank']:<5}{f['concept']:<14}{f['best_group'].split('/', 1)[1]:<{wide}}"
            f"{f['selectivity']:>8.3f}"
            f"{f['bias_drop']:>8.3f}{f['random_bias_drop']:>8.3f}{_share(f['bias_removed']):>9}"
            f"{-f['recall_cost']:>+8.0%}{f['influence']:>11.4f}"
            + (
                f"  (tied with {', '.join(f['tied_with'])}: the same group, or ≥ 90 % the same members)"
                if f["tied_with"]
                else ""
            )
        )
    for f in result:
        best = next(g for g in f["groups"] if g["group_id"] == f["best_group"])
        if best["random_size"] < best["size"]:
            click.echo(
                f"note: {f['best_group'].split('/', 1)[1]} holds {best['size']} neurons, half its layer or "
                f"more; its random groups hold {best['random_size']} (a quarter of the layer), not "
                f"{best['size']}: random groups that large switch the class off"
            )
    click.echo(
        "P drop: fall of the class probability on the bias images (with-concept images, else false "
        "positives) when the best group is masked; random: the same for random groups of its size; "
        "bias rm: share of the counterfactual shift (else of the false positives) removed; recall: "
        f"change of the class's recall. Stored as AuditResult {ident}."
    )

"""`neurflow audit`: rank a class's non-expected concepts and test each causally (ingest/analysis/audit.py,
docs/audit.md); results are printed and stored on the graph as `AuditResult` nodes."""

from __future__ import annotations

import click

from ingest.cli.options import echo_json, json_option
from ingest.cli.ranges import COUNT, SCORE, SEED
from ingest.cli.run_opener import RunRef, graph, open_stored_run, run_options

MIN_SHIFT_TEXT = "0.01"  # ingest.analysis.audit.MIN_SHIFT, kept here so the CLI loads no torch


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
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="Counterfactual pairs: DIR/without/* and DIR/with/* (same file names: scenes of other classes "
    "without and with a concept), or a folder of such sets, one per concept or conjunction (A+B). "
    "Repeatable.",
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
@click.option(
    "--confirm",
    default=3,
    show_default=True,
    type=COUNT,
    help="With pairs: groups per concept masked beside random groups, after a screen of every group.",
)
@click.option("--seed", default=0, show_default=True, type=SEED, help="Random seed of the random groups.")
@json_option
def audit_command(
    run: RunRef,
    expected: str,
    pairs: tuple[str, ...],
    negatives: str | None,
    class_images: str | None,
    min_score: float,
    max_rank: int,
    random_sets: int,
    confirm: int,
    seed: int,
    as_json: bool,
) -> None:
    """Find concepts the class relies on that it should not, and the groups that carry them.

    \b
    With counterfactual pairs (causal-first):
      neurflow audit --run ID --expected stripes,wings --pairs pairs/
    pairs/ holds one set per concept (pairs/flower/without, pairs/flower/with, ...) and may hold
    conjunctions (pairs/sun+cloud/...). Each set's shift of P(class) is measured with a 95 % CI and
    the sets are ranked by it (a conjunction by its interaction beyond its parts); a set that moves
    nothing says so. Then every group is masked on each measurable concept's pairs, and the best are
    masked again beside random groups of the same size: groups are ranked by the share of the shift
    they remove beyond random, minus the class they cost. Labels are shown, never used to rank.

    \b
    With negatives only (label-based):
      neurflow audit --run ID --expected stripes,wings --negatives other_classes/
    Candidates are labelled groups (run `neurflow label` first) whose concept is not expected, masked
    on the false positives against random groups; ranked by selectivity.
    """
    from ingest.pipeline.audit_step import AuditSettings, AuditStepError, audit_stored_run

    if not pairs and not negatives:
        raise click.UsageError("give --pairs and/or --negatives: the audit measures bias on them")
    settings = AuditSettings(
        expected=expected.split(","),
        pairs=list(pairs) or None,
        negatives=negatives,
        class_images=class_images,
        min_score=min_score,
        max_rank=max_rank,
        random_sets=random_sets,
        confirm=confirm,
        seed=seed,
    )

    def tick(done: int, total: int) -> None:
        what = "concepts" if pairs else "candidate groups"
        click.echo(f"\rmasking the groups behind the {what}: {done}/{total}", nl=done == total, err=True)

    with graph() as (_cfg, driver):
        opened = open_stored_run(driver, run, with_patches=False)
        run_id = opened.circuit.run_id
        try:
            outcome = audit_stored_run(
                driver, opened.model, opened.cuts, opened.circuit, opened.images, settings, tick
            )
        except AuditStepError as exc:
            raise click.ClickException(str(exc)) from None
    if not as_json:
        from ingest.pipeline.output import tau_lines

        for line in tau_lines(opened.circuit):  # narrow layers: random groups there are a quarter layer
            click.echo(line, err=True)
    if outcome.method == "causal":
        _print_causal(outcome, opened.circuit, as_json)
        return
    ident, findings = outcome.audit_id, outcome.findings
    result = [f.as_dict() for f in findings]
    if as_json:  # pair_shift stays in the output's shape: always null here, pairs take the causal audit
        echo_json({"audit_id": ident, "method": "labels", "pair_shift": None, "findings": result})
        return
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
        "P drop: fall of the class probability on the false positives when the best group is masked; "
        "random: the same for random groups of its size; bias rm: share of the false positives "
        f"removed; recall: change of the class's recall. Stored as AuditResult {ident}."
    )


def _ci(effect: dict) -> str:
    return f"{effect['mean']:+.4f} ({effect['low']:+.4f} to {effect['high']:+.4f})"


def _print_causal(outcome, circuit, as_json: bool) -> None:
    """The causal audit: pair sets ranked by their shift, then the groups behind each measurable one."""
    shifts = [s.as_dict() for s in outcome.shifts]
    result = [f.as_dict() for f in outcome.findings]
    if as_json:
        echo_json(
            {"audit_id": outcome.audit_id, "method": "causal", "concept_shifts": shifts, "findings": result}
        )
        return
    click.echo(
        f"counterfactual pairs: what each set does to P({circuit.class_name}), unmasked (mean shift, "
        "95 % CI); a conjunction A+B is ranked by its interaction, shift(A+B) - shift(A) - shift(B)"
    )
    click.echo(f"{'rank':<5}{'concept':<22}{'shift (95 % CI)':<34}{'pairs':>6}  verdict")
    for f in result:
        own = f["interaction"] or f["shift"]
        verdict = "measurable" if f["measurable"] else "no measurable shift"
        if f["interaction"] is not None:
            parts = " + ".join(f"{v:+.4f}" for v in f["parts"].values())
            verdict = (
                f"interaction {_ci(f['interaction'])}: "
                + ("measurable" if f["measurable"] else "no measurable shift beyond its parts")
                + f" (together {f['shift']['mean']:+.4f}, apart {parts})"
            )
        click.echo(f"{f['rank']:<5}{f['concept']:<22}{_ci(own):<34}{f['shift']['pairs']:>6}  {verdict}")
    for s in shifts:
        if s["expected"]:
            click.echo(f"{'-':<5}{s['name']:<22}{_ci(s['shift']):<34}{s['shift']['pairs']:>6}  expected")
    if not any(f["measurable"] for f in result):
        click.echo(
            f"no measurable shift (below {MIN_SHIFT_TEXT} or within the noise): no concept of these pairs "
            "moves the class, so no group is masked and no share of a shift is computed"
        )
    for f in result:
        if not f["groups"]:
            continue
        click.echo(
            f"\ngroups behind '{f['concept']}' (masked alone, beside random groups of the same size at "
            "their layer; ranked by shift removed beyond random minus class lost beyond random):"
        )
        wide = max(14, *(len(g["group_id"].split("/", 1)[1]) + 2 for g in f["groups"]))
        click.echo(
            f"{'group':<{wide}}{'size':>5}{'shift rm':>10}{'random':>8}{'P drop':>8}{'random':>8}"
            f"{'recall':>8}{'select.':>9}  labels (not used to rank)"
        )
        for g in f["groups"]:
            shift = g["metrics"]["shift"]
            random_rm = 1.0 - shift["random"] / shift["unmasked"] if shift["unmasked"] > 0 else 0.0
            labels = (
                ", ".join(
                    f"{'IoU ' if lab['method'] == 'spatial_iou' else ''}{lab['concept']} {lab['score']:.2f}"
                    for lab in f["labels"].get(g["group_id"], [])
                )
                or "-"
            )
            click.echo(
                f"{g['group_id'].split('/', 1)[1]:<{wide}}{g['size']:>5}{_share(g['bias_removed']):>10}"
                f"{_share(random_rm):>8}{g['bias_drop']:>8.3f}{g['random_bias_drop']:>8.3f}"
                f"{-g['recall_cost']:>+8.0%}{g['selectivity']:>9.3f}  {labels}"
            )
            if g["random_size"] < g["size"]:
                click.echo(
                    f"  note: {g['size']} neurons is half its layer or more; its random groups hold "
                    f"{g['random_size']} (a quarter of the layer)"
                )
        if f["tied_with"]:
            click.echo(
                f"  tied: {', '.join(t.split('/', 1)[1] for t in f['tied_with'])} hold(s) at least 90 % the "
                f"same neurons as {f['best_group'].split('/', 1)[1]}"
            )
    click.echo(
        "shift rm: share of the pairs' shift of P(class) removed by masking; P drop: fall of P(class) on the "
        "with-concept images; recall: change of the class's recall on its own images. "
        f"Stored as AuditResult {outcome.audit_id}."
    )

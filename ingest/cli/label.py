"""`neurflow label`: concept labels on a stored run's groups (docs/labelling.md).

neurflow label --run ID --concepts BANK          concept-bank labels (default, offline)
neurflow label set --group ID --concept NAME     a manual label
neurflow label remove --group ID --concept NAME  remove a manual label
neurflow label mllm --run ID                     multimodal-LLM captions and formation
"""

from __future__ import annotations

from collections import defaultdict

import click

from ingest.cli.options import echo_json, json_option, progress_bar
from ingest.cli.ranges import COUNT, SCORE
from ingest.cli.run_opener import RunRef, graph, open_stored_run


class _LabelGroup(click.Group):
    """`label` runs the concept-bank labeller itself when no sub-command is named."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] in self.commands:
            ctx.meta["label_subcommand"] = True
        return super().parse_args(ctx, args)


def _bank_options(fn):
    for option in reversed(
        [
            click.option(
                "--concepts",
                "bank_dir",
                type=click.Path(exists=True, file_okay=False),
                help="Concept bank: BANK/<concept>/*.png positives, BANK/_negatives/[<concept>/]*.png "
                "negatives.",
            ),
            click.option("--top", default=3, show_default=True, type=COUNT, help="Labels kept per group."),
            click.option(
                "--min-score",
                default=0.5,
                show_default=True,
                type=SCORE,
                help="Lowest ROC AUC stored (0.5 is chance).",
            ),
            click.option(
                "--rank-by",
                type=click.Choice(["effect", "score"]),
                default="effect",
                show_default=True,
                help="Order of a group's labels: effect size (how much the concept moves the group) or the "
                "score itself (share of pairs / ROC AUC). docs/labelling.md compares them.",
            ),
            click.option(
                "--no-semantic-groups", is_flag=True, help="Label neuron groups only, not semantic groups."
            ),
            click.option(
                "--check-only",
                is_flag=True,
                help="Print what the bank compares and where its exemplars differ besides the concept, "
                "then stop: nothing is run through the model and nothing is written.",
            ),
            click.option(
                "--spatial/--no-spatial",
                default=True,
                show_default=True,
                help="Also store IoU labels (method spatial_iou: where a group fires vs the concept's "
                "mask) when every bank image has a NAME.concepts.npz mask sidecar.",
            ),
        ]
    ):
        fn = option(fn)
    return fn


@click.group(name="label", cls=_LabelGroup, invoke_without_command=True)
@click.option("--run", "run_id", help="Run id.")
@click.option("--model", "model_name", help="Model argument, when not the one the run recorded.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help="Weights file, if moved.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@_bank_options
@json_option
@click.pass_context
def label_group(
    ctx: click.Context,
    run_id: str | None,
    model_name: str | None,
    weights: str | None,
    device: str,
    bank_dir: str | None,
    top: int,
    min_score: float,
    rank_by: str,
    no_semantic_groups: bool,
    check_only: bool,
    spatial: bool,
    as_json: bool,
) -> None:
    """Label a run's neuron groups and semantic groups with concepts.

    \b
    neurflow label --run ID --concepts BANK
    A group's score on a concept is the ROC AUC with which its metric M separates the bank's
    positives of the concept from its negatives (or the share of paired exemplars it scores higher
    on); a group's labels are ranked by effect size. Label a class's circuit with an in-class bank
    (crops of that class's images). Re-running replaces the run's concept-bank labels;
    manual and LLM labels are kept. See the sub-commands for the other labellers.
    """
    if ctx.invoked_subcommand is not None or ctx.meta.get("label_subcommand"):
        return
    if not run_id or not bank_dir:
        raise click.UsageError("give --run ID and --concepts BANK, or a sub-command: set, remove, mllm, clip")
    from graphmodel.labels import write_labels
    from ingest.labelling.bank_labelling import bank_labels
    from ingest.labelling.concept_bank import (
        METHOD,
        ConceptBankError,
        bank_check,
        bank_check_lines,
        bank_context_line,
        load_concept_bank,
    )
    from ingest.labelling.spatial import METHOD as SPATIAL

    with graph() as (_cfg, driver):
        ref = RunRef(run_id, model_name=model_name, weights=weights, device=device)
        opened = open_stored_run(driver, ref, with_patches=False)
        try:
            bank = load_concept_bank(bank_dir, opened.model.input_size)
        except ConceptBankError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(
            f"concept bank {bank_dir}: {len(bank.concepts)} concepts ({', '.join(bank.concepts)}), "
            f"{len(bank.files)} images; evidence: "
            + ", ".join(f"{c} {bank.evidence(c).kind}" for c in bank.concepts),
            err=True,
        )
        context = bank_context_line(bank_dir, opened.circuit.class_name)
        if context:
            click.echo(context, err=True)
        check = bank_check(bank)
        for line in bank_check_lines(check, bank.coverage is not None):
            click.echo(line, err=True)
        if check_only:
            if as_json:
                echo_json({"run_id": run_id, "written": 0, "bank_context": context, "bank": check})
            else:
                click.echo(f"run {run_id}: bank checked, nothing labelled (--check-only)")
            return
        by_method = bank_labels(
            opened.model,
            opened.cuts,
            opened.circuit,
            bank,
            top=top,
            min_score=min_score,
            rank_by=rank_by,
            semantic_groups=not no_semantic_groups,
            spatial=spatial,
            progress=lambda desc, total: progress_bar(
                desc, total, unit="image" if desc.startswith("concept bank") else "layer"
            ),
        )
        written = sum(write_labels(driver, run_id, method, labs) for method, labs in by_method.items())
        if spatial and bank.coverage is None:
            click.echo("spatial labels: skipped, the bank has no ground-truth masks on every image", err=True)
    labels, where = by_method[METHOD], by_method.get(SPATIAL, [])
    best = defaultdict(list)
    for label in labels:
        best[label.group_id].append(label)
    if as_json:
        echo_json(
            {
                "run_id": run_id,
                "written": written,
                "groups": len(best),
                "rank_by": rank_by,
                "bank_context": context,
                "bank": check,
                "labels": [
                    {
                        "group_id": lab.group_id,
                        "concept": lab.concept,
                        "score": lab.score,
                        "rank": lab.rank,
                        "effect": lab.details.get("effect"),
                        "evidence": lab.details.get("evidence"),
                        "ci95": lab.details.get("ci95"),
                    }
                    for lab in labels
                ],
                "spatial": [
                    {
                        "group_id": lab.group_id,
                        "concept": lab.concept,
                        "iou": lab.score,
                        "rank": lab.rank,
                        "ci95": lab.details.get("ci95"),
                    }
                    for lab in where
                ],
            }
        )
        return
    located = defaultdict(list)
    for label in where:
        located[label.group_id].append(label)
    click.echo(
        f"run {run_id}: {written} labels on {len(best)} groups (image-level score, ranked by {rank_by} | IoU "
        "where it fires)"
    )
    for group in opened.circuit.neuron_groups:
        shown = ", ".join(f"{lab.concept} {lab.score:.2f}" for lab in best.get(group.ng_id, []))
        iou = ", ".join(f"{lab.concept} {lab.score:.2f}" for lab in located.get(group.ng_id, []))
        click.echo(
            f"  {group.ng_id.split('/', 1)[1]:<14} {len(group.members):>3} neurons  {shown or '-'}"
            + (f"  | IoU {iou}" if iou else "")
        )


@label_group.command("set")
@click.option("--group", "group_id", required=True, help="Neuron group or semantic group id.")
@click.option("--concept", required=True, help="Concept name.")
@click.option(
    "--score", default=1.0, show_default=True, type=SCORE, help="Your confidence, stored as the score."
)
@json_option
def label_set(group_id: str, concept: str, score: float, as_json: bool) -> None:
    """Add a manual label to one group (other labels stay).

    \b
    Example:
      neurflow label set --group RUN_ID/block3/g0 --concept flower --score 0.9
    """
    from graphmodel.connection import GraphStoreError
    from graphmodel.labels import set_label

    with graph() as (_cfg, driver):
        try:
            result = set_label(driver, group_id, concept, score=score)
        except (GraphStoreError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
    if as_json:
        echo_json({"group_id": group_id, **result})
        return
    click.echo(
        f"{result['kind']} {group_id}: LABELED {{method: manual, score: {score}}} -> {result['concept']}"
    )


@label_group.command("remove")
@click.option("--group", "group_id", required=True, help="Neuron group or semantic group id.")
@click.option("--concept", required=True, help="Concept name.")
@click.option("--method", default="manual", show_default=True, help="Which labeller's label to remove.")
@json_option
def label_remove(group_id: str, concept: str, method: str, as_json: bool) -> None:
    """Remove one label from a group.

    \b
    Example:
      neurflow label remove --group RUN_ID/block3/g0 --concept flower
    """
    from graphmodel.labels import remove_label

    with graph() as (_cfg, driver):
        removed = remove_label(driver, group_id, concept, method=method)
    if not removed:
        raise click.ClickException(f"{group_id} has no {method} label {concept!r}")
    if as_json:
        echo_json({"group_id": group_id, "concept": concept, "method": method, "removed": removed})
        return
    click.echo(f"removed {method} label {concept!r} from {group_id}")

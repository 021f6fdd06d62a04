"""`neurflow campaign plan|run|status SPEC`: every class of several models as one resumable job
(ingest/pipeline/campaign.py, docs/campaigns.md)."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import asdict

import click

from ingest.cli.options import echo_json, json_option
from ingest.cli.ranges import COUNT


def _spec_and_plan(
    spec_path: str, classes: str | None, engine: str | None = None, address: str | None = None
):
    from ingest.pipeline.campaign import plan_campaign
    from ingest.pipeline.campaign_spec import CampaignSpecError, load_spec
    from ingest.pipeline.image_pool import PoolError

    try:
        spec = load_spec(spec_path)
        if engine:
            spec.engine = engine
        if address:
            spec.address = address
        return spec, plan_campaign(spec, classes)
    except (CampaignSpecError, PoolError) as exc:
        raise click.ClickException(str(exc)) from None


_spec_arg = click.argument("spec_path", metavar="SPEC", type=click.Path(exists=True, dir_okay=False))
_classes_opt = click.option(
    "--classes", help='Override the spec\'s classes: "all", names or indices, ranges ("0-9,15").'
)
_json_opt = json_option


@click.group(name="campaign")
def campaign_group() -> None:
    """Explain every class of several models as one resumable job, on one machine or on Ray.

    \b
    neurflow campaign plan campaign.toml        # the jobs, and an estimate
    neurflow campaign run campaign.toml         # run them (again: skips COMPLETE, resumes the rest)
    neurflow campaign run campaign.toml --engine ray --address ray://head:10001
    neurflow campaign status campaign.toml      # progress, read from the graph
    The spec format is in docs/campaigns.md.
    """


@campaign_group.command("plan")
@_spec_arg
@_classes_opt
@_json_opt
def plan_command(spec_path: str, classes: str | None, as_json: bool) -> None:
    """Print the jobs of SPEC and, from finished runs in the graph, an estimate of the time.

    \b
    Example:
      neurflow campaign plan campaign.toml --json
    """
    spec, plan = _spec_and_plan(spec_path, classes)
    estimate = _estimate(plan)
    if as_json:
        echo_json(
            {
                "campaign_id": spec.campaign_id,
                "name": spec.name,
                "jobs": [
                    {"key": j.key, "class_index": j.class_index, "images": len(j.files)} for j in plan.jobs
                ],
                "pool": plan.readings,
                "empty": plan.empty,
                "estimate_seconds": estimate,
            }
        )
        return
    click.echo(f"campaign {spec.name} ({spec.campaign_id}): {len(plan.jobs)} jobs, engine {spec.engine}")
    for label, how in plan.readings.items():
        click.echo(f"  {label}: pool {spec.pool_folder} read by {how}")
        if plan.empty.get(label):
            click.echo(f"    no images for: {', '.join(plan.empty[label])}")
    for job in plan.jobs:
        click.echo(f"  {job.key:<40} class {job.class_index:<5} {len(job.files)} images")
    if estimate is None:
        click.echo("estimate: none yet (no finished run of these models in the graph)")
    else:
        click.echo(f"estimate: {estimate / 60:.1f} min on one worker, from finished runs of these models")


def _estimate(plan) -> float | None:
    """Mean seconds of finished runs of each model in the graph, times its jobs; None when unknown."""
    from graphmodel.campaigns import mean_run_seconds
    from graphmodel.connection import GraphStoreError, connect
    from graphmodel.stack.config import StackError
    from ingest.pipeline.campaign import load_cached

    seed = int(plan.spec.extract.get("seed", 0))
    ids = {m.label: load_cached(m, "cpu", seed).model_id for m in plan.spec.models}
    try:
        with connect(retry_seconds=0, connection_timeout=3.0) as driver:
            means = mean_run_seconds(driver, sorted(set(ids.values())))
    except (GraphStoreError, StackError):
        return None
    total = 0.0
    for job in plan.jobs:
        known = means.get(ids[job.model.label])
        if known is None:
            return None
        total += known[0]
    return total


@campaign_group.command("run")
@_spec_arg
@_classes_opt
@click.option("--engine", type=click.Choice(["local", "ray"]), help="Override the spec's engine.")
@click.option("--address", help="Ray: join this cluster (default: the spec's, else start a local Ray).")
@click.option("--workers", type=COUNT, help="Ray: CPUs of the local Ray it starts (default: all).")
@click.option(
    "-v", "--verbose", is_flag=True, help="Per-job and per-layer lines (local engine: per-layer bars)."
)
@_json_opt
def run_command(
    spec_path: str,
    classes: str | None,
    engine: str | None,
    address: str | None,
    workers: int | None,
    verbose: bool,
    as_json: bool,
) -> None:
    """Run every job of SPEC: one shared pass per model, then one ingest per class (skipping COMPLETE
    runs and resuming the rest), then the spec's label step. Exit code 1 when a job failed.

    \b
    Examples:
      neurflow campaign run campaign.toml
      neurflow campaign run campaign.toml --engine ray --address ray-head:6379
    """
    from tqdm import tqdm

    from graphmodel.connection import connect
    from ingest.cli.options import progress_bar
    from ingest.pipeline.campaign import run_campaign

    spec, plan = _spec_and_plan(spec_path, classes, engine, address)
    if not plan.jobs:
        raise click.ClickException(f"the campaign {spec.name} has no jobs (no selected class has images)")

    def echo(line: str) -> None:
        if verbose:
            tqdm.write(line, file=sys.stderr)

    def done(result) -> None:
        bar.update(1)
        if verbose and spec.engine == "ray":  # the local engine said these as they happened
            for line in result.lines:
                tqdm.write(f"{result.key}: {line}", file=sys.stderr)
        if verbose or result.status == "FAILED":
            tqdm.write(
                f"{result.key}: {result.status}" + (f" ({result.error})" if result.error else ""),
                file=sys.stderr,
            )

    with connect() as driver, _campaign_errors():
        bar = tqdm(
            total=len(plan.jobs),
            desc=f"campaign {spec.name}",
            unit="job",
            file=sys.stderr,
            dynamic_ncols=True,
        )
        try:
            report = run_campaign(
                spec,
                plan,
                driver,
                engine=spec.engine,
                address=spec.address,
                workers=workers,
                on_done=done,
                progress=progress_bar if verbose else None,
                echo=echo,
            )
        finally:
            bar.close()
    if as_json:
        echo_json({**asdict(report), "results": [asdict(r) for r in report.results]})
    else:
        _summary(report)
    if any(r.status == "FAILED" for r in report.results):
        sys.exit(1)


@contextlib.contextmanager
def _campaign_errors():
    from ingest.pipeline.campaign import CampaignError

    try:
        yield
    except CampaignError as exc:
        raise click.ClickException(str(exc)) from None


def _summary(report) -> None:
    click.echo(f"{'job':<40}{'status':<18}{'seconds':>9}{'neurons':>9}{'groups':>8}  run")
    for r in report.results:
        click.echo(
            f"{r.key:<40}{r.status:<18}{r.seconds:>9.1f}{r.neurons:>9}{r.neuron_groups:>8}  {r.run_id or '-'}"
        )
    passes = ", ".join(f"{label} {seconds:.1f} s" for label, seconds in report.shared_pass_seconds.items())
    c = report.counts
    click.echo(
        f"campaign {report.campaign_id} on {report.engine}: {c['COMPLETE']} complete, {c['FAILED']} failed, "
        f"{c['RUNNING']} running, {c['PENDING']} pending in {report.seconds:.1f} s (shared passes: {passes})"
    )


@campaign_group.command("status")
@_spec_arg
@_json_opt
def status_command(spec_path: str, as_json: bool) -> None:
    """The campaign's jobs and their runs' status, read from the graph.

    \b
    Example:
      neurflow campaign status campaign.toml --json
    """
    from graphmodel.campaigns import job_states
    from ingest.cli.run_opener import graph
    from ingest.cli.runs import status_text
    from ingest.pipeline.campaign_spec import CampaignSpecError, load_spec

    try:
        spec = load_spec(spec_path)
    except CampaignSpecError as exc:
        raise click.ClickException(str(exc)) from None
    with graph() as (_cfg, driver):
        states = job_states(driver, spec.campaign_id)
    if states is None:
        raise click.ClickException(
            f"the campaign {spec.name} ({spec.campaign_id}) is not in the graph; start it with "
            f"`neurflow campaign run {spec_path}`"
        )
    if as_json:
        echo_json([asdict(s) for s in states])
        return
    for s in states:
        click.echo(f"{s.job:<40}{status_text(s):<16}{s.run_id or '-':<18}{s.error or ''}")
    counts = {
        k: sum(1 for s in states if s.status == k) for k in ("COMPLETE", "FAILED", "RUNNING", "PENDING")
    }
    click.echo(", ".join(f"{v} {k.lower()}" for k, v in counts.items()) + f" of {len(states)} jobs")

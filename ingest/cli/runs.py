"""`neurflow runs`: the runs in the graph, with their status; a RUNNING run says whether a live
process still holds it (its heartbeat, graphmodel/run_lease.py) or it was left behind by one that died."""

from __future__ import annotations

from dataclasses import asdict

import click

from ingest.cli.options import echo_json, json_option
from ingest.cli.ranges import COUNT
from ingest.cli.run_opener import graph


def status_text(state) -> str:
    """COMPLETE / FAILED / RUNNING (live) / RUNNING (dead, ...)."""
    if state.status != "RUNNING":
        return state.status or "?"
    if state.alive:
        return "RUNNING (live)"
    age = "no heartbeat" if state.heartbeat_age is None else f"last heartbeat {state.heartbeat_age:.0f} s ago"
    return f"RUNNING (dead: {age}; re-run its ingest to resume)"


@click.command(name="runs")
@click.option("--model", "model_id", help="Only the runs of this model id.")
@click.option(
    "--status", type=click.Choice(["RUNNING", "COMPLETE", "FAILED"]), help="Only the runs with this status."
)
@click.option(
    "--limit", default=200, show_default=True, type=COUNT, help="At most this many runs, newest first."
)
@json_option
def runs_command(model_id: str | None, status: str | None, limit: int, as_json: bool) -> None:
    """List the runs in the graph: id, status, model, class, layers done.

    \b
    neurflow runs
    neurflow runs --status RUNNING --json
    A RUNNING run whose process died (kill -9, a lost machine) shows as dead: re-run its
    `neurflow ingest` command to resume it.
    """
    from graphmodel.reader import list_runs

    with graph() as (_cfg, driver):
        rows = list_runs(driver, model_id=model_id, status=status, limit=limit)
    if as_json:
        echo_json(
            [
                {
                    **asdict(r.state),
                    "model_id": r.model_id,
                    "class_index": r.class_index,
                    "class_name": r.class_name,
                }
                for r in rows
            ]
        )
        return
    if not rows:
        click.echo("no runs in the graph" + (" matching the filter" if model_id or status else ""))
        return
    for r in rows:
        s = r.state
        who = r.class_name or r.class_index
        click.echo(
            f"{s.run_id}  {status_text(s):<12}  {r.model_id}  class {who}  layers {len(s.layers_done)}/"
            f"{len(s.layers)}  attempts {s.attempts}"
            + (f"  error: {s.error}" if s.error and s.status != "COMPLETE" else "")
        )

"""`neurflow stack up|down|status`: the local Neo4j (with Browser), S3 server and guide."""

from __future__ import annotations

import sys
from collections.abc import Callable

import click

from graphmodel.stack.config import StackError
from ingest.cli.options import echo_json, json_option
from ingest.cli.ranges import SECONDS


@click.group(name="stack")
def stack_group() -> None:
    """Start, stop or inspect the local Neo4j (with Browser), S3 server and guide (no Docker needed).

    Settings come from NEURFLOW_* variables (docs/services.md); secrets are generated once into
    the state directory and never printed.
    """


def _stack_call(fn: Callable, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except StackError as exc:
        raise click.ClickException(str(exc)) from exc


def _print_table(report: dict) -> None:
    for service, entry in report.items():
        state = "healthy" if entry.get("healthy") else entry.get("problem", "unhealthy")
        click.echo(f"{service:8} {entry['address']:28} pid {entry.get('pid') or '-'!s:8} {state}")


@stack_group.command("up")
@click.option("--no-neo4j", is_flag=True, help="Do not start Neo4j.")
@click.option("--no-s3", is_flag=True, help="Do not start the S3 server.")
@click.option("--no-guide", is_flag=True, help="Do not serve the NeurFlow guide (Neo4j serves Browser).")
@click.option(
    "--timeout", default=180.0, show_default=True, type=SECONDS, help="Seconds to wait until healthy."
)
@json_option
def stack_up(no_neo4j: bool, no_s3: bool, no_guide: bool, timeout: float, as_json: bool) -> None:
    """Start the services (a no-op for those already running) and wait until they answer.

    \b
    Examples:
      neurflow stack up
      neurflow stack up --no-neo4j --no-s3     # only the guide, for a Neo4j in Docker
      neurflow stack up --json
    """
    from graphmodel.stack import browser_lines, load_config, up

    cfg = _stack_call(load_config)
    report = _stack_call(up, cfg, neo4j=not no_neo4j, s3=not no_s3, guide=not no_guide, timeout=timeout)
    if as_json:
        echo_json(report)
        return
    _print_table(report)
    for line in browser_lines(cfg, report):
        click.echo(line)


@stack_group.command("down")
@json_option
def stack_down(as_json: bool) -> None:
    """Stop the services of this state directory.

    \b
    Example:
      neurflow stack down
    """
    from graphmodel.stack import down, load_config, status

    cfg = _stack_call(load_config)
    _stack_call(down, cfg)
    if as_json:
        echo_json({service: entry["running"] for service, entry in _stack_call(status, cfg).items()})
        return
    click.echo("stopped")


@stack_group.command("status")
@json_option
def stack_status(as_json: bool) -> None:
    """Show what runs, where, and whether it answers (exit code 3 when something is unhealthy).

    \b
    Examples:
      neurflow stack status
      neurflow stack status --json
    """
    from graphmodel.stack import load_config, status

    report = _stack_call(status, _stack_call(load_config))
    if as_json:
        echo_json(report)
    else:
        _print_table(report)
    if not all(entry["healthy"] for entry in report.values()):
        sys.exit(3)

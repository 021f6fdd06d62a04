"""What the commands that work on a stored run share: the --run option and its overrides, connecting
to the configured Neo4j, and re-opening the run's circuit, model and images (ingest/run_context.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

import click


def run_options(fn: Callable, *, circuit: bool = False) -> Callable:
    """--run plus overrides for where the run's inputs are now (they default to what the Run records).

    With circuit=True, --run is optional and --circuit (a saved circuit.json whose `source` records
    the model and images) may stand in for it: see `open_run_or_circuit`."""
    options = [
        click.option(
            "--run",
            "run_id",
            required=not circuit,
            help="Run id (see `neurflow query` or Browser)" + ("; or give --circuit." if circuit else "."),
        ),
        click.option("--model", "model_name", help="Model argument, when not the one the run recorded."),
        click.option(
            "--weights", type=click.Path(exists=True, dir_okay=False), help="Weights file, if moved."
        ),
        click.option(
            "--images",
            type=click.Path(exists=True, file_okay=False),
            help="The run's image folder, if moved.",
        ),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
    ]
    if circuit:
        options.insert(
            1,
            click.option(
                "--circuit",
                "circuit_json",
                type=click.Path(exists=True, dir_okay=False),
                help="A saved circuit.json instead of a stored run (no graph needed).",
            ),
        )
    for option in reversed(options):
        fn = option(fn)
    return fn


run_or_circuit_options = partial(run_options, circuit=True)


@contextmanager
def graph() -> Iterator[tuple[object, object]]:
    """(stack config, driver) of the configured Neo4j; connection problems become one clear line."""
    from graphmodel.connection import GraphStoreError, connect
    from graphmodel.stack.config import StackError, load_config

    try:
        cfg = load_config()
        driver = connect(cfg)
    except (GraphStoreError, StackError) as exc:
        raise click.ClickException(str(exc)) from exc
    with driver:
        yield cfg, driver


def open_stored_run(
    driver,
    run_id: str,
    *,
    model_name: str | None,
    weights: str | None,
    images: str | None,
    device: str,
    with_patches: bool,
):
    """The run's circuit from the graph, with its model (and patch set) loaded and checked."""
    from graphmodel.connection import GraphStoreError
    from graphmodel.reader import load_circuit, run_status

    state = run_status(driver, run_id)
    if state is None:
        raise click.ClickException(f"run {run_id} is not in the graph; `neurflow query --list` shows queries")
    if state.status != "COMPLETE":
        raise click.ClickException(
            f"run {run_id} is {state.status} (layers done: {', '.join(state.layers_done) or 'none'}); "
            "finish it first by re-running its `neurflow ingest` command"
        )
    try:
        circuit = load_circuit(driver, run_id)
    except GraphStoreError as exc:
        raise click.ClickException(str(exc)) from exc
    return _open(circuit, model_name, weights, images, device, with_patches)


def _open(
    circuit, model_name: str | None, weights: str | None, images: str | None, device: str, with_patches: bool
):
    """`open_run` with its errors as click errors."""
    from ingest.cli_options import resolve_device
    from ingest.run_context import RunSourceError, open_run

    try:
        return open_run(
            circuit,
            model=model_name,
            weights=weights,
            images=images,
            device=resolve_device(device),
            with_patches=with_patches,
        )
    except RunSourceError as exc:
        raise click.ClickException(str(exc)) from exc


def open_run_or_circuit(
    run_id: str | None,
    circuit_json: str | None,
    *,
    model_name: str | None,
    weights: str | None,
    images: str | None,
    device: str,
    with_patches: bool,
):
    """The `OpenedRun` of a stored run (--run) or of a saved circuit.json (--circuit): exactly one."""
    from graphmodel.records import Circuit

    if bool(run_id) == bool(circuit_json):
        raise click.UsageError("give exactly one of --run ID and --circuit circuit.json")
    if run_id:
        with graph() as (_cfg, driver):
            return open_stored_run(
                driver,
                run_id,
                model_name=model_name,
                weights=weights,
                images=images,
                device=device,
                with_patches=with_patches,
            )
    try:
        circuit = Circuit.load(circuit_json)
    except (ValueError, KeyError, TypeError) as exc:
        raise click.ClickException(f"cannot read circuit {circuit_json}: {exc}") from exc
    return _open(circuit, model_name, weights, images, device, with_patches)

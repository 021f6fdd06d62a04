"""What the commands that work on a stored run share: the --run option and its overrides, connecting
to the configured Neo4j, and re-opening the run's circuit, model and images
(ingest/pipeline/run_context.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial, wraps

import click


@dataclass(frozen=True)
class RunRef:
    """Which run a command works on (--run, or --circuit a saved circuit.json) and where its inputs
    are now, when not where the run recorded them."""

    run_id: str | None
    circuit_json: str | None = None
    model_name: str | None = None
    weights: str | None = None
    images: str | None = None
    device: str = "auto"


_REF_FIELDS = ("run_id", "circuit_json", "model_name", "weights", "images", "device")


def run_options(fn: Callable, *, circuit: bool = False) -> Callable:
    """--run plus overrides for where the run's inputs are now (they default to what the Run records),
    handed to the command as one ``run: RunRef``.

    With circuit=True, --run is optional and --circuit (a saved circuit.json whose `source` records
    the model and images) may stand in for it: see `open_run_or_circuit`."""

    @wraps(fn)
    def command(**kwargs):
        ref = RunRef(**{name: kwargs.pop(name) for name in _REF_FIELDS if name in kwargs})
        return fn(run=ref, **kwargs)

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
        command = option(command)
    return command


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


def open_stored_run(driver, ref: RunRef, *, with_patches: bool):
    """The run's circuit from the graph, with its model (and patch set) loaded and checked."""
    from graphmodel.connection import GraphStoreError
    from graphmodel.reader import load_circuit, run_status

    run_id = ref.run_id
    state = run_status(driver, run_id)
    if state is None:
        raise click.ClickException(f"run {run_id} is not in the graph; `neurflow runs` lists the runs")
    if state.status != "COMPLETE":
        raise click.ClickException(
            f"run {run_id} is {state.status} (layers done: {', '.join(state.layers_done) or 'none'}); "
            "finish it first by re-running its `neurflow ingest` command"
        )
    try:
        circuit = load_circuit(driver, run_id)
    except GraphStoreError as exc:
        raise click.ClickException(str(exc)) from exc
    return _open(circuit, ref, with_patches)


def _open(circuit, ref: RunRef, with_patches: bool):
    """`open_run` with its errors as click errors."""
    from ingest.cli.options import resolve_device
    from ingest.pipeline.run_context import RunSourceError, open_run

    try:
        return open_run(
            circuit,
            model=ref.model_name,
            weights=ref.weights,
            images=ref.images,
            device=resolve_device(ref.device),
            with_patches=with_patches,
        )
    except RunSourceError as exc:
        raise click.ClickException(str(exc)) from exc


def open_run_or_circuit(ref: RunRef, *, with_patches: bool):
    """The `OpenedRun` of a stored run (--run) or of a saved circuit.json (--circuit): exactly one."""
    from graphmodel.records import Circuit

    if bool(ref.run_id) == bool(ref.circuit_json):
        raise click.UsageError("give exactly one of --run ID and --circuit circuit.json")
    if ref.run_id:
        with graph() as (_cfg, driver):
            return open_stored_run(driver, ref, with_patches=with_patches)
    try:
        circuit = Circuit.load(ref.circuit_json)
    except (ValueError, KeyError, TypeError) as exc:
        raise click.ClickException(f"cannot read circuit {ref.circuit_json}: {exc}") from exc
    return _open(circuit, ref, with_patches)

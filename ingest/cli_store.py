"""`neurflow ingest` (extract a circuit straight into Neo4j + the patch store) and `neurflow stack`.

The ingest streams: each layer is written as soon as the core yields it, its exemplar patches
stored first, so a crash keeps the finished layers and re-running the same command (same run id)
resumes below them. A run already COMPLETE is left untouched.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from graphmodel.connection import GraphStoreError
from graphmodel.patchstore import LocalPatchStore, PatchStore, PatchStoreError, S3PatchStore, encode_png
from graphmodel.stack.config import StackConfig, StackError
from ingest.cli_options import build_run, extraction_options, progress_bar

if TYPE_CHECKING:
    from neo4j import Driver

    from graphmodel.records import Circuit
    from ingest.circuit import ExtractConfig
    from ingest.models import LoadedModel

# ------------------------------------------------------------------------------------- options


# --------------------------------------------------------------------------------- patch store


def open_patch_store(
    cfg: StackConfig, *, s3: bool = False, local_dir: str | Path | None = None
) -> PatchStore:
    """The store for patch images: ``--local-patches`` > ``--s3`` > automatic.

    Automatic means S3 when NEURFLOW_S3_ENDPOINT is set or the local stack's S3 server runs, and
    otherwise the local directory ``<state dir>/patches`` (file:// URIs).
    """
    if local_dir is not None:
        return LocalPatchStore(local_dir)
    if s3 or os.environ.get("NEURFLOW_S3_ENDPOINT") or _stack_s3_running(cfg):
        return S3PatchStore.from_config(cfg)
    return LocalPatchStore(cfg.state_dir / "patches")


def _stack_s3_running(cfg: StackConfig) -> bool:
    from graphmodel.stack.services import is_running

    return is_running(cfg, "s3")


# ------------------------------------------------------------------------------------- ingest


@dataclass
class IngestResult:
    run_id: str
    status: str  # "COMPLETE", or "ALREADY_COMPLETE" when nothing was done
    layers_resumed: list[str] = field(default_factory=list)
    layers_written: list[str] = field(default_factory=list)
    patches_stored: int = 0
    seconds: float = 0.0
    counts: dict[str, Any] = field(default_factory=dict)
    circuit: Circuit | None = None  # as extracted (None when the run was already complete)


def _no_progress(_desc: str, _total: int) -> Callable[[int], None]:
    return lambda _n: None


def run_ingest(
    driver: Driver,
    loaded: LoadedModel,
    images: str | Path,
    class_index: int,
    cfg: ExtractConfig,
    store: PatchStore,
    *,
    progress: Callable[[str, int], Callable[[int], None]] = _no_progress,
    upload_progress: Callable[[int], Callable[[int], None]] = lambda _total: lambda _n: None,
    echo: Callable[[str], None] = lambda _line: None,
    on_failure: Callable[[str, BaseException], None] | None = None,
) -> IngestResult:
    """Extract the circuit and write it layer by layer, resuming a run that has finished layers.

    On any error after the run is registered, ``on_failure(run_id, exc)`` is called (the CLI marks
    the run FAILED there) and the error is raised again: a run is never COMPLETE after an error.
    """
    from graphmodel import reader, writer
    from ingest.circuit import finish, iter_circuit, prepare_run

    started = time.perf_counter()
    prepared = prepare_run(loaded, images, class_index, cfg)
    circuit = prepared.circuit
    state = reader.run_status(driver, circuit.run_id)
    if state is not None and state.status == writer.COMPLETE:
        return IngestResult(
            circuit.run_id, "ALREADY_COMPLETE", counts=writer.run_counts(driver, circuit.run_id)
        )
    store.check()
    if writer.start_run(driver, circuit) == writer.COMPLETE:  # completed by another process meanwhile
        return IngestResult(
            circuit.run_id, "ALREADY_COMPLETE", counts=writer.run_counts(driver, circuit.run_id)
        )
    result = IngestResult(circuit.run_id, writer.RUNNING)
    try:
        writer.write_patches(driver, circuit.run_id, circuit.patches)
        done = reader.finished_layers(driver, circuit.run_id)
        result.layers_resumed = [step.layer.name for step in done]
        if done:
            echo(f"resuming run {circuit.run_id} below {', '.join(result.layers_resumed)}")
        timings = {}
        for step in done:
            circuit.add_step(step)
            timings[step.layer.name] = {"seconds": round(step.seconds, 3), "pairs": step.pairs}
        index = {r.patch_id: i for i, r in enumerate(prepared.patches.records)}
        stored: set[str] = set()
        for step in iter_circuit(
            loaded, prepared.cuts, prepared.patches, class_index, cfg, circuit.run_id, progress, done=done
        ):
            exemplars = sorted({pid for sg in step.semantic_groups for pid in sg.patch_ids} - stored)
            uris = _store_patches(store, prepared.patches.pixels, index, exemplars, upload_progress)
            writer.set_patch_uris(driver, uris)
            stored.update(exemplars)
            t0 = time.perf_counter()
            rows = writer.write_layer(driver, circuit.run_id, step)
            echo(
                f"{step.layer.name}: {len(step.neurons)} neurons, {len(step.semantic_groups)} semantic "
                f"groups, {len(step.neuron_groups)} neuron groups, {len(exemplars)} patches; "
                f"{rows} rows written in {time.perf_counter() - t0:.2f} s"
            )
            circuit.add_step(step)
            result.layers_written.append(step.layer.name)
            timings[step.layer.name] = {"seconds": round(step.seconds, 3), "pairs": step.pairs}
        result.patches_stored = len(stored)
        finish(circuit, prepared.patches, loaded, time.perf_counter() - started, timings)
        writer.complete_run(driver, circuit)
    except BaseException as exc:
        if on_failure is not None:
            on_failure(circuit.run_id, exc)
        raise
    result.status = writer.COMPLETE
    result.circuit = circuit
    result.seconds = time.perf_counter() - started
    result.counts = writer.run_counts(driver, circuit.run_id)
    return result


def _store_patches(store: PatchStore, pixels, index: dict[str, int], patch_ids: list[str], progress) -> dict:
    from graphmodel.patchstore import upload_patches

    items = [(pid, encode_png(pixels[index[pid]].permute(1, 2, 0).numpy())) for pid in patch_ids]
    return upload_patches(store, items, on_done=progress(len(items)))


def _upload_bar(total: int) -> Callable[[int], None]:
    from tqdm import tqdm

    if not total:
        return lambda _n: None
    bar = tqdm(total=total, desc="patches → store", unit="patch", leave=False, file=sys.stderr)

    def tick(n: int) -> None:
        bar.update(n)
        if bar.n >= bar.total:
            bar.close()

    return tick


def _describe_failure(exc: BaseException, uri: str) -> str:
    from neo4j.exceptions import DriverError, Neo4jError

    if isinstance(exc, (GraphStoreError, PatchStoreError, StackError)):
        return str(exc)
    if isinstance(exc, (DriverError, Neo4jError)):
        return (
            f"lost Neo4j at {uri} during the ingest ({type(exc).__name__}: {exc}); finished layers are kept: "
            "re-run the same command to resume"
        )
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return f"{type(exc).__name__}: {exc}"


def _mark_failed(cfg: StackConfig) -> Callable[[str, BaseException], None]:
    """Best effort, with a short retry budget: Neo4j may be the thing that failed."""

    def mark(run_id: str, exc: BaseException) -> None:
        from graphmodel import writer
        from graphmodel.connection import connect

        try:
            with connect(cfg, retry_seconds=5.0, connection_timeout=3.0, verify=False) as driver:
                marked = writer.fail_run(driver, run_id, _describe_failure(exc, cfg.neo4j_uri))
            if marked:
                click.echo(f"run {run_id} marked FAILED", err=True)
        except Exception as inner:  # the original error matters more
            click.echo(f"could not mark run {run_id} FAILED ({type(inner).__name__}: {inner})", err=True)

    return mark


@click.command(name="ingest")
@extraction_options
@click.option(
    "--s3",
    "use_s3",
    is_flag=True,
    help="Store patch images in the S3 bucket (NEURFLOW_S3_ENDPOINT / _BUCKET / _ACCESS_KEY / _SECRET_KEY).",
)
@click.option(
    "--local-patches",
    type=click.Path(file_okay=False),
    help="Store patch images under this directory instead (file:// URIs in the graph).",
)
def ingest_command(use_s3: bool, local_patches: str | None, images: str, **options: Any) -> None:
    """Extract the NeurFlow circuit of one class and write it into Neo4j, layer by layer.

    Patch images go to S3 when --s3 is given, NEURFLOW_S3_ENDPOINT is set or `neurflow stack up`
    runs an S3 server; otherwise to <state dir>/patches. Re-running the same command resumes an
    interrupted run and leaves a complete one unchanged. Connection settings come from the
    NEURFLOW_* variables (see docs/services.md).
    """
    from graphmodel.connection import connect
    from graphmodel.stack.config import load_config

    if use_s3 and local_patches:
        raise click.UsageError("--s3 and --local-patches exclude each other")
    try:
        stack_cfg = load_config()
        store = open_patch_store(stack_cfg, s3=use_s3, local_dir=local_patches)
        store.check()  # before loading the model: a server that is down fails in a second
        driver = connect(stack_cfg)
    except (GraphStoreError, PatchStoreError, StackError) as exc:
        raise click.ClickException(str(exc)) from exc
    with driver:
        loaded, class_index, cfg = build_run(**options)
        click.echo(
            f"model {loaded.model_id}; class {class_index}"
            f"{f' ({loaded.class_names[class_index]})' if loaded.class_names else ''}; layers "
            f"{', '.join(cfg.layers)}; Neo4j {stack_cfg.neo4j_uri}; patches: {store.describe()}",
            err=True,
        )
        try:
            result = run_ingest(
                driver,
                loaded,
                images,
                class_index,
                cfg,
                store,
                progress=progress_bar,
                upload_progress=_upload_bar,
                echo=lambda line: click.echo(line, err=True),
                on_failure=_mark_failed(stack_cfg),
            )
        except (GraphStoreError, PatchStoreError, StackError) as exc:
            raise click.ClickException(str(exc)) from exc
        except Exception as exc:
            from neo4j.exceptions import DriverError, Neo4jError

            if isinstance(exc, (DriverError, Neo4jError)):
                raise click.ClickException(_describe_failure(exc, stack_cfg.neo4j_uri)) from exc
            raise
    if result.status == "ALREADY_COMPLETE":
        click.echo(f"run {result.run_id} is already complete in {stack_cfg.neo4j_uri}; nothing changed")
    else:
        resumed = f" (resumed below {', '.join(result.layers_resumed)})" if result.layers_resumed else ""
        click.echo(f"run {result.run_id} COMPLETE in {result.seconds:.1f} s{resumed}")
    counts = result.counts or {}
    click.echo(
        "stored: "
        + ", ".join(
            f"{counts.get(k, 0)} {k.replace('_', ' ')}"
            for k in (
                "neurons",
                "semantic_groups",
                "neuron_groups",
                "core_edges",
                "hyperedges",
                "group_edges",
            )
        )
    )
    click.echo(f"Neo4j: {stack_cfg.neo4j_uri}; patches: {store.describe()}")
    click.echo(
        f"look at it:  MATCH (r:Run {{run_id: '{result.run_id}'}})-[:HAS_NEURON_GROUP]->(g)-[f:FEEDS]->(p) "
        "RETURN g, f, p"
    )


# -------------------------------------------------------------------------------------- stack


@click.group(name="stack")
def stack_group() -> None:
    """Start, stop or inspect the local Neo4j, S3 server and Neo4j Browser (no Docker needed).

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
@click.option("--no-browser", is_flag=True, help="Do not serve Neo4j Browser.")
@click.option("--timeout", default=180.0, show_default=True, help="Seconds to wait until healthy.")
def stack_up(no_neo4j: bool, no_s3: bool, no_browser: bool, timeout: float) -> None:
    """Start the services (a no-op for those already running) and wait until they answer."""
    from graphmodel.stack import load_config, up

    cfg = _stack_call(load_config)
    report = _stack_call(up, cfg, neo4j=not no_neo4j, s3=not no_s3, browser=not no_browser, timeout=timeout)
    _print_table(report)
    if "browser" in report:
        click.echo(
            f"Neo4j Browser: {cfg.browser_url} (user {cfg.neo4j_user}; password: NEURFLOW_NEO4J_PASSWORD "
            f"or 'neo4j_password' in {cfg.state_dir / 'credentials.json'})"
        )


@stack_group.command("down")
def stack_down() -> None:
    """Stop the services of this state directory."""
    from graphmodel.stack import down, load_config

    _stack_call(down, _stack_call(load_config))
    click.echo("stopped")


@stack_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def stack_status(as_json: bool) -> None:
    """Show what runs, where, and whether it answers (exit code 3 when something is unhealthy)."""
    from graphmodel.stack import load_config, status

    report = _stack_call(status, _stack_call(load_config))
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _print_table(report)
    if not all(entry["healthy"] for entry in report.values()):
        sys.exit(3)

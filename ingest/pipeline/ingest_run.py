"""Extract a circuit straight into Neo4j + the patch store, layer by layer.

The ingest streams: each layer is written as soon as the core yields it, its exemplar patches
stored first, so a crash keeps the finished layers and re-running the same command (same run id)
resumes below them. A run already COMPLETE is left untouched. A plain function of its inputs, so
an engine may retry it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graphmodel import run_lease
from graphmodel.connection import GraphStoreError
from graphmodel.patchstore import PatchStore, PatchStoreError, encode_png
from graphmodel.stack.config import StackConfig, StackError

if TYPE_CHECKING:
    from neo4j import Driver

    from graphmodel.records import Circuit
    from ingest.core.circuit import ExtractConfig
    from ingest.core.models import LoadedModel


@dataclass
class IngestResult:
    run_id: str
    status: str  # "COMPLETE", or "ALREADY_COMPLETE" when nothing was done
    layers_resumed: list[str] = field(default_factory=list)
    layers_written: list[str] = field(default_factory=list)
    patches_stored: int = 0
    seconds: float = 0.0
    counts: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, dict] = field(default_factory=dict)  # per layer: seconds and pairs
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
    files: Sequence[Path] | None = None,
    predictions: Mapping[str, int] | None = None,
    on_start: Callable[[str], None] | None = None,
) -> IngestResult:
    """Extract the circuit and write it layer by layer, resuming a run that has finished layers.

    On any error after the run is registered, ``on_failure(run_id, exc)`` is called (the CLI marks
    the run FAILED there) and the error is raised again: a run is never COMPLETE after an error.
    ``on_start(run_id)`` is called once the run is in the graph (a campaign links it there).
    """
    from graphmodel import reader, writer
    from ingest.core.circuit import finish, prepare_run

    started = time.perf_counter()
    prepared = prepare_run(loaded, images, class_index, cfg, files=files, predictions=predictions)
    circuit = prepared.circuit
    state = reader.run_status(driver, circuit.run_id)
    if state is not None and state.status == writer.COMPLETE:
        return _already_complete(driver, circuit.run_id, on_start)
    store.check()
    owner = run_lease.Owner.here()
    # RunBusyError when another live process ingests the same run; COMPLETE when one finished it
    if writer.start_run(driver, circuit, owner) == writer.COMPLETE:
        return _already_complete(driver, circuit.run_id, on_start)
    result = IngestResult(circuit.run_id, writer.RUNNING)
    try:
        if on_start is not None:
            on_start(circuit.run_id)
        with run_lease.Heartbeat(driver, circuit.run_id, owner) as beat:
            _write_layers(
                driver,
                loaded,
                prepared,
                class_index,
                cfg,
                store,
                result,
                beat,
                progress,
                upload_progress,
                echo,
            )
        finish(circuit, prepared.patches, loaded, time.perf_counter() - started, result.timings)
        writer.complete_run(driver, circuit)
    except BaseException as exc:
        if on_failure is not None:
            on_failure(circuit.run_id, exc)
        with contextlib.suppress(Exception):  # Neo4j may be what failed; a dead pid frees it anyway
            run_lease.release(driver, circuit.run_id, owner)
        raise
    result.status = writer.COMPLETE
    result.circuit = circuit
    result.seconds = time.perf_counter() - started
    result.counts = writer.run_counts(driver, circuit.run_id)
    return result


def _already_complete(driver: Driver, run_id: str, on_start: Callable[[str], None] | None) -> IngestResult:
    from graphmodel import writer

    if on_start is not None:
        on_start(run_id)
    return IngestResult(run_id, "ALREADY_COMPLETE", counts=writer.run_counts(driver, run_id))


def _write_layers(
    driver, loaded, prepared, class_index, cfg, store, result, beat, progress, upload_progress, echo
):
    """Store the patch set, take over the finished layers of an earlier attempt (their exemplars go
    into this attempt's patch store, so no URI points at a store the run no longer uses), then
    compute and write the remaining layers one by one."""
    from graphmodel import reader, writer
    from graphmodel.patch_uris import patch_uris
    from ingest.core.circuit import iter_circuit

    circuit = prepared.circuit
    writer.write_patches(driver, circuit.run_id, circuit.patches)
    done = reader.finished_layers(driver, circuit.run_id)
    result.layers_resumed = [step.layer.name for step in done]
    index = {r.patch_id: i for i, r in enumerate(prepared.patches.records)}
    stored: set[str] = set()
    if done:
        echo(f"resuming run {circuit.run_id} below {', '.join(result.layers_resumed)}")
        earlier = sorted({pid for step in done for sg in step.semantic_groups for pid in sg.patch_ids})
        known = patch_uris(driver, earlier)
        elsewhere = [pid for pid in earlier if known.get(pid) != store.uri(pid)]  # another store, or none
        writer.set_patch_uris(
            driver, store_patches(store, prepared.patches.pixels, index, elsewhere, upload_progress)
        )
        stored.update(earlier)
    for step in done:
        circuit.add_step(step)
        result.timings[step.layer.name] = {"seconds": round(step.seconds, 3), "pairs": step.pairs}
    for step in iter_circuit(
        loaded, prepared.cuts, prepared.patches, class_index, cfg, circuit.run_id, progress, done=done
    ):
        beat.check()
        exemplars = sorted({pid for sg in step.semantic_groups for pid in sg.patch_ids} - stored)
        uris = store_patches(store, prepared.patches.pixels, index, exemplars, upload_progress)
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
        result.timings[step.layer.name] = {"seconds": round(step.seconds, 3), "pairs": step.pairs}
    result.patches_stored = len(stored)


def store_patches(store: PatchStore, pixels, index: dict[str, int], patch_ids: list[str], progress) -> dict:
    from graphmodel.patchstore import upload_patches

    items = [(pid, encode_png(pixels[index[pid]].permute(1, 2, 0).numpy())) for pid in patch_ids]
    return upload_patches(store, items, on_done=progress(len(items)))


def failure_marker(cfg: StackConfig, echo: Callable[[str], None]) -> Callable[[str, BaseException], None]:
    """`on_failure` for `run_ingest`: mark the run FAILED with `describe_failure`, best effort and with
    a short retry budget (Neo4j may be the thing that failed); says what happened through `echo`."""

    def mark(run_id: str, exc: BaseException) -> None:
        from graphmodel import writer
        from graphmodel.connection import connect

        try:
            with connect(cfg, retry_seconds=5.0, connection_timeout=3.0, verify=False) as driver:
                marked = writer.fail_run(driver, run_id, describe_failure(exc, cfg.neo4j_uri))
            if marked:
                echo(f"run {run_id} marked FAILED")
        except Exception as inner:  # the original error matters more
            echo(f"could not mark run {run_id} FAILED ({type(inner).__name__}: {inner})")

    return mark


class Terminated(BaseException):
    """SIGTERM arrived (a BaseException, like KeyboardInterrupt: nothing should swallow it)."""


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` in the main thread, so a terminated ingest
    marks its run FAILED like an interrupted one, instead of leaving it RUNNING forever."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum, _frame):
        raise Terminated("terminated (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


DISK_FULL = ("no space left on device", "disk is full", "not enough disk space")
NEEDS_RESTART = ("needs to be restarted", "database has encountered a critical error")


def describe_failure(exc: BaseException, uri: str) -> str:
    """One line for the Run's error and the user: what happened and what to do next."""
    from neo4j.exceptions import DriverError, Neo4jError

    if isinstance(exc, (GraphStoreError, PatchStoreError, StackError)):
        return str(exc)
    if isinstance(exc, (DriverError, Neo4jError)):
        text = f"{type(exc).__name__}: {exc}"
        lowered = text.lower()
        if any(m in lowered for m in DISK_FULL):
            return (
                f"Neo4j at {uri} cannot write: its disk is full ({text}). Free space on the disk of "
                "Neo4j's data folder, restart Neo4j (`neurflow stack up` restarts the local one), then "
                "re-run the same command to resume below the finished layers"
            )
        if any(m in lowered for m in NEEDS_RESTART):
            return (
                f"Neo4j at {uri} stopped writing after a critical error ({text}); restart it "
                "(`neurflow stack up` restarts the local one) and re-run the same command to resume"
            )
        return (
            f"lost Neo4j at {uri} during the ingest ({text}); finished layers are kept: "
            "re-run the same command to resume"
        )
    if isinstance(exc, Terminated):
        return "terminated (SIGTERM); finished layers are kept: re-run the same command to resume"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return f"{type(exc).__name__}: {exc}"

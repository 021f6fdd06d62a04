"""Extract a circuit straight into Neo4j + the patch store, layer by layer.

The ingest streams: each layer is written as soon as the core yields it, its exemplar patches
stored first, so a crash keeps the finished layers and re-running the same command (same run id)
resumes below them. A run already COMPLETE is left untouched. A plain function of its inputs, so
an engine may retry it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graphmodel.connection import GraphStoreError
from graphmodel.patchstore import PatchStore, PatchStoreError, encode_png
from graphmodel.stack.config import StackError

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
    from ingest.core.circuit import finish, iter_circuit, prepare_run

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


def store_patches(store: PatchStore, pixels, index: dict[str, int], patch_ids: list[str], progress) -> dict:
    from graphmodel.patchstore import upload_patches

    items = [(pid, encode_png(pixels[index[pid]].permute(1, 2, 0).numpy())) for pid in patch_ids]
    return upload_patches(store, items, on_done=progress(len(items)))


def describe_failure(exc: BaseException, uri: str) -> str:
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

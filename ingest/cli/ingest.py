"""`neurflow ingest`: extract a circuit straight into Neo4j + the patch store
(ingest/pipeline/ingest_run.py)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from ingest.cli.options import build_run, echo_json, extraction_options, json_option, progress_bar

if TYPE_CHECKING:
    from graphmodel.stack.config import StackConfig


def _upload_bar(total: int) -> Callable[[int], None]:
    return progress_bar("patches → store", total, unit="patch", leave=False)


def ingest_with_progress(driver, loaded, images, class_index: int, cfg, store, *, on_failure=None):
    """`run_ingest` with the command line's progress bars and layer lines on stderr."""
    from ingest.pipeline.ingest_run import run_ingest

    return run_ingest(
        driver,
        loaded,
        images,
        class_index,
        cfg,
        store,
        progress=progress_bar,
        upload_progress=_upload_bar,
        echo=lambda line: click.echo(line, err=True),
        on_failure=on_failure,
    )


def _mark_failed(cfg: StackConfig) -> Callable[[str, BaseException], None]:
    from ingest.pipeline.ingest_run import failure_marker

    return failure_marker(cfg, lambda line: click.echo(line, err=True))


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
@json_option
def ingest_command(
    use_s3: bool, local_patches: str | None, images: str, as_json: bool, **options: Any
) -> None:
    """Extract the NeurFlow circuit of one class and write it into Neo4j, layer by layer.

    Patch images go to S3 when --s3 is given, NEURFLOW_S3_ENDPOINT is set or `neurflow stack up`
    runs an S3 server; otherwise to <state dir>/patches. Re-running the same command resumes an
    interrupted run and leaves a complete one unchanged. Connection settings come from the
    NEURFLOW_* variables (see docs/services.md).

    \b
    Examples:
      neurflow ingest --model planted_cnn --images data/bee --class bee
      neurflow ingest --model resnet50 --images photos/cat --class 281 --s3 --json
    """
    from graphmodel.connection import GraphStoreError, connect
    from graphmodel.patchstore import PatchStoreError
    from graphmodel.stack.config import StackError, load_config
    from ingest.pipeline.ingest_run import Terminated, describe_failure, sigterm_raises
    from ingest.pipeline.patch_stores import open_patch_store

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
            with sigterm_raises():
                result = ingest_with_progress(
                    driver, loaded, images, class_index, cfg, store, on_failure=_mark_failed(stack_cfg)
                )
        except Terminated:
            click.echo(
                "terminated (SIGTERM): the run is marked FAILED and keeps its finished layers; run the same "
                "command again to resume",
                err=True,
            )
            sys.exit(128 + signal.SIGTERM)
        except (GraphStoreError, PatchStoreError, StackError) as exc:
            raise click.ClickException(str(exc)) from exc
        except Exception as exc:
            from neo4j.exceptions import DriverError, Neo4jError

            if isinstance(exc, (DriverError, Neo4jError)):
                raise click.ClickException(describe_failure(exc, stack_cfg.neo4j_uri)) from exc
            raise
    if as_json:
        echo_json(
            {
                "run_id": result.run_id,
                "status": result.status,
                "seconds": result.seconds,
                "layers_resumed": list(result.layers_resumed or []),
                "counts": result.counts or {},
                "neo4j": stack_cfg.neo4j_uri,
                "patches": store.describe(),
            }
        )
        return
    if result.circuit is not None:
        from ingest.pipeline.output import tau_lines

        for line in tau_lines(result.circuit):
            click.echo(line, err=True)
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

"""`neurflow demo`: the method on the shipped planted benchmark, stored in the local Neo4j and S3."""

from __future__ import annotations

from pathlib import Path

import click

from ingest.cli.options import (
    aliased,
    deprecated_alias,
    echo_json,
    json_option,
    resolve_class,
    resolve_device,
)
from ingest.cli.ranges import COUNT, STEPS


@click.command(name="demo")
@click.option(
    "--out", type=click.Path(file_okay=False), default="out/demo", show_default=True, help="Output folder."
)
@click.option(
    "--class",
    "class_name",
    default="bee",
    show_default=True,
    help="Benchmark class to explain.",
)
@click.option(
    "--count", "n_images", default=40, show_default=True, type=COUNT, help="Benchmark images to generate."
)
@deprecated_alias("--images", "--count", "n_images", COUNT)
@click.option(
    "--steps", default=16, show_default=True, type=STEPS, help="Integration steps (Gauss-Legendre nodes)."
)
@click.option(
    "--quadrature",
    type=click.Choice(["riemann_right", "gausslegendre"]),
    default="gausslegendre",
    show_default=True,
    help="The demo uses 16 Gauss-Legendre nodes: more accurate than the paper's 50-step Riemann sum at "
    "a third of the cost (benchmarks/quadrature_accuracy.py). --steps 50 --quadrature riemann_right "
    "is the paper's setting.",
)
@click.option(
    "--store/--no-store",
    default=True,
    show_default=True,
    help="Ingest the circuit: into the configured Neo4j (NEURFLOW_NEO4J_URI, e.g. the Docker compose "
    "services) when it answers, else into the local stack, started here (needs Java 17 and Maven); "
    "--no-store only extracts to --out.",
)
@click.option(
    "-v", "--verbose", is_flag=True, help="Also print the purity of every semantic group (hundreds of rows)."
)
@json_option
def demo_command(
    out: str,
    class_name: str,
    n_images: int,
    steps: int,
    quadrature: str,
    store: bool,
    verbose: bool,
    as_json: bool,
) -> None:
    """Run the method on the shipped planted-concept benchmark, then store it in Neo4j and S3.

    No downloads beyond the first start of the local services (from Maven Central); CPU is fine.

    \b
    Examples:
      neurflow demo
      neurflow demo --class ladybug --count 20 -v
      neurflow demo --no-store --json
    """
    from ingest.cli.extract import run_extract
    from ingest.core.circuit import ExtractConfig
    from ingest.core.models import load_model
    from ingest.planted.data import write_image_folder

    n_images = aliased(click.get_current_context(), "n_images", n_images)
    out_dir = Path(out)
    images = write_image_folder(out_dir / "images" / class_name, class_name, n_images, seed=1234)
    click.echo(f"generated {n_images} benchmark images of {class_name!r} in {images}", err=True)
    loaded = load_model("planted_cnn", device=resolve_device("auto"))
    class_index = resolve_class(class_name, loaded.class_names, loaded.num_classes)
    cfg = ExtractConfig(layers=loaded.default_layers, steps=steps, quadrature=quadrature)
    if not store:
        run_extract(
            loaded,
            images,
            class_index,
            cfg,
            out_dir,
            replace_other=True,
            compact=not verbose,
            as_json=as_json,
        )
        return
    _demo_with_store(loaded, images, class_index, cfg, out_dir, verbose, as_json)


def _demo_with_store(loaded, images, class_index, cfg, out_dir: Path, verbose: bool, as_json: bool) -> None:
    from graphmodel import reader
    from graphmodel.connection import connect
    from graphmodel.stack import load_config, up
    from ingest.cli.ingest import ingest_with_progress
    from ingest.pipeline.output import circuit_summary, summary_lines
    from ingest.pipeline.patch_stores import open_patch_store

    stack_cfg = load_config()
    running = _running_elsewhere(stack_cfg)
    if not running:
        click.echo("starting the local stack (the first start fetches Neo4j from Maven Central)", err=True)
        up(stack_cfg)
    store = open_patch_store(stack_cfg, s3=not running)
    if running:
        click.echo(
            f"using the Neo4j that answers at {stack_cfg.neo4j_uri} (not starting the local stack); "
            f"patches go to the {store.describe()}",
            err=True,
        )
        _serve_guide(stack_cfg)
    with connect(stack_cfg) as driver:
        result = ingest_with_progress(driver, loaded, images, class_index, cfg, store)
        circuit = result.circuit or reader.load_circuit(driver, result.run_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    circuit.save(out_dir / "circuit.json")
    status = result.status.lower().replace("_", " ")
    if as_json:
        echo_json(
            {
                "run_id": result.run_id,
                "status": result.status,
                "circuit": str(out_dir / "circuit.json"),
                "neo4j": stack_cfg.neo4j_uri,
                "browser": stack_cfg.browser_url,
                "guide": stack_cfg.guide_url,
                "patches": store.describe(),
                "summary": circuit_summary(circuit, semantic_groups=verbose),
            }
        )
        return
    click.echo(
        f"""run {result.run_id}: {status}; saved to {out_dir / "circuit.json"}
Neo4j Bolt:    {stack_cfg.neo4j_uri}  (user {stack_cfg.neo4j_user}; password in NEURFLOW_NEO4J_PASSWORD or
               {stack_cfg.state_dir / "credentials.json"})
Neo4j Browser: {stack_cfg.browser_url}  (enter only the password)
Guide:         plays in Browser after you connect; or type  :play {stack_cfg.guide_url}
Patches:       {store.describe()}
First query to paste into Browser:
  MATCH (r:Run {{run_id: '{result.run_id}'}})-[:HAS_NEURON_GROUP]->(g)-[f:FEEDS]->(p) RETURN g, f, p
  (edges as wide as their weight W: the guide's circuit_graph slide, filled in with this run)"""
        + (
            "\nStop the guide server with `neurflow stack down`."
            if running
            else "\nStop the services with `neurflow stack down`."
        )
        + "\n"
    )
    for line in summary_lines(circuit, semantic_groups=verbose):  # where to look first, then the tables
        click.echo(line)


def _serve_guide(stack_cfg) -> None:
    """Serve the guide for a Neo4j running elsewhere: a Python server, no Java (a busy port is said
    and skipped, since the guide only helps)."""
    from graphmodel.stack import StackError, up
    from graphmodel.stack.health import guide_problem

    if guide_problem(stack_cfg, timeout=1.0) is None:
        return  # a guide already answers on the port (another state dir's stack, say)
    try:
        up(stack_cfg, neo4j=False, s3=False, guide=True, timeout=30)
    except StackError as exc:
        click.echo(f"not serving the guide: {exc}", err=True)


def _running_elsewhere(stack_cfg) -> bool:
    """True when the configured Neo4j is not this state dir's but answers with the configured
    credentials (the compose services, a server of your own): the demo then uses it, with S3 when
    NEURFLOW_S3_ENDPOINT is set, instead of starting the local stack (Java) beside it."""
    from graphmodel.connection import GraphStoreError, connect
    from graphmodel.stack.services import is_running

    if is_running(stack_cfg, "neo4j"):
        return False
    try:
        with connect(stack_cfg, retry_seconds=0, connection_timeout=2.0):
            return True
    except GraphStoreError:
        return False

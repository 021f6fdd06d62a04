"""`neurflow`: the command line. Each command parses options, calls the core, and prints results."""

from __future__ import annotations

from pathlib import Path

import click

from ingest.cli_options import (
    build_run,
    extraction_options,
    progress_bar,
    resolve_class,
    resolve_device,
)


def _is_user_error(exc: Exception) -> bool:
    from ingest.layers import LayerError
    from ingest.models import ModelError
    from ingest.patches import ImageFolderError

    return isinstance(exc, (LayerError, ModelError, ImageFolderError))


class _Group(click.Group):
    """Shows errors the user can fix as one clear line (exit code 1), not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if _is_user_error(exc):
                raise click.ClickException(str(exc)) from exc
            raise


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="neurflow-graph")
def main() -> None:
    """NeurFlow Graph: find the neuron groups a vision classifier uses for a class, and how they
    feed each other layer by layer.

    \b
    Start with:  neurflow demo
    Then:        neurflow layers resnet50          (which layer names are valid)
                 neurflow extract --help           (explain a class of your own model)
    """


@main.command()
@click.argument("model")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help="Weights file.")
@click.option("--input-size", type=int, help="Input side in pixels (default: from the model).")
def layers(model: str, weights: str | None, input_size: int | None) -> None:
    """List the layers of MODEL that can be named in --layers, with output shapes.

    MODEL is a torchvision architecture (resnet50, googlenet, ...), planted_cnn (the benchmark
    CNN), or package.module:factory. Layers in the shipped default list are marked with *.
    """
    from ingest.layers import describe_layers
    from ingest.models import load_model

    loaded = load_model(model, weights, input_size=input_size)
    defaults = loaded.default_layers or []
    rows = describe_layers(loaded.module, loaded.input_size)
    click.echo(f"{loaded.arch}: {len(rows)} candidate layers (input {loaded.input_size}px)")
    width = max(len(r["name"]) for r in rows)
    for row in rows:
        mark = "*" if row["name"] in defaults else " "
        shape = "x".join(str(d) for d in row["shape"])
        click.echo(f" {mark} {row['name']:<{width}}  {row['type']:<22} {shape}")
    if defaults:
        click.echo(f"\ndefault --layers: {','.join(defaults)}")


@main.command()
@extraction_options
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    required=True,
    help="Output folder (circuit.json, patches/, purity.tsv).",
)
def extract(images: str, out: str, **options) -> None:
    """Extract the NeurFlow circuit of one class and save it as JSON plus exemplar patches."""
    loaded, class_index, cfg = build_run(**options)
    _run_extract(loaded, images, class_index, cfg, Path(out))


def _run_extract(loaded, images, class_index, cfg, out: Path):
    from ingest.circuit import extract_circuit
    from ingest.output import save_outputs, summary_lines

    click.echo(
        f"model {loaded.model_id} on {next(loaded.module.parameters()).device}; class "
        f"{class_index}{f' ({loaded.class_names[class_index]})' if loaded.class_names else ''}; "
        f"layers {', '.join(cfg.layers)}",
        err=True,
    )
    circuit, patches = extract_circuit(loaded, images, class_index, cfg, progress=progress_bar)
    paths = save_outputs(circuit, patches, out)
    for line in summary_lines(circuit):
        click.echo(line)
    click.echo("")
    for label, path in paths.items():
        click.echo(f"{label}: {path}")
    return circuit


@main.command()
@click.option("--out", type=click.Path(file_okay=False), default="out/demo", show_default=True)
@click.option("--class", "class_name", default="bee", show_default=True)
@click.option("--images", "n_images", default=40, show_default=True, help="Benchmark images to generate.")
@click.option("--steps", default=16, show_default=True)
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
    help="Start the local Neo4j + S3 stack and ingest the circuit (needs Java 17 and Maven); "
    "--no-store only extracts to --out.",
)
def demo(out: str, class_name: str, n_images: int, steps: int, quadrature: str, store: bool) -> None:
    """Run the method on the shipped planted-concept benchmark, then store it in Neo4j and S3.

    No downloads beyond the first start of the local services (from Maven Central); CPU is fine.
    """
    from ingest.circuit import ExtractConfig
    from ingest.models import load_model
    from ingest.planted.data import write_image_folder

    out_dir = Path(out)
    images = write_image_folder(out_dir / "images" / class_name, class_name, n_images, seed=1234)
    click.echo(f"generated {n_images} benchmark images of {class_name!r} in {images}", err=True)
    loaded = load_model("planted_cnn", device=resolve_device("auto"))
    class_index = resolve_class(class_name, loaded.class_names, loaded.num_classes)
    cfg = ExtractConfig(layers=loaded.default_layers, steps=steps, quadrature=quadrature)
    if not store:
        _run_extract(loaded, images, class_index, cfg, out_dir)
        return
    _demo_with_store(loaded, images, class_index, cfg, out_dir)


def _demo_with_store(loaded, images, class_index, cfg, out_dir: Path) -> None:
    from graphmodel import reader
    from graphmodel.connection import connect
    from graphmodel.stack import load_config, up
    from ingest.cli_store import open_patch_store, run_ingest
    from ingest.output import summary_lines

    stack_cfg = load_config()
    click.echo("starting the local stack (the first start fetches Neo4j from Maven Central)", err=True)
    up(stack_cfg)
    store = open_patch_store(stack_cfg, s3=True)
    with connect(stack_cfg) as driver:
        result = run_ingest(
            driver,
            loaded,
            images,
            class_index,
            cfg,
            store,
            progress=progress_bar,
            echo=lambda line: click.echo(line, err=True),
        )
        circuit = result.circuit or reader.load_circuit(driver, result.run_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    circuit.save(out_dir / "circuit.json")
    for line in summary_lines(circuit):
        click.echo(line)
    click.echo(
        f"""
run {result.run_id}: {result.status.lower().replace("_", " ")}; saved to {out_dir / "circuit.json"}
Neo4j Bolt:    {stack_cfg.neo4j_uri}  (user {stack_cfg.neo4j_user}; password in NEURFLOW_NEO4J_PASSWORD or
               {stack_cfg.state_dir / "credentials.json"})
Neo4j Browser: {stack_cfg.browser_url}
Patches:       {store.describe()}
First query to paste into Browser:
  MATCH (r:Run {{run_id: '{result.run_id}'}})-[:HAS_NEURON_GROUP]->(g)-[f:FEEDS]->(p) RETURN g, f, p
Stop the services with `neurflow stack down`."""
    )


@main.command(name="planted-data")
@click.argument("kind", type=click.Choice(["images", "bank", "pairs"]))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--n", "n", default=40, show_default=True, help="Images, exemplars per concept, or pairs.")
@click.option("--class", "class_name", default="bee", show_default=True, help="Class of `images`.")
@click.option("--concept", default="flower", show_default=True, help="Concept added in `pairs`.")
@click.option("--seed", default=1234, show_default=True)
def planted_data(kind: str, out: str, n: int, class_name: str, concept: str, seed: int) -> None:
    """Write planted-benchmark data: IMAGES of a class (with ground-truth sidecars), a concept BANK
    for `neurflow label`, or counterfactual PAIRS (other classes without/with a concept) for
    `neurflow audit`."""
    from ingest.planted.data import write_concept_bank, write_counterfactual_pairs, write_image_folder

    if kind == "images":
        path = write_image_folder(out, class_name, n, seed)
    elif kind == "bank":
        path = write_concept_bank(out, n, seed)
    else:
        path = write_counterfactual_pairs(out, n, seed, concept=concept)
    click.echo(f"wrote {kind} ({n}) to {path}")


@main.command(name="show")
@click.argument("circuit_json", type=click.Path(exists=True, dir_okay=False))
def show(circuit_json: str) -> None:
    """Print the summary and purity tables of a saved circuit.json."""
    from graphmodel.records import Circuit
    from ingest.output import summary_lines

    circuit = Circuit.load(circuit_json)
    for line in summary_lines(circuit):
        click.echo(line)


# Commands that talk to the graph store live beside the core's commands, in their own modules.
from ingest.cli_audit import audit_command  # noqa: E402
from ingest.cli_debug import debug_command  # noqa: E402
from ingest.cli_evaluate import evaluate_command  # noqa: E402
from ingest.cli_label import label_group  # noqa: E402
from ingest.cli_query import query_command  # noqa: E402
from ingest.cli_report import report_command  # noqa: E402
from ingest.cli_store import ingest_command, stack_group  # noqa: E402

main.add_command(ingest_command, "ingest")
main.add_command(stack_group, "stack")
main.add_command(query_command, "query")
main.add_command(label_group, "label")
main.add_command(audit_command, "audit")
main.add_command(evaluate_command, "evaluate")
main.add_command(debug_command, "debug")
main.add_command(report_command, "report")

if __name__ == "__main__":  # pragma: no cover
    main()

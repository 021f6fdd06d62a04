"""`neurflow layers`, `neurflow extract` and `neurflow show`: the method on files, no services."""

from __future__ import annotations

from pathlib import Path

import click

from ingest.cli.options import build_run, extraction_options, progress_bar


@click.command(name="layers")
@click.argument("model")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help="Weights file.")
@click.option("--input-size", type=int, help="Input side in pixels (default: from the model).")
def layers_command(model: str, weights: str | None, input_size: int | None) -> None:
    """List the layers of MODEL that can be named in --layers, with output shapes.

    MODEL is a torchvision architecture (resnet50, googlenet, ...), planted_cnn (the benchmark
    CNN), or package.module:factory. Layers in the shipped default list are marked with *.
    """
    from ingest.core.layers import describe_layers
    from ingest.core.models import load_model

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


@click.command(name="extract")
@extraction_options
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    required=True,
    help="Output folder (circuit.json, patches/, purity.tsv).",
)
def extract_command(images: str, out: str, **options) -> None:
    """Extract the NeurFlow circuit of one class and save it as JSON plus exemplar patches."""
    loaded, class_index, cfg = build_run(**options)
    run_extract(loaded, images, class_index, cfg, Path(out))


def run_extract(loaded, images, class_index, cfg, out: Path):
    """Extract, save to `out` and print the summary: `extract` and `demo --no-store` share it."""
    from ingest.core.circuit import extract_circuit
    from ingest.pipeline.output import save_outputs, summary_lines

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


@click.command(name="show")
@click.argument("circuit_json", type=click.Path(exists=True, dir_okay=False))
def show_command(circuit_json: str) -> None:
    """Print the summary and purity tables of a saved circuit.json."""
    from graphmodel.records import Circuit
    from ingest.pipeline.output import summary_lines

    circuit = Circuit.load(circuit_json)
    for line in summary_lines(circuit):
        click.echo(line)

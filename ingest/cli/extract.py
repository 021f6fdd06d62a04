"""`neurflow layers`, `neurflow extract` and `neurflow show`: the method on files, no services."""

from __future__ import annotations

from pathlib import Path

import click

from ingest.cli.options import build_run, echo_json, extraction_options, json_option, progress_bar
from ingest.cli.ranges import Bounded


@click.command(name="layers")
@click.argument("model")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help="Weights file.")
@click.option(
    "--input-size",
    type=Bounded(int, 8, 4096, why="the side of the square input image in pixels"),
    help="Input side in pixels (default: from the model).",
)
@json_option
def layers_command(model: str, weights: str | None, input_size: int | None, as_json: bool) -> None:
    """List the layers of MODEL that can be named in --layers, with output shapes.

    MODEL is a torchvision architecture (resnet50, googlenet, ...), planted_cnn (the benchmark
    CNN), or package.module:factory. Layers in the shipped default list are marked with *.

    \b
    Examples:
      neurflow layers planted_cnn
      neurflow layers resnet50 --json
      neurflow layers mypkg.models:build --weights model.pt --input-size 224
    """
    from ingest.core.layers import describe_layers
    from ingest.core.models import load_model

    loaded = load_model(model, weights, input_size=input_size)
    defaults = loaded.default_layers or []
    rows = describe_layers(loaded.module, loaded.input_size)
    if as_json:
        echo_json(
            {
                "arch": loaded.arch,
                "input_size": loaded.input_size,
                "layers": [{**row, "default": row["name"] in defaults} for row in rows],
                "default_layers": defaults,
            }
        )
        return
    click.echo(f"{loaded.arch}: {len(rows)} candidate layers (input {loaded.input_size}px)")
    width = max(len(r["name"]) for r in rows)
    for row in rows:
        mark = "*" if row["name"] in defaults else " "
        shape = "x".join(str(d) for d in row["shape"] or [])
        calls = row.get("calls", 1)
        uses = f"  runs {calls} times: list {row['name']}@1 .. @{calls}" if calls > 1 else ""
        click.echo(f" {mark} {row['name']:<{width}}  {row['type']:<22} {shape}{uses}")
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
@json_option
def extract_command(images: str, out: str, as_json: bool, **options) -> None:
    """Extract the NeurFlow circuit of one class and save it as JSON plus exemplar patches.

    \b
    Examples:
      neurflow extract --model planted_cnn --images data/bee --class bee --out out/bee
      neurflow extract --model resnet50 --images photos/cat --class 281 --tau 16 --out out/cat --json
    """
    from ingest.pipeline.output import OutputError, check_out_dir

    try:
        check_out_dir(Path(out))
    except OutputError as exc:
        raise click.BadParameter(str(exc), param_hint="--out") from None
    loaded, class_index, cfg = build_run(**options)
    run_extract(loaded, images, class_index, cfg, Path(out), as_json=as_json)


def run_extract(
    loaded,
    images,
    class_index,
    cfg,
    out: Path,
    *,
    replace_other: bool = False,
    compact: bool = False,
    as_json: bool = False,
):
    """Extract, save to `out` and print the summary: `extract` and `demo --no-store` share it.
    `replace_other` removes another run's results from `out` (the demo owns its folder); without it
    such a folder is refused before any layer is computed. `compact` leaves out the purity rows of
    semantic groups (the demo's default); `as_json` prints the summary and the paths as one JSON
    object instead."""
    from ingest.core.circuit import extract_circuit
    from ingest.pipeline.output import OutputError, circuit_summary, save_outputs, summary_lines

    click.echo(
        f"model {loaded.model_id} on {next(loaded.module.parameters()).device}; class "
        f"{class_index}{f' ({loaded.class_names[class_index]})' if loaded.class_names else ''}; "
        f"layers {', '.join(cfg.layers)}",
        err=True,
    )
    try:
        circuit, patches = extract_circuit(
            loaded,
            images,
            class_index,
            cfg,
            progress=progress_bar,
            on_prepared=lambda shell: _claim(out, shell.run_id, replace_other),
        )
        paths = save_outputs(circuit, patches, out)
    except OutputError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(
            f"cannot write the results into {out}: {exc.strerror or exc}; files written before are "
            "kept whole (each is replaced atomically). Free space or choose another --out, then re-run"
        ) from None
    if as_json:
        summary = circuit_summary(circuit, semantic_groups=not compact)
        echo_json({**summary, "files": {label: str(path) for label, path in paths.items()}})
        return circuit
    for line in summary_lines(circuit, semantic_groups=not compact):
        click.echo(line)
    click.echo("")
    for label, path in paths.items():
        click.echo(f"{label}: {path}")
    return circuit


def _claim(out: Path, run_id: str, replace: bool) -> None:
    from ingest.pipeline.output import claim_out_dir

    for path in claim_out_dir(out, run_id, replace=replace):
        click.echo(f"removed {path} (another run's result)", err=True)


@click.command(name="show")
@click.argument("circuit_json", type=click.Path(exists=True, dir_okay=False))
@json_option
def show_command(circuit_json: str, as_json: bool) -> None:
    """Print the summary and purity tables of a saved circuit.json.

    \b
    Examples:
      neurflow show out/demo/circuit.json
      neurflow show out/demo/circuit.json --json
    """
    from graphmodel.records import Circuit, CircuitFileError
    from ingest.pipeline.output import circuit_summary, summary_lines

    try:
        circuit = Circuit.load(circuit_json)
    except CircuitFileError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        echo_json(circuit_summary(circuit))
        return
    for line in summary_lines(circuit):
        click.echo(line)

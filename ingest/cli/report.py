"""`neurflow report`: write one self-contained HTML page that draws a circuit (see docs/report.md).

From the graph (``--run ID``: circuit, labels, patch images from the patch store, the run's stored
evaluation) or from a saved circuit.json (``--circuit``: patch images from the ``patches/`` folder
`neurflow extract` writes beside it, or cut again from the image folder).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from graphmodel.records import Circuit
from ingest.cli.options import echo_json, json_option, progress_bar

# --------------------------------------------------------------------------------- evaluation


def _load_json_object(path: Path, what: str) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read the {what} {path}: {exc}") from exc
    if not isinstance(value, dict):
        raise click.ClickException(f"the {what} {path} is not a JSON object")
    return value


# ------------------------------------------------------------------------------------ sources


def _from_graph(run_id: str, exemplars: int, echo) -> tuple[Circuit, dict, dict, dict | None]:
    from neo4j.exceptions import DriverError, Neo4jError

    from graphmodel import reader
    from graphmodel.connection import GraphStoreError, connect
    from graphmodel.labels import read_labels
    from graphmodel.patch_uris import patch_uris, read_patch_images, run_evaluation
    from graphmodel.stack.config import StackError, load_config
    from ingest.analysis.report import exemplar_patches

    try:
        cfg = load_config()
        with connect(cfg) as driver:
            state = reader.run_status(driver, run_id)
            if state is None:
                raise click.ClickException(
                    f"run {run_id} is not in the graph at {cfg.neo4j_uri}; `neurflow runs` lists the runs"
                )
            if state.status != "COMPLETE":
                echo(
                    f"run {run_id} is {state.status}: the report shows its {len(state.layers_done)} "
                    f"finished layer(s) of {len(state.layers)}"
                )
            circuit = reader.load_circuit(driver, run_id)
            labels = read_labels(driver, run_id)
            needed = {pid for pids in exemplar_patches(circuit, exemplars).values() for pid in pids}
            uris = patch_uris(driver, needed)
            evaluation = run_evaluation(driver, run_id)
    except (GraphStoreError, StackError) as exc:
        raise click.ClickException(str(exc)) from exc
    except (DriverError, Neo4jError) as exc:
        raise click.ClickException(
            f"Neo4j at {cfg.neo4j_uri} failed while reading run {run_id}: {type(exc).__name__}: {exc}"
        ) from exc
    fetched = read_patch_images(uris, cfg)
    missing = len(needed) - len(fetched.images)
    if missing:
        reasons = sorted(set(fetched.missing.values()))
        why = f" ({reasons[0]})" if reasons else " (no uri in the graph)"
        echo(f"{missing} of {len(needed)} exemplar images could not be read{why}; drawn as grey boxes")
    return circuit, fetched.images, labels, evaluation


def _from_file(
    circuit_path: Path, images: str | None, exemplars: int, echo
) -> tuple[Circuit, dict[str, bytes]]:
    from ingest.analysis.report import exemplar_patches
    from ingest.analysis.report_inputs import cut_patches, from_patch_dir

    try:
        circuit = Circuit.load(circuit_path)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise click.ClickException(f"cannot read the circuit {circuit_path}: {exc}") from exc
    needed = sorted({pid for pids in exemplar_patches(circuit, exemplars).values() for pid in pids})
    thumbs: dict[str, bytes] = {}
    if images is None:
        thumbs.update(from_patch_dir(circuit_path.parent / "patches", needed))
    folder = images or (circuit.source or {}).get("images")
    rest = [pid for pid in needed if pid not in thumbs]
    if rest and folder and Path(folder).is_dir():
        cut, missing, changed = cut_patches(circuit, folder, rest)
        thumbs.update(cut)
        if changed:
            echo(
                f"{changed} of {len(cut)} patches cut from {folder} differ from the extraction's pixels "
                "(another image folder, or another Pillow version)"
            )
        if missing:
            echo(f"{len(missing)} patches could not be cut: {sorted(set(missing.values()))[0]}")
    elif rest:
        hint = f"the image folder {folder} does not exist; " if folder else ""
        echo(
            f"{hint}no images for {len(rest)} of {len(needed)} exemplar patches: pass --images DIR "
            "(the folder the circuit was extracted from); drawn as grey boxes"
        )
    return circuit, thumbs


def _sources(circuit: Circuit, images: str | None, exemplars: int) -> dict[str, bytes]:
    """The exemplars' source images, for the full view, when the image folder is at hand (--images,
    or the folder recorded in the circuit)."""
    from ingest.analysis.report import exemplar_patches
    from ingest.analysis.report_inputs import source_images

    folder = images or (circuit.source or {}).get("images")
    if not folder or not Path(folder).is_dir():
        return {}
    shown = {pid for pids in exemplar_patches(circuit, exemplars).values() for pid in pids}
    return source_images(circuit, folder, shown)


def _heatmaps(circuit: Circuit, thumbs: dict[str, bytes], exemplars: int, echo) -> dict:
    """Where each group fires on its shown exemplars (overlay PNGs), when the run's model can be
    loaded again; otherwise a note and none."""
    from ingest.analysis.heatmaps import group_heatmaps, overlay_png
    from ingest.analysis.report import THUMB_PX, exemplar_patches
    from ingest.pipeline.run_context import RunSourceError, open_run

    try:
        opened = open_run(circuit, with_patches=False)
    except (RunSourceError, ValueError, OSError, ImportError) as exc:
        echo(f"no heatmaps (the run's model cannot be loaded: {exc}); --no-heatmaps silences this")
        return {}
    maps = group_heatmaps(
        opened.model,
        opened.cuts,
        circuit,
        thumbs,
        exemplar_patches(circuit, exemplars),
        progress=lambda desc, total: progress_bar(desc, total, unit="patch", leave=False),
    )
    return {ng: {pid: overlay_png(heat, THUMB_PX) for pid, heat in per.items()} for ng, per in maps.items()}


# -------------------------------------------------------------------------------------- command


@click.command(name="report")
@click.option("--run", "run_id", help="Run id of a circuit stored in Neo4j (`neurflow ingest`).")
@click.option(
    "--circuit",
    "circuit_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A circuit.json saved by `neurflow extract` instead of a stored run.",
)
@click.option(
    "--images",
    type=click.Path(exists=True, file_okay=False),
    help="With --circuit: the image folder the circuit was extracted from (thumbnails are cut from it). "
    "Default: the patches/ folder beside circuit.json, then the folder recorded in the circuit.",
)
@click.option(
    "-o",
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="HTML file to write.",
)
@click.option(
    "--evaluation",
    "evaluation_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Evaluation results (JSON object); default with --run: the run's stored evaluation.",
)
@click.option(
    "--plots",
    "plots_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of evaluation plots (PNG, JPEG, SVG) to include.",
)
@click.option(
    "--exemplars",
    default=4,
    show_default=True,
    type=click.IntRange(1, 8),
    help="Exemplar patches shown per neuron group.",
)
@click.option(
    "--heatmaps/--no-heatmaps",
    default=True,
    show_default=True,
    help="Show where each group fires on its exemplars (the metric M per position); loads the run's "
    "model again (the one recorded in the circuit).",
)
@json_option
def report_command(
    run_id: str | None,
    circuit_path: Path | None,
    images: str | None,
    out: Path,
    evaluation_path: Path | None,
    plots_dir: Path | None,
    exemplars: int,
    heatmaps: bool,
    as_json: bool,
) -> None:
    """Draw a circuit as one self-contained HTML page: layers as rows, neuron groups with exemplar
    patches and labels, edges weighted by W, details on click, evaluation numbers and plots.

    \b
    neurflow report --run RUN_ID -o circuit.html
    neurflow report --circuit out/circuit.json --images DIR -o circuit.html
    """
    from graphmodel.records import write_atomically
    from ingest.analysis.report import drawn_exemplars, render_report
    from ingest.analysis.report_inputs import load_plots, plots_named_in

    if (run_id is None) == (circuit_path is None):
        raise click.UsageError("give exactly one of --run ID and --circuit circuit.json")
    if images is not None and circuit_path is None:
        raise click.UsageError("--images goes with --circuit (with --run, images come from the patch store)")

    def echo(line: str) -> None:
        click.echo(line, err=True)

    labels: dict = {}
    evaluation: dict | None = None
    if run_id is not None:
        circuit, thumbs, labels, evaluation = _from_graph(run_id, exemplars, echo)
    else:
        circuit, thumbs = _from_file(circuit_path, images, exemplars, echo)
    base = Path.cwd()
    if evaluation_path is not None:
        evaluation = _load_json_object(evaluation_path, "evaluation")
        base = evaluation_path.parent
    plots = plots_named_in(evaluation, base)
    if plots_dir is not None:
        plots.update(load_plots(plots_dir))

    sources = _sources(circuit, images, exemplars)
    heat = _heatmaps(circuit, thumbs, exemplars, echo) if heatmaps else {}
    page = render_report(
        circuit,
        thumbnails=thumbs,
        labels=labels,
        evaluation=evaluation,
        plots=plots,
        exemplars=exemplars,
        sources=sources,
        heatmaps=heat,
    )
    try:
        write_atomically(out, page.encode("utf-8"))
    except OSError as exc:
        raise click.ClickException(f"cannot write {out}: {exc.strerror or exc}") from None
    n_labels = sum(1 for g in circuit.neuron_groups if labels.get(g.ng_id))
    drawn, shown = drawn_exemplars(circuit, thumbs, exemplars)
    grey = f" ({shown - drawn} missing, drawn as grey boxes)" if drawn < shown else ""
    n_heat = sum(len(per) for per in heat.values())
    if as_json:
        echo_json(
            {
                "out": str(out),
                "bytes": len(page.encode("utf-8")),
                "run_id": circuit.run_id,
                "neuron_groups": len(circuit.neuron_groups),
                "layers": len(circuit.layers),
                "group_edges": len(circuit.group_edges),
                "exemplars_drawn": drawn,
                "exemplars_shown": shown,
                "source_images": len(sources),
                "heatmaps": n_heat,
                "labelled_groups": n_labels,
                "evaluation": bool(evaluation),
                "plots": len(plots),
            }
        )
        return
    click.echo(
        f"wrote {out} ({len(page) / 1e6:.1f} MB): {len(circuit.neuron_groups)} neuron groups in "
        f"{len(circuit.layers)} layers, {len(circuit.group_edges)} group edges, {drawn} of {shown} exemplar "
        f"images{grey}, {len(sources)} source images, {n_heat} heatmaps, {n_labels} labelled groups"
        + (", evaluation" if evaluation else "")
        + (f", {len(plots)} plots" if plots else "")
    )


report = report_command  # `neurflow report`

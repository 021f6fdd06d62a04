"""`neurflow evaluate`: the paper's fidelity checks on a stored run (or a saved circuit.json), written
as JSON and PNG plots and, for a stored run, onto the Run (docs/evaluation.md)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from ingest.cli.options import echo_json, json_option
from ingest.cli.ranges import COUNT, SEED, Bounded
from ingest.cli.run_opener import RunRef, graph, open_run_or_circuit, run_or_circuit_options

CHECKS = ("optimality", "fidelity", "correlation", "k_stability")
# The defaults finish in minutes on the planted benchmark on 2 CPU cores; `--paper` gives App. D.7's
# sizes (docs/evaluation.md has both timings).
PRESETS = {
    "quick": {
        "random_sets": 20,
        "max_targets": 2,
        "fidelity_random_sets": 5,
        "sizes": (1, 5, 20),
        "sets_per_size": 10,
        "max_single": 10,
        "ks": (30, 50, 90, 150),
    },
    "paper": {
        "random_sets": 100,
        "max_targets": 5,
        "fidelity_random_sets": 10,
        "sizes": (1, 5, 10, 20, 50),
        "sets_per_size": 50,
        "max_single": None,
        "ks": (30, 50, 70, 90, 110, 150, 190),
    },
}


def _ints(_ctx: click.Context, param: click.Parameter, text: str) -> tuple[int, ...]:
    """Click callback: a comma-separated list of integers, checked before any work starts."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of integers", param=param) from None
    if not values:
        raise click.BadParameter("give at least one value", param=param)
    if min(values) < 1:
        raise click.BadParameter(f"{text!r}: every value must be at least 1 (a size or a count)", param=param)
    return values


def _ints_or_none(ctx: click.Context, param: click.Parameter, text: str | None) -> tuple[int, ...] | None:
    """`_ints`, or None when the option was not given (the preset decides)."""
    return None if text is None else _ints(ctx, param, text)


def load_labelled_folder(folder: str, class_names: list[str] | None, num_classes: int, size: int):
    """DIR/<class name or index>/*: uint8 images [N, 3, S, S] and their class indices."""
    import torch

    from ingest.analysis.audit import load_folder
    from ingest.cli.options import resolve_class

    subdirs = sorted(p for p in Path(folder).iterdir() if p.is_dir())
    if not subdirs:
        raise click.BadParameter(
            f"{folder} has no class sub-folders: expected {folder}/<class name or index>/*.png",
            param_hint="--held-out",
        )
    images, labels = [], []
    for sub in subdirs:
        index = resolve_class(sub.name, class_names, num_classes)
        batch = load_folder(sub, size)
        images.append(batch)
        labels.append(torch.full((len(batch),), index, dtype=torch.long))
    return torch.cat(images), torch.cat(labels)


@click.command(name="evaluate")
@run_or_circuit_options
@click.option(
    "--held-out",
    type=click.Path(exists=True, file_okay=False),
    help="Held-out images for fidelity (b): DIR/<class name or index>/*, the class and others.",
)
@click.option("--checks", default=",".join(CHECKS), show_default=True, help="Which checks to run.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="evaluation",
    show_default=True,
    help="Folder for evaluation.json and the plots.",
)
@click.option(
    "--paper",
    is_flag=True,
    help="The paper's settings (App. D.7) instead of the quick defaults; explicit options still win.",
)
@click.option("--random-sets", type=COUNT, help="(a) random sets per target [quick 20, paper 100].")
@click.option(
    "--max-targets", type=COUNT, help="(a, c, d) circuit neurons tested per layer [quick 2, paper 5]."
)
@click.option("--taus", default="4,8,16", show_default=True, callback=_ints, help="(b) core-set sizes.")
@click.option(
    "--fidelity-random-sets", type=COUNT, help="(b) random sets per layer and τ [quick 5, paper 10]."
)
@click.option(
    "--sizes", callback=_ints_or_none, help="(c) random-set sizes [quick 1,5,20; paper 1,5,10,20,50]."
)
@click.option(
    "--sets-per-size",
    type=Bounded(int, 2, why="a correlation needs at least two sets"),
    help="(c) random sets per size (>1) [quick 10, paper 50].",
)
@click.option(
    "--max-single",
    type=click.IntRange(min=2),
    default=None,
    help="(c) at size 1, knock out this many random neurons instead of every neuron of a wider layer "
    "[quick 10, paper: every neuron].",
)
@click.option(
    "--ks",
    callback=_ints_or_none,
    help="(d) values of k [quick 30,50,90,150; paper 30,50,70,90,110,150,190].",
)
@click.option("--seed", default=0, show_default=True, type=SEED, help="Random seed of the random sets.")
@json_option
def evaluate_command(
    run: RunRef,
    held_out: str | None,
    checks: str,
    out_dir: str,
    paper: bool,
    random_sets: int | None,
    max_targets: int | None,
    taus: tuple[int, ...],
    fidelity_random_sets: int | None,
    sizes: tuple[int, ...] | None,
    sets_per_size: int | None,
    max_single: int | None,
    ks: tuple[int, ...] | None,
    seed: int,
    as_json: bool,
) -> None:
    """Run the paper's checks: (a) optimality, (b) fidelity, (c) correlation, (d) k-stability.

    \b
    neurflow evaluate --run ID --held-out held_out/ --out eval/
    neurflow evaluate --run ID --held-out held_out/ --paper      # App. D.7's sizes (much longer)
    The defaults are quick (minutes on the planted benchmark on 2 CPU cores); every bar has a total
    and an ETA. Writes eval/evaluation.json and one PNG per check; a stored run also gets the result as
    Run.evaluation_json (and eval_* headline properties), which `neurflow report` shows.
    """
    preset = PRESETS["paper" if paper else "quick"]
    random_sets = random_sets or preset["random_sets"]
    max_targets = max_targets or preset["max_targets"]
    fidelity_random_sets = fidelity_random_sets or preset["fidelity_random_sets"]
    sizes = sizes or preset["sizes"]
    sets_per_size = sets_per_size or preset["sets_per_size"]
    max_single = max_single or preset["max_single"]
    ks = ks or preset["ks"]
    settings = {
        "preset": "paper" if paper else "quick",
        "random_sets": random_sets,
        "max_targets": max_targets,
        "taus": list(taus),
        "fidelity_random_sets": fidelity_random_sets,
        "sizes": list(sizes),
        "sets_per_size": sets_per_size,
        "max_single": max_single,
        "ks": list(ks),
    }
    from ingest.analysis import evaluate as ev
    from ingest.analysis.evaluation_plots import evaluation_plots

    wanted = [c.strip() for c in checks.split(",") if c.strip()]
    unknown = sorted(set(wanted) - set(CHECKS))
    if unknown:
        raise click.BadParameter(
            f"unknown checks {unknown}; choose from {', '.join(CHECKS)}", param_hint="--checks"
        )
    if "fidelity" in wanted and not held_out:
        raise click.UsageError(
            "fidelity (b) needs --held-out DIR/<class>/* images (or drop it from --checks)"
        )
    # (b) uses held-out images, not the patch set
    opened = open_run_or_circuit(run, with_patches=any(c != "fidelity" for c in wanted))
    model, cuts, circuit, patches = opened.model, opened.cuts, opened.circuit, opened.patches
    steps = int(circuit.params.get("steps", 50))
    method = circuit.params.get("quadrature", "riemann_right")
    result: dict = {
        "run_id": circuit.run_id,
        "model_id": circuit.model_id,
        "class_name": circuit.class_name,
        "settings": settings,
    }
    timings = {}

    def stage(name: str, fn):
        """Run one check with a progress bar (one tick per target neuron, or per layer and τ)."""
        from tqdm import tqdm

        t0 = time.perf_counter()
        total = ev.progress_total(circuit, name, max_targets=max_targets, taus=taus)
        unit = "layer×τ" if name == "fidelity" else "target"
        with tqdm(desc=name, total=total, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=True) as bar:

            def tick(layer: str) -> None:
                bar.set_postfix_str(layer, refresh=False)
                bar.update(1)

            result[name] = fn(tick)
        timings[name] = round(time.perf_counter() - t0, 2)

    if "optimality" in wanted:
        stage(
            "optimality",
            lambda tick: ev.optimality(
                model,
                cuts,
                patches,
                circuit,
                random_sets=random_sets,
                max_targets=max_targets,
                seed=seed,
                progress=tick,
            ),
        )
    if "fidelity" in wanted:
        held, labels = load_labelled_folder(held_out, model.class_names, model.num_classes, model.input_size)
        stage(
            "fidelity",
            lambda tick: ev.fidelity(
                model,
                cuts,
                circuit,
                held,
                labels,
                taus=taus,
                random_sets=fidelity_random_sets,
                seed=seed,
                progress=tick,
            ),
        )
    if "correlation" in wanted:
        stage(
            "correlation",
            lambda tick: ev.correlation(
                model,
                cuts,
                patches,
                circuit,
                sizes=sizes,
                sets_per_size=sets_per_size,
                max_single=max_single,
                max_targets=max_targets,
                steps=steps,
                method=method,
                seed=seed,
                progress=tick,
            ),
        )
    if "k_stability" in wanted:
        stage(
            "k_stability",
            lambda tick: ev.k_stability(
                model,
                cuts,
                patches,
                circuit,
                ks=ks,
                max_targets=max_targets,
                steps=steps,
                method=method,
                seed=seed,
                progress=tick,
            ),
        )
    result["seconds"] = timings
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = {}
    for name, png in evaluation_plots(result).items():
        path = out / f"{name}.png"
        path.write_bytes(png)
        plots[name] = str(path.resolve())
    result["plots"] = plots
    (out / "evaluation.json").write_text(json.dumps(result, indent=1))
    if run.run_id:
        from graphmodel.evaluations import write_evaluation

        with graph() as (_cfg, driver):
            write_evaluation(driver, circuit.run_id, result)
        click.echo(f"stored on Run {circuit.run_id} (evaluation_json, eval_* properties)", err=True)
    from graphmodel.evaluations import headline

    if as_json:
        echo_json({"evaluation": str(out / "evaluation.json"), "plots": plots, "headline": headline(result)})
        return
    click.echo(f"wrote {out / 'evaluation.json'} and {len(plots)} plots to {out}")
    for key, value in headline(result).items():
        click.echo(f"  {key}: {value:.3f}")

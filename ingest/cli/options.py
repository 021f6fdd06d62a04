"""Options shared by the commands that extract a circuit (`neurflow extract`, `neurflow ingest`), and
turning them into a loaded model, a class index and an `ExtractConfig`."""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from ingest.cli.ranges import SEED, STEPS, Bounded
from ingest.core.tau import TauRule, parse_tau

MIN_MEMORY_MB = 64.0

if TYPE_CHECKING:
    from ingest.core.circuit import ExtractConfig
    from ingest.core.models import LoadedModel


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise click.BadParameter("CUDA is not available on this machine; use --device cpu")
    return name


def resolve_class(spec: str, names: list[str] | None, num_classes: int) -> int:
    if spec.strip().lstrip("-").isdigit():
        index = int(spec)
        if not 0 <= index < num_classes:
            raise click.BadParameter(
                f"class index {index} is out of range: the model has {num_classes} classes "
                f"(0..{num_classes - 1})",
                param_hint="--class",
            )
        return index
    if not names:
        raise click.BadParameter(
            f"class {spec!r} given by name, but the model has no class names; pass an index "
            f"0..{num_classes - 1} or a weights sidecar JSON with a 'classes' list",
            param_hint="--class",
        )
    lowered = [n.lower() for n in names]
    if spec.lower() in lowered:
        return lowered.index(spec.lower())
    close = difflib.get_close_matches(spec.lower(), lowered, n=5)
    hint = f"; did you mean {', '.join(repr(names[lowered.index(c)]) for c in close)}?" if close else ""
    raise click.BadParameter(f"unknown class {spec!r}{hint}", param_hint="--class")


def json_option(fn: Callable) -> Callable:
    """``--json``: the command prints its result as one JSON object on stdout, for scripts. While it
    runs, anything else written to stdout (a model package's "Loaded weights" line, say) goes to
    stderr, so stdout parses."""
    import contextlib
    import functools

    @functools.wraps(fn)
    def run(*args, as_json: bool = False, **kwargs):
        if not as_json:
            return fn(*args, as_json=False, **kwargs)
        click.get_current_context().meta["json_stdout"] = sys.stdout
        with contextlib.redirect_stdout(sys.stderr):
            return fn(*args, as_json=True, **kwargs)

    return click.option(
        "--json", "as_json", is_flag=True, help="Print the result as one JSON object on stdout."
    )(run)


def deprecated_alias(old: str, new: str, dest: str, type_=None) -> Callable:
    """A hidden option ``old`` that still works, sets ``dest`` like ``new`` does and says once, on
    stderr, to use ``new`` (so a renamed option does not break anyone's scripts)."""

    def warn(ctx: click.Context, _param: click.Parameter, value):
        if value is not None:
            click.echo(f"note: {old} is deprecated; use {new}", err=True)
            ctx.meta[f"alias:{dest}"] = value
        return value

    return click.option(old, f"_{dest}_alias", type=type_, hidden=True, expose_value=False, callback=warn)


def aliased(ctx: click.Context, dest: str, value):
    """The value of option ``dest``, or of its deprecated alias when that was given."""
    return ctx.meta.get(f"alias:{dest}", value)


def echo_json(data) -> None:
    """`data` as JSON on the command's real stdout (see `json_option`)."""
    import json

    ctx = click.get_current_context(silent=True)
    out = ctx.meta.get("json_stdout") if ctx is not None else None
    click.echo(json.dumps(data, indent=1, default=str), file=out)


def progress_bar(desc: str, total: int, *, unit: str = "pair", leave: bool = True) -> Callable[[int], None]:
    """`tick(n)` advancing a bar on stderr that closes itself when full (nothing for an empty one)."""
    from tqdm import tqdm

    if not total:
        return lambda _n: None
    bar = tqdm(total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr, dynamic_ncols=True)

    def tick(n: int) -> None:
        bar.update(n)
        if bar.n >= bar.total:
            bar.close()

    return tick


def _tau(_ctx: click.Context, _param: click.Parameter, text: str) -> TauRule:
    """--tau is checked when the options are parsed, before any model is loaded."""
    try:
        return parse_tau(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def extraction_options(fn: Callable) -> Callable:
    """The options of `neurflow extract` that define a run (model, images, class, method)."""
    options = [
        click.option(
            "--model", "model_name", required=True, help="Architecture, planted_cnn or pkg.mod:factory."
        ),
        click.option(
            "--weights",
            type=click.Path(exists=True, dir_okay=False),
            help="Weights file (state_dict, saved module or TorchScript).",
        ),
        click.option(
            "--images",
            type=click.Path(exists=True, file_okay=False),
            required=True,
            help="Folder of images of the class (sub-folders are searched).",
        ),
        click.option(
            "--class", "class_spec", required=True, help="Class name (from the model's class list) or index."
        ),
        click.option(
            "--layers",
            "layer_list",
            help="Comma-separated layer names from the output down "
            "(default: the model's shipped list; see `neurflow layers MODEL`).",
        ),
        click.option(
            "--tau",
            default="16",
            show_default=True,
            callback=_tau,
            help="Core neurons per target: a count (16), a fraction of the layer's width (0.05 or 5%), "
            "or a cumulative share of Σ|T| (cum:0.8).",
        ),
        click.option(
            "--k",
            default=50,
            show_default=True,
            type=Bounded(int, 1, why="the number of top patches that define a neuron's concept"),
            help="Patches per neuron concept (top-k).",
        ),
        click.option(
            "--steps",
            default=50,
            show_default=True,
            type=STEPS,
            help="Integration steps N of the integrated gradients.",
        ),
        click.option(
            "--quadrature",
            type=click.Choice(["riemann_right", "gausslegendre"]),
            default="riemann_right",
            show_default=True,
            help="riemann_right is the paper's Eq. 2; gausslegendre is as accurate with fewer steps.",
        ),
        click.option(
            "--ranking",
            type=click.Choice(["paper", "reference"]),
            default="paper",
            show_default=True,
            help="paper: rank by |Σ_v t|; reference: by mean_v |t| (the authors' code).",
        ),
        click.option(
            "--max-images",
            default=50,
            show_default=True,
            type=Bounded(int, 0, why="0 means all images; otherwise how many images to use"),
            help="Use at most this many images predicted as the class (0: all).",
        ),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
        click.option(
            "--memory-mb",
            default=2048.0,
            show_default=True,
            type=Bounded(
                float,
                MIN_MEMORY_MB,
                why=f"below {MIN_MEMORY_MB:g} MB the chunks are so small that the pass runs several times "
                "slower",
            ),
            help="Memory bound for one chunk of the integrated-gradient pass.",
        ),
        click.option("--seed", default=0, show_default=True, type=SEED, help="Random seed (torch, numpy)."),
        click.option(
            "--precision",
            type=click.Choice(["fp32", "bf16", "fp16"]),
            default="fp32",
            show_default=True,
            help="Run the integrated-gradient pass under autocast (bf16, or fp16 on a GPU); measure first "
            "that it keeps your top-tau sets (benchmarks/ig_batched_vs_captum.py --precision).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def build_run(
    model_name: str,
    weights: str | None,
    class_spec: str,
    layer_list: str | None,
    tau: TauRule,
    k: int,
    steps: int,
    quadrature: str,
    ranking: str,
    max_images: int,
    device: str,
    memory_mb: float,
    seed: int,
    precision: str = "fp32",
) -> tuple[LoadedModel, int, ExtractConfig]:
    """Load the model and turn the extraction options into (model, class index, ExtractConfig)."""
    from ingest.core.circuit import ExtractConfig
    from ingest.core.layers import default_layers
    from ingest.core.models import load_model

    loaded = load_model(model_name, weights, device=resolve_device(device), seed=seed)
    if loaded.preprocessing_note:
        click.echo(f"note: {loaded.preprocessing_note}", err=True)
    class_index = resolve_class(class_spec, loaded.class_names, loaded.num_classes)
    layer_names = (
        [x.strip() for x in layer_list.split(",") if x.strip()]
        if layer_list
        else (loaded.default_layers or default_layers(loaded.arch))
    )
    cfg = ExtractConfig(
        layers=layer_names,
        tau=tau,
        k=k,
        steps=steps,
        quadrature=quadrature,
        ranking=ranking,
        max_images=max_images or None,
        memory_mb=memory_mb,
        seed=seed,
        precision=precision,
    )
    return loaded, class_index, cfg

"""`neurflow debug IMAGE`: which neuron groups of a run see what in one image, which of them explain
its prediction, and what masking one of them does (paper §5.1, App. F, Fig. 9; ingest/analysis/debug.py,
docs/debug.md)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ingest.analysis.debug_ranking import DEFAULT_THRESHOLD, RANKINGS
from ingest.cli.options import echo_json, json_option, progress_bar
from ingest.cli.ranges import COUNT, Bounded
from ingest.cli.run_opener import RunRef, graph, open_run_or_circuit, run_or_circuit_options


def _label_text(labels: dict, group_id: str, truth: dict[str, float]) -> str:
    """A group's best two labels, else its exemplars' ground truth (gt:), else '-'."""
    own = labels.get(group_id) or []
    if own:
        return ", ".join(f"{lab.concept} {lab.score:.2f}" for lab in own[:2])
    if truth:
        return "gt: " + ", ".join(f"{c} {share:.0%}" for c, share in list(truth.items())[:2])
    return "-"


@click.command(name="debug")
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@run_or_circuit_options
@click.option("--layer", help="Only the neuron groups of this layer.")
@click.option(
    "--threshold",
    default=DEFAULT_THRESHOLD,
    show_default=True,
    type=Bounded(float, 0.0, why="a value of the metric M, which is never negative"),
    help="A crop counts as showing a group's concept when the group's metric M on it reaches this.",
)
@click.option(
    "--top", "top_n", default=5, show_default=True, type=click.IntRange(min=1), help="Groups shown."
)
@click.option(
    "--rank-by",
    type=click.Choice(RANKINGS),
    default="m",
    show_default=True,
    help="m: max M over the crops (the paper's choice); score: max M x influence on the class; "
    "drop: fall of P(class) when the group is masked.",
)
@click.option(
    "--mask", "mask_group", help="Mask this group (layer/gK or RUN/layer/gK) and report the effect."
)
@click.option(
    "--drop-images",
    "--images-for-drop",
    "drop_images",
    type=click.Path(exists=True, file_okay=False),
    help="With --mask: images searched for the largest class-logit drops (default: the run's images).",
)
@click.option(
    "--drops", "n_drops", default=8, show_default=True, type=COUNT, help="With --mask: images listed."
)
@click.option(
    "--random-sets", default=10, show_default=True, type=COUNT, help="With --mask: random same-size sets."
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Write IMAGE-debug.png (contact sheet of the top groups' crops) and IMAGE-debug.json here.",
)
@json_option
def debug_command(
    image: str,
    run: RunRef,
    layer: str | None,
    threshold: float,
    top_n: int,
    rank_by: str,
    mask_group: str | None,
    drop_images: str | None,
    n_drops: int,
    random_sets: int,
    out_dir: str | None,
    as_json: bool,
) -> None:
    """Debug one prediction with a run's neuron groups: which groups see their concept in IMAGE, and
    which of them explain the prediction.

    \b
    neurflow debug photo.png --run ID --out debug/
    neurflow debug photo.png --run ID --layer block3 --mask block3/g1
    The image is cut into the run's multi-scale crops; every group scores each crop with its metric
    M (its core neurons' activations relative to their maxima over the run's patches). Groups are
    ranked by their best crop's M (--rank-by). --mask zeroes a group's neurons and reports P(class)
    before and after, and the images whose class logit drops most.
    """
    from ingest.analysis.debug import (
        DebugError,
        check_layer,
        contact_sheet,
        debug_image,
        drop_sheet,
        find_group,
        load_named_folder,
        mask_effect,
        short_id,
    )
    from ingest.core.patches import ImageFolderError, load_rgb

    try:
        pixels = load_rgb(Path(image))
    except ImageFolderError as exc:
        raise click.ClickException(str(exc)) from exc
    opened = open_run_or_circuit(run, with_patches=False)
    labels = {}
    if run.run_id:
        from graphmodel.labels import read_labels

        with graph() as (_cfg, driver):
            labels = read_labels(driver, run.run_id)
    circuit, model = opened.circuit, opened.model
    try:
        if layer is not None:
            check_layer(circuit, layer)
    except DebugError as exc:
        raise click.BadParameter(str(exc), param_hint="--layer") from exc
    try:
        group = find_group(circuit, mask_group) if mask_group else None
    except DebugError as exc:
        raise click.BadParameter(str(exc), param_hint="--mask") from exc
    result = debug_image(
        model,
        opened.cuts,
        circuit,
        pixels,
        threshold=threshold,
        layer=layer,
        rank_by=rank_by,
        progress=lambda desc, total: progress_bar(desc, total, unit="crop", leave=False),
    )
    effect, folder_images = None, None
    if group is not None:
        folder = drop_images or circuit.source.get("images")
        if folder and Path(folder).is_dir():
            try:
                folder_images = load_named_folder(folder, model.input_size)
            except ImageFolderError as exc:
                raise click.ClickException(str(exc)) from exc
        else:
            click.echo(
                f"no image folder to search for logit drops ({folder!r} does not exist); pass --drop-images",
                err=True,
            )
            folder = None
        effect = mask_effect(
            model,
            opened.cuts,
            circuit,
            group,
            pixels,
            drop_images=folder_images,
            drop_folder=str(Path(folder).resolve()) if folder else None,
            top=n_drops,
            random_sets=random_sets,
        )
    label_of = {
        s.group_id: _label_text(labels, s.group_id, s.exemplar_concepts)
        for s in [*result.groups, *([result.class_group] if result.class_group else [])]
    }
    payload = {
        "image": str(Path(image).resolve()),
        **result.as_dict(),
        "labels": label_of,
        "mask": effect.as_dict() if effect else None,
    }
    written = []
    if out_dir:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        stem = Path(image).stem
        (out / f"{stem}-debug.json").write_text(json.dumps(payload, indent=1))
        written.append(out / f"{stem}-debug.json")
        if result.groups:
            written.append(
                contact_sheet(
                    result,
                    pixels,
                    out / f"{stem}-debug.png",
                    groups=result.top(top_n),
                    labels={k: v for k, v in label_of.items() if v != "-"},
                )
            )
        if effect and effect.top_drops and folder_images is not None:
            name = short_id(circuit, effect.group_id).replace("/", "_")
            written.append(drop_sheet(effect, folder_images, out / f"{stem}-mask-{name}.png"))
    if as_json:
        echo_json(payload)
        return
    _print_table(result, circuit, label_of, top_n, short_id)
    if effect:
        _print_mask(effect, result, circuit, short_id)
    for path in written:
        click.echo(f"wrote {path}")


def _print_table(result, circuit, label_of, top_n, short_id) -> None:
    cls = result.class_name or str(result.class_index)
    pred = result.predicted_name or str(result.predicted)
    click.echo(
        f"run {result.run_id}: predicted {pred} ({result.predicted_probability:.3f}); "
        f"P({cls}) = {result.class_probability:.3f}; {len(result.crops)} crops; groups ranked by "
        f"{ {'m': 'max M', 'score': 'max M x influence', 'drop': 'P drop when masked'}[result.rank_by] }"
    )
    header = (
        f"{'rank':<5}{'group':<14}{'layer':<12}{'labels':<30}{'max M':>7}{'influence':>10}{'score':>7}"
        f"{'P drop':>8}{'crops>=' + format(result.threshold, 'g'):>11}"
    )
    click.echo(header)
    for s in result.top(top_n):
        drop = f"{s.mask_drop:>8.3f}" if s.mask_drop is not None else f"{'-':>8}"
        click.echo(
            f"{s.rank:<5}{short_id(circuit, s.group_id):<14}{s.layer:<12}{label_of[s.group_id][:29]:<30}"
            f"{s.max_m:>7.3f}{s.influence:>10.3f}{s.score:>7.3f}{drop}{len(s.above):>11}"
        )
    if len(result.groups) > top_n:
        click.echo(f"({len(result.groups) - top_n} more groups; --top N shows more)")
    if result.class_group:
        c = result.class_group
        click.echo(
            f"class group {short_id(circuit, c.group_id)}: M = {c.max_m:.3f} on the best crop (the {cls} "
            "logit relative to its maximum over the run's patches)"
        )
    click.echo(
        "max M: the group's metric on its best crop (1 = all its core neurons at their maximum over the "
        "run's patches); influence: share of the class's input flowing through the group; score: max M x "
        f"influence; P drop: fall of P({cls}) on the image when the group's neurons are zeroed."
    )


def _print_mask(effect, result, circuit, short_id) -> None:
    cls = result.class_name or str(result.class_index)
    random = (
        f"; random {len(effect.members)}-neuron sets of {effect.layer}: {effect.random_probability:.3f} "
        f"(mean of {effect.random_sets})"
        if effect.random_probability is not None
        else ""
    )
    before = effect.predicted_name or effect.predicted
    after = effect.masked_predicted_name or effect.masked_predicted
    click.echo(
        f"masking {short_id(circuit, effect.group_id)} ({len(effect.members)} neurons of {effect.layer}): "
        f"P({cls}) {effect.probability:.3f} -> {effect.masked_probability:.3f}{random}; prediction "
        f"{before} -> {after}"
    )
    if effect.top_drops:
        click.echo(
            f"largest {cls}-logit drops when masking it, of {effect.images_scanned} images in "
            f"{effect.drop_images} (mean drop {effect.mean_drop:.3f}):"
        )
        for d in effect.top_drops:
            click.echo(f"  {d.image:<40} {d.logit:>8.3f} -> {d.masked_logit:>8.3f}  drop {d.drop:.3f}")

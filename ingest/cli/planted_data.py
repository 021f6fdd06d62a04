"""`neurflow planted-data`: the planted benchmark's images, concept bank and counterfactual pairs."""

from __future__ import annotations

from pathlib import Path

import click

from ingest.cli.options import aliased, deprecated_alias, echo_json, json_option
from ingest.cli.ranges import COUNT, SEED


@click.command(name="planted-data")
@click.argument("kind", type=click.Choice(["images", "bank", "pairs"]))
@click.argument("out", type=click.Path(file_okay=False))
@click.option(
    "--count", "n", default=40, show_default=True, type=COUNT, help="Images, exemplars per concept, or pairs."
)
@deprecated_alias("--n", "--count", "n", COUNT)
@click.option(
    "--world",
    type=click.Choice(["insects", "toys"]),
    default="insects",
    show_default=True,
    help="Planted world: insects (planted_cnn/resnet/vit; flowers -> bee) or toys (planted_toys_cnn; "
    "sun and cloud together -> kite).",
)
@click.option(
    "--class",
    "class_name",
    help="Class of `images` [insects: bee, toys: kite]. For `bank`: draw it from this class's scenes only "
    "(an in-class bank, the one to label that class's circuit with) [default: every class].",
)
@click.option(
    "--concept",
    "concepts",
    multiple=True,
    help="Concept added in `pairs` [insects: flower, toys: sun+cloud]; A+B switches two together. "
    "Repeat it to write one set per concept into OUT/<concept>/, as `neurflow audit --pairs OUT` reads.",
)
@click.option("--seed", default=1234, show_default=True, type=SEED, help="Random seed of the scenes.")
@json_option
def planted_data_command(
    kind: str,
    out: str,
    n: int,
    world: str,
    class_name: str | None,
    concepts: tuple[str, ...],
    seed: int,
    as_json: bool,
) -> None:
    """Write planted-benchmark data: IMAGES of a class (with ground-truth sidecars), a concept BANK
    for `neurflow label`, or counterfactual PAIRS (other classes without/with a concept) for
    `neurflow audit`.

    \b
    Examples:
      neurflow planted-data images data/bee --class bee --count 40
      neurflow planted-data bank data/bank --class bee --count 30
      neurflow planted-data pairs data/pairs --concept flower --count 20
      neurflow planted-data pairs data/pairs --concept flower --concept leaf --concept flower+leaf
      neurflow planted-data pairs data/tp --world toys --concept sun --concept cloud --concept sun+cloud
    """
    n = aliased(click.get_current_context(), "n", n)
    if world == "toys":
        from ingest.planted import toys_data as data
        from ingest.planted.toys import BIAS_CLASS, BIAS_CONCEPTS

        default_class, default_concept = BIAS_CLASS, "+".join(BIAS_CONCEPTS)
    else:
        from ingest.planted import data

        default_class, default_concept = "bee", "flower"
    if kind == "images":
        try:
            path = data.write_image_folder(out, class_name or default_class, n, seed)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--class") from None
    elif kind == "bank":
        try:
            path = data.write_concept_bank(out, n, seed, class_name=class_name)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--class") from None
    elif len(concepts) <= 1:
        path = _pairs(world, data, out, n, seed, concepts[0] if concepts else default_concept)
    else:
        for concept in concepts:
            _pairs(world, data, Path(out) / concept, n, seed, concept)
        path = Path(out)
    if as_json:
        echo_json({"kind": kind, "count": n, "path": str(path)})
        return
    click.echo(f"wrote {kind} ({n}) to {path}")


def _pairs(world: str, data, out, n: int, seed: int, concept: str):
    """One pair set, with a usage error (not a traceback) for a concept the generator cannot switch."""
    try:
        if world == "toys":
            return data.write_counterfactual_pairs(out, n, seed, concepts=tuple(concept.split("+")))
        return data.write_counterfactual_pairs(out, n, seed, concept=concept)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--concept") from None

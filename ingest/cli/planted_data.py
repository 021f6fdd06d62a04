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
@click.option("--class", "class_name", default="bee", show_default=True, help="Class of `images`.")
@click.option(
    "--concept",
    "concepts",
    multiple=True,
    help="Concept added in `pairs` (default flower); A+B switches two together. Repeat it to write one "
    "set per concept into OUT/<concept>/, as `neurflow audit --pairs OUT` reads them.",
)
@click.option("--seed", default=1234, show_default=True, type=SEED, help="Random seed of the scenes.")
@json_option
def planted_data_command(
    kind: str, out: str, n: int, class_name: str, concepts: tuple[str, ...], seed: int, as_json: bool
) -> None:
    """Write planted-benchmark data: IMAGES of a class (with ground-truth sidecars), a concept BANK
    for `neurflow label`, or counterfactual PAIRS (other classes without/with a concept) for
    `neurflow audit`.

    \b
    Examples:
      neurflow planted-data images data/bee --class bee --count 40
      neurflow planted-data bank data/bank --count 30
      neurflow planted-data pairs data/pairs --concept flower --count 20
      neurflow planted-data pairs data/pairs --concept flower --concept leaf --concept flower+leaf
    """
    from ingest.planted.data import write_concept_bank, write_counterfactual_pairs, write_image_folder

    n = aliased(click.get_current_context(), "n", n)
    if kind == "images":
        path = write_image_folder(out, class_name, n, seed)
    elif kind == "bank":
        path = write_concept_bank(out, n, seed)
    elif len(concepts) <= 1:
        path = _pairs(write_counterfactual_pairs, out, n, seed, concepts[0] if concepts else "flower")
    else:
        for concept in concepts:
            _pairs(write_counterfactual_pairs, Path(out) / concept, n, seed, concept)
        path = Path(out)
    if as_json:
        echo_json({"kind": kind, "count": n, "path": str(path)})
        return
    click.echo(f"wrote {kind} ({n}) to {path}")


def _pairs(write, out, n: int, seed: int, concept: str):
    """One pair set, with a usage error (not a traceback) for a concept the generator cannot switch."""
    try:
        return write(out, n, seed, concept=concept)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--concept") from None

"""`neurflow planted-data`: the planted benchmark's images, concept bank and counterfactual pairs."""

from __future__ import annotations

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
@click.option("--concept", default="flower", show_default=True, help="Concept added in `pairs`.")
@click.option("--seed", default=1234, show_default=True, type=SEED, help="Random seed of the scenes.")
@json_option
def planted_data_command(
    kind: str, out: str, n: int, class_name: str, concept: str, seed: int, as_json: bool
) -> None:
    """Write planted-benchmark data: IMAGES of a class (with ground-truth sidecars), a concept BANK
    for `neurflow label`, or counterfactual PAIRS (other classes without/with a concept) for
    `neurflow audit`.

    \b
    Examples:
      neurflow planted-data images data/bee --class bee --count 40
      neurflow planted-data bank data/bank --count 30
      neurflow planted-data pairs data/pairs --concept flower --count 20
    """
    from ingest.planted.data import write_concept_bank, write_counterfactual_pairs, write_image_folder

    n = aliased(click.get_current_context(), "n", n)
    if kind == "images":
        path = write_image_folder(out, class_name, n, seed)
    elif kind == "bank":
        path = write_concept_bank(out, n, seed)
    else:
        path = write_counterfactual_pairs(out, n, seed, concept=concept)
    if as_json:
        echo_json({"kind": kind, "count": n, "path": str(path)})
        return
    click.echo(f"wrote {kind} ({n}) to {path}")

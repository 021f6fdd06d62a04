"""`neurflow label clip`: CLIP-style labels from the similarity of a run's exemplar patches to a
vocabulary, with CLIP weights from a local file (ingest/labelling/clip.py, docs/labelling.md)."""

from __future__ import annotations

import click

from ingest.cli.options import echo_json, json_option, progress_bar


@click.command(name="clip")
@click.option("--run", "run_id", required=True, help="The run whose groups to label.")
@click.option(
    "--clip-model",
    "arch",
    required=True,
    help="open_clip architecture of the weights, e.g. ViT-B-32 (open_clip.list_models()).",
)
@click.option(
    "--clip-weights",
    "weights",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Local CLIP weights file for that architecture (nothing is downloaded).",
)
@click.option(
    "--vocabulary",
    required=True,
    help="Concepts: a comma list (stripes,wings,flower) or a text file with one concept per line.",
)
@click.option(
    "--template",
    "templates",
    multiple=True,
    help='Prompt template with {} for the concept; repeatable, averaged [default: "a photo of {}." and '
    "four more].",
)
@click.option(
    "--top", type=click.IntRange(min=1), default=3, show_default=True, help="Labels kept per group."
)
@click.option(
    "--exemplars",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Exemplar patches embedded per group.",
)
@click.option(
    "--semantic-groups", is_flag=True, help="Label the semantic groups too, not only neuron groups."
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Patches per forward pass.",
)
@json_option
def clip_command(
    run_id: str,
    arch: str,
    weights: str,
    vocabulary: str,
    templates: tuple[str, ...],
    top: int,
    exemplars: int,
    semantic_groups: bool,
    device: str,
    batch_size: int,
    as_json: bool,
) -> None:
    """Label a run's neuron groups with the vocabulary concepts their exemplar patches are most similar
    to under a CLIP model (needs the optional extra: pip install 'neurflow-graph[clip]').

    A label's score is the concept's softmax probability over the vocabulary at the model's temperature,
    softmax(logit_scale * cos(mean exemplar embedding, concept embedding)); details keep the cosine.
    Labels are LABELED {method: 'clip'}; re-running replaces the run's earlier clip labels only.

    \b
    Example:
      neurflow label clip --run RUN_ID --clip-weights clip.pt --vocabulary concepts.txt
    """
    from graphmodel.connection import GraphStoreError, connect
    from graphmodel.patchstore import PatchStoreError
    from graphmodel.stack.config import StackError, load_config
    from ingest.labelling import clip
    from ingest.pipeline.patch_stores import patch_fetcher

    try:
        words = clip.load_vocabulary(vocabulary)
        prompts = clip.check_templates(templates or clip.DEFAULT_TEMPLATES)
        stack_cfg = load_config()
        driver = connect(stack_cfg)
    except (clip.ClipError, GraphStoreError, StackError) as exc:
        raise click.ClickException(str(exc)) from exc
    with driver:
        try:
            model = clip.load_clip(arch, weights, device)
            click.echo(
                f"{arch} weights {model.weights} on {model.device}; logit scale {model.logit_scale:.4g}",
                err=True,
            )
            result = clip.label_run(
                driver,
                run_id,
                model,
                patch_fetcher(stack_cfg),
                words,
                templates=prompts,
                top=top,
                exemplars=exemplars,
                semantic_groups=semantic_groups,
                batch_size=batch_size,
                echo=lambda line: click.echo(line, err=True),
                progress=lambda desc, total: progress_bar(desc, total, unit="patch", leave=False),
            )
        except (clip.ClipError, GraphStoreError, PatchStoreError, StackError) as exc:
            raise click.ClickException(str(exc)) from exc
    for line in result.skipped:
        click.echo(f"skipped {line}", err=True)
    if as_json:
        echo_json(
            {
                "run_id": run_id,
                "labels": result.labels,
                "groups": result.groups,
                "patches": result.patches,
                "seconds": result.seconds,
                "skipped": list(result.skipped),
            }
        )
        return
    click.echo(
        f"run {run_id}: {result.labels} clip labels on {result.groups} groups ({result.patches} patches "
        f"embedded) in {result.seconds:.1f} s"
    )
    click.echo(
        f"look at it:  MATCH (g {{run_id: '{run_id}'}})-[l:LABELED {{method: 'clip'}}]->(c:Concept) "
        "RETURN coalesce(g.ng_id, g.sg_id) AS group, l.rank, c.name, l.score ORDER BY group, l.rank"
    )

"""`neurflow label mllm`: caption a run's neuron groups and explain their formation with a multimodal
LLM behind an OpenAI-compatible endpoint (ingest/labelling/mllm.py, docs/labelling.md)."""

from __future__ import annotations

import click

from ingest.cli.options import aliased, deprecated_alias, echo_json, json_option
from ingest.cli.ranges import SECONDS, Bounded
from ingest.labelling.mllm import KEY_ENV, MODEL_ENV, URL_ENV


@click.command(name="mllm")
@click.option("--run", "run_id", required=True, help="The run whose neuron groups to label.")
@click.option(
    "--url", help=f"Base URL of an OpenAI-compatible API, e.g. https://api.openai.com/v1 [{URL_ENV}]."
)
@click.option(
    "--mllm-model",
    "model",
    help=f"The multimodal LLM, a model that accepts images, e.g. gpt-4o [{MODEL_ENV}].",
)
@deprecated_alias("--model", "--mllm-model", "model")  # --model names the classifier everywhere else
@click.option(
    "--api-key-env",
    default=KEY_ENV,
    show_default=True,
    help="Environment variable that holds the API key (the key is never printed).",
)
@click.option(
    "--exemplars",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Exemplar patches sent per neuron group.",
)
@click.option(
    "--children",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Child groups (layer below, highest positive FEEDS weight) shown to explain a group's formation.",
)
@click.option("--no-formation", is_flag=True, help="Only caption the groups; do not explain their formation.")
@click.option(
    "--dry-run", is_flag=True, help="Print the prompts (image URIs instead of images); send nothing."
)
@click.option("--timeout", type=SECONDS, default=120.0, show_default=True, help="Seconds per request.")
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=4,
    show_default=True,
    help="Retries after HTTP 429/5xx or a dropped connection, with exponential backoff.",
)
@click.option(
    "--temperature",
    type=Bounded(float, 0.0, 2.0, why="the sampling temperature of OpenAI-compatible APIs"),
    help="Sampling temperature (default: the server's).",
)
@json_option
def mllm_command(
    run_id: str,
    url: str | None,
    model: str | None,
    api_key_env: str,
    exemplars: int,
    children: int,
    no_formation: bool,
    dry_run: bool,
    timeout: float,
    retries: int,
    temperature: float | None,
    as_json: bool,
) -> None:
    """Caption every neuron group of a run with a multimodal LLM (the paper's App. G prompts) and explain
    how each group forms from its highest-weighted child groups in the layer below (Sec. 5.2).

    Captions become LABELED {method: 'mllm'} labels; explanations become FORMS relationships from the
    child groups to the parent group (docs/labelling.md). Labelling a run again replaces its earlier
    mllm labels and explanations. Progress goes to stderr.

    \b
    Example:
      neurflow label mllm --run RUN_ID --url http://127.0.0.1:8000/v1 --mllm-model llava
    """
    model = aliased(click.get_current_context(), "model", model)
    from graphmodel.connection import GraphStoreError, connect
    from graphmodel.patchstore import PatchStoreError
    from graphmodel.stack.config import StackError, load_config
    from ingest.labelling import mllm
    from ingest.pipeline.patch_stores import patch_fetcher

    try:
        config = (
            None
            if dry_run
            else mllm.MllmConfig.from_env(
                url, model, api_key_env, timeout=timeout, retries=retries, temperature=temperature
            )
        )
        stack_cfg = load_config()
        driver = connect(stack_cfg)
    except (mllm.MllmError, GraphStoreError, StackError) as exc:
        raise click.ClickException(str(exc)) from exc
    with driver:
        try:
            if dry_run:
                from graphmodel.explanations import labelling_inputs

                groups = labelling_inputs(driver, run_id)
                for block in mllm.dry_run(
                    groups, exemplars=exemplars, children=children, formation=not no_formation
                ):
                    click.echo(block + "\n")
                click.echo(f"dry run: {len(groups)} neuron groups of run {run_id}; nothing sent", err=True)
                return
            _warn_if_incomplete(driver, run_id)
            if not config.api_key():
                click.echo(f"note: {config.api_key_env} is not set; sending no API key", err=True)
            result = mllm.label_run(
                driver,
                run_id,
                mllm.MllmClient(config),
                patch_fetcher(stack_cfg),
                exemplars=exemplars,
                children=children,
                formation=not no_formation,
                echo=lambda line: click.echo(line, err=True),
            )
        except (mllm.MllmError, GraphStoreError, PatchStoreError, StackError) as exc:
            raise click.ClickException(str(exc)) from exc
    if as_json and not result.failed:
        echo_json(
            {
                "run_id": run_id,
                "labels": result.labels,
                "explanations": result.explanations,
                "forms": result.forms,
                "requests": result.requests,
                "seconds": result.seconds,
                "skipped": list(result.skipped),
            }
        )
        return
    click.echo(
        f"run {run_id}: {result.labels} groups labelled (LABELED method 'mllm'), {result.explanations} "
        f"formations explained ({result.forms} FORMS relationships); {result.requests} requests in "
        f"{result.seconds:.1f} s"
    )
    for line in result.skipped:
        click.echo(f"skipped {line}", err=True)
    if result.failed:
        for line in result.failed:
            click.echo(f"failed {line}", err=True)
        raise click.ClickException(
            f"{len(result.failed)} answers did not follow the answer form even when asked twice; the other "
            "labels are stored. Re-run the command to try again, or try another --model"
        )
    click.echo(
        f"look at it:  MATCH (g:NeuronGroup {{run_id: '{run_id}'}})-[l:LABELED {{method: 'mllm'}}]->(c) "
        "OPTIONAL MATCH (k)-[f:FORMS]->(g) RETURN g.ng_id, c.name, g.formation_caption, collect(k.ng_id)"
    )


def _warn_if_incomplete(driver, run_id: str) -> None:
    from graphmodel import reader
    from graphmodel.connection import GraphStoreError

    state = reader.run_status(driver, run_id)
    if state is None:
        raise GraphStoreError(f"run {run_id} is not in the graph; ingest it first (`neurflow ingest`)")
    if state.status != "COMPLETE":
        click.echo(
            f"note: run {run_id} is {state.status}; labelling the layers it has stored "
            f"({', '.join(state.layers_done) or 'none'})",
            err=True,
        )

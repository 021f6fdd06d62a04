"""`neurflow query`: list the canned Cypher queries or run one, read-only, and print a table or JSON."""

from __future__ import annotations

import json
from typing import Any

import click

from ingest.cli.options import echo_json, json_option

CELL_CHARS = 60


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= CELL_CHARS else text[: CELL_CHARS - 1] + "…"


def table_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Rows as an aligned text table (long cells cut to CELL_CHARS), columns in the query's order."""
    if not rows:
        return ["(no rows)"]
    columns = list(rows[0])
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return lines


def _list_lines() -> list[str]:
    from queries.runner import list_queries

    lines = []
    for name, query in list_queries().items():
        lines.append(f"{name}: {query.question}")
        for p in query.params.values():
            default = "required" if p.required else f"default {json.dumps(p.default)}"
            lines.append(f"    --param {p.name}=<{p.type}>  ({default})  {p.description}")
    return lines


def _parse_pairs(pairs: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="--param")
        out[key.strip()] = value
    return out


@click.command(name="query")
@click.argument("name", required=False)
@click.option("--list", "list_", is_flag=True, help="List the canned queries and their parameters.")
@click.option("--param", "-p", "pairs", multiple=True, metavar="KEY=VALUE", help="A query parameter.")
@json_option
@click.option(
    "--browser-assets",
    "assets_dir",
    type=click.Path(file_okay=False, writable=True),
    help="Write the Neo4j Browser files into DIR (style.grass, the guide neurflow.html, the "
    "favourites zip neurflow-queries.zip) and exit.",
)
def query_command(
    name: str | None, list_: bool, pairs: tuple[str, ...], as_json: bool, assets_dir: str | None
) -> None:
    """Run the canned query NAME (read-only) against the configured Neo4j.

    \b
    neurflow query --list [--json]
    neurflow query top_paths --param model_id=... --param class_name=bee --param layer=block3
    neurflow query --browser-assets DIR   # style, guide and favourites for Neo4j Browser
    Lists are comma-separated (--param expected=stripes,wings).
    """
    from graphmodel.connection import GraphStoreError, connect
    from graphmodel.stack.config import StackError
    from queries.runner import QueryError, bind, coerce, get_query, run

    if assets_dir:
        from queries.browser import write_assets

        try:
            paths = write_assets(assets_dir)
        except ValueError as exc:  # a malformed .cypher header
            raise click.ClickException(str(exc)) from exc
        for kind, path in paths.items():
            click.echo(f"{kind}: {path}")
        return
    if list_ or not name:
        if as_json:
            from queries.runner import list_queries

            listed = [
                {
                    "name": q.name,
                    "question": q.question,
                    "params": [
                        {"name": p.name, "type": p.type, "required": p.required, "default": p.default}
                        | {"description": p.description}
                        for p in q.params.values()
                    ],
                }
                for q in list_queries().values()
            ]
            echo_json(listed)
            return
        for line in _list_lines():
            click.echo(line)
        return
    try:
        query = get_query(name)
        params = bind(query, coerce(query, _parse_pairs(pairs)))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        with connect() as driver:
            rows = run(query.path, driver, **params)
    except (GraphStoreError, QueryError, StackError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        echo_json(rows)
    else:
        for line in table_lines(rows):
            click.echo(line)

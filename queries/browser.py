"""Neo4j Browser assets for the canned queries: a GraSS style, a guide, and a favourites zip.

* ``style.grass`` (``queries/browser/style.grass``): colours per node label, captions with names and
  weights. Drop it onto Browser, or run ``:style <url>``.
* ``neurflow.html``: a Browser guide with one slide per canned query, generated from the `.cypher`
  headers, so a new query file appears on its own. Each slide shows the question, the parameters,
  a click-to-run ``:param [{...}] => { RETURN ... }`` line that sets them all to example values,
  and the query as a click-to-run block.
  The local stack serves it (``graphmodel/stack/browser_server.py``): ``:play
  http://127.0.0.1:7474/guide/neurflow.html``.
* ``neurflow-queries.zip``: every `.cypher` file under ``NeurFlow/``; dropped onto Browser, it
  becomes a "NeurFlow" folder of favourites.

``neurflow query --browser-assets DIR`` writes all three; the local stack's Browser server serves
them through `guide_asset`, registered as the ``neurflow.browser_guide`` entry point (pyproject.toml),
generated afresh for every request.
"""

from __future__ import annotations

import html
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

from queries.runner import QUERY_DIR, Param, Query, coerce, list_queries

ASSET_DIR = Path(__file__).resolve().parent / "browser"
STYLE_FILE = ASSET_DIR / "style.grass"
GUIDE_FILE = "neurflow.html"
FAVORITES_FILE = "neurflow-queries.zip"
FAVORITES_FOLDER = "NeurFlow"

# Example values by parameter name, used only when the graph has no COMPLETE run (the served guide
# fills them from the newest one, `newest_run_examples`). A query can name its own with a header
# line ``// example NAME: JSON``, and a description may say "(e.g. X)".
EXAMPLES: dict[str, Any] = {
    "model_id": "planted_cnn-1c57741cb22d",
    "model_a": "planted_cnn-1c57741cb22d",
    "model_b": "planted_cnn-1c57741cb22d",
    "class_name": "bee",
    "class_a": "bee",
    "class_b": "ladybug",
    "layer": "block3",
    "index": 7,
    "neuron": 7,
    "ng_id": "64247d2f89d909fd/block4/g0",
    "run_id": "64247d2f89d909fd",
    "concept": "flower",
}
_PLACEHOLDER = {"string": "", "integer": 0, "float": 0.0, "boolean": False}
_EG = re.compile(r"\(e\.g\.\s+([^()]+)\)|e\.g\.\s+(\S+)$")  # "(e.g. X)" or a final "e.g. X"


# The newest COMPLETE run, a second class of its model, and the group that feeds the class most,
# with its layer, a member neuron and its best label: every example the canned queries need.
_NEWEST_RUN = """
MATCH (r:Run) WHERE r.status = 'COMPLETE'
WITH r ORDER BY r.finished_at DESC LIMIT 1
MATCH (r)-[:EXPLAINS]->(c:Class)
OPTIONAL MATCH (other:Run {model_id: r.model_id, status: 'COMPLETE'})-[:EXPLAINS]->(oc:Class)
WHERE oc.name <> c.name
WITH r, c, collect(DISTINCT oc.name)[0] AS class_b
OPTIONAL MATCH (r)-[:HAS_NEURON_GROUP]->(g:NeuronGroup)-[f:FEEDS]->(:Class)
WITH r, c, class_b, g ORDER BY f.weight DESC LIMIT 1
OPTIONAL MATCH (g)-[l:LABELED]->(concept:Concept)
WITH r, c, class_b, g, concept ORDER BY l.score DESC LIMIT 1
RETURN r.run_id AS run_id, r.model_id AS model_id, c.name AS class_name, class_b,
       g.ng_id AS ng_id, g.layer AS layer, g.members[0] AS index, concept.name AS concept
"""


def newest_run_examples(driver) -> dict[str, Any]:
    """Example values from the newest COMPLETE run in the graph ({} when there is none), so every
    example in the guide returns rows."""
    from graphmodel.connection import read_rows

    rows = read_rows(driver, _NEWEST_RUN)
    if not rows:
        return {}
    row = rows[0]
    examples = {
        "run_id": row["run_id"],
        "model_id": row["model_id"],
        "model_a": row["model_id"],
        "model_b": row["model_id"],
        "class_name": row["class_name"],
        "class_a": row["class_name"],
        "class_b": row["class_b"] or row["class_name"],
        "ng_id": row["ng_id"],
        "layer": row["layer"],
        "index": row["index"],
        "neuron": row["index"],
        "concept": row["concept"],
    }
    return {name: value for name, value in examples.items() if value is not None}


def _graph_examples() -> tuple[dict[str, Any], str]:
    """(examples from the configured Neo4j, a sentence saying where they come from)."""
    from neo4j.exceptions import DriverError, Neo4jError

    from graphmodel.connection import GraphStoreError, connect
    from graphmodel.stack.config import StackError, load_config

    try:
        with connect(load_config(), retry_seconds=0, connection_timeout=2.0) as driver:
            examples = newest_run_examples(driver)
    except (GraphStoreError, StackError, DriverError, Neo4jError, OSError) as exc:
        return {}, f"Example values are placeholders: the graph could not be read ({exc})."
    if not examples:
        return {}, "Example values are placeholders: the graph holds no COMPLETE run yet."
    return examples, (
        f"Example values come from the newest COMPLETE run, <code>{html.escape(examples['run_id'])}</code> "
        f"({html.escape(examples['class_name'])}, model <code>{html.escape(examples['model_id'])}</code>)."
    )


def style_text() -> str:
    """The GraSS style sheet (no comments: Browser's GraSS parser does not know them)."""
    return STYLE_FILE.read_text()


def _body(query: Query) -> str:
    """The query without its ``//`` header block."""
    lines = query.text.splitlines()
    start = 0
    while start < len(lines) and lines[start].startswith("//"):
        start += 1
    return "\n".join(lines[start:]).strip()


def _coerce_text(param: Param, text: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    if param.type == "string" and not isinstance(value, str):
        value = text
    if param.type.startswith("list<") and not isinstance(value, list):
        value = [value]
    return value


def example_params(
    query: Query, examples: dict[str, Any] | None = None, graph: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A value for every parameter of ``query``, to show and run in Browser.

    In order: ``examples`` (the caller's), the header's ``// example NAME: JSON``, the default of an
    optional parameter, ``graph`` (values from the newest COMPLETE run) and then :data:`EXAMPLES` by
    name, an "(e.g. X)" in the parameter's description, and finally an empty value of the type.
    """
    examples = examples or {}
    known = {**EXAMPLES, **(graph or {})}
    values: dict[str, Any] = {}
    for name, param in query.params.items():
        header = query.extra.get(f"example {name}")
        hint = _EG.search(param.description)
        if name in examples:
            value = examples[name]
            if isinstance(value, str) and param.type != "string":  # from a URL or a command line
                value = coerce(query, {name: value})[name]
            values[name] = value
        elif header is not None:
            values[name] = _coerce_text(param, header)
        elif not param.required:
            values[name] = param.default
        elif name in known:
            values[name] = known[name]
        elif hint:
            values[name] = _coerce_text(param, (hint.group(1) or hint.group(2)).strip())
        else:
            values[name] = [] if param.type.startswith("list<") else _PLACEHOLDER[param.type]
    return values


def cypher_literal(value: Any, type_: str = "") -> str:
    """``value`` as a Cypher literal of the parameter's type (``10`` stays an integer, ``1`` of a
    float parameter becomes ``1.0``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float) and type_ in ("float", "list<float>"):
        return repr(float(value))
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        inner = type_[len("list<") : -1] if type_.startswith("list<") else ""
        return "[" + ", ".join(cypher_literal(v, inner) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def params_command(query: Query, values: dict[str, Any]) -> str:
    """One Browser command that sets every parameter of ``query`` with its Cypher type.

    ``:param [{a, b}] => { RETURN 'x' AS a, 10 AS b }`` runs the right-hand side as Cypher and takes
    the parameters from its row, so integers stay integers (``:params {"limit": 10}`` would send a
    float, which LIMIT refuses).
    """
    names = list(query.params)
    if not names:
        return ""
    returns = ", ".join(f"{cypher_literal(values[n], query.params[n].type)} AS {n}" for n in names)
    return f":param [{{{', '.join(names)}}}] => {{ RETURN {returns} }}"


def _param_rows(query: Query) -> str:
    rows = []
    for p in query.params.values():
        default = "required" if p.required else json.dumps(p.default)
        rows.append(
            f"<tr><td><code>{html.escape(p.name)}</code></td><td>{html.escape(p.type)}</td>"
            f"<td>{html.escape(default)}</td><td>{html.escape(p.description)}</td></tr>"
        )
    return "\n".join(rows)


def _query_slide(query: Query, examples: dict[str, Any] | None, graph: dict[str, Any] | None) -> str:
    values = example_params(query, examples, graph)
    command = params_command(query, values)
    setter = (
        f"<p>Set its parameters (example values: click the text to edit them in the editor, or the "
        f"&#9654; to run):</p>\n"
        f'<pre class="code runnable" data-neurflow-params="{html.escape(query.name)}">'
        f"{html.escape(command)}</pre>\n"
        if command
        else ""
    )
    return f"""<slide class="row-fluid" data-neurflow-query="{html.escape(query.name)}">
<div class="col-sm-12">
<h3>{html.escape(query.name)}</h3>
<p class="lead">{html.escape(query.question)}</p>
<table class="table table-condensed">
<tr><th>parameter</th><th>type</th><th>default</th><th>meaning</th></tr>
{_param_rows(query)}
</table>
{setter}<p>Then run the query (file <code>queries/{html.escape(query.path.name)}</code>):</p>
<pre class="code runnable" data-neurflow-run="{html.escape(query.name)}">{html.escape(_body(query))}</pre>
</div>
</slide>"""


def guide_html(
    directory: str | Path = QUERY_DIR,
    *,
    examples: dict[str, Any] | None = None,
    style_url: str | None = None,
    graph: dict[str, Any] | None = None,
    source: str = "",
) -> str:
    """The Browser guide: an overview slide, then one slide per canned query in ``directory``.

    ``examples`` overrides example parameter values by name, in every query that has the parameter
    (text is converted to the parameter's type, so URL query strings work: the Browser server passes
    ``?model_id=...&class_name=bee``); ``style_url``, when the guide is served, adds a click-to-run
    ``:style <url>`` line to the overview. ``graph`` holds example values read from the graph, used
    for parameters without a default; ``source`` says where they come from.
    """
    queries = list_queries(directory)
    items = "\n".join(
        f"<li><code>{html.escape(q.name)}</code>: {html.escape(q.question.split('? ')[0].rstrip('?'))}?</li>"
        for q in queries.values()
    )
    style = (
        f"<p>Load the NeurFlow style (colours per label, names and weights as captions):</p>\n"
        f'<pre class="code runnable">:style {html.escape(style_url)}</pre>\n'
        if style_url
        else "<p>Load the NeurFlow style: drag <code>style.grass</code> onto Browser.</p>\n"
    )
    slides = "\n".join(_query_slide(q, examples, graph) for q in queries.values())
    return f"""<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>NeurFlow canned queries</title></head>
<body>
<article class="guide">
<carousel class="deck container-fluid">
<slide class="row-fluid" data-neurflow-query="">
<div class="col-sm-12">
<h3>NeurFlow Graph: canned queries</h3>
<p class="lead">The questions people ask of stored concept circuits, one slide each
({len(queries)} queries, from <code>queries/*.cypher</code>).</p>
<p>On each slide, run the <code>:param</code> line to set the query's parameters (edit the example
values first), then run the query. Every query only reads. <code>:params</code> shows what is set.
{source}</p>
{style}<ol>
{items}
</ol>
</div>
</slide>
{slides}
</carousel>
</article>
</body>
</html>
"""


def favorites_zip(directory: str | Path = QUERY_DIR) -> bytes:
    """Every canned query as ``NeurFlow/<name>.cypher``, for Browser's favourites (drop the zip).

    Browser names a favourite by its first line, so each file starts with ``// <name>``.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, query in list_queries(directory).items():
            info = zipfile.ZipInfo(f"{FAVORITES_FOLDER}/{name}.cypher", date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, f"// {name}\n{query.text.rstrip()}\n")
    return buffer.getvalue()


def write_assets(
    target: str | Path, directory: str | Path = QUERY_DIR, *, style_url: str | None = None
) -> dict[str, Path]:
    """Write ``style.grass``, the guide and the favourites zip into ``target``; their paths by kind."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    paths = {
        "style": target / STYLE_FILE.name,
        "guide": target / GUIDE_FILE,
        "favorites": target / FAVORITES_FILE,
    }
    paths["style"].write_text(style_text())
    paths["guide"].write_text(guide_html(directory, style_url=style_url))
    paths["favorites"].write_bytes(favorites_zip(directory))
    return paths


def guide_asset(name: str, params: dict[str, str], base_url: str) -> tuple[int, str, bytes]:
    """(status, content type, body) of the guide asset ``name`` as served under ``base_url``; the
    guide's example parameter values come from ``params`` (the URL's query string), then from the
    newest COMPLETE run in the configured Neo4j."""
    if name == GUIDE_FILE:
        graph, source = _graph_examples()
        page = guide_html(examples=params, style_url=base_url + STYLE_FILE.name, graph=graph, source=source)
        return 200, "text/html; charset=utf-8", page.encode()
    if name == STYLE_FILE.name:
        return 200, "text/plain; charset=utf-8", style_text().encode()
    if name == FAVORITES_FILE:
        return 200, "application/zip", favorites_zip()
    return 404, "text/plain; charset=utf-8", f"no such NeurFlow asset: {name}\n".encode()

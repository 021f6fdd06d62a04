"""Load the canned `.cypher` files, validate parameters against their headers, run them read-only.

A file's header is its leading `//` comment block::

    // name: top_paths
    // question: Which chains of neuron groups ...
    //   (indented lines continue the question)
    // param class_name: string            description
    // param limit: integer = 10           description (a default, as JSON, makes it optional)
    //                                     (indented lines continue a description too)

Values reach Neo4j only as query parameters, never pasted into the text, and every query runs in a
read transaction (`session.execute_read`), so a canned query cannot change the graph.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from neo4j import Driver, ManagedTransaction, graph
from neo4j.exceptions import ClientError

QUERY_DIR = Path(__file__).resolve().parent
TYPES = ("string", "integer", "float", "boolean", "list<string>", "list<integer>", "list<float>")
_PARAM = re.compile(r"param\s+(\w+)\s*:\s*(\S+)\s*(.*)$")
_MISSING = object()


class QueryError(RuntimeError):
    """A canned query failed on the server (for example, it tried to write); the message says which."""


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: Any = _MISSING
    description: str = ""

    @property
    def required(self) -> bool:
        return self.default is _MISSING


@dataclass(frozen=True)
class Query:
    name: str
    question: str
    params: dict[str, Param]
    text: str
    path: Path
    extra: dict[str, str] = field(default_factory=dict)


def _parse_param(line: str, path: Path) -> Param:
    match = _PARAM.match(line)
    if not match:
        raise ValueError(f"{path}: header line {line!r} is not 'param NAME: TYPE [= DEFAULT] description'")
    name, type_, rest = match.groups()
    if type_ not in TYPES:
        raise ValueError(f"{path}: parameter {name!r} has unknown type {type_!r}; use one of {TYPES}")
    default: Any = _MISSING
    rest = rest.strip()
    if rest.startswith("="):
        rest = rest[1:].lstrip()
        try:
            default, end = json.JSONDecoder().raw_decode(rest)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: default of parameter {name!r} is not JSON: {rest!r}") from exc
        rest = rest[end:].strip()
        if default is not None:
            default = validate_value(name, type_, default)
    return Param(name, type_, default, rest)


def parse_query(path: str | Path) -> Query:
    """Parse one `.cypher` file; ValueError if its header lacks a name or a parameter is malformed."""
    path = Path(path)
    text = path.read_text()
    fields_: dict[str, str] = {}
    params: dict[str, Param] = {}
    last: str | Param | None = None  # what an indented line continues: a field's key, or a param
    for raw in text.splitlines():
        if not raw.startswith("//"):
            break
        body = raw[2:]
        if body.startswith("   ") and last is not None:  # continuation of the previous field or param
            if isinstance(last, Param):
                params[last.name] = replace(
                    params[last.name], description=f"{params[last.name].description} {body.strip()}".strip()
                )
            else:
                fields_[last] += " " + body.strip()
            continue
        body = body.strip()
        if body.startswith("param "):
            param = _parse_param(body, path)
            params[param.name] = param
            last = param
        elif ":" in body:
            key, value = body.split(":", 1)
            last = key.strip()
            fields_[last] = value.strip()
    name = fields_.pop("name", None)
    if not name:
        raise ValueError(f"{path}: the header has no '// name: ...' line")
    question = fields_.pop("question", "")
    return Query(name, question, params, text, path, fields_)


def list_queries(directory: str | Path = QUERY_DIR) -> dict[str, Query]:
    """Every canned query in ``directory`` by name."""
    queries: dict[str, Query] = {}
    for path in sorted(Path(directory).glob("*.cypher")):
        query = parse_query(path)
        if query.name in queries:
            raise ValueError(f"query name {query.name!r} is used by {queries[query.name].path} and {path}")
        queries[query.name] = query
    return queries


def get_query(name: str | Path) -> Query:
    """A canned query by name, or any `.cypher` file by path."""
    if isinstance(name, Path) or str(name).endswith(".cypher"):
        return parse_query(name)
    queries = list_queries()
    if name not in queries:
        raise ValueError(f"unknown query {name!r}; the canned queries are: {', '.join(sorted(queries))}")
    return queries[name]


INT64 = (-(2**63), 2**63 - 1)  # Cypher integers are 64-bit


def _type_ok(type_: str, value: Any) -> bool:
    if type_ == "string":
        return isinstance(value, str)
    if type_ == "integer":
        return isinstance(value, int) and not isinstance(value, bool) and INT64[0] <= value <= INT64[1]
    if type_ == "float":
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if type_ == "boolean":
        return isinstance(value, bool)
    inner = type_[len("list<") : -1]
    return isinstance(value, list | tuple) and all(_type_ok(inner, v) for v in value)


def validate_value(name: str, type_: str, value: Any) -> Any:
    if not _type_ok(type_, value):
        if isinstance(value, int) and type_ == "integer":
            raise ValueError(f"parameter {name!r} is out of range: {value} does not fit a 64-bit integer")
        if isinstance(value, float) and type_ == "float":
            raise ValueError(f"parameter {name!r} must be a finite number, got {value!r}")
        raise ValueError(f"parameter {name!r} must be of type {type_}, got {type(value).__name__} {value!r}")
    if type_ == "float":
        return float(value)
    if type_.startswith("list<"):
        return [float(v) for v in value] if type_ == "list<float>" else list(value)
    return value


def bind(query: Query, params: dict[str, Any]) -> dict[str, Any]:
    """The parameter dict to send: checked against the header, defaults filled in."""
    unknown = sorted(set(params) - set(query.params))
    if unknown:
        expected = ", ".join(f"{p.name}: {p.type}" for p in query.params.values())
        raise ValueError(f"query {query.name!r} has no parameter {unknown[0]!r}; its parameters: {expected}")
    bound: dict[str, Any] = {}
    for p in query.params.values():
        value = params.get(p.name, p.default)
        if value is _MISSING:
            raise ValueError(f"query {query.name!r} needs parameter {p.name!r} ({p.type}): {p.description}")
        optional_null = value is None and not p.required
        bound[p.name] = None if optional_null else validate_value(p.name, p.type, value)
    return bound


def coerce(query: Query, texts: dict[str, str]) -> dict[str, Any]:
    """Command-line values (strings) converted to the header's types; lists are comma-separated."""

    def convert(name: str, type_: str, text: str) -> Any:
        try:
            if type_ == "integer":
                return int(text)
            if type_ == "float":
                return float(text)
            if type_ == "boolean":
                if text.lower() not in ("true", "false"):
                    raise ValueError(text)
                return text.lower() == "true"
            if type_.startswith("list<"):
                inner = type_[len("list<") : -1]
                return [convert(name, inner, part.strip()) for part in text.split(",") if part.strip()]
            return text
        except ValueError:
            raise ValueError(f"parameter {name!r} must be of type {type_}, got {text!r}") from None

    out: dict[str, Any] = {}
    for name, text in texts.items():
        param = query.params.get(name)
        out[name] = text if param is None else convert(name, param.type, text)  # unknown: bind() says
    return out


def run(name: str | Path, driver: Driver | None = None, **params: Any) -> list[dict[str, Any]]:
    """Run a canned query (by name, or a `.cypher` path) in a read transaction; rows as dicts.

    With no ``driver``, one is opened from the stack configuration (``NEURFLOW_NEO4J_*``) and closed.
    """
    query = get_query(name)
    bound = bind(query, params)
    if driver is None:
        from graphmodel.connection import connect

        with connect() as own:
            return _execute(own, query, bound)
    return _execute(driver, query, bound)


def plain(value: Any) -> Any:
    """A result value as plain data: a node as its properties, a relationship as its type and
    properties (the driver's `Record.data()` drops a relationship's properties, the weight W of a
    virtual FEEDS among them), a path as its nodes and relationships in order."""
    if isinstance(value, graph.Relationship):
        return {"type": value.type, **dict(value.items())}
    if isinstance(value, graph.Node):
        return dict(value.items())
    if isinstance(value, graph.Path):
        items: list[Any] = [plain(value.nodes[0])]
        for rel, node in zip(value.relationships, value.nodes[1:], strict=True):
            items += [plain(rel), plain(node)]
        return items
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def _execute(driver: Driver, query: Query, bound: dict[str, Any]) -> list[dict[str, Any]]:
    def work(tx: ManagedTransaction) -> list[dict[str, Any]]:
        return [{key: plain(value) for key, value in record.items()} for record in tx.run(query.text, bound)]

    try:
        with driver.session() as session:
            return session.execute_read(work)
    except ClientError as exc:
        message = exc.message or ""
        if "read access mode" in message or "AccessMode" in (exc.code or ""):
            raise QueryError(
                f"query {query.name!r} ({query.path}) tried to write; canned queries run in a read "
                f"transaction and may only read: {exc.message}"
            ) from exc
        if "apoc." in message and ("Unknown function" in message or "no procedure" in message):
            raise QueryError(
                f"query {query.name!r} ({query.path}) needs APOC core, which this Neo4j does not load: "
                f"{message.splitlines()[0]}. The local stack (`neurflow stack up`) loads the APOC "
                "functions the canned queries use; with Docker, keep NEO4J_PLUGINS in docker/compose.yml; "
                "elsewhere install APOC core and allow apoc.create.vNode and apoc.create.vRelationship"
            ) from exc
        raise QueryError(f"query {query.name!r} ({query.path}) failed: {exc.code}: {exc.message}") from exc

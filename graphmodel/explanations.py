"""How a neuron group forms from the groups below it, as explained by a labeller (paper Sec. 5.2).

Stored shape (method "mllm" today; one explanation per parent group and method)::

    (:NeuronGroup child)-[:FORMS {run_id, method, rank, weight, features, evolution, matched}]->
        (:NeuronGroup parent)

    parent NeuronGroup properties: formation_method, formation_caption, formation_features,
        formation_children, formation_json, formation_at

A ``FORMS`` relationship joins each of the parent's highest-weighted child groups (the ones shown to
the labeller) to the parent: ``rank`` 1 is the child with the highest FEEDS weight, ``weight`` is that
FEEDS weight (copied, so a reader needs no second hop), ``features`` the child's common visual
features, ``evolution`` how they become the parent's features (None when the answer gave no line
for that child), ``matched`` false when the answer said "There is no matches". The parent's own part
of the answer (its common features and the caption of its formation) sits on the parent group; the
whole parsed answer, the model and the prompt version are the JSON string ``formation_json``.

Writing a method's explanations for a run replaces that method's earlier ones of the run (every
``FORMS {run_id, method}`` and the ``formation_*`` properties they came with). Both live on
run-scoped groups, so deleting a run (``writer.delete_run``) or purging a layer removes them too.

This module also holds the read the labeller starts from: every neuron group of a run with its
exemplar patches and its incoming FEEDS from the layer below (`labelling_inputs`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from neo4j import Driver, ManagedTransaction

from graphmodel.connection import GraphStoreError, read_rows


@dataclass
class ChildFormation:
    """One child group's part in the formation of its parent."""

    group_id: str  # ng_id of the child (the layer below)
    rank: int  # 1 = highest FEEDS weight into the parent
    weight: float  # W(child, parent), the FEEDS weight
    features: list[str] = field(default_factory=list)  # the child's common visual features
    evolution: str | None = None  # how its features match / combine into the parent's
    matched: bool = True  # False when the labeller said there is no match


@dataclass
class FormationRecord:
    """How a parent group forms from its highest-weighted children, as one labeller explained it."""

    group_id: str  # ng_id of the parent
    method: str  # e.g. "mllm"
    caption: str  # one or two sentences on the common features and their evolution
    features: list[str]  # the parent's common visual features
    children: list[ChildFormation]
    details: dict[str, Any] = field(default_factory=dict)  # model, prompt version, raw answer ...


@dataclass
class GroupInput:
    """A neuron group as the labeller needs it."""

    ng_id: str
    layer: str
    depth: int  # 0 = the output layer, counting down
    position: int
    exemplars: list[tuple[str, str | None]]  # (patch_id, uri), in the order a labeller should use them
    incoming: list[tuple[str, float]]  # (child ng_id, FEEDS weight) from the layer below, weight descending


_CLEAR = """
MATCH (:NeuronGroup {run_id: $run_id})-[f:FORMS {run_id: $run_id, method: $method}]->(:NeuronGroup)
DELETE f
"""

_CLEAR_PARENTS = """
MATCH (g:NeuronGroup {run_id: $run_id}) WHERE g.formation_method = $method
REMOVE g.formation_method, g.formation_caption, g.formation_features, g.formation_children,
       g.formation_json, g.formation_at
"""

_WRITE_PARENTS = """
UNWIND $rows AS row
MATCH (g:NeuronGroup {ng_id: row.group_id, run_id: $run_id})
SET g.formation_method = $method, g.formation_caption = row.caption, g.formation_features = row.features,
    g.formation_children = row.children, g.formation_json = row.details, g.formation_at = datetime()
RETURN count(g) AS written
"""

_WRITE_EDGES = """
UNWIND $rows AS row
MATCH (p:NeuronGroup {ng_id: row.parent, run_id: $run_id})
MATCH (c:NeuronGroup {ng_id: row.child, run_id: $run_id})
MERGE (c)-[f:FORMS {run_id: $run_id, method: $method}]->(p)
SET f.rank = row.rank, f.weight = row.weight, f.features = row.features, f.evolution = row.evolution,
    f.matched = row.matched
RETURN count(f) AS written
"""


def _rows(explanations: Sequence[FormationRecord]) -> tuple[list[dict], list[dict]]:
    parents, edges = [], []
    for e in explanations:
        parents.append(
            {
                "group_id": e.group_id,
                "caption": e.caption,
                "features": [str(f) for f in e.features],
                "children": [c.group_id for c in sorted(e.children, key=lambda c: c.rank)],
                "details": json.dumps(e.details, sort_keys=True),
            }
        )
        edges += [
            {
                "parent": e.group_id,
                "child": c.group_id,
                "rank": int(c.rank),
                "weight": float(c.weight),
                "features": [str(f) for f in c.features],
                "evolution": c.evolution,
                "matched": bool(c.matched),
            }
            for c in e.children
        ]
    return parents, edges


def write_explanations(
    driver: Driver, run_id: str, method: str, explanations: Sequence[FormationRecord]
) -> tuple[int, int]:
    """Replace `method`'s formation explanations of `run_id` with `explanations`, in one transaction.

    Returns (parent groups written, FORMS relationships written). Every group must belong to the run.
    """
    wrong = sorted({e.method for e in explanations} - {method})
    if wrong:
        raise ValueError(f"explanations of method {wrong} passed to write_explanations(method={method!r})")
    ids = [e.group_id for e in explanations] + [c.group_id for e in explanations for c in e.children]
    foreign = [i for i in ids if not i.startswith(f"{run_id}/")]
    if foreign:
        raise ValueError(f"{len(foreign)} explanations name groups of another run, e.g. {foreign[0]!r}")
    parents, edges = _rows(explanations)  # no ensure_schema: the groups exist, so the ingest made it

    def work(tx: ManagedTransaction) -> tuple[int, int]:
        if tx.run("MATCH (r:Run {run_id: $run_id}) RETURN r", run_id=run_id).single() is None:
            raise GraphStoreError(f"run {run_id} is not in the graph; ingest it first")
        tx.run(_CLEAR, run_id=run_id, method=method).consume()
        tx.run(_CLEAR_PARENTS, run_id=run_id, method=method).consume()
        if not parents:
            return 0, 0
        n_parents = tx.run(_WRITE_PARENTS, rows=parents, run_id=run_id, method=method).single()["written"]
        n_edges = tx.run(_WRITE_EDGES, rows=edges, run_id=run_id, method=method).single()["written"]
        return n_parents, n_edges

    with driver.session() as session:
        written = session.execute_write(work)
    if written != (len(parents), len(edges)):
        raise GraphStoreError(
            f"only {written[0]} of {len(parents)} explained groups and {written[1]} of {len(edges)} "
            f"FORMS relationships found their groups in run {run_id}; was the run deleted or "
            "re-ingested meanwhile?"
        )
    return written


_READ = """
MATCH (p:NeuronGroup {run_id: $run_id}) WHERE p.formation_method IS NOT NULL
  AND ($method IS NULL OR p.formation_method = $method)
RETURN p.ng_id AS group_id, p.formation_method AS method, p.formation_caption AS caption,
       p.formation_features AS features, p.formation_json AS details,
       COLLECT { MATCH (c:NeuronGroup)-[f:FORMS {run_id: $run_id, method: p.formation_method}]->(p)
                 RETURN [f.rank, c.ng_id, f.weight, f.features, f.evolution, f.matched] } AS children
"""


def read_explanations(
    driver: Driver, run_id: str, *, method: str | None = None
) -> dict[str, FormationRecord]:
    """The run's formation explanations keyed by parent group id, children by rank."""

    rows = read_rows(driver, _READ, run_id=run_id, method=method)
    out = {}
    for r in rows:
        children = [
            ChildFormation(child, rank, weight, list(features or []), evolution, bool(matched))
            for rank, child, weight, features, evolution, matched in sorted(r["children"], key=lambda c: c[0])
        ]
        out[r["group_id"]] = FormationRecord(
            r["group_id"],
            r["method"],
            r["caption"],
            list(r["features"] or []),
            children,
            json.loads(r["details"] or "{}"),
        )
    return out


_INPUTS = """
MATCH (r:Run {run_id: $run_id})-[:HAS_NEURON_GROUP]->(g:NeuronGroup)
OPTIONAL MATCH (r)-[u:USES_LAYER]->(l:Layer {model_id: r.model_id, name: g.layer})
RETURN g.ng_id AS ng_id, g.layer AS layer, u.depth AS depth, g.position AS position,
       COLLECT { MATCH (g)-[h:HAS_SEMANTIC_GROUP]->(:SemanticGroup)-[e:EXEMPLAR]->(p:Patch)
                 RETURN [h.position, e.rank, p.patch_id, p.uri] } AS by_semantic_group,
       COLLECT { MATCH (g)-[e:EXEMPLAR]->(p:Patch) RETURN [e.rank, p.patch_id, p.uri] } AS exemplars,
       COLLECT { MATCH (c:NeuronGroup {run_id: $run_id})-[f:FEEDS {run_id: $run_id}]->(g)
                 RETURN [c.ng_id, f.weight] } AS incoming
"""


def _spread(by_sg: list[list], exemplars: list[list]) -> list[tuple[str, str | None]]:
    """The group's patches, taking each semantic group's best patch in turn, then each one's second...

    A group's EXEMPLAR ranks list its semantic groups one after the other, so its first few patches
    would all come from one member neuron; taking them in turn shows the labeller the whole group.
    Patches of EXEMPLAR that no semantic group lists (none, as the writer stores them) come last.
    """
    queues: dict[int, list[tuple[str, str | None]]] = {}
    for position, _rank, pid, uri in sorted(by_sg, key=lambda r: (r[0], r[1], r[2])):
        queues.setdefault(position, []).append((pid, uri))
    ordered: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    depth = 0
    while any(depth < len(q) for q in queues.values()):
        for position in sorted(queues):
            if depth < len(queues[position]):
                pid, uri = queues[position][depth]
                if pid not in seen:
                    seen.add(pid)
                    ordered.append((pid, uri))
        depth += 1
    for _rank, pid, uri in sorted(exemplars, key=lambda r: (r[0], r[1])):
        if pid not in seen:
            seen.add(pid)
            ordered.append((pid, uri))
    return ordered


def labelling_inputs(driver: Driver, run_id: str) -> list[GroupInput]:
    """Every neuron group of the run, bottom layer first (then by position), with its exemplar patches
    (spread over its semantic groups, see `_spread`) and its incoming FEEDS from neuron groups of the
    layer below, highest weight first. Raises GraphStoreError when the run is not in the graph."""

    def work(tx: ManagedTransaction) -> list[dict] | None:
        if tx.run("MATCH (r:Run {run_id: $run_id}) RETURN r", run_id=run_id).single() is None:
            return None
        return [r.data() for r in tx.run(_INPUTS, run_id=run_id)]

    with driver.session() as session:
        rows = session.execute_read(work)
    if rows is None:
        raise GraphStoreError(f"run {run_id} is not in the graph; ingest it first (`neurflow ingest`)")
    groups = [
        GroupInput(
            ng_id=r["ng_id"],
            layer=r["layer"],
            depth=int(r["depth"] if r["depth"] is not None else -1),
            position=int(r["position"] or 0),
            exemplars=_spread(r["by_semantic_group"], r["exemplars"]),
            incoming=sorted(((c, float(w)) for c, w in r["incoming"]), key=lambda cw: (-cw[1], cw[0])),
        )
        for r in rows
    ]
    return sorted(groups, key=lambda g: (-g.depth, g.layer, g.position, g.ng_id))


_SEMANTIC_GROUP_EXEMPLARS = """
MATCH (s:SemanticGroup {run_id: $run_id})-[e:EXEMPLAR]->(p:Patch)
WITH s, e, p ORDER BY e.rank, p.patch_id
RETURN s.sg_id AS sg_id, collect([p.patch_id, p.uri]) AS exemplars
ORDER BY sg_id
"""


def semantic_group_exemplars(driver: Driver, run_id: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """[(sg_id, [(patch_id, uri or None)])] for every semantic group of the run, exemplars by rank."""
    rows = read_rows(driver, _SEMANTIC_GROUP_EXEMPLARS, run_id=run_id)
    return [(r["sg_id"], [(pid, uri) for pid, uri in r["exemplars"]]) for r in rows]

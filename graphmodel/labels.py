"""Concept labels on semantic groups and neuron groups: ``(g)-[:LABELED {score, method, rank}]->(:Concept)``.

A labeller (concept bank, manual, multimodal LLM, CLIP) produces `LabelRecord`s; this module stores
and reads them. Concept names are stored trimmed and lower-cased, so "Flower" and "flower " are one
`Concept`. A group holds at most one LABELED relationship per (concept, method): writing a method's
labels for a run again replaces that method's earlier labels of the run, and never touches labels of
other methods (a manual label survives re-running the concept bank).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from neo4j import Driver, ManagedTransaction

from graphmodel.connection import GraphStoreError, read_rows
from graphmodel.records import LabelRecord
from graphmodel.schema import ensure_schema

METHODS = ("concept_bank", "manual", "mllm", "clip", "spatial_iou")

# LABELED.run_id is indexed; matching the groups instead would scan every node of the database.
_CLEAR = """
MATCH ()-[l:LABELED {run_id: $run_id}]->(:Concept)
WHERE l.method = $method
DELETE l
"""

_WRITE = """
UNWIND $rows AS row
OPTIONAL MATCH (ng:NeuronGroup {ng_id: row.group_id})
OPTIONAL MATCH (sg:SemanticGroup {sg_id: row.group_id})
WITH row, coalesce(ng, sg) AS g
WHERE g IS NOT NULL
MERGE (c:Concept {name: row.concept})
MERGE (g)-[l:LABELED {method: row.method}]->(c)
SET l.score = row.score, l.rank = row.rank, l.run_id = g.run_id, l.details_json = row.details,
    l.labeled_at = datetime()
RETURN count(l) AS written
"""


# Display properties for Neo4j Browser (its style can caption only properties): a group's best
# label as `top_label` (a manual one first, then each labeller's rank 1 before its rank 2, and among
# equal ranks the highest score), and `caption` "<layer> g<n>: <label>". Rank, not score, orders one
# labeller's labels: concept-bank labels are ranked by effect size.
_REFRESH_NG = """
MATCH (g:NeuronGroup) WHERE g.ng_id IN $ids
OPTIONAL MATCH (g)-[l:LABELED]->(c:Concept)
WITH g, c ORDER BY CASE l.method WHEN 'manual' THEN 0 ELSE 1 END, l.rank, l.score DESC
WITH g, head(collect(c.name)) AS top
SET g.top_label = top, g.caption = g.layer + ' g' + toString(g.position) + coalesce(': ' + top, '')
"""
_REFRESH_SG = """
MATCH (g:SemanticGroup) WHERE g.sg_id IN $ids
OPTIONAL MATCH (g)-[l:LABELED]->(c:Concept)
WITH g, c ORDER BY CASE l.method WHEN 'manual' THEN 0 ELSE 1 END, l.rank, l.score DESC
WITH g, head(collect(c.name)) AS top
SET g.top_label = top
"""
_RUN_GROUPS = """
MATCH (g:NeuronGroup {run_id: $run_id}) RETURN g.ng_id AS id
UNION ALL
MATCH (g:SemanticGroup {run_id: $run_id}) RETURN g.sg_id AS id
"""


def _refresh_display(tx: ManagedTransaction, ids: Sequence[str]) -> None:
    tx.run(_REFRESH_NG, ids=list(ids)).consume()
    tx.run(_REFRESH_SG, ids=list(ids)).consume()


def concept_name(name: str) -> str:
    """The stored form of a concept name; raises ValueError for an empty one."""
    cleaned = " ".join(str(name).split()).lower()
    if not cleaned:
        raise ValueError("a concept name cannot be empty")
    return cleaned


def _row(label: LabelRecord) -> dict[str, Any]:
    if label.method not in METHODS:
        raise ValueError(f"unknown labelling method {label.method!r}; use one of {METHODS}")
    return {
        "group_id": label.group_id,
        "concept": concept_name(label.concept),
        "score": float(label.score),
        "method": label.method,
        "rank": int(label.rank),
        "details": json.dumps(label.details, sort_keys=True),
    }


def write_labels(driver: Driver, run_id: str, method: str, labels: Sequence[LabelRecord]) -> int:
    """Replace `method`'s labels on the groups of `run_id` with `labels`, in one transaction.

    Returns the number of LABELED relationships written. Every label must name a group of this run.
    """
    rows = [_row(label) for label in labels]
    wrong = sorted({r["method"] for r in rows} - {method})
    if wrong:
        raise ValueError(f"labels of method {wrong} passed to write_labels(method={method!r})")
    foreign = [r["group_id"] for r in rows if not r["group_id"].startswith(f"{run_id}/")]
    if foreign:
        raise ValueError(f"{len(foreign)} labels name groups of another run, e.g. {foreign[0]!r}")
    ensure_schema(driver)

    def work(tx: ManagedTransaction) -> int:
        if tx.run("MATCH (r:Run {run_id: $run_id}) RETURN r", run_id=run_id).single() is None:
            raise GraphStoreError(f"run {run_id} is not in the graph; ingest it first")
        tx.run(_CLEAR, run_id=run_id, method=method).consume()
        written = tx.run(_WRITE, rows=rows).single()["written"] if rows else 0
        _refresh_display(tx, [r["id"] for r in tx.run(_RUN_GROUPS, run_id=run_id)])
        return written

    with driver.session() as session:
        written = session.execute_write(work)
    if written != len(rows):
        raise GraphStoreError(
            f"only {written} of {len(rows)} labels found their group in run {run_id}; "
            "was the run deleted or re-ingested meanwhile?"
        )
    return written


def set_label(
    driver: Driver, group_id: str, concept: str, *, method: str = "manual", score: float = 1.0
) -> dict[str, Any]:
    """Add (or update) one label on a group, leaving its other labels alone. Returns the group's kind."""
    row = _row(LabelRecord(group_id, concept, score, method, rank=1))
    ensure_schema(driver)

    def work(tx: ManagedTransaction) -> dict[str, Any] | None:
        record = tx.run(
            _WRITE.replace("RETURN count(l) AS written", "RETURN labels(g)[0] AS kind, g.run_id AS run_id"),
            rows=[row],
        ).single()
        _refresh_display(tx, [group_id])
        return record.data() if record is not None else None

    with driver.session() as session:
        found = session.execute_write(work)
    if found is None:
        raise GraphStoreError(
            f"no neuron group or semantic group {group_id!r} in the graph; ids look like "
            "<run_id>/<layer>/g0 (neuron group) or <run_id>/<layer>/<neuron>/<j> (semantic group)"
        )
    return {**found, "concept": row["concept"], "method": method, "score": row["score"]}


def remove_label(driver: Driver, group_id: str, concept: str, *, method: str = "manual") -> int:
    """Delete one label; returns how many relationships were removed (0 or 1)."""

    def work(tx: ManagedTransaction) -> int:
        removed = tx.run(
            "MATCH (g)-[l:LABELED {method: $method}]->(:Concept {name: $concept}) "
            "WHERE g.ng_id = $group_id OR g.sg_id = $group_id DELETE l RETURN count(l) AS n",
            group_id=group_id,
            concept=concept_name(concept),
            method=method,
        ).single()["n"]
        _refresh_display(tx, [group_id])
        return removed

    with driver.session() as session:
        return session.execute_write(work)


def read_labels(driver: Driver, run_id: str, *, method: str | None = None) -> dict[str, list[LabelRecord]]:
    """Every label of the run's groups, best first per group (score descending), keyed by group id."""

    rows = read_rows(
        driver,
        "MATCH (g)-[l:LABELED {run_id: $run_id}]->(c:Concept) "
        "WHERE (g:NeuronGroup OR g:SemanticGroup) AND ($method IS NULL OR l.method = $method) "
        "RETURN coalesce(g.ng_id, g.sg_id) AS group_id, c.name AS concept, l.score AS score, "
        "l.method AS method, l.rank AS rank, l.details_json AS details",
        run_id=run_id,
        method=method,
    )
    out: dict[str, list[LabelRecord]] = defaultdict(list)
    for r in rows:
        out[r["group_id"]].append(
            LabelRecord(
                r["group_id"],
                r["concept"],
                r["score"],
                r["method"],
                r["rank"] or 1,
                json.loads(r["details"] or "{}"),
            )
        )
    for labels in out.values():
        labels.sort(key=lambda lab: (-lab.score, lab.method, lab.concept))
    return dict(out)

"""Bias-audit results on the graph: one `AuditResult` node per (run, audit settings), linked to the
concepts it ranked and the neuron groups it masked.

    (:Run)-[:HAS_AUDIT]->(:AuditResult {audit_id, run_id, expected, created_at, params_json, ...})
    (:AuditResult)-[:FOUND {entry, rank, selectivity, bias_drop, random_bias_drop, bias_removed,
                            recall_cost, influence, best_group, shift, shift_low, shift_high,
                            measurable}]->(:Concept)
    (:AuditResult)-[:TESTED {concept, selectivity, bias_drop, random_bias_drop, bias_removed,
                             recall_cost, metrics_json}]->(:NeuronGroup)

`entry` names what was ranked: a concept ("flower") or a conjunction ("sun+cloud"), whose FOUND
relationships go to each of its concepts with the same entry and rank. `shift*` are the entry's own
effect on P(class) (a conjunction's: its interaction) and `measurable` whether it is outside the noise
(causal audits; absent on label-based ones).

The audit id is the run id plus a hash of the settings (expected concepts, image sets, thresholds),
so auditing again with the same settings replaces the earlier result instead of adding one.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from neo4j import Driver, ManagedTransaction

from graphmodel.connection import GraphStoreError, read_rows
from graphmodel.labels import concept_name
from graphmodel.schema import ensure_schema

_WRITE = """
MATCH (r:Run {run_id: $run_id})
MERGE (a:AuditResult {audit_id: $audit_id})
SET a += $props, a.created_at = datetime()
MERGE (r)-[h:HAS_AUDIT]->(a)
SET h.run_id = $run_id
WITH a
UNWIND $findings AS f
MERGE (c:Concept {name: f.concept})
MERGE (a)-[found:FOUND {entry: f.entry}]->(c)
SET found += f.props
WITH DISTINCT a
UNWIND $tested AS t
MATCH (g:NeuronGroup {ng_id: t.group_id})
MERGE (a)-[tested:TESTED {concept: t.concept}]->(g)
SET tested += t.props
RETURN count(tested) AS n
"""

_SCALARS = ("selectivity", "bias_drop", "random_bias_drop", "bias_removed", "recall_cost")


def audit_id(run_id: str, settings: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return f"{run_id}/audit/{digest}"


def write_audit(driver: Driver, run_id: str, settings: dict[str, Any], findings: list[dict]) -> str:
    """Store an audit (findings as `ConceptFinding.as_dict()`); returns its audit id."""
    ident = audit_id(run_id, settings)
    rows, tested = [], []
    for f in findings:
        name = concept_name(f["concept"])
        props = {
            "rank": f["rank"],
            "influence": f["influence"],
            "best_group": f["best_group"],
            **{k: f[k] for k in _SCALARS},
        }
        if f.get("shift") is not None:
            own = f.get("interaction") or f["shift"]
            props.update(shift=own["mean"], shift_low=own["low"], shift_high=own["high"])
            props["measurable"] = bool(f.get("measurable"))
        for part in f.get("concepts") or [f["concept"]]:
            rows.append({"concept": concept_name(part), "entry": name, "props": props})
        for g in f["groups"]:
            tested.append(
                {
                    "group_id": g["group_id"],
                    "concept": name,
                    "props": {
                        "concept_score": g["concept_score"],
                        "size": g["size"],
                        "metrics_json": json.dumps(g["metrics"], sort_keys=True),
                        **{k: g[k] for k in _SCALARS},
                    },
                }
            )
    top = next((r for r in rows if r["props"].get("measurable", True)), None)
    props = {
        "run_id": run_id,
        "expected": sorted(settings.get("expected", [])),
        "params_json": json.dumps(settings, sort_keys=True),
        "findings_json": json.dumps(findings, sort_keys=True),
        "top_concept": top["entry"] if top else None,
        "caption": f"audit: {top['entry']}" if top else "audit: no measurable concept",
    }
    ensure_schema(driver)

    def work(tx: ManagedTransaction) -> None:
        if tx.run("MATCH (r:Run {run_id: $run_id}) RETURN r", run_id=run_id).single() is None:
            raise GraphStoreError(f"run {run_id} is not in the graph")
        tx.run("MATCH (a:AuditResult {audit_id: $id})-[e:FOUND|TESTED]->() DELETE e", id=ident).consume()
        tx.run(_WRITE, run_id=run_id, audit_id=ident, props=props, findings=rows, tested=tested).consume()

    with driver.session() as session:
        session.execute_write(work)
    return ident


def read_audits(driver: Driver, run_id: str) -> list[dict[str, Any]]:
    """The run's audits, newest first, each with its findings as stored."""

    rows = read_rows(
        driver,
        "MATCH (:Run {run_id: $run_id})-[:HAS_AUDIT]->(a:AuditResult) "
        "RETURN a.audit_id AS audit_id, a.expected AS expected, a.params_json AS params, "
        "a.findings_json AS findings, toString(a.created_at) AS created_at "
        "ORDER BY a.created_at DESC",
        run_id=run_id,
    )
    return [{**r, "params": json.loads(r["params"]), "findings": json.loads(r["findings"])} for r in rows]

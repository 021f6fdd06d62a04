"""Fidelity-check results on the Run: the whole result as `evaluation_json` and a few headline
numbers as plain properties, so Browser and Cypher can filter runs by them without parsing JSON."""

from __future__ import annotations

import json
from typing import Any

from neo4j import Driver, ManagedTransaction

from graphmodel.connection import GraphStoreError


def headline(evaluation: dict[str, Any]) -> dict[str, float]:
    """eval_* properties: worst layer for optimality, mean overlap for stability, mean Pearson at
    set size 1 for correlation."""
    out: dict[str, float] = {}
    opt = evaluation.get("optimality") or {}
    if opt:
        out["eval_optimality_min_difference"] = min(v["difference"]["mean"] for v in opt.values())
        out["eval_optimality_random_better"] = max(v["random_better"] for v in opt.values())
    stab = evaluation.get("k_stability") or {}
    if stab:
        values = [o for v in stab.values() for o in v["overlap"].values()]
        out["eval_stability_mean_overlap"] = sum(values) / len(values)
    corr = evaluation.get("correlation") or {}
    ones = [v["by_size"].get("1", {}).get("pearson") for v in corr.values()]
    ones = [r for r in ones if r is not None]
    if ones:
        out["eval_correlation_size1"] = sum(ones) / len(ones)
    return out


def write_evaluation(driver: Driver, run_id: str, evaluation: dict[str, Any]) -> None:
    props = {"evaluation_json": json.dumps(evaluation, sort_keys=True), **headline(evaluation)}

    def work(tx: ManagedTransaction) -> bool:
        record = tx.run(
            "MATCH (r:Run {run_id: $run_id}) SET r += $props, r.evaluated_at = datetime() "
            "RETURN r.run_id AS id",
            run_id=run_id,
            props=props,
        ).single()
        return record is not None

    with driver.session() as session:
        if not session.execute_write(work):
            raise GraphStoreError(f"run {run_id} is not in the graph")

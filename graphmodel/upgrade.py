"""Bring runs stored by an older writer up to the current schema, in place and idempotently.

Schema 2 added what the fast queries read: a run's core sizes and SHARES_CORE counts
(`class_similarity`, see graphmodel/similarity.py) and ``NeuronGroup.members`` (`hub_concepts`).
Centroids stay float lists in old runs; the reader reads both forms. `complete_run` upgrades the
older runs of the model it completes, so a database catches up with the first ingest after an
update; `upgrade_runs` does the same on demand.
"""

from __future__ import annotations

from neo4j import Driver, ManagedTransaction

from graphmodel import similarity

_OLD_RUNS = """
MATCH (r:Run {status: 'COMPLETE'})
WHERE r.core_sizes IS NULL AND ($model_id IS NULL OR r.model_id = $model_id)
RETURN r.run_id AS run_id
"""

_GROUP_MEMBERS = """
MATCH (g:NeuronGroup {run_id: $run_id})
WHERE g.members IS NULL
SET g.members = COLLECT { MATCH (g)-[:HAS_MEMBER]->(m:Neuron) RETURN m.index ORDER BY m.index }
"""


def upgrade_runs(driver: Driver, model_id: str | None = None) -> list[str]:
    """Upgrade the COMPLETE runs (of ``model_id``, or all) that predate schema 2; returns their ids."""

    def old_runs(tx: ManagedTransaction) -> list[str]:
        return [r["run_id"] for r in tx.run(_OLD_RUNS, model_id=model_id)]

    with driver.session() as session:
        run_ids = session.execute_read(old_runs)
        for run_id in run_ids:
            session.execute_write(lambda tx, run_id=run_id: tx.run(_GROUP_MEMBERS, run_id=run_id).consume())
    for run_id in run_ids:
        similarity.link_run(driver, run_id)
    return run_ids

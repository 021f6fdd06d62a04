"""Core-neuron overlap between the runs of a model, written when a run completes.

`class_similarity` compares every pair of classes of a model: the Jaccard index of their core-neuron
sets. Computed at query time that is quadratic in classes and reads every run's whole circuit
(1.1 s at 40 classes, growing with the square). Written here once per run instead, it costs one
expansion of the new run's circuit neurons (linear in the runs that share them), and the query
only reads the stored counts:

    (:Run).core_layers, .core_sizes          the run's core neurons per layer (below its top layer)
    (a:Run)-[:SHARES_CORE {layers, shared}]->(b:Run)
                                             per layer, how many core neurons a and b share; one
                                             relationship per pair, from the smaller run id

A run's core neurons are its CIRCUIT_NEURON targets outside its top layer: exactly the children of
its CORE_OF edges. Counts are written for every other run of the model whatever its status, and
rewritten when that run completes, so a pair of runs finishing at the same time ends with the
counts of both complete circuits.
"""

from __future__ import annotations

from neo4j import Driver, ManagedTransaction

_SIZES = """
MATCH (r:Run {run_id: $run_id})
CALL (r) {
  MATCH (r)-[c:CIRCUIT_NEURON]->()
  WHERE c.layer <> r.layers[0]
  WITH c.layer AS layer, count(*) AS n
  RETURN collect(layer) AS layers, collect(n) AS sizes
}
SET r.core_layers = layers, r.core_sizes = sizes
"""

_SHARED = """
MATCH (r:Run {run_id: $run_id})
CALL (r) {
  // No labels on n and o (CIRCUIT_NEURON only links a Run to a Neuron): the expansion then starts
  // at r, where a label would let the planner scan every Run.
  MATCH (r)-[c:CIRCUIT_NEURON]->(n)<-[:CIRCUIT_NEURON]-(o)
  WHERE c.layer <> r.layers[0] AND o <> r AND n.layer <> o.layers[0]
  WITH o, n.layer AS layer, count(*) AS n
  ORDER BY layer
  RETURN o, collect(layer) AS layers, collect(n) AS shared
}
WITH r, o, layers, shared,
     CASE WHEN r.run_id < o.run_id THEN [r, o] ELSE [o, r] END AS pair
WITH pair[0] AS a, pair[1] AS b, layers, shared
MERGE (a)-[s:SHARES_CORE]->(b)
SET s.layers = layers, s.shared = shared
RETURN count(s) AS pairs
"""

_STALE = """
MATCH (r:Run {run_id: $run_id})-[s:SHARES_CORE]-(o:Run)
WHERE NOT EXISTS { (r)-[:CIRCUIT_NEURON]->(n:Neuron)<-[:CIRCUIT_NEURON]-(o) WHERE n.layer <> r.layers[0] }
DELETE s
"""


def link_run(driver: Driver, run_id: str) -> int:
    """Write the run's core sizes and its SHARES_CORE counts with every other run of its model.

    Returns the number of runs it shares core neurons with. Idempotent.
    """

    def work(tx: ManagedTransaction) -> int:
        tx.run(_SIZES, run_id=run_id).consume()
        tx.run(_STALE, run_id=run_id).consume()
        record = tx.run(_SHARED, run_id=run_id).single()
        return record["pairs"] if record else 0

    with driver.session() as session:
        return session.execute_write(work)

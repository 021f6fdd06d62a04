// name: class_similarity
// question: How alike are the circuits of every pair of ingested classes of a model? Jaccard index
//   |A ∩ B| / |A ∪ B| of their core-neuron sets (children of the run's CORE_OF edges, keyed by
//   layer and index), each class read from its latest COMPLETE run of the model.
// param model_id: string              the model, Model.model_id
// param layer: string = null          only this layer's core neurons; default: every layer
MATCH (r:Run {model_id: $model_id, status: 'COMPLETE'})-[:EXPLAINS]->(c:Class)
WITH c, r ORDER BY r.finished_at DESC
WITH c, head(collect(r)) AS r
CALL (r) {
  MATCH (n:Neuron)-[:CORE_OF {run_id: r.run_id}]->()
  WHERE $layer IS NULL OR n.layer = $layer
  RETURN collect(DISTINCT n.layer + '#' + toString(n.index)) AS core
}
WITH c.name AS name, r.run_id AS run_id, core ORDER BY name
WITH collect({name: name, run_id: run_id, core: core}) AS classes
UNWIND range(0, size(classes) - 2) AS i
UNWIND range(i + 1, size(classes) - 1) AS j
WITH classes[i] AS a, classes[j] AS b
WITH a, b, size([x IN a.core WHERE x IN b.core]) AS shared
WITH a, b, shared, size(a.core) + size(b.core) - shared AS union_size
RETURN a.name AS class_a, b.name AS class_b, size(a.core) AS core_a, size(b.core) AS core_b, shared,
       CASE WHEN union_size = 0 THEN 0.0 ELSE toFloat(shared) / union_size END AS jaccard,
       a.run_id AS run_a, b.run_id AS run_b
ORDER BY jaccard DESC, class_a, class_b

// name: class_similarity
// question: How alike are the circuits of every pair of ingested classes of a model? Jaccard index
//   |A ∩ B| / |A ∪ B| of their core-neuron sets (children of the run's CORE_OF edges, keyed by
//   layer and index), each class read from its latest COMPLETE run of the model. The counts are
//   written when a run completes (graphmodel/similarity.py: Run.core_sizes and SHARES_CORE), so
//   this reads two numbers per pair instead of every circuit; a run stored before that shows
//   core sizes of null until the next run of its model completes.
// param model_id: string              the model, Model.model_id
// param layer: string = null          only this layer's core neurons; default: every layer
MATCH (r:Run {model_id: $model_id, status: 'COMPLETE'})-[:EXPLAINS]->(c:Class)
WITH c, r ORDER BY r.finished_at DESC
WITH c, head(collect(r)) AS r
WITH c.name AS name, r,
     CASE WHEN r.core_sizes IS NULL THEN null
          WHEN $layer IS NULL THEN reduce(t = 0, x IN r.core_sizes | t + x)
          ELSE coalesce([i IN range(0, size(r.core_layers) - 1) WHERE r.core_layers[i] = $layer | r.core_sizes[i]][0], 0)
     END AS core
ORDER BY name
WITH collect({name: name, run: r, core: core}) AS classes
UNWIND range(0, size(classes) - 2) AS i
UNWIND range(i + 1, size(classes) - 1) AS j
WITH classes[i] AS a, classes[j] AS b
CALL (a, b) {
  WITH a.run AS ra, b.run AS rb
  OPTIONAL MATCH (ra)-[s:SHARES_CORE]-(rb)
  RETURN CASE WHEN s IS NULL THEN 0
              WHEN $layer IS NULL THEN reduce(t = 0, x IN s.shared | t + x)
              ELSE coalesce([k IN range(0, size(s.layers) - 1) WHERE s.layers[k] = $layer | s.shared[k]][0], 0)
         END AS shared
}
WITH a, b, shared, a.core + b.core - shared AS union_size
RETURN a.name AS class_a, b.name AS class_b, a.core AS core_a, b.core AS core_b, shared,
       CASE WHEN union_size IS NULL THEN null WHEN union_size = 0 THEN 0.0
            ELSE toFloat(shared) / union_size END AS jaccard,
       a.run.run_id AS run_a, b.run.run_id AS run_b
ORDER BY coalesce(jaccard, -1.0) DESC, class_a, class_b

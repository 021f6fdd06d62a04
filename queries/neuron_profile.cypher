// name: neuron_profile
// question: What does one neuron respond to across every run (every class ingested): its semantic
//   groups in each run, their size and top exemplar patches, the neuron group each sits in, and
//   their labels? Several distinct groups across classes are the signature of polysemanticity.
// param model_id: string              the model, Model.model_id
// param layer: string                 the neuron's layer (e.g. block3)
// param index: integer                the neuron's index (channel or unit) in the layer
// param exemplars: integer = 4        how many exemplar patch URIs per semantic group
MATCH (n:Neuron {model_id: $model_id, layer: $layer, index: $index})-[:HAS_SEMANTIC_GROUP]->(sg:SemanticGroup)
MATCH (r:Run {run_id: sg.run_id})
CALL (sg) {
  MATCH (sg)-[e:EXEMPLAR]->(p:Patch)
  WITH p, e ORDER BY e.rank
  RETURN collect(p.uri)[0..$exemplars] AS exemplar_uris
}
CALL (sg) {
  OPTIONAL MATCH (g:NeuronGroup)-[:HAS_SEMANTIC_GROUP]->(sg)
  RETURN collect(g.ng_id) AS neuron_groups
}
CALL (sg) {
  OPTIONAL MATCH (sg)-[l:LABELED]->(concept:Concept)
  WITH concept, l ORDER BY l.rank, l.score DESC
  RETURN [x IN collect({concept: concept.name, score: l.score, rank: l.rank}) WHERE x.concept IS NOT NULL]
         AS labels
}
RETURN r.class_name AS class_name, r.run_id AS run_id, r.status AS status, sg.j AS j, sg.size AS size,
       sg.silhouette AS silhouette, neuron_groups, labels, exemplar_uris
ORDER BY class_name, run_id, j

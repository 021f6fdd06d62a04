// name: hub_concepts
// question: Which core neurons and neuron groups of a model are shared by the most classes ("hub"
//   concepts), and which classes use them? A run's core neurons are its circuit neurons below the
//   top layer (each was chosen as a CORE_OF child; CIRCUIT_NEURON has one edge per neuron, where
//   CORE_OF has one per parent); a neuron group is shared when groups of several classes have
//   the same member neurons at the same layer (kind "neuron_group", members listed). Each class
//   is read from its latest COMPLETE run of the model; a campaign over all classes gives the full
//   picture.
// param model_id: string              the model, Model.model_id
// param layer: string = null          only this layer; default: every layer
// param min_classes: integer = 2      only hubs shared by at least this many classes
// param limit: integer = 25           how many rows of each kind
MATCH (r:Run {model_id: $model_id, status: 'COMPLETE'})-[:EXPLAINS]->(c:Class)
WITH c, r ORDER BY r.finished_at DESC
WITH c, head(collect(r)) AS r
WITH r, c.name AS class_name ORDER BY class_name
WITH collect({r: r, class_name: class_name}) AS runs
CALL (runs) {
  // Neurons are grouped as nodes first: their layer and index are read once per neuron, not once
  // per run that uses them.
  UNWIND runs AS run
  WITH run.r AS r, run.class_name AS class_name
  MATCH (r)-[cn:CIRCUIT_NEURON]->(n:Neuron)
  WHERE cn.layer <> r.layers[0] AND ($layer IS NULL OR cn.layer = $layer)
  WITH n, collect(DISTINCT class_name) AS classes
  WHERE size(classes) >= $min_classes
  RETURN 'neuron' AS kind, n.layer AS layer, [n.index] AS members, classes
  UNION ALL
  // NeuronGroup.members holds the sorted member indices (schema 2); older groups are expanded.
  UNWIND runs AS run
  WITH run.r AS r, run.class_name AS class_name
  MATCH (r)-[:HAS_NEURON_GROUP]->(g:NeuronGroup)
  WHERE $layer IS NULL OR g.layer = $layer
  WITH g, class_name,
       CASE WHEN g.members IS NOT NULL THEN g.members
            ELSE COLLECT { MATCH (g)-[:HAS_MEMBER]->(m:Neuron) RETURN m.index ORDER BY m.index } END AS members
  WITH g.layer AS layer, members, collect(DISTINCT class_name) AS classes
  WHERE size(classes) >= $min_classes
  RETURN 'neuron_group' AS kind, layer, members, classes
}
WITH kind, layer, members, classes ORDER BY size(classes) DESC, layer, members
WITH kind, collect({layer: layer, members: members, classes: classes})[0..$limit] AS rows
UNWIND rows AS row
RETURN kind, row.layer AS layer, row.members AS members, size(row.classes) AS n_classes,
       row.classes AS classes

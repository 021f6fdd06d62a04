// name: shared_core_neurons
// question: Which core neurons do classes A and B of a model both use, and how much does each class
//   weigh them? A run's core neurons are the children of its CORE_OF edges (the logit is not one);
//   a neuron's weight in a run is the sum of its CORE_OF weights over the parents it is core of
//   (each weight is T / sum |T| over one parent's core set), so it is the neuron's total share.
//   Each class is read from its latest COMPLETE run of the model.
// param model_id: string              the model, Model.model_id
// param class_a: string               first class name
// param class_b: string               second class name
// param layer: string = null          only this layer; default: every layer
CALL () {
  MATCH (r:Run {model_id: $model_id, status: 'COMPLETE'})-[:EXPLAINS]->(:Class {name: $class_a})
  RETURN r AS ra ORDER BY r.finished_at DESC LIMIT 1
}
CALL () {
  MATCH (r:Run {model_id: $model_id, status: 'COMPLETE'})-[:EXPLAINS]->(:Class {name: $class_b})
  RETURN r AS rb ORDER BY r.finished_at DESC LIMIT 1
}
MATCH (n:Neuron)-[ea:CORE_OF {run_id: ra.run_id}]->()
WHERE $layer IS NULL OR n.layer = $layer
WITH ra, rb, n, sum(ea.weight) AS weight_a, count(ea) AS parents_a
MATCH (n)-[eb:CORE_OF {run_id: rb.run_id}]->()
WITH ra, rb, n, weight_a, parents_a, sum(eb.weight) AS weight_b, count(eb) AS parents_b
RETURN n.layer AS layer, n.index AS neuron, weight_a, weight_b, parents_a, parents_b,
       ra.run_id AS run_a, rb.run_id AS run_b
ORDER BY abs(weight_a) + abs(weight_b) DESC, layer, neuron

// name: shared_core_neurons
// question: Which core neurons do classes A and B of a model both use, and how much does each class
//   weigh them? A run's core neurons are the children of its CORE_OF edges (the logit is not one);
//   a neuron's weight in a run is the sum of its CORE_OF weights over the parents it is core of
//   (each weight is T / sum |T| over one parent's core set), so it is the neuron's total share.
//   Each class is read from its latest COMPLETE run of the model. Both runs' CORE_OF edges are
//   sought by their run_id index and joined by neuron (not expanded from each shared neuron, which
//   has a CORE_OF edge for every run that uses it).
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
CALL (ra, rb) {
  MATCH (n:Neuron)-[e:CORE_OF {run_id: ra.run_id}]->()
  RETURN n, e.weight AS wa, 1 AS pa, 0.0 AS wb, 0 AS pb
  UNION ALL
  MATCH (n:Neuron)-[e:CORE_OF {run_id: rb.run_id}]->()
  RETURN n, 0.0 AS wa, 0 AS pa, e.weight AS wb, 1 AS pb
}
WITH ra, rb, n, sum(wa) AS weight_a, sum(pa) AS parents_a, sum(wb) AS weight_b, sum(pb) AS parents_b
WHERE parents_a > 0 AND parents_b > 0 AND ($layer IS NULL OR n.layer = $layer)
RETURN n.layer AS layer, n.index AS neuron, weight_a, weight_b, parents_a, parents_b,
       ra.run_id AS run_a, rb.run_id AS run_b
ORDER BY abs(weight_a) + abs(weight_b) DESC, layer, neuron

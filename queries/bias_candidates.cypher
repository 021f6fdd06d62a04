// name: bias_candidates
// question: Which concepts, outside the ones we expect CLASS to use, have the most influence on it?
//   A concept's influence is the sum, over the run's neuron groups labelled with it (score >=
//   min_score, rank <= max_rank), of the group's influence on the class: the sum over its FEEDS
//   paths into the class of the path's flow, the product of each link's share of its parent's
//   incoming |W| (see feeds_via_concept): the fraction of the class's input that passes the group. Influence is a ranking of where to
//   look, not evidence of a bias: `neurflow audit` tests the candidates causally.
// param model_id: string              the model, Model.model_id
// param class_name: string            the class, Class.name (e.g. bee)
// param expected: list<string> = []   concepts the class should use (e.g. ["stripes", "wings"])
// param min_score: float = 0.8        lowest label score, on its method's scale: ROC AUC or share of
//                                      pairs (concept_bank); IoU (spatial_iou), which is small (0.01-0.12
//                                      on the planted worlds), so give 0 with method = spatial_iou and
//                                      let max_rank choose
// param max_rank: integer = 2         only a group's best max_rank labels count
// param method: string = null         only labels of this method (concept_bank, spatial_iou, manual, mllm, clip)
// param run_id: string = null         one run of the class; default: its latest COMPLETE run
// param limit: integer = 10           how many concepts to return
MATCH (r:Run {model_id: $model_id, status: 'COMPLETE'})-[:EXPLAINS]->(cl:Class {name: $class_name})
WHERE $run_id IS NULL OR r.run_id = $run_id
WITH r, cl ORDER BY r.finished_at DESC LIMIT 1
CALL (r) {
  MATCH ()-[x:FEEDS]->(p)
  WHERE x.run_id = r.run_id
  WITH p, sum(abs(x.weight)) AS total
  RETURN collect({id: elementId(p), total: total}) AS totals
}
MATCH (g:NeuronGroup {run_id: r.run_id})-[l:LABELED]->(c:Concept)
WHERE l.score >= $min_score AND l.rank <= $max_rank AND ($method IS NULL OR l.method = $method)
  AND NOT toLower(c.name) IN [e IN $expected | toLower(trim(e))]
WITH r, cl, totals, c, g, max(l.score) AS score
CALL (r, cl, g, totals) {
  MATCH p = (g)-[:FEEDS*]->(cl)
  WHERE all(f IN relationships(p) WHERE f.run_id = r.run_id)
  RETURN sum(reduce(w = 1.0, s IN [f IN relationships(p) | f.weight / [t IN totals WHERE t.id = elementId(endNode(f)) | t.total][0]] | w * s)) AS influence
}
WITH r, c, collect({group: g.ng_id, layer: g.layer, influence: influence, score: score}) AS groups
RETURN c.name AS concept,
       reduce(s = 0.0, x IN groups | s + x.influence) AS influence,
       size(groups) AS n_groups,
       [x IN groups | x.group] AS groups,
       reduce(m = 0.0, x IN groups | CASE WHEN x.score > m THEN x.score ELSE m END) AS best_label_score,
       r.run_id AS run_id
ORDER BY influence DESC, concept
LIMIT $limit

// name: feeds_via_concept
// question: Which neuron groups feed CLASS through a path that passes a group labelled like CONCEPT?
//   A group is "labelled like CONCEPT" when one of its LABELED concepts contains CONCEPT
//   (case-insensitive), with score >= min_score and rank <= max_rank (rank 1 = the group's best
//   label of that method). Each row is one path: from a group (possibly the labelled group itself)
//   up through the labelled group into the class. `strength` is the product of the FEEDS weights W
//   along it (as in top_paths); `flow` is the product of each link's SHARE of its parent's incoming
//   |W| (W / sum of |W| into the parent): the fraction of the class's input that flows along the
//   path. Paths of different lengths are only comparable by flow (W sums many hyperedges and grows
//   lower down), so rows are ordered by flow; a labelled group always ranks above groups feeding it.
// param model_id: string              the model, Model.model_id
// param class_name: string            the class, Class.name (e.g. bee)
// param concept: string               part of a concept name, e.g. flower
// param min_score: float = 0.8        lowest label score, on its method's scale: ROC AUC or share of
//                                      pairs (concept_bank); IoU (spatial_iou), which is small (0.01-0.12
//                                      on the planted worlds), so give 0 with method = spatial_iou and
//                                      let max_rank choose
// param max_rank: integer = 2         only a group's best max_rank labels count
// param method: string = null         only labels of this method (concept_bank, spatial_iou, manual, mllm, clip)
// param run_id: string = null         one run of the class; default: its latest COMPLETE run
// param limit: integer = 20           how many paths to return
MATCH (r:Run {model_id: $model_id, status: 'COMPLETE'})-[:EXPLAINS]->(cl:Class {name: $class_name})
WHERE $run_id IS NULL OR r.run_id = $run_id
WITH r, cl ORDER BY r.finished_at DESC LIMIT 1
CALL (r) {
  MATCH ()-[x:FEEDS]->(p)
  WHERE x.run_id = r.run_id
  WITH p, sum(abs(x.weight)) AS total
  RETURN collect({id: elementId(p), total: total}) AS totals
}
MATCH (via:NeuronGroup {run_id: r.run_id})-[l:LABELED]->(c:Concept)
WHERE toLower(c.name) CONTAINS toLower($concept) AND l.score >= $min_score AND l.rank <= $max_rank
  AND ($method IS NULL OR l.method = $method)
WITH r, cl, totals, via, max(l.score) AS label_score, collect(DISTINCT c.name) AS labels
MATCH up = (via)-[:FEEDS*]->(cl)
WHERE all(f IN relationships(up) WHERE f.run_id = r.run_id)
MATCH down = (g:NeuronGroup {run_id: r.run_id})-[:FEEDS*0..]->(via)
WHERE all(f IN relationships(down) WHERE f.run_id = r.run_id)
WITH r, totals, g, via, labels, label_score, nodes(down) + tail(nodes(up)) AS chain,
     relationships(down) + relationships(up) AS links
RETURN g.ng_id AS group,
       g.layer AS layer,
       via.ng_id AS via_group,
       labels AS via_labels,
       label_score,
       [n IN chain | coalesce(n.ng_id, n.name)] AS path,
       [f IN links | f.weight] AS weights,
       reduce(w = 1.0, f IN links | w * f.weight) AS strength,
       reduce(w = 1.0, s IN [f IN links | f.weight / [t IN totals WHERE t.id = elementId(endNode(f)) | t.total][0]] | w * s) AS flow
ORDER BY flow DESC, group, path
LIMIT $limit

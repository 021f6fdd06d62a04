// name: cross_model_concepts
// question: For a class ingested under two models, which concepts do both models use for it, and
//   which only one? A model "uses" a concept when a neuron group of its latest COMPLETE run of the
//   class is labelled with it (score >= min_score, rank <= max_rank). Influence is as in
//   bias_candidates (flow shares): the sum over those groups of their FEEDS path strengths into the class. Labels
//   of the two models are only comparable when the same labeller and concept bank made them.
// param class_name: string            the class name in both models (case-insensitive)
// param model_a: string               first model, Model.model_id
// param model_b: string               second model, Model.model_id
// param min_score: float = 0.8        lowest label score, on its method's scale: ROC AUC or share of
//                                      pairs (concept_bank); IoU (spatial_iou), which is small (0.01-0.12
//                                      on the planted worlds), so give 0 with method = spatial_iou and
//                                      let max_rank choose
// param max_rank: integer = 2         only a group's best max_rank labels count
// param method: string = null         only labels of this method (concept_bank, spatial_iou, manual, mllm, clip)
UNWIND [$model_a, $model_b] AS model_id
CALL (model_id) {
  MATCH (r:Run {model_id: model_id, status: 'COMPLETE'})-[:EXPLAINS]->(cl:Class)
  WHERE toLower(cl.name) = toLower($class_name)
  WITH r, cl ORDER BY r.finished_at DESC LIMIT 1
  CALL (r) {
    MATCH ()-[x:FEEDS]->(p)
    WHERE x.run_id = r.run_id
    WITH p, sum(abs(x.weight)) AS total
    RETURN collect({id: elementId(p), total: total}) AS totals
  }
  MATCH (g:NeuronGroup {run_id: r.run_id})-[l:LABELED]->(c:Concept)
  WHERE l.score >= $min_score AND l.rank <= $max_rank AND ($method IS NULL OR l.method = $method)
  WITH DISTINCT r, cl, totals, g, c
  CALL (r, cl, g, totals) {
    MATCH p = (g)-[:FEEDS*]->(cl)
    WHERE all(f IN relationships(p) WHERE f.run_id = r.run_id)
    RETURN sum(reduce(w = 1.0, s IN [f IN relationships(p) | f.weight / [t IN totals WHERE t.id = elementId(endNode(f)) | t.total][0]] | w * s)) AS influence
  }
  RETURN c.name AS concept, r.run_id AS run_id, sum(influence) AS influence, count(g) AS n_groups
}
WITH concept, collect({model: model_id, run: run_id, influence: influence, groups: n_groups}) AS uses
WITH concept,
     [u IN uses WHERE u.model = $model_a][0] AS a,
     [u IN uses WHERE u.model = $model_b][0] AS b
RETURN concept,
       CASE WHEN a IS NOT NULL AND b IS NOT NULL THEN 'both'
            WHEN a IS NOT NULL THEN 'only ' + $model_a ELSE 'only ' + $model_b END AS used_by,
       a.influence AS influence_a,
       b.influence AS influence_b,
       a.groups AS groups_a,
       b.groups AS groups_b
ORDER BY CASE WHEN a IS NOT NULL AND b IS NOT NULL THEN 0 ELSE 1 END,
         coalesce(a.influence, 0.0) + coalesce(b.influence, 0.0) DESC, concept

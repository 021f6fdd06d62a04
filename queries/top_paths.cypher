// name: top_paths
// question: Which chains of neuron groups, starting at LAYER, carry the most weight into CLASS?
//   A path's strength is the PRODUCT of the FEEDS weights W along it: a chain is only as strong as
//   its weakest link, so one near-zero W silences the whole path, as in path attribution. (A sum
//   would rank a path with one strong and one dead link high.) Every path from one layer has the
//   same length, so strengths are comparable. Rows are ordered by |strength|.
// param model_id: string              the model, Model.model_id (e.g. planted_cnn-1a2b3c4d5e6f)
// param class_name: string            the class, Class.name (e.g. bee)
// param layer: string                 the layer the paths start from (e.g. block3)
// param run_id: string = null         one run of the class; default: its latest COMPLETE run
// param limit: integer = 10           how many paths to return
MATCH (r:Run {model_id: $model_id, status: 'COMPLETE'})-[:EXPLAINS]->(c:Class {name: $class_name})
WHERE $run_id IS NULL OR r.run_id = $run_id
WITH r, c ORDER BY r.finished_at DESC LIMIT 1
MATCH path = (g:NeuronGroup {run_id: r.run_id, layer: $layer})-[:FEEDS*]->(c)
WHERE all(f IN relationships(path) WHERE f.run_id = r.run_id)
WITH r, path, reduce(w = 1.0, f IN relationships(path) | w * f.weight) AS strength
RETURN r.run_id AS run_id,
       [n IN nodes(path) | coalesce(n.ng_id, n.name)] AS groups,
       [f IN relationships(path) | f.weight] AS weights,
       strength
ORDER BY abs(strength) DESC, groups
LIMIT $limit

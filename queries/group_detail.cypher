// name: group_detail
// question: What is one neuron group: its member neurons, exemplar patches, labels, and the groups
//   (or class) it feeds and that feed it, with the weights W of those edges?
// param ng_id: string                 the group, NeuronGroup.ng_id (<run_id>/<layer>/g<n>)
// param exemplars: integer = 8        how many exemplar patch URIs to return, best first
MATCH (g:NeuronGroup {ng_id: $ng_id})
CALL (g) {
  MATCH (g)-[m:HAS_MEMBER]->(n:Neuron)
  WITH n, m ORDER BY n.index
  RETURN collect({index: n.index, core: m.core}) AS members
}
CALL (g) {
  MATCH (g)-[e:EXEMPLAR]->(p:Patch)
  WITH p, e ORDER BY e.rank
  RETURN collect(p.uri)[0..$exemplars] AS exemplar_uris
}
CALL (g) {
  OPTIONAL MATCH (g)-[f:FEEDS]->(up)
  WITH up, f ORDER BY abs(f.weight) DESC
  RETURN [x IN collect({to: coalesce(up.ng_id, 'class:' + up.name), weight: f.weight, edges: f.edges})
          WHERE x.to IS NOT NULL] AS parents
}
CALL (g) {
  OPTIONAL MATCH (down:NeuronGroup)-[f:FEEDS]->(g)
  WITH down, f ORDER BY abs(f.weight) DESC
  RETURN [x IN collect({from: down.ng_id, weight: f.weight, edges: f.edges}) WHERE x.from IS NOT NULL]
         AS children
}
CALL (g) {
  OPTIONAL MATCH (g)-[l:LABELED]->(concept:Concept)
  WITH concept, l ORDER BY l.rank, l.score DESC
  RETURN [x IN collect({concept: concept.name, score: l.score, method: l.method, rank: l.rank})
          WHERE x.concept IS NOT NULL] AS labels
}
RETURN g.ng_id AS ng_id, g.run_id AS run_id, g.layer AS layer, g.size AS size, g.patches AS patches,
       members, exemplar_uris, labels, parents, children

// name: circuit_graph
// question: What does one run's circuit look like as a graph, each FEEDS edge as wide as its weight W
//   within its layer pair? Browser styles edges only by relationship type, so each edge comes back as
//   a virtual FEEDS_W1 (thinnest) to FEEDS_W4 (widest) relationship between virtual copies of its
//   groups and class, captioned with W (needs APOC, which the local stack loads).
// param run_id: string                the run, Run.run_id (`neurflow runs` lists them)
// param min_width: integer = 1        leave out edges narrower than this width bucket (1 to 4)
MATCH (:Run {run_id: $run_id})-[:HAS_NEURON_GROUP]->(g:NeuronGroup)-[f:FEEDS]->(target)
WHERE f.width >= $min_width
WITH collect(f) AS feeds, collect(DISTINCT g) + collect(DISTINCT target) AS nodes
// Virtual copies: Browser's "connect result nodes" would add the real, equally wide FEEDS between
// real nodes; it finds nothing between copies. They carry what the style captions.
WITH feeds, nodes, [n IN nodes |
  CASE WHEN n:Class
    THEN apoc.create.vNode(['Class'], {name: n.name})
    ELSE apoc.create.vNode(['NeuronGroup'], {caption: n.caption, ng_id: n.ng_id, layer: n.layer})
  END] AS copies
UNWIND feeds AS f
WITH f,
     copies[[i IN range(0, size(nodes) - 1) WHERE nodes[i] = startNode(f)][0]] AS source,
     copies[[i IN range(0, size(nodes) - 1) WHERE nodes[i] = endNode(f)][0]] AS target
RETURN source,
       apoc.create.vRelationship(source, 'FEEDS_W' + toString(f.width),
                                 {w: f.w, weight: f.weight, width: f.width}, target) AS feeds,
       target
ORDER BY f.width DESC, f.weight DESC

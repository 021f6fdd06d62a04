"""Write a `Circuit` into Neo4j: batched ``UNWIND $rows`` statements in managed write transactions.

Shared nodes (Model, Layer, Neuron, Class, Patch) are MERGEd on their constrained keys (see
graphmodel/schema.py). A layer counts as stored only when every batch of it is committed: the last
transaction of `write_layer` appends the layer to ``Run.layers_done``. A layer that is not done is
first purged of what a crashed run may have left, and its run-scoped nodes and relationships are
then CREATEd, which skips the existence check MERGE makes for every row; each CREATE batch stamps a
token on its Run, so a transaction the driver retries after a lost reply cannot create duplicates.
A layer already done is MERGEd again, which changes nothing for identical records. So a resumed
run ends with exactly the graph of an uninterrupted one. No torch here: only records and Cypher
parameters.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from neo4j import Driver, ManagedTransaction

from graphmodel import run_lease, similarity, upgrade
from graphmodel.connection import GraphStoreError
from graphmodel.records import Circuit, LayerStep, PatchRecord, class_feed_weights
from graphmodel.schema import SCHEMA_VERSION, ensure_schema
from graphmodel.vectors import pack_f32

BATCH_SIZE = 2000
ERROR_CHARS = 2000
RUNNING, COMPLETE, FAILED = "RUNNING", "COMPLETE", "FAILED"
_RESERVED_RUN_KEYS = frozenset(
    {"run_id", "model_id", "class_index", "class_name", "status", "params_json", "stats_json", "error"}
)


def _batches(rows: Sequence[dict], size: int) -> Iterator[Sequence[dict]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _run(tx: ManagedTransaction, query: str, params: dict[str, Any]) -> dict[str, int]:
    summary = tx.run(query, params).consume()
    return summary.counters.__dict__.copy()


def _write_rows(
    driver: Driver,
    query: str,
    rows: Sequence[dict],
    batch_size: int = BATCH_SIZE,
    *,
    once: str | None = None,
    **params: Any,
) -> None:
    """One managed transaction per batch; the driver retries a batch on transient errors.

    With ``once`` (statements that CREATE), each batch also stamps its token on the Run in the same
    transaction and is skipped when the stamp is already there: a retry after a commit whose reply
    was lost must not create the batch's relationships twice. Batches of one run are written by one
    process in order, so the last token is the only one a retry can repeat. Tokens are unique to
    an attempt at a layer, and marking the layer done removes the last one.
    """
    if not rows:
        return

    def stamped(tx: ManagedTransaction, batch_params: dict[str, Any], token: str) -> None:
        seen = tx.run(_SEEN_TOKEN, run_id=params["run_id"], token=token).single()
        if seen is not None and seen["seen"]:
            return
        tx.run(query, batch_params).consume()
        tx.run(_STAMP_TOKEN, run_id=params["run_id"], token=token).consume()

    with driver.session() as session:
        for number, batch in enumerate(_batches(rows, batch_size)):
            batch_params = {"rows": list(batch), **params}
            if once is None:
                session.execute_write(_run, query, batch_params)
            else:
                session.execute_write(stamped, batch_params, f"{once}/{number}")


_SEEN_TOKEN = "MATCH (r:Run {run_id: $run_id}) RETURN r.write_token = $token AS seen"
_STAMP_TOKEN = "MATCH (r:Run {run_id: $run_id}) SET r.write_token = $token"


def _read_one(driver: Driver, query: str, **params: Any) -> dict | None:
    def work(tx: ManagedTransaction) -> dict | None:
        record = tx.run(query, params).single()
        return record.data() if record is not None else None

    with driver.session() as session:
        return session.execute_read(work)


def _is_property(value: Any) -> bool:
    scalar = (str, int, float, bool)
    if isinstance(value, scalar):
        return True
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, type(value[0])) for v in value)
        and (isinstance(value[0], scalar))
    )


def _flat(data: Mapping[str, Any]) -> dict[str, Any]:
    """The values Neo4j can hold as properties (scalars, homogeneous lists); the rest stays in JSON."""
    return {k: v for k, v in data.items() if k not in _RESERVED_RUN_KEYS and _is_property(v)}


def _layer_names(circuit: Circuit) -> list[str]:
    names = circuit.params.get("layers") or circuit.layer_names()
    if not names:
        raise ValueError(f"run {circuit.run_id} names no layers (params['layers'] is empty)")
    return list(names)


# ----------------------------------------------------------------------------------------- run


_START_RUN = """
MERGE (m:Model {model_id: $model.model_id})
SET m += $model
WITH m
UNWIND range(0, size($layers) - 1) AS depth
MERGE (l:Layer {model_id: m.model_id, name: $layers[depth]})
MERGE (m)-[:HAS_LAYER]->(l)
WITH m, collect(l) AS layers
MERGE (c:Class {model_id: m.model_id, index: $class_index})
SET c.name = coalesce($class_name, c.name)
MERGE (top:Neuron {model_id: m.model_id, layer: $layers[0], index: $class_index})
WITH m, layers, c, top
MATCH (tl:Layer {model_id: m.model_id, name: $layers[0]})
MERGE (tl)-[:HAS_NEURON]->(top)
MERGE (c)-[:LOGIT]->(top)
MERGE (r:Run {run_id: $run_id})
ON CREATE SET r.started_at = datetime(), r.layers_done = [], r.attempts = 0
SET r += $props,
    r.model_id = m.model_id, r.class_index = $class_index, r.class_name = $class_name,
    r.layers = $layers, r.params_json = $params_json, r.status = 'RUNNING', r.last_started_at = datetime(),
    r.attempts = r.attempts + 1, r.schema_version = $schema_version,
    r.source_model = coalesce($source.model, r.source_model),
    r.source_weights = coalesce($source.weights, r.source_weights),
    r.source_images = coalesce($source.images, r.source_images)
REMOVE r.error, r.failed_at
MERGE (r)-[:EXPLAINS]->(c)
WITH r, layers
UNWIND layers AS l
MERGE (r)-[u:USES_LAYER]->(l)
SET u.run_id = r.run_id, u.depth = [i IN range(0, size($layers) - 1) WHERE $layers[i] = l.name][0]
"""


def start_run(driver: Driver, circuit: Circuit, owner: run_lease.Owner | None = None) -> str:
    """Create or resume the run of ``circuit`` (a shell without layers is enough).

    Creates the schema if needed, MERGEs Model, Layers, Class (with its LOGIT neuron) and Run, and
    sets the run RUNNING. A COMPLETE run is left untouched. Returns the run's status afterwards.
    With ``owner``, the run's lease is taken in the same transaction (graphmodel/run_lease.py);
    RunBusyError when another live process holds it.
    """
    ensure_schema(driver)
    layers = _layer_names(circuit)
    model = {
        "model_id": circuit.model_id,
        "arch": circuit.arch,
        "weights_sha256": circuit.weights_sha256,
        "input_size": circuit.input_size,
        "num_classes": circuit.num_classes,
    }
    params = {
        "run_id": circuit.run_id,
        "model": {k: v for k, v in model.items() if v is not None},
        "layers": layers,
        "class_index": circuit.class_index,
        "class_name": circuit.class_name,
        "props": _flat(circuit.params),
        "params_json": json.dumps(circuit.params),
        "schema_version": SCHEMA_VERSION,
        "source": {k: circuit.source.get(k) for k in ("model", "weights", "images")},
    }

    def work(tx: ManagedTransaction) -> str:
        if owner is None:
            record = tx.run("OPTIONAL MATCH (r:Run {run_id: $run_id}) RETURN r.status AS status", params)
            lease = record.single() or {}
        else:
            lease = tx.run(run_lease.LOCK_AND_READ, params).single().data()
        if lease.get("status") == COMPLETE:
            if owner is not None:
                tx.run(run_lease.UNLOCK, params).consume()
            return COMPLETE
        if owner is not None and run_lease.holder_alive(lease, owner):
            raise run_lease.RunBusyError(run_lease.busy_message(circuit.run_id, lease))
        tx.run(_START_RUN, params).consume()
        if owner is not None:
            tx.run(run_lease.TAKE, {**params, **owner.params()}).consume()
        return RUNNING

    with driver.session() as session:
        return session.execute_write(work)


_PATCHES = """
MATCH (r:Run {run_id: $run_id})
UNWIND $rows AS row
MERGE (p:Patch {patch_id: row.patch_id})
ON CREATE SET p.source_image = row.source_image, p.box = row.box, p.scale = row.scale,
              p.concepts = row.concepts
SET p.uri = coalesce(row.uri, p.uri)
MERGE (r)-[h:HAS_PATCH]->(p)
SET h.run_id = $run_id, h.position = row.position, h.source_image = row.source_image, h.box = row.box,
    h.scale = row.scale, h.concepts = row.concepts
"""


def write_patches(
    driver: Driver,
    run_id: str,
    records: Sequence[PatchRecord],
    uris: Mapping[str, str] | None = None,
    *,
    batch_size: int = BATCH_SIZE,
) -> None:
    """Store the run's whole patch set D, in order (``records`` is ``Circuit.patches``).

    Patch nodes are shared by runs (content-addressed); the run's provenance of each patch (source
    image, box, scale, ground-truth concepts, position in D) sits on ``(:Run)-[:HAS_PATCH]->``.
    ``uris`` gives the stored image of the patches already uploaded.
    """
    _require_run(driver, run_id)
    uris = uris or {}
    rows = [
        {
            "patch_id": r.patch_id,
            "position": i,
            "source_image": r.source_image,
            "box": list(r.box),
            "scale": float(r.scale),
            "concepts": list(r.concepts),
            "uri": uris.get(r.patch_id),
        }
        for i, r in enumerate(records)
    ]
    _write_rows(driver, _PATCHES, rows, batch_size, run_id=run_id)


def set_patch_uris(driver: Driver, uris: Mapping[str, str], *, batch_size: int = BATCH_SIZE) -> None:
    """Record where the image of each patch is stored (file:// or s3:// URI)."""
    rows = [{"patch_id": pid, "uri": uri} for pid, uri in sorted(uris.items())]
    _write_rows(
        driver,
        "UNWIND $rows AS row MERGE (p:Patch {patch_id: row.patch_id}) SET p.uri = row.uri",
        rows,
        batch_size,
    )


def _require_run(driver: Driver, run_id: str) -> dict:
    run = _read_one(
        driver,
        "MATCH (r:Run {run_id: $run_id}) RETURN r.model_id AS model_id, r.layers AS layers, "
        "r.layers_done AS layers_done, r.status AS status",
        run_id=run_id,
    )
    if run is None:
        raise GraphStoreError(f"run {run_id} is not in the graph; call start_run first")
    return run


# --------------------------------------------------------------------------------------- layer

_LAYER = "MATCH (l:Layer {model_id: $model_id, name: $layer}) SET l.width = $width, l.kind = $kind"

# The statements of one layer. Run-scoped elements are made with {make}: CREATE when the layer was
# just purged (none of them can exist, and CREATE skips the existence check MERGE makes for every
# row), MERGE when a stored layer is written again, which changes nothing for identical records.
# Shared nodes (Neuron, Patch) and HAS_NEURON are always MERGEd: other runs may have made them.
_NEURONS = """
MATCH (r:Run {run_id: $run_id})
MATCH (l:Layer {model_id: $model_id, name: $layer})
UNWIND $rows AS row
MERGE (n:Neuron {model_id: $model_id, layer: $layer, index: row.index})
MERGE (l)-[:HAS_NEURON]->(n)
{make} (r)-[c:CIRCUIT_NEURON]->(n)
SET c.run_id = $run_id, c.layer = $layer, c.max_activation = row.max_activation,
    c.selection_rule = row.selection_rule
"""

_CHILD_NEURONS = """
UNWIND $rows AS row
MATCH (l:Layer {model_id: $model_id, name: row.layer})
MERGE (n:Neuron {model_id: $model_id, layer: row.layer, index: row.index})
MERGE (l)-[:HAS_NEURON]->(n)
"""

_CORE_EDGES = """
UNWIND $rows AS row
MATCH (p:Neuron {model_id: $model_id, layer: row.parent_layer, index: row.parent})
MATCH (c:Neuron {model_id: $model_id, layer: row.child_layer, index: row.child})
{make} (c)-[e:CORE_OF {run_id: $run_id}]->(p)
SET e.weight = row.weight, e.score = row.score, e.rank = row.rank
"""

_SEMANTIC_GROUPS = """
UNWIND $rows AS row
MATCH (n:Neuron {model_id: $model_id, layer: $layer, index: row.neuron})
{make} (sg:SemanticGroup {sg_id: row.sg_id})
SET sg.run_id = $run_id, sg.model_id = $model_id, sg.layer = $layer, sg.neuron = row.neuron,
    sg.j = row.j, sg.size = row.size, sg.centroid_f32 = row.centroid, sg.silhouette = row.silhouette
REMOVE sg.centroid
{make} (n)-[h:HAS_SEMANTIC_GROUP]->(sg)
SET h.run_id = $run_id
"""

_SG_EXEMPLARS = """
UNWIND $rows AS row
MATCH (sg:SemanticGroup {sg_id: row.sg_id})
MERGE (p:Patch {patch_id: row.patch_id})
{make} (sg)-[e:EXEMPLAR]->(p)
SET e.run_id = $run_id, e.rank = row.rank, e.activation = row.activation
"""

_HYPEREDGES = """
UNWIND $rows AS row
MATCH (sg:SemanticGroup {sg_id: row.sg_id})
MATCH (c:Neuron {model_id: $model_id, layer: row.child_layer, index: row.child})
{make} (c)-[e:INFLUENCES]->(sg)
SET e.run_id = $run_id, e.weight = row.weight, e.score = row.score
"""

_NEURON_GROUPS = """
MATCH (r:Run {run_id: $run_id})
UNWIND $rows AS row
{make} (g:NeuronGroup {ng_id: row.ng_id})
SET g.run_id = $run_id, g.model_id = $model_id, g.layer = $layer, g.position = row.position,
    g.size = row.size, g.patches = row.patches, g.centroid_f32 = row.centroid, g.members = row.members,
    g.caption = $layer + ' g' + toString(row.position) + coalesce(': ' + g.top_label, '')
REMOVE g.centroid
{make} (r)-[h:HAS_NEURON_GROUP]->(g)
SET h.run_id = $run_id
"""

_NG_MEMBERS = """
UNWIND $rows AS row
MATCH (g:NeuronGroup {ng_id: row.ng_id})
MATCH (n:Neuron {model_id: $model_id, layer: $layer, index: row.index})
{make} (g)-[m:HAS_MEMBER]->(n)
SET m.run_id = $run_id, m.core = row.core
"""

_NG_SEMANTIC_GROUPS = """
UNWIND $rows AS row
MATCH (g:NeuronGroup {ng_id: row.ng_id})
MATCH (sg:SemanticGroup {sg_id: row.sg_id})
{make} (g)-[h:HAS_SEMANTIC_GROUP]->(sg)
SET h.run_id = $run_id, h.position = row.position
"""

_NG_EXEMPLARS = """
UNWIND $rows AS row
MATCH (g:NeuronGroup {ng_id: row.ng_id})
MERGE (p:Patch {patch_id: row.patch_id})
{make} (g)-[e:EXEMPLAR]->(p)
SET e.run_id = $run_id, e.rank = row.rank
"""

_GROUP_EDGES = """
UNWIND $rows AS row
MATCH (c:NeuronGroup {ng_id: row.child})
MATCH (p:NeuronGroup {ng_id: row.parent})
{make} (c)-[e:FEEDS]->(p)
SET e.run_id = $run_id, e.weight = row.weight, e.edges = row.edges, e.w = row.w, e.width = row.width
"""

_GROUPS_TO_CLASS = """
MATCH (:Run {run_id: $run_id})-[:EXPLAINS]->(cl:Class)
UNWIND $rows AS row
MATCH (g:NeuronGroup {ng_id: row.ng_id})
{make} (g)-[e:FEEDS]->(cl)
SET e.run_id = $run_id, e.weight = row.weight, e.edges = row.edges, e.w = row.w, e.width = row.width
"""

_MARK_DONE = """
MATCH (r:Run {run_id: $run_id})
SET r.layers_done = CASE WHEN $layer IN r.layers_done THEN r.layers_done ELSE r.layers_done + $layer END
REMOVE r.write_token
WITH r
MATCH (r)-[u:USES_LAYER]->(:Layer {model_id: $model_id, name: $layer})
SET u.done = true, u.seconds = $seconds, u.pairs = $pairs
"""

# Deletes of one layer's run-scoped elements, each repeated until it removes nothing.
_PURGE_LAYER = (
    "MATCH (sg:SemanticGroup {run_id: $run_id, layer: $layer}) WITH sg LIMIT $limit "
    "DETACH DELETE sg RETURN count(*) AS n",
    "MATCH (g:NeuronGroup {run_id: $run_id, layer: $layer}) WITH g LIMIT $limit "
    "DETACH DELETE g RETURN count(*) AS n",
    "MATCH ()-[e:CORE_OF {run_id: $run_id}]->(p) USING INDEX e:CORE_OF(run_id) WHERE p.layer = $layer "
    "WITH e LIMIT $limit DELETE e RETURN count(*) AS n",
    "MATCH (:Run {run_id: $run_id})-[c:CIRCUIT_NEURON {layer: $layer}]->() "
    "WITH c LIMIT $limit DELETE c RETURN count(*) AS n",
)


def _delete_until_empty(driver: Driver, queries: Iterable[str], limit: int = 5000, **params: Any) -> int:
    def work(tx: ManagedTransaction, query: str) -> int:
        return tx.run(query, {**params, "limit": limit}).single()["n"]

    total = 0
    with driver.session() as session:
        for query in queries:
            while True:
                n = session.execute_write(work, query)
                total += n
                if n < limit:
                    break
    return total


def _check_step(step: LayerStep) -> None:
    """The graph keeps a neuron's concept as the exemplars of its semantic groups (ranked within
    the concept), so those groups must partition the concept."""
    by_neuron: dict[int, list[str]] = {}
    for sg in step.semantic_groups:
        by_neuron.setdefault(sg.neuron, []).extend(sg.patch_ids)
    for neuron in step.neurons:
        grouped = by_neuron.get(neuron.index, [])
        if sorted(grouped) != sorted(neuron.concept) or len(set(grouped)) != len(grouped):
            raise ValueError(
                f"layer {step.layer.name}, neuron {neuron.index}: its semantic groups do not partition "
                "its concept, which the graph model requires"
            )


def layer_rows(step: LayerStep) -> dict[str, list[dict]]:
    """The Cypher parameter rows of one layer, by statement."""
    _check_step(step)
    rank_in_concept = {n.index: {pid: r for r, pid in enumerate(n.concept, start=1)} for n in step.neurons}
    rows: dict[str, list[dict]] = {
        "neurons": [
            {"index": n.index, "max_activation": n.max_activation, "selection_rule": n.selection_rule}
            for n in step.neurons
        ],
        "child_neurons": [
            {"layer": layer, "index": index}
            for layer, index in sorted(
                {(e.child_layer, e.child) for e in step.core_edges}
                | {(e.child_layer, e.child) for e in step.hyperedges}
            )
        ],
        "core_edges": [
            {
                "child_layer": e.child_layer,
                "child": e.child,
                "parent_layer": e.parent_layer,
                "parent": e.parent,
                "rank": e.rank,
                "weight": e.weight,
                "score": e.score,
            }
            for e in step.core_edges
        ],
        "semantic_groups": [
            {
                "sg_id": sg.sg_id,
                "neuron": sg.neuron,
                "j": sg.j,
                "size": len(sg.patch_ids),
                "centroid": pack_f32(sg.centroid),
                "silhouette": sg.silhouette,
            }
            for sg in step.semantic_groups
        ],
        "sg_exemplars": [
            {"sg_id": sg.sg_id, "patch_id": pid, "rank": rank_in_concept[sg.neuron][pid], "activation": act}
            for sg in step.semantic_groups
            for pid, act in zip(sg.patch_ids, sg.activations, strict=True)
        ],
        "hyperedges": [
            {
                "child_layer": e.child_layer,
                "child": e.child,
                "sg_id": e.sg_id,
                "weight": e.weight,
                "score": e.score,
            }
            for e in step.hyperedges
        ],
        "neuron_groups": [
            {
                "ng_id": g.ng_id,
                "position": i,
                "size": len(g.members),
                "members": sorted(g.members),
                "patches": len(g.patch_ids),
                "centroid": pack_f32(g.centroid),
            }
            for i, g in enumerate(step.neuron_groups)
        ],
        "ng_members": [
            {"ng_id": g.ng_id, "index": n, "core": n in g.core_members}
            for g in step.neuron_groups
            for n in g.members
        ],
        "ng_semantic_groups": [
            {"ng_id": g.ng_id, "sg_id": sg_id, "position": i}
            for g in step.neuron_groups
            for i, sg_id in enumerate(g.sg_ids)
        ],
        "ng_exemplars": [
            {"ng_id": g.ng_id, "patch_id": pid, "rank": r}
            for g in step.neuron_groups
            for r, pid in enumerate(g.patch_ids, start=1)
        ],
        "group_edges": with_display_weights(
            [
                {"child": e.child, "parent": e.parent, "weight": e.weight, "edges": e.edges}
                for e in step.group_edges
            ]
        ),
    }
    if step.layer.depth == 0:
        weights = class_feed_weights(step.neurons, step.neuron_groups)
        rows["groups_to_class"] = with_display_weights(
            [
                {"ng_id": g.ng_id, "weight": weights[g.ng_id], "edges": len(g.sg_ids)}
                for g in step.neuron_groups
            ]
        )
    return rows


WIDTH_BUCKETS = 4


def display_weight(weight: float) -> float:
    """W rounded to 3 significant digits, for captions (Browser shows a float's 15 digits)."""
    return float(f"{weight:.3g}")


def with_display_weights(rows: list[dict]) -> list[dict]:
    """``rows`` (FEEDS of one layer pair) with ``w``, the rounded weight, and ``width``, 1 to
    WIDTH_BUCKETS by the weight's share of the pair's largest: W spans two orders of magnitude
    between layers, so a width is only comparable within a pair."""
    top = max((abs(row["weight"]) for row in rows), default=0.0)
    for row in rows:
        share = abs(row["weight"]) / top if top > 0 else 0.0
        row["w"] = display_weight(row["weight"])
        row["width"] = max(1, min(WIDTH_BUCKETS, int(share * WIDTH_BUCKETS + 0.999999)))
    return rows


_LAYER_STATEMENTS = (
    ("neurons", _NEURONS),
    ("child_neurons", _CHILD_NEURONS),
    ("core_edges", _CORE_EDGES),
    ("semantic_groups", _SEMANTIC_GROUPS),
    ("sg_exemplars", _SG_EXEMPLARS),
    ("hyperedges", _HYPEREDGES),
    ("neuron_groups", _NEURON_GROUPS),
    ("ng_members", _NG_MEMBERS),
    ("ng_semantic_groups", _NG_SEMANTIC_GROUPS),
    ("ng_exemplars", _NG_EXEMPLARS),
    ("group_edges", _GROUP_EDGES),
    ("groups_to_class", _GROUPS_TO_CLASS),
)


def layer_statements(*, fresh: bool) -> dict[str, str]:
    """The statements of a layer by row key: CREATE for a freshly purged layer, MERGE otherwise."""
    make = "CREATE" if fresh else "MERGE"
    return {key: query.replace("{make}", make) for key, query in _LAYER_STATEMENTS}


_FRESH, _REWRITE = layer_statements(fresh=True), layer_statements(fresh=False)


def write_layer(driver: Driver, run_id: str, step: LayerStep, *, batch_size: int = BATCH_SIZE) -> int:
    """Store every record of one finished layer, then mark the layer done on the Run.

    Layers must arrive top-down (the order of ``Run.layers``). A layer that is not done is first
    purged of what a crashed attempt may have left, then its run-scoped elements are CREATEd, each
    batch exactly once (see `_write_rows`). A layer already done is re-MERGEd (no change for
    identical records). Returns the number of rows written.
    """
    run = _require_run(driver, run_id)
    model_id, name = run["model_id"], step.layer.name
    layers, done = run["layers"] or [], run["layers_done"] or []
    if name not in layers:
        raise GraphStoreError(f"layer {name!r} is not one of run {run_id}'s layers {layers}")
    fresh = name not in done
    if fresh:
        expected = layers[len(done)] if len(done) < len(layers) else None
        if name != expected:
            raise GraphStoreError(
                f"run {run_id}: layer {name!r} arrived out of order; layers are stored top-down and "
                f"the next one is {expected!r} (done: {done})"
            )
        _delete_until_empty(driver, _PURGE_LAYER, run_id=run_id, layer=name, model_id=model_id)
    rows = layer_rows(step)
    params = {"run_id": run_id, "model_id": model_id, "layer": name}
    with driver.session() as session:
        session.execute_write(_run, _LAYER, {**params, "width": step.layer.width, "kind": step.layer.kind})
    statements = _FRESH if fresh else _REWRITE
    once = f"{name}/{uuid.uuid4().hex}" if fresh else None
    for key, query in statements.items():
        _write_rows(driver, query, rows.get(key, []), batch_size, once=once and f"{once}/{key}", **params)
    with driver.session() as session:
        session.execute_write(
            _run, _MARK_DONE, {**params, "seconds": float(step.seconds), "pairs": int(step.pairs)}
        )
    return sum(len(v) for v in rows.values())


# ------------------------------------------------------------------------------------ complete

_RUN_COUNTS = """
MATCH (r:Run {run_id: $run_id})
RETURN r.layers AS layers, r.layers_done AS layers_done, r.status AS status,
  COUNT { (r)-[:HAS_PATCH]->() } AS patches,
  COUNT { (r)-[:CIRCUIT_NEURON]->() } AS neurons,
  COUNT { (sg:SemanticGroup {run_id: $run_id}) } AS semantic_groups,
  COUNT { ()-[:INFLUENCES {run_id: $run_id}]->() } AS hyperedges,
  COUNT { ()-[:CORE_OF {run_id: $run_id}]->() } AS core_edges,
  COUNT { (g:NeuronGroup {run_id: $run_id}) } AS neuron_groups,
  COUNT { (:NeuronGroup)-[:FEEDS {run_id: $run_id}]->(:NeuronGroup) } AS group_edges
"""


def run_counts(driver: Driver, run_id: str) -> dict[str, Any] | None:
    """How many of each record kind the graph holds for the run (None if the run is unknown)."""
    return _read_one(driver, _RUN_COUNTS, run_id=run_id)


def complete_run(driver: Driver, circuit: Circuit) -> None:
    """Mark the run COMPLETE with its statistics, after checking that the graph holds all of it."""
    counts = run_counts(driver, circuit.run_id)
    if counts is None:
        raise GraphStoreError(f"run {circuit.run_id} is not in the graph; nothing to complete")
    missing = [name for name in counts["layers"] or [] if name not in (counts["layers_done"] or [])]
    if missing:
        raise GraphStoreError(f"run {circuit.run_id} cannot be COMPLETE: layers {missing} are not stored")
    expected = {
        "patches": len(circuit.patches),
        "neurons": len(circuit.neurons),
        "semantic_groups": len(circuit.semantic_groups),
        "hyperedges": len(circuit.hyperedges),
        "core_edges": len(circuit.core_edges),
        "neuron_groups": len(circuit.neuron_groups),
        "group_edges": len(circuit.group_edges),
    }
    wrong = {k: (counts[k], v) for k, v in expected.items() if counts[k] != v}
    if wrong:
        detail = ", ".join(f"{k}: graph {g}, circuit {c}" for k, (g, c) in wrong.items())
        raise GraphStoreError(f"run {circuit.run_id} cannot be COMPLETE: the graph differs ({detail})")
    props = {**_flat(circuit.stats), **{f"n_{k}": v for k, v in expected.items()}}
    with driver.session() as session:
        session.execute_write(
            _run,
            "MATCH (r:Run {run_id: $run_id}) SET r += $props, r.stats_json = $stats_json, "
            "r.status = 'COMPLETE', r.finished_at = datetime() "
            f"REMOVE r.error, r.failed_at, {run_lease.FINISHED_PROPERTIES}",
            {"run_id": circuit.run_id, "props": props, "stats_json": json.dumps(circuit.stats)},
        )
    similarity.link_run(driver, circuit.run_id)
    upgrade.upgrade_runs(driver, circuit.model_id)  # runs of the model stored before schema 2


def fail_run(driver: Driver, run_id: str, error: str) -> bool:
    """Mark the run FAILED with ``error`` unless it is COMPLETE; True if a run was marked."""

    def work(tx: ManagedTransaction) -> bool:
        record = tx.run(
            "MATCH (r:Run {run_id: $run_id}) WHERE r.status <> 'COMPLETE' "
            "SET r.status = 'FAILED', r.error = $error, r.failed_at = datetime() "
            f"REMOVE {run_lease.LEASE_PROPERTIES} RETURN count(r) AS n",
            run_id=run_id,
            error=error[:ERROR_CHARS],
        ).single()
        return bool(record and record["n"])

    with driver.session() as session:
        return session.execute_write(work)


_DELETE_RUN = (
    "MATCH (a:AuditResult {run_id: $run_id}) WITH a LIMIT $limit DETACH DELETE a RETURN count(*) AS n",
    "MATCH (sg:SemanticGroup {run_id: $run_id}) WITH sg LIMIT $limit DETACH DELETE sg RETURN count(*) AS n",
    "MATCH (g:NeuronGroup {run_id: $run_id}) WITH g LIMIT $limit DETACH DELETE g RETURN count(*) AS n",
    "MATCH ()-[e:CORE_OF {run_id: $run_id}]->() WITH e LIMIT $limit DELETE e RETURN count(*) AS n",
    "MATCH (:Run {run_id: $run_id})-[e]->() WITH e LIMIT $limit DELETE e RETURN count(*) AS n",
    "MATCH (r:Run {run_id: $run_id}) DETACH DELETE r RETURN count(*) AS n",
)


def delete_run(driver: Driver, run_id: str) -> int:
    """Delete every run-scoped node and relationship of the run, and the Run itself.

    Shared nodes (Model, Layer, Neuron, Class, Patch, Concept) stay: other runs may use them.
    Returns the number of deleted nodes and relationships counted by the delete statements.
    """
    return _delete_until_empty(driver, _DELETE_RUN, run_id=run_id)

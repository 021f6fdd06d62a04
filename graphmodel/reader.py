"""Read a run back from Neo4j as the records the core produced: a `Circuit`, or its finished layers.

The order of every list is rebuilt from the graph (layer depth, neuron index, semantic group j,
ranks and positions stored on the relationships), so a circuit read back equals the one written.
What is not stored: ``LayerStep.seconds``/``pairs`` come back from ``USES_LAYER``; nothing else of
a record is dropped. ``Circuit.stats`` and ``params`` round-trip through JSON strings on the Run.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from neo4j import Driver, ManagedTransaction

from graphmodel.connection import GraphStoreError
from graphmodel.records import (
    Circuit,
    CoreEdgeRecord,
    GroupEdgeRecord,
    HyperedgeRecord,
    LayerRecord,
    LayerStep,
    NeuronGroupRecord,
    NeuronRecord,
    PatchRecord,
    SemanticGroupRecord,
)
from graphmodel.run_lease import holder_alive
from graphmodel.vectors import unpack_f32


@dataclass(frozen=True)
class RunState:
    run_id: str
    status: str
    layers: list[str]
    layers_done: list[str]
    attempts: int
    error: str | None
    started_at: str | None
    finished_at: str | None
    heartbeat_age: float | None = None  # seconds since the ingest holding the run last beat
    alive: bool | None = None  # for RUNNING: whether a live process holds it (graphmodel/run_lease.py)


def _iso(value: Any) -> str | None:
    return value.iso_format() if hasattr(value, "iso_format") else (None if value is None else str(value))


def run_status(driver: Driver, run_id: str) -> RunState | None:
    """Status and progress of a run, or None when the graph does not hold it."""
    records, _, _ = driver.execute_query(
        f"MATCH (r:Run {{run_id: $run_id}}) RETURN r {{.*}} AS run, {HEARTBEAT_AGE}",
        run_id=run_id,
        routing_="r",
    )
    if not records:
        return None
    return run_state(records[0]["run"], records[0]["heartbeat_age"])


HEARTBEAT_AGE = (
    "CASE WHEN r.heartbeat_at IS NULL THEN null "
    "ELSE duration.inSeconds(r.heartbeat_at, datetime()).seconds END AS heartbeat_age"
)


def run_state(run: dict, heartbeat_age: float | None) -> RunState:
    status = run.get("status")
    return RunState(
        run_id=run["run_id"],
        status=status,
        layers=list(run.get("layers") or []),
        layers_done=list(run.get("layers_done") or []),
        attempts=int(run.get("attempts") or 0),
        error=run.get("error"),
        started_at=_iso(run.get("started_at")),
        finished_at=_iso(run.get("finished_at")),
        heartbeat_age=heartbeat_age,
        alive=holder_alive({**run, "heartbeat_age": heartbeat_age}) if status == "RUNNING" else None,
    )


@dataclass
class RunRow:
    """One line of `neurflow runs`."""

    state: RunState
    model_id: str | None
    class_index: int | None
    class_name: str | None


def list_runs(
    driver: Driver, *, model_id: str | None = None, status: str | None = None, limit: int = 200
) -> list[RunRow]:
    """The runs in the graph, newest first, optionally of one model or status."""
    records, _, _ = driver.execute_query(
        "MATCH (r:Run) WHERE ($model_id IS NULL OR r.model_id = $model_id) "
        "AND ($status IS NULL OR r.status = $status) "
        f"RETURN r {{.*}} AS run, {HEARTBEAT_AGE} "
        "ORDER BY coalesce(r.last_started_at, r.started_at) DESC, r.run_id LIMIT $limit",
        model_id=model_id,
        status=status,
        limit=limit,
        routing_="r",
    )
    return [
        RunRow(
            state=run_state(rec["run"], rec["heartbeat_age"]),
            model_id=rec["run"].get("model_id"),
            class_index=rec["run"].get("class_index"),
            class_name=rec["run"].get("class_name"),
        )
        for rec in records
    ]


_LAYERS = """
MATCH (:Run {run_id: $run_id})-[u:USES_LAYER]->(l:Layer) WHERE l.name IN $layers
RETURN l.name AS name, u.depth AS depth, l.width AS width, l.kind AS kind, u.seconds AS seconds,
       u.pairs AS pairs
"""
_NEURONS = """
MATCH (:Run {run_id: $run_id})-[c:CIRCUIT_NEURON]->(n:Neuron) WHERE c.layer IN $layers
RETURN n.layer AS layer, n.index AS index, c.max_activation AS max_activation,
       c.selection_rule AS selection_rule
"""
_SEMANTIC_GROUPS = """
MATCH (sg:SemanticGroup {run_id: $run_id}) WHERE sg.layer IN $layers
RETURN sg.sg_id AS sg_id, sg.layer AS layer, sg.neuron AS neuron, sg.j AS j,
       coalesce(sg.centroid_f32, sg.centroid) AS centroid,
       sg.silhouette AS silhouette,
       COLLECT { MATCH (sg)-[e:EXEMPLAR]->(p:Patch) RETURN [e.rank, p.patch_id, e.activation] } AS exemplars
"""
_CORE_EDGES = """
MATCH (c:Neuron)-[e:CORE_OF {run_id: $run_id}]->(p:Neuron) WHERE p.layer IN $layers
RETURN c.layer AS child_layer, c.index AS child, p.layer AS parent_layer, p.index AS parent,
       e.rank AS rank, e.weight AS weight, e.score AS score
"""
_HYPEREDGES = """
MATCH (c:Neuron)-[e:INFLUENCES]->(sg:SemanticGroup {run_id: $run_id}) WHERE sg.layer IN $layers
RETURN c.layer AS child_layer, c.index AS child, sg.sg_id AS sg_id, sg.layer AS layer, sg.neuron AS neuron,
       sg.j AS j, e.weight AS weight, e.score AS score
"""
_NEURON_GROUPS = """
MATCH (:Run {run_id: $run_id})-[:HAS_NEURON_GROUP]->(g:NeuronGroup) WHERE g.layer IN $layers
RETURN g.ng_id AS ng_id, g.layer AS layer, g.position AS position,
       coalesce(g.centroid_f32, g.centroid) AS centroid,
       COLLECT { MATCH (g)-[m:HAS_MEMBER]->(n:Neuron) RETURN [n.index, m.core] } AS members,
       COLLECT { MATCH (g)-[h:HAS_SEMANTIC_GROUP]->(sg:SemanticGroup) RETURN [h.position, sg.sg_id] } AS sgs,
       COLLECT { MATCH (g)-[e:EXEMPLAR]->(p:Patch) RETURN [e.rank, p.patch_id] } AS exemplars
"""
_GROUP_EDGES = """
MATCH (c:NeuronGroup {run_id: $run_id})-[e:FEEDS]->(p:NeuronGroup) WHERE c.layer IN $layers
RETURN c.layer AS layer, c.ng_id AS child, p.ng_id AS parent, e.weight AS weight, e.edges AS edges
"""


def _rows(tx: ManagedTransaction, query: str, **params: Any) -> list[dict]:
    return [record.data() for record in tx.run(query, params)]


def _steps(tx: ManagedTransaction, run_id: str, layers: list[str]) -> list[LayerStep]:
    params = {"run_id": run_id, "layers": layers}
    layer_rows = {r["name"]: r for r in _rows(tx, _LAYERS, **params)}
    missing = [name for name in layers if name not in layer_rows]
    if missing:
        raise GraphStoreError(f"run {run_id}: layers {missing} are marked done but not linked to the run")

    children: dict[tuple[str, int], list[tuple[int, int]]] = defaultdict(list)
    core_edges: dict[str, list[CoreEdgeRecord]] = defaultdict(list)
    for r in _rows(tx, _CORE_EDGES, **params):
        edge = CoreEdgeRecord(**r)
        core_edges[edge.parent_layer].append(edge)
        children[(edge.parent_layer, edge.parent)].append((edge.rank, edge.child))

    sgs: dict[str, list[SemanticGroupRecord]] = defaultdict(list)
    concept: dict[tuple[str, int], list[tuple[int, str, float]]] = defaultdict(list)
    for r in _rows(tx, _SEMANTIC_GROUPS, **params):
        exemplars = sorted(r["exemplars"])
        concept[(r["layer"], r["neuron"])].extend(exemplars)
        sgs[r["layer"]].append(
            SemanticGroupRecord(
                sg_id=r["sg_id"],
                layer=r["layer"],
                neuron=r["neuron"],
                j=r["j"],
                patch_ids=[pid for _, pid, _ in exemplars],
                activations=[act for _, _, act in exemplars],
                centroid=unpack_f32(r["centroid"]),
                silhouette=r["silhouette"],
            )
        )

    neurons: dict[str, list[NeuronRecord]] = defaultdict(list)
    for r in _rows(tx, _NEURONS, **params):
        key = (r["layer"], r["index"])
        ranked = sorted(concept.get(key, []))
        neurons[r["layer"]].append(
            NeuronRecord(
                layer=r["layer"],
                index=r["index"],
                concept=[pid for _, pid, _ in ranked],
                activations=[act for _, _, act in ranked],
                max_activation=r["max_activation"],
                selection_rule=r["selection_rule"],
                children=[child for _, child in sorted(children.get(key, []))],
            )
        )

    rank_of = {key: {child: rank for rank, child in ranked} for key, ranked in children.items()}
    hyper_rows: dict[str, list[tuple]] = defaultdict(list)
    for r in _rows(tx, _HYPEREDGES, **params):
        rank = rank_of.get((r["layer"], r["neuron"]), {}).get(r["child"], 0)
        edge = HyperedgeRecord(r["child_layer"], r["child"], r["sg_id"], r["weight"], r["score"])
        hyper_rows[r["layer"]].append(((r["neuron"], r["j"], rank, r["child"]), edge))

    groups: dict[str, list[tuple[int, NeuronGroupRecord]]] = defaultdict(list)
    for r in _rows(tx, _NEURON_GROUPS, **params):
        members = sorted(r["members"])
        groups[r["layer"]].append(
            (
                r["position"],
                NeuronGroupRecord(
                    ng_id=r["ng_id"],
                    layer=r["layer"],
                    members=[n for n, _ in members],
                    sg_ids=[sg_id for _, sg_id in sorted(r["sgs"])],
                    patch_ids=[pid for _, pid in sorted(r["exemplars"])],
                    centroid=unpack_f32(r["centroid"]),
                    core_members=[n for n, core in members if core],
                ),
            )
        )

    group_edges: dict[str, list[GroupEdgeRecord]] = defaultdict(list)
    for r in _rows(tx, _GROUP_EDGES, **params):
        group_edges[r["layer"]].append(GroupEdgeRecord(r["child"], r["parent"], r["weight"], r["edges"]))

    steps = []
    for name in layers:
        info = layer_rows[name]
        steps.append(
            LayerStep(
                layer=LayerRecord(name, info["depth"], info["width"], info["kind"]),
                neurons=sorted(neurons[name], key=lambda n: n.index),
                semantic_groups=sorted(sgs[name], key=lambda sg: (sg.neuron, sg.j)),
                hyperedges=[edge for _, edge in sorted(hyper_rows[name], key=lambda item: item[0])],
                core_edges=sorted(core_edges[name], key=lambda e: (e.parent, e.rank)),
                neuron_groups=[g for _, g in sorted(groups[name], key=lambda item: item[0])],
                group_edges=sorted(group_edges[name], key=lambda e: (e.child, e.parent)),
                seconds=info["seconds"] or 0.0,
                pairs=info["pairs"] or 0,
            )
        )
    return steps


def _run_row(tx: ManagedTransaction, run_id: str) -> dict:
    record = tx.run(
        "MATCH (r:Run {run_id: $run_id}) OPTIONAL MATCH (m:Model {model_id: r.model_id}) "
        "RETURN r {.*} AS run, m {.*} AS model",
        run_id=run_id,
    ).single()
    if record is None:
        raise GraphStoreError(f"run {run_id} is not in the graph")
    return record.data()


def finished_layers(driver: Driver, run_id: str) -> list[LayerStep]:
    """The layers a run has fully stored, top-down: what ``iter_circuit(done=...)`` resumes below."""

    def work(tx: ManagedTransaction) -> list[LayerStep]:
        run = _run_row(tx, run_id)["run"]
        return _steps(tx, run_id, list(run.get("layers_done") or []))

    with driver.session() as session:
        return session.execute_read(work)


def load_circuit(driver: Driver, run_id: str) -> Circuit:
    """The run as a `Circuit` (only its finished layers when it is not COMPLETE)."""

    def work(tx: ManagedTransaction) -> Circuit:
        row = _run_row(tx, run_id)
        run, model = row["run"], row["model"] or {}
        circuit = Circuit(
            run_id=run_id,
            model_id=run["model_id"],
            arch=model.get("arch"),
            weights_sha256=model.get("weights_sha256"),
            input_size=model.get("input_size"),
            num_classes=model.get("num_classes"),
            class_index=run["class_index"],
            class_name=run.get("class_name"),
            params=json.loads(run.get("params_json") or "{}"),
            stats=json.loads(run.get("stats_json") or "{}"),
            source=(
                {k: run.get(f"source_{k}") for k in ("model", "weights", "images")}
                if run.get("source_images")
                else {}
            ),
        )
        circuit.patches = [
            PatchRecord(r["patch_id"], r["source_image"], list(r["box"]), r["scale"], list(r["concepts"]))
            for r in _rows(
                tx,
                "MATCH (:Run {run_id: $run_id})-[h:HAS_PATCH]->(p:Patch) "
                "RETURN p.patch_id AS patch_id, h.source_image AS source_image, h.box AS box, "
                "h.scale AS scale, coalesce(h.concepts, []) AS concepts ORDER BY h.position",
                run_id=run_id,
            )
        ]
        for step in _steps(tx, run_id, list(run.get("layers_done") or [])):
            circuit.add_step(step)
        return circuit

    with driver.session() as session:
        return session.execute_read(work)

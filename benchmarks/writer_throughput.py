"""Writer throughput: a synthetic circuit of ~100k relationships written into a real Neo4j.

    python benchmarks/writer_throughput.py [--width 256] [--k 50] [--tau 16] [--batch-size 2000]

Uses the Neo4j of the NEURFLOW_* configuration when one answers there; otherwise starts a
throw-away local Neo4j (graphmodel.stack) on a free port with a temporary state dir, and stops it
afterwards. Prints nodes/s and relationships/s for the whole write (start_run, patches, every layer,
complete_run) after a small warm-up write, the batch size, and the time of a second, idempotent
write of the same circuit.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import random
import socket
import sys
import tempfile
import time
from array import array
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphmodel.records import (
    Circuit,
    CoreEdgeRecord,
    HyperedgeRecord,
    LayerRecord,
    LayerStep,
    NeuronGroupRecord,
    NeuronRecord,
    PatchRecord,
    SemanticGroupRecord,
)


def synthetic_circuit(
    run_id: str = "synthetic0000000",
    *,
    widths: tuple[int, ...] = (10, 256, 256, 256, 256),
    k: int = 50,
    tau: int = 16,
    patches: int = 2500,
    groups_per_layer: int | tuple[int, int] = 8,
    seed: int = 0,
    skew: float = 0.0,
    model_id: str = "synthetic-cnn",
    class_index: int = 0,
) -> tuple[Circuit, list[LayerStep]]:
    """A circuit with the shape the core produces (same invariants, random values): the logit at
    ``widths[0]``, ``tau`` children per target, 2-5 semantic groups per neuron partitioning its
    top-``k`` concept, neuron groups over the semantic groups, group edges from hyperedges.

    ``skew`` > 0 draws children from a power law over each layer's channels (weight 1/rank^skew), so
    targets share children as in real circuits, where a few channels matter to many parents; 0 draws
    them uniformly. ``groups_per_layer`` is a count or a (low, high) range drawn per layer.
    """
    from ingest.core.neuron_groups import group_edges

    rng = random.Random(seed)
    popularity: dict[int, list[float]] = {}

    def draw_children(width: int) -> list[int]:
        if skew <= 0:
            return rng.sample(range(width), min(tau, width))
        if width not in popularity:
            order = list(range(width))
            rng.shuffle(order)
            popularity[width] = [0.0] * width
            for rank, channel in enumerate(order, start=1):
                popularity[width][channel] = rank**-skew
        keys = sorted(((rng.random() ** (1.0 / w), c) for c, w in enumerate(popularity[width])), reverse=True)
        return [c for _, c in keys[: min(tau, width)]]

    names = ["fc", *[f"block{len(widths) - 1 - i}" for i in range(len(widths) - 1)]]
    records = [
        PatchRecord(
            hashlib.sha256(f"{seed}/{i}".encode()).hexdigest()[:32],
            f"img{i // 60:04d}.png",
            [i % 7, i % 5, i % 7 + 32, i % 5 + 32],
            rng.choice([1.0, 0.5, 0.25]),
            rng.sample(["stripes", "wings", "flower", "leaf", "sky"], rng.randint(0, 2)),
        )
        for i in range(patches)
    ]
    pids = [r.patch_id for r in records]
    circuit = Circuit(
        run_id=run_id,
        model_id=model_id,
        arch="synthetic",
        weights_sha256=None,
        input_size=64,
        num_classes=widths[0],
        class_index=class_index,
        class_name=f"class{class_index}",
        params={"layers": names, "tau": str(tau), "k": k, "steps": 4, "seed": seed, "code_version": "bench"},
        patches=records,
    )
    steps: list[LayerStep] = []
    targets = [class_index]
    upper_groups: list[NeuronGroupRecord] = []
    upper_hyper: list[HyperedgeRecord] = []
    for depth, name in enumerate(names):
        below = names[depth + 1] if depth + 1 < len(names) else None
        below_width = widths[depth + 1] if below else widths[-1]
        neurons, sgs, hyper, core = [], [], [], []
        chosen: set[int] = set()
        for a in targets:
            top = rng.sample(range(patches), k)
            acts = sorted((rng.uniform(0, 5) for _ in top), reverse=True)
            children = draw_children(below_width) if below else []
            neurons.append(NeuronRecord(name, a, [pids[i] for i in top], acts, acts[0] * 1.1, None, children))
            if below:
                neurons[-1].selection_rule = f"top-{len(children)}"
            n_groups = rng.randint(2, min(5, k))
            labels = [j % n_groups for j in range(k)]
            rng.shuffle(labels)
            for j in range(n_groups):
                rows = [r for r in range(k) if labels[r] == j]
                sg = SemanticGroupRecord(
                    f"{run_id}/{name}/{a}/{j}",
                    name,
                    a,
                    j,
                    [pids[top[r]] for r in rows],
                    [acts[r] for r in rows],
                    _float32([rng.random() for _ in range(below_width)]),
                    0.25,
                )
                sgs.append(sg)
                hyper += [
                    HyperedgeRecord(below, s, sg.sg_id, rng.gauss(0, 0.2), rng.gauss(0, 1)) for s in children
                ]
            core += [
                CoreEdgeRecord(below, s, name, a, rank, rng.gauss(0, 0.2), rng.gauss(0, 1))
                for rank, s in enumerate(children, start=1)
            ]
            chosen.update(children)
        count = groups_per_layer if isinstance(groups_per_layer, int) else rng.randint(*groups_per_layer)
        groups = _random_groups(rng, run_id, name, sgs, 1 if depth == 0 else count)
        step = LayerStep(
            LayerRecord(name, depth, widths[depth], "linear" if depth == 0 else "conv"),
            neurons,
            sgs,
            hyper,
            core,
            groups,
            group_edges(groups, upper_groups, upper_hyper),
            seconds=0.0,
            pairs=len(targets) * k,
        )
        steps.append(step)
        circuit.add_step(step)
        upper_groups, upper_hyper, targets = groups, hyper, sorted(chosen)
    circuit.stats = {"patches": patches, "synthetic": True}
    return circuit, steps


def _float32(values: list[float]) -> list[float]:
    """Values a float32 holds exactly, as the core's centroids are (and the graph stores them)."""
    return array("f", values).tolist()


def _random_groups(rng: random.Random, run_id: str, layer: str, sgs, count: int) -> list[NeuronGroupRecord]:
    count = max(1, min(count, len(sgs)))
    labels = [i % count for i in range(len(sgs))]
    rng.shuffle(labels)
    groups = []
    for g in range(count):
        members = [sg for sg, label in zip(sgs, labels) if label == g]
        neurons = sorted({sg.neuron for sg in members})
        groups.append(
            NeuronGroupRecord(
                f"{run_id}/{layer}/g{g}",
                layer,
                neurons,
                [sg.sg_id for sg in members],
                list(dict.fromkeys(p for sg in members for p in sg.patch_ids)),
                _float32([rng.random() for _ in members[0].centroid]),
                neurons[:5],
            )
        )
    return groups


def shell_of(circuit: Circuit) -> Circuit:
    """The circuit as `prepare_run` hands it over: identity, params and patches, no layers yet."""
    return Circuit(
        run_id=circuit.run_id,
        model_id=circuit.model_id,
        arch=circuit.arch,
        weights_sha256=circuit.weights_sha256,
        input_size=circuit.input_size,
        num_classes=circuit.num_classes,
        class_index=circuit.class_index,
        class_name=circuit.class_name,
        params=circuit.params,
        patches=circuit.patches,
    )


def write_circuit(driver, circuit: Circuit, steps: list[LayerStep], batch_size: int) -> None:
    from graphmodel import writer

    writer.start_run(driver, shell_of(circuit))
    writer.write_patches(driver, circuit.run_id, circuit.patches, batch_size=batch_size)
    for step in steps:
        writer.write_layer(driver, circuit.run_id, step, batch_size=batch_size)
    writer.complete_run(driver, circuit)


def graph_size(driver) -> tuple[int, int]:
    nodes = driver.execute_query("MATCH (n) RETURN count(n) AS n").records[0]["n"]
    rels = driver.execute_query("MATCH ()-[r]->() RETURN count(r) AS n").records[0]["n"]
    return nodes, rels


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def neo4j_driver(*, fresh: bool = False) -> Iterator:
    """The configured Neo4j if it answers (unless ``fresh``), else a temporary local one (stopped on exit)."""
    from graphmodel.connection import GraphStoreError, connect
    from graphmodel.stack import down, load_config, up

    running = None
    if not fresh:
        with contextlib.suppress(GraphStoreError):
            running = connect(load_config(), retry_seconds=30, connection_timeout=2.0)
    if running is not None:
        print(f"using the running Neo4j at {load_config().neo4j_uri}")
        with running:
            yield running
        return
    saved = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="neurflow-bench-") as state:
        os.environ.update(
            NEURFLOW_STATE_DIR=state,
            NEURFLOW_NEO4J_URI=f"bolt://127.0.0.1:{_free_port()}",
            NEURFLOW_BROWSER_PORT=str(_free_port()),
            NEURFLOW_STACK_BUILD_DIR=os.environ.get("NEURFLOW_STACK_BUILD_DIR")
            or str(Path.home() / ".cache" / "neurflow" / "stack-build"),
        )
        os.environ.pop("NEURFLOW_NEO4J_PASSWORD", None)
        cfg = load_config()
        print(f"starting a temporary Neo4j at {cfg.neo4j_uri} ...", flush=True)
        try:
            up(cfg, s3=False, guide=False, timeout=240)
            with connect(cfg, retry_seconds=30) as driver:
                yield driver
        finally:
            down(cfg)
            os.environ.clear()
            os.environ.update(saved)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--width", type=int, default=256, help="channels of each conv layer")
    parser.add_argument("--layers", type=int, default=4, help="conv layers below the logit")
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--tau", type=int, default=16)
    parser.add_argument("--patches", type=int, default=2500)
    parser.add_argument("--batch-size", type=int, default=2000)
    args = parser.parse_args()

    from graphmodel import writer
    from graphmodel.schema import ensure_schema

    circuit, steps = synthetic_circuit(
        widths=(10, *([args.width] * args.layers)), k=args.k, tau=args.tau, patches=args.patches
    )
    rows = sum(len(v) for step in steps for v in writer.layer_rows(step).values())
    print(
        f"synthetic circuit: {len(circuit.neurons)} neurons, {len(circuit.semantic_groups)} semantic groups, "
        f"{len(circuit.neuron_groups)} neuron groups, {len(circuit.patches)} patches, {rows} layer rows"
    )
    with neo4j_driver() as driver:
        ensure_schema(driver)
        warm, warm_steps = synthetic_circuit(
            "warmup0000000000", widths=(10, 64, 64), k=20, tau=8, patches=500
        )
        writer.delete_run(driver, warm.run_id)
        write_circuit(driver, warm, warm_steps, args.batch_size)  # query plans and JIT, not measured
        writer.delete_run(driver, warm.run_id)
        writer.delete_run(driver, circuit.run_id)
        nodes0, rels0 = graph_size(driver)
        t0 = time.perf_counter()
        write_circuit(driver, circuit, steps, args.batch_size)
        first = time.perf_counter() - t0
        nodes1, rels1 = graph_size(driver)
        t0 = time.perf_counter()
        write_circuit(driver, circuit, steps, args.batch_size)  # COMPLETE: start_run is a no-op
        for step in steps:
            writer.write_layer(driver, circuit.run_id, step, batch_size=args.batch_size)
        second = time.perf_counter() - t0
        nodes2, rels2 = graph_size(driver)
        writer.delete_run(driver, circuit.run_id)
    nodes, rels = nodes1 - nodes0, rels1 - rels0
    print(f"batch size {args.batch_size} rows per transaction")
    print(f"wrote {nodes} nodes and {rels} relationships in {first:.2f} s")
    print(f"  {rels / first:,.0f} relationships/s, {nodes / first:,.0f} nodes/s")
    print(
        f"rewrite of the same circuit: {second:.2f} s, graph unchanged: "
        f"{(nodes2, rels2) == (nodes1, rels1)} ({nodes2 - nodes1:+d} nodes, {rels2 - rels1:+d} relationships)"
    )
    return 0 if (nodes2, rels2) == (nodes1, rels1) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Graph scale: the writer's relationships/s, every canned query's latency, and disk, at 1 to 1,000 circuits.

    python benchmarks/graph_scale.py [--sizes 1,10,100,1000] [--repeats 20] [--writer-circuits 2]

Starts a throw-away local Neo4j (graphmodel.stack; heap and page cache from NEURFLOW_NEO4J_HEAP and
NEURFLOW_NEO4J_PAGECACHE, 2g each unless set) and fills it with synthetic circuits shaped like real
ones (benchmarks/writer_throughput.py, children drawn from a power law so that classes share
neurons as real circuits do), each with the top 3 of 40 concept labels on every neuron group and
semantic group. The database grows in stages; the first 100 circuits are

    40 classes of a ResNet-50-shaped model (7 layers, 1000-2048-1024-1024-512-256-64 channels),
    40 runs of a planted-CNN-shaped model (5 layers, 10 classes, 4 runs each),
    20 classes of a VGG-16-shaped model (6 layers),

and circuits 101-1,000 are planted-CNN-shaped runs of 9 further models. At each stage it prints
p50 and p95 of every canned query (over rotating parameters: classes, groups, neurons), the store
and transaction-log size, and the store per circuit. After the 10-circuit stage, on that warm
database, it writes ResNet-shaped circuits with each writer mode, alternating, each in its own
process: today's writer (graphmodel/writer.py at BASELINE) and the current one, each without and
with the driver's Rust extension; relationships/s are printed side by side. While the first 100
circuits are written, the transaction logs are measured after every circuit.

Not part of the test suite: the 1,000-circuit stage takes about an hour on 2 cores.
"""

from __future__ import annotations

import argparse
import importlib.abc
import json
import os
import random
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.writer_throughput import (  # noqa: E402
    graph_size,
    neo4j_driver,
    synthetic_circuit,
    write_circuit,
)

BASELINE = "59c544c"  # main before the issue-14 writer: MERGE everywhere, list centroids
SHAPES = {
    "resnet50": {"widths": (1000, 2048, 1024, 1024, 512, 256, 64), "skew": 1.5},
    "vgg16": {"widths": (1000, 4096, 512, 512, 256, 128), "skew": 1.5},
    "planted": {"widths": (10, 128, 128, 64, 32), "skew": 1.0},
}
CONCEPTS = [f"concept{i:02d}" for i in range(40)]
RESNET, VGG = "resnet50-like", "vgg16-like"  # the queries ask about RESNET (and compare it with VGG)
MODES = ("today", "today+rust", "new", "new+rust")
RUST_MODULE = "neo4j._codec.packstream._rust"


def plan(index: int) -> tuple[str, str, int]:
    """(shape, model id, class index) of the database's circuit number ``index``."""
    if index < 40:
        return "resnet50", RESNET, index
    if index < 80:
        return "planted", "planted-like", index % 10
    if index < 100:
        return "vgg16", VGG, index - 80
    return "planted", f"planted-like-{(index - 100) // 100 + 1}", index % 10


def make_circuit(index: int, run_id: str | None = None):
    shape, model_id, class_index = plan(index)
    return synthetic_circuit(
        run_id or f"scale{index:05d}{'0' * 6}"[:16],
        **SHAPES[shape],
        groups_per_layer=(2, 5),
        seed=10_000 + index,
        model_id=model_id,
        class_index=class_index,
    )


def concept_labels(circuit, seed: int) -> list:
    """The top 3 of 40 concepts on every neuron group and semantic group, as a concept bank gives."""
    from graphmodel.records import LabelRecord

    rng = random.Random(seed)
    labels = []
    for group_id in [g.ng_id for g in circuit.neuron_groups] + [sg.sg_id for sg in circuit.semantic_groups]:
        scores = sorted((rng.uniform(0.5, 1.0) for _ in range(3)), reverse=True)
        for rank, (concept, score) in enumerate(zip(rng.sample(CONCEPTS, 3), scores), start=1):
            labels.append(LabelRecord(group_id, concept, round(score, 6), "concept_bank", rank))
    return labels


# ------------------------------------------------------------------------------------ disk


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def disk() -> dict[str, int]:
    data = Path(os.environ["NEURFLOW_STATE_DIR"]) / "neo4j" / "data"
    return {
        "store": _dir_bytes(data / "databases" / "neo4j"),
        "tx_logs": _dir_bytes(data / "transactions" / "neo4j"),
    }


def _mb(n: float) -> str:
    return f"{n / 2**20:,.1f} MB"


# ---------------------------------------------------------------------------------- writers


class _NoRust(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == RUST_MODULE:
            raise ImportError("the Rust extension is switched off for this measurement")
        return None


def baseline_writer() -> types.ModuleType:
    """graphmodel/writer.py as it was at BASELINE, loaded from git into its own module."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{BASELINE}:graphmodel/writer.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    module = types.ModuleType("baseline_writer")
    module.__file__ = f"{BASELINE}:graphmodel/writer.py"
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def worker(mode: str, index: int, run_id: str) -> None:
    """Write one circuit with ``mode``; print {"rels", "seconds"} as JSON (run in its own process)."""
    if not mode.endswith("+rust"):
        sys.meta_path.insert(0, _NoRust())
    from graphmodel.connection import connect

    module = baseline_writer() if mode.startswith("today") else None
    if module is not None:
        import graphmodel.writer

        sys.modules["graphmodel.writer"] = module  # write_circuit imports it by name
        graphmodel.writer = module
    circuit, steps = make_circuit(index, run_id)
    with connect() as driver:
        _, rels0 = graph_size(driver)
        started = time.perf_counter()
        write_circuit(driver, circuit, steps, 2000)
        seconds = time.perf_counter() - started
        _, rels1 = graph_size(driver)
    rust = RUST_MODULE in sys.modules
    print(json.dumps({"rels": rels1 - rels0, "seconds": seconds, "rust": rust}))


def compare_writers(driver, circuits: int) -> dict[str, float]:
    from graphmodel import writer

    totals = {mode: [0, 0.0] for mode in MODES}
    for round_ in range(circuits):
        for number, mode in enumerate(MODES):
            run_id = f"writer{round_:02d}{number:02d}00000000"[:16]
            writer.delete_run(driver, run_id)
            out = subprocess.run(
                [sys.executable, __file__, "--worker", mode, "--index", str(round_), "--run-id", run_id],
                capture_output=True,
                text=True,
            )
            if out.returncode:
                raise SystemExit(f"writer mode {mode} failed:\n{out.stderr[-3000:]}")
            result = json.loads(out.stdout.strip().splitlines()[-1])
            if result["rust"] != mode.endswith("+rust"):
                raise SystemExit(
                    f"writer mode {mode}: the Rust extension was {'on' if result['rust'] else 'off'}"
                )
            totals[mode][0] += result["rels"]
            totals[mode][1] += result["seconds"]
            print(f"  {mode:11} {result['rels']:>8,} relationships in {result['seconds']:6.2f} s", flush=True)
            writer.delete_run(driver, run_id)
    rates = {mode: rels / seconds for mode, (rels, seconds) in totals.items()}
    print("writer, relationships/s on a warm database (ResNet-50-shaped circuits, same run):")
    for mode in MODES:
        print(f"  {mode:11} {rates[mode]:>9,.0f} rel/s   {rates[mode] / rates['today']:.2f}x today's writer")
    return rates


# ---------------------------------------------------------------------------------- queries


def query_params(driver, count: int) -> dict[str, list[dict]]:
    """Rotating, realistic parameters for every canned query, taken from the database."""
    one = lambda q, **p: [r.data() for r in driver.execute_query(q, p).records]  # noqa: E731
    resnet_classes = min(count, 40)
    classes = [f"class{i}" for i in range(resnet_classes)]
    model = RESNET
    groups = [
        r["id"] for r in one("MATCH (g:NeuronGroup {model_id: $m}) RETURN g.ng_id AS id LIMIT 200", m=model)
    ]
    neurons = one(
        "MATCH (r:Run {model_id: $m})-[:CIRCUIT_NEURON]->(n:Neuron) WHERE n.layer <> 'fc' "
        "RETURN n.layer AS layer, n.index AS index, count(r) AS runs "
        "ORDER BY runs DESC, layer, index LIMIT 5",
        m=model,
    )
    rng = random.Random(0)
    pairs = [rng.sample(classes, 2) for _ in range(5)] if len(classes) > 1 else []
    vgg_classes = [c for c in classes if int(c[5:]) < 20] if count >= 100 else []
    params = {
        "bias_candidates": [
            {"model_id": model, "class_name": c, "expected": ["concept00"]} for c in classes[:5]
        ],
        "class_similarity": [{"model_id": model}],
        "circuit_graph": [
            {"run_id": r["id"]}
            for r in one("MATCH (r:Run {model_id: $m}) RETURN r.run_id AS id ORDER BY id LIMIT 5", m=model)
        ],
        "cross_model_concepts": [
            {"class_name": c, "model_a": model, "model_b": VGG} for c in vgg_classes[:5]
        ],
        "feeds_via_concept": [
            {"model_id": model, "class_name": c, "concept": f"concept{i % 4}"}
            for i, c in enumerate(classes[:5])
        ],
        "group_detail": [{"ng_id": g} for g in rng.sample(groups, min(5, len(groups)))],
        "hub_concepts": [{"model_id": model}],
        "neuron_profile": [{"model_id": model, "layer": n["layer"], "index": n["index"]} for n in neurons],
        "shared_core_neurons": [{"model_id": model, "class_a": a, "class_b": b} for a, b in pairs],
        "top_paths": [{"model_id": model, "class_name": c, "layer": "block3"} for c in classes[:5]],
    }
    return {name: values for name, values in params.items() if values}


def time_queries(driver, count: int, repeats: int) -> dict[str, dict[str, float]]:
    import queries
    from queries.runner import list_queries

    names = sorted(list_queries())
    params = query_params(driver, count)
    out = {}
    for name in names:
        if name not in params:
            print(f"  {name:22} (no parameters at this size)")
            continue
        values = params[name]
        for p in values[:2]:
            queries.run(name, driver=driver, **p)  # plans and page cache, not measured
        times, rows = [], []
        for i in range(repeats):
            p = values[i % len(values)]
            started = time.perf_counter()
            rows.append(len(queries.run(name, driver=driver, **p)))
            times.append((time.perf_counter() - started) * 1000)
        times.sort()
        p50, p95 = statistics.median(times), times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        out[name] = {"p50_ms": p50, "p95_ms": p95, "rows": statistics.median(rows)}
        flag = "" if p50 < 200 and p95 < 500 else "   OVER 200 ms p50 / 500 ms p95"
        print(
            f"  {name:22} p50 {p50:8.1f} ms   p95 {p95:8.1f} ms   rows {statistics.median(rows):6.0f}{flag}"
        )
    return out


# ------------------------------------------------------------------------------------- main


def fill(driver, start: int, stop: int, track_logs: bool) -> dict[str, float]:
    from graphmodel import writer
    from graphmodel.labels import write_labels

    largest_logs, seconds, rels = 0, 0.0, 0
    for index in range(start, stop):
        circuit, steps = make_circuit(index)
        _, before = graph_size(driver)
        started = time.perf_counter()
        write_circuit(driver, circuit, steps, writer.BATCH_SIZE)
        seconds += time.perf_counter() - started
        rels += graph_size(driver)[1] - before
        write_labels(driver, circuit.run_id, "concept_bank", concept_labels(circuit, index))
        if track_logs:
            largest_logs = max(largest_logs, disk()["tx_logs"])
        if (index + 1) % 50 == 0:
            print(f"  {index + 1} circuits written ({rels / seconds:,.0f} rel/s)", flush=True)
    return {"largest_tx_logs": largest_logs, "rels_per_s": rels / seconds if seconds else 0.0}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1,10,100,1000", help="database sizes (circuits), ascending")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs of each query per size")
    parser.add_argument("--writer-circuits", type=int, default=2, help="circuits per writer mode (0: skip)")
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--run-id", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.index, args.run_id)
        return 0
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    os.environ.setdefault("NEURFLOW_NEO4J_HEAP", "2g")
    os.environ.setdefault("NEURFLOW_NEO4J_PAGECACHE", "2g")
    print(
        f"Neo4j heap {os.environ['NEURFLOW_NEO4J_HEAP']}, "
        f"page cache {os.environ['NEURFLOW_NEO4J_PAGECACHE']}, "
        f"transaction logs kept: {os.environ.get('NEURFLOW_NEO4J_TX_LOGS', '256M size')}"
    )
    report: dict = {"sizes": {}}
    with neo4j_driver(fresh=True) as driver:
        from graphmodel.schema import ensure_schema

        ensure_schema(driver)
        written = 0
        for size in sizes:
            print(f"\n== {size} circuits: writing {size - written} more", flush=True)
            filled = fill(driver, written, size, track_logs=written < 100)
            written = size
            filled_at = time.monotonic()
            timings = time_queries(driver, size, args.repeats)
            # Store files grow when a checkpoint flushes the page cache (every 30 s in the local
            # stack; Community has no procedure to force one), so wait for one before measuring.
            time.sleep(max(0.0, 35 - (time.monotonic() - filled_at)))
            used = disk()
            nodes, rels = graph_size(driver)
            print(
                f"  graph: {nodes:,} nodes, {rels:,} relationships; store {_mb(used['store'])} "
                f"({_mb(used['store'] / size)} per circuit), transaction logs {_mb(used['tx_logs'])}"
            )
            if filled["largest_tx_logs"]:
                print(f"  transaction logs while writing: at most {_mb(filled['largest_tx_logs'])}")
            report["sizes"][size] = {"nodes": nodes, "rels": rels, **used, **filled, "queries": timings}
            if size == 10 and args.writer_circuits:
                print("\n== writer modes on the 10-circuit database", flush=True)
                report["writer_rel_per_s"] = compare_writers(driver, args.writer_circuits)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

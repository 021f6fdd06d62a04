"""`neurflow ingest` end to end against real Neo4j and S3Proxy, on the planted benchmark.

The tests share one stack and run in file order: one uninterrupted ingest (in-process; the
reference circuit and graph), then the CLI in subprocesses: re-ingest, kill -9 and resume, Neo4j
restarted mid-ingest, S3 up and down. Graphs are compared through a canonical export of the whole
database (every node and relationship with its properties, minus timestamps, attempt counts and
timings), so "equal graph" means equal to the last property.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from graphmodel import reader, writer
from graphmodel.connection import connect
from graphmodel.patchstore import LocalPatchStore, S3PatchStore
from graphmodel.stack import restart_neo4j, up
from graphmodel.stack.services import stop_s3
from tests.services import cli_env
from tests.test_store import graph_size

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ARGS = [
    "--model",
    "planted_cnn",
    "--class",
    "bee",
    "--k",
    "10",
    "--tau",
    "4",
    "--steps",
    "4",
    "--device",
    "cpu",
]
VOLATILE = {
    "started_at",
    "last_started_at",
    "finished_at",
    "failed_at",
    "attempts",
    "seconds",
    "stats_json",
    "error",
}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ingest.planted.data import write_image_folder

    return write_image_folder(tmp_path_factory.mktemp("images") / "bee", "bee", 4, seed=1234)


@pytest.fixture(scope="module")
def ingest_env(stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The CLI's environment (tests/services.py: cli_env)."""
    return cli_env(stack, tmp_path_factory.mktemp("cli-state"))


def _command(images: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-c",
        "from ingest.cli import main; main()",
        "ingest",
        "--images",
        str(images),
        *ARGS,
        *extra,
    ]


def _ingest(images: Path, env: dict, *extra: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        _command(images, *extra), env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def _run_id(output: str) -> str:
    for line in output.splitlines():
        if line.startswith("run ") and ("COMPLETE" in line or "already complete" in line):
            return line.split()[1]
    raise AssertionError(f"no run id in the output:\n{output}")


def _clean(props: dict) -> tuple:
    out = {}
    for key, value in props.items():
        if key in VOLATILE:
            continue
        out[key] = tuple(value) if isinstance(value, list) else value
    return tuple(sorted(out.items()))


def export(driver) -> tuple[list, list]:
    """Every node and relationship, canonically sorted, without volatile properties."""
    nodes = driver.execute_query("MATCH (n) RETURN elementId(n) AS id, labels(n) AS labels, n {.*} AS props")
    key = {r["id"]: (tuple(sorted(r["labels"])), _clean(r["props"])) for r in nodes.records}
    rels = driver.execute_query(
        "MATCH (a)-[r]->(b) RETURN elementId(a) AS a, type(r) AS type, r {.*} AS props, elementId(b) AS b"
    )
    edges = sorted((key[r["a"]], r["type"], _clean(r["props"]), key[r["b"]]) for r in rels.records)
    return sorted(key.values()), edges


def _stats_without_timings(driver, run_id: str) -> dict:
    text = driver.execute_query("MATCH (r:Run {run_id: $id}) RETURN r.stats_json AS s", id=run_id).records[0][
        "s"
    ]
    stats = json.loads(text)
    stats.pop("seconds", None)
    stats.pop("layers", None)
    return stats


def _wait_for(predicate, timeout: float, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


def _local_store(env: dict[str, str]) -> LocalPatchStore:
    """The store the CLI picks with no S3 configured: <state dir>/patches."""
    return LocalPatchStore(Path(env["NEURFLOW_STATE_DIR"]).resolve() / "patches")


@pytest.fixture(scope="module")
def reference(driver, images, ingest_env):
    """One uninterrupted ingest (in-process, all default layers): the circuit as extracted, its
    run id and the exported graph. The CLI runs below must reproduce this graph."""
    import torch

    from ingest.core.circuit import ExtractConfig
    from ingest.core.models import load_model
    from ingest.core.tau import parse_tau
    from ingest.pipeline.ingest_run import run_ingest

    torch.set_num_threads(2)
    model = load_model("planted_cnn", device="cpu")
    cfg = ExtractConfig(layers=model.default_layers, tau=parse_tau("4"), k=10, steps=4)
    started = time.monotonic()
    result = run_ingest(driver, model, images, model.class_names.index("bee"), cfg, _local_store(ingest_env))
    print(f"\nuninterrupted ingest: {time.monotonic() - started:.1f} s, {result.counts}")
    assert result.status == "COMPLETE" and result.circuit is not None
    run_id = result.run_id
    return run_id, export(driver), _stats_without_timings(driver, run_id), result.circuit


def _approx_equal(a, b, path="circuit"):
    if isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-6), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _approx_equal(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _approx_equal(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def test_ingest_round_trip_equals_the_extracted_circuit(driver, reference):
    run_id, _, _, extracted = reference
    stored = reader.load_circuit(driver, run_id)
    assert stored.run_id == extracted.run_id == run_id
    _approx_equal(stored.to_dict(), extracted.to_dict())
    assert stored.stats == extracted.stats  # stats are stored as JSON: exact, timings included
    assert len(stored.neurons) > 20 and len(stored.layers) == 5
    assert reader.run_status(driver, run_id).status == "COMPLETE"


def test_ingesting_the_same_run_twice_changes_nothing(driver, images, ingest_env, reference):
    run_id, graph, _, _ = reference
    before = graph_size(driver)
    again = _ingest(images, ingest_env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already complete" in again.stdout and _run_id(again.stdout) == run_id
    assert graph_size(driver) == before
    assert export(driver) == graph


def test_kill_9_mid_ingest_then_resume_gives_the_uninterrupted_graph(driver, images, ingest_env, reference):
    run_id, graph, stats, _ = reference
    writer.delete_run(driver, run_id)
    process = subprocess.Popen(
        _command(images), env=ingest_env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        state = _wait_for(
            lambda: (s := reader.run_status(driver, run_id)) is not None and len(s.layers_done) >= 2 and s,
            180,
        )
    finally:
        process.kill()  # SIGKILL: no cleanup runs in the ingest
        process.wait()
    assert state, "the ingest never finished two layers"
    crashed = reader.run_status(driver, run_id)
    print(f"\nkilled with layers done: {crashed.layers_done} of {crashed.layers}")
    assert crashed.status == "RUNNING"
    assert len(crashed.layers_done) < len(crashed.layers), "the ingest finished before it was killed"

    resumed = _ingest(images, ingest_env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming run" in resumed.stderr
    final = reader.run_status(driver, run_id)
    assert final.status == "COMPLETE" and final.attempts == 2
    nodes, edges = export(driver)
    assert len(edges) == len(set(edges)), "duplicate relationships"
    assert (nodes, edges) == graph
    assert _stats_without_timings(driver, run_id) == stats


def test_no_s3_configured_means_local_patches_with_file_uris(driver, reference, ingest_env):
    """The resumed layers of the test above were stored by the CLI with no S3 configured."""
    run_id, _, _, _ = reference
    uris = driver.execute_query(
        "MATCH (:Run {run_id: $id})-[:CIRCUIT_NEURON]->()-[:HAS_SEMANTIC_GROUP]->"
        "(sg:SemanticGroup {run_id: $id})-[:EXEMPLAR]->(p:Patch) RETURN DISTINCT p.uri AS uri",
        id=run_id,
    ).records
    assert uris and all(r["uri"].startswith("file://") for r in uris)
    root = Path(ingest_env["NEURFLOW_STATE_DIR"]).resolve() / "patches"
    for record in uris:
        path = Path(record["uri"].removeprefix("file://"))
        assert path.is_file() and root in path.parents


def test_neo4j_restart_during_an_ingest_completes_or_fails_clearly(
    stack, driver, images, ingest_env, reference
):
    run_id, graph, _, _ = reference
    writer.delete_run(driver, run_id)
    process = subprocess.Popen(
        _command(images), env=ingest_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        started = _wait_for(
            lambda: (s := reader.run_status(driver, run_id)) is not None and len(s.layers_done) >= 1, 180
        )
        assert started, "the ingest never finished a layer"
        before = reader.run_status(driver, run_id)
        restart_neo4j(stack, hard=True)
        assert before.status == "RUNNING", "the ingest finished before Neo4j was restarted"
        print(f"\nNeo4j killed and restarted with layers done: {before.layers_done}")
        _, stderr = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    with connect(stack) as fresh:
        state = reader.run_status(fresh, run_id)
        if process.returncode == 0:
            print("\nNeo4j restart mid-ingest: the ingest retried and completed")
            assert state.status == "COMPLETE"
            assert export(fresh) == graph
        else:
            print(f"\nNeo4j restart mid-ingest: the ingest failed clearly: {stderr.strip().splitlines()[-1]}")
            assert "Neo4j" in stderr and stack.neo4j_uri in stderr and "Traceback" not in stderr
            assert state is None or state.status != "COMPLETE"


def test_s3_ingest_stores_patches_in_the_bucket(stack, driver, images, ingest_env):
    env = {
        **ingest_env,
        "NEURFLOW_S3_ENDPOINT": stack.s3_endpoint,
        "NEURFLOW_S3_BUCKET": "neurflow-e2e",
        "NEURFLOW_S3_ACCESS_KEY": stack.s3_access_key,
        "NEURFLOW_S3_SECRET_KEY": stack.s3_secret_key,
    }
    done = _ingest(images, env, "--layers", "fc,block4")
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = _run_id(done.stdout)
    uris = [
        r["uri"]
        for r in driver.execute_query(
            "MATCH (sg:SemanticGroup {run_id: $id})-[:EXEMPLAR]->(p:Patch) RETURN DISTINCT p.uri AS uri",
            id=run_id,
        ).records
    ]
    assert uris and all(uri.startswith("s3://neurflow-e2e/patches/") for uri in uris)
    store = S3PatchStore(stack.s3_endpoint, "neurflow-e2e", stack.s3_access_key, stack.s3_secret_key)
    assert all(store.get(uri).startswith(b"\x89PNG") for uri in uris)
    assert stack.s3_secret_key not in done.stdout + done.stderr
    assert stack.neo4j_password not in done.stdout + done.stderr


def test_s3_down_fails_clearly_and_marks_nothing_complete(stack, driver, images, ingest_env):
    env = {
        **ingest_env,
        "NEURFLOW_S3_ENDPOINT": stack.s3_endpoint,
        "NEURFLOW_S3_ACCESS_KEY": stack.s3_access_key,
        "NEURFLOW_S3_SECRET_KEY": stack.s3_secret_key,
    }
    complete_before = driver.execute_query(
        "MATCH (r:Run {status: 'COMPLETE'}) RETURN collect(r.run_id) AS ids"
    ).records[0]["ids"]
    stop_s3(stack)
    try:
        failed = _ingest(images, env, "--layers", "fc,block4", "--k", "9")
    finally:
        up(stack, neo4j=False, guide=False)
    assert failed.returncode != 0
    assert f"cannot reach S3 at {stack.s3_endpoint}" in failed.stderr
    assert "neurflow stack up" in failed.stderr and "Traceback" not in failed.stderr
    complete_after = driver.execute_query(
        "MATCH (r:Run {status: 'COMPLETE'}) RETURN collect(r.run_id) AS ids"
    ).records[0]["ids"]
    assert sorted(complete_after) == sorted(complete_before)


def test_stack_status_command_reports_the_running_services(stack):
    from click.testing import CliRunner

    from ingest.cli import main

    result = CliRunner().invoke(main, ["stack", "status", "--json"])
    report = json.loads(result.output)
    assert report["neo4j"]["healthy"] and report["s3"]["healthy"], report
    assert report["neo4j"]["address"] == stack.neo4j_uri
    assert report["neo4j"]["browser"] == stack.browser_url  # Neo4j serves Browser
    assert not report["guide"]["running"] and result.exit_code == 3  # the tests start no guide server
    assert stack.neo4j_password not in result.output


def test_demo_starts_the_stack_ingests_and_says_where_to_look(stack, driver, tmp_path):
    """`neurflow demo` as a newcomer runs it (small): services up, bee circuit stored, pointers printed."""
    from click.testing import CliRunner

    from ingest.cli import main

    result = CliRunner().invoke(
        main, ["demo", "--out", str(tmp_path), "--images", "4", "--steps", "2"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "note: --images is deprecated; use --count" in out  # the old name still works
    run_id = next(
        line.split()[1].rstrip(":")
        for line in out.splitlines()
        if line.startswith("run ") and "saved" in line
    )
    assert reader.run_status(driver, run_id).status == writer.COMPLETE
    assert stack.neo4j_uri in out and "Neo4j Browser: http://127.0.0.1:" in out
    assert f"MATCH (r:Run {{run_id: '{run_id}'}})" in out
    assert stack.neo4j_password not in out
    assert (tmp_path / "circuit.json").exists() and "-- block1" in out
    # Where to look comes first; the semantic groups' purity rows (hundreds) only with -v.
    assert out.index("Neo4j Browser:") < out.index("-- block1")
    assert "semantic-group rows not shown" in out and "   SG " not in out and "   NG " in out


def test_demo_uses_services_that_already_answer_instead_of_starting_the_stack(
    stack, driver, tmp_path, monkeypatch
):
    """As with the Docker compose services: NEURFLOW_* point at a Neo4j and an S3 this state dir
    did not start; the demo ingests into them and starts nothing (no Java needed)."""
    from click.testing import CliRunner

    from ingest.cli import main

    state = tmp_path / "state"
    monkeypatch.setenv("NEURFLOW_STATE_DIR", str(state))
    monkeypatch.setenv("NEURFLOW_NEO4J_PASSWORD", stack.neo4j_password)
    monkeypatch.setenv("NEURFLOW_S3_ACCESS_KEY", stack.s3_access_key)
    monkeypatch.setenv("NEURFLOW_S3_SECRET_KEY", stack.s3_secret_key)
    result = CliRunner().invoke(
        main,
        ["demo", "--out", str(tmp_path / "out"), "--count", "3", "--steps", "2"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert f"using the Neo4j that answers at {stack.neo4j_uri}" in result.output
    assert "Patches:       S3 bucket" in result.output
    # Of this state dir's services at most the guide runs (a Python server: no Java is needed), and
    # the guide answers (this one, or one that already served the port).
    from graphmodel.stack import down, load_config, status
    from graphmodel.stack.health import guide_problem

    try:
        now = status(load_config())
        assert not now["neo4j"]["running"] and not now["s3"]["running"], now
        assert guide_problem(load_config()) is None
        assert "Stop the guide server with `neurflow stack down`" in result.output
    finally:
        down(load_config())
    run_id = next(
        line.split()[1].rstrip(":") for line in result.output.splitlines() if line.startswith("run ")
    )
    assert reader.run_status(driver, run_id).status == writer.COMPLETE

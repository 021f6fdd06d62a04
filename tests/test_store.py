"""The graph store against real servers: schema, writer, reader and patch stores.

One local stack (Neo4j + S3Proxy) per module, in a temporary state dir on free ports, like
tests/test_stack.py. Circuits are synthetic (benchmarks/writer_throughput.py) and small, so every
test takes about a second; tests/test_ingest_e2e.py covers real circuits through the CLI.
"""

from __future__ import annotations

import dataclasses
import io
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from botocore.exceptions import ClientError
from neo4j.exceptions import ConstraintError
from PIL import Image

from benchmarks.writer_throughput import shell_of, synthetic_circuit
from graphmodel import reader, writer
from graphmodel.connection import GraphStoreError, connect
from graphmodel.patchstore import (
    LocalPatchStore,
    PatchConflictError,
    PatchStoreError,
    S3PatchStore,
    encode_png,
    presigned_url,
    upload_patches,
)
from graphmodel.schema import CONSTRAINTS, ensure_schema
from graphmodel.vectors import pack_f32
from tests.services import free_ports


def graph_size(driver) -> tuple[int, int]:
    nodes = driver.execute_query("MATCH (n) RETURN count(n) AS n").records[0]["n"]
    rels = driver.execute_query("MATCH ()-[r]->() RETURN count(r) AS n").records[0]["n"]
    return nodes, rels


def small_circuit(run_id: str, seed: int = 0):
    return synthetic_circuit(
        run_id, widths=(4, 12, 12), k=6, tau=3, patches=40, groups_per_layer=3, seed=seed
    )


def write_all(driver, circuit, steps) -> None:
    assert writer.start_run(driver, shell_of(circuit)) == writer.RUNNING
    writer.write_patches(driver, circuit.run_id, circuit.patches)
    for step in steps:
        writer.write_layer(driver, circuit.run_id, step)
    writer.complete_run(driver, circuit)


# ------------------------------------------------------------------------------------- schema


def test_schema_is_idempotent_and_enforces_composite_keys(driver):
    ensure_schema(driver)
    ensure_schema(driver)
    names = {r["name"] for r in driver.execute_query("SHOW CONSTRAINTS YIELD name").records}
    assert set(CONSTRAINTS) <= names
    driver.execute_query("CREATE (:Neuron {model_id: 'schema-test', layer: 'x', index: 1})")
    try:
        with pytest.raises(ConstraintError):
            driver.execute_query("CREATE (:Neuron {model_id: 'schema-test', layer: 'x', index: 1})")
        driver.execute_query("CREATE (:Neuron {model_id: 'schema-test', layer: 'x', index: 2})")
    finally:
        driver.execute_query("MATCH (n:Neuron {model_id: 'schema-test'}) DELETE n")


# ------------------------------------------------------------------------------- writer/reader


def test_round_trip_of_a_circuit(driver):
    circuit, steps = small_circuit("rt00000000000001")
    write_all(driver, circuit, steps)
    back = reader.load_circuit(driver, circuit.run_id)
    assert back == circuit  # every id, list order and float (stored as float64) is identical
    state = reader.run_status(driver, circuit.run_id)
    assert state.status == "COMPLETE" and state.layers_done == circuit.layer_names()
    assert state.finished_at is not None


def test_writing_the_same_run_again_changes_nothing(driver):
    circuit, steps = small_circuit("idem000000000001")
    write_all(driver, circuit, steps)
    before = graph_size(driver)
    assert writer.start_run(driver, shell_of(circuit)) == writer.COMPLETE
    writer.write_patches(driver, circuit.run_id, circuit.patches)
    for step in steps:
        writer.write_layer(driver, circuit.run_id, step)
    writer.complete_run(driver, circuit)
    assert graph_size(driver) == before
    assert reader.load_circuit(driver, circuit.run_id) == circuit


def test_a_half_written_layer_is_purged_before_it_is_written_again(driver):
    circuit, steps = small_circuit("half000000000001")
    writer.start_run(driver, shell_of(circuit))
    writer.write_patches(driver, circuit.run_id, circuit.patches)
    writer.write_layer(driver, circuit.run_id, steps[0])
    # A crashed attempt left part of layer 1 behind, computed differently (an extra semantic group).
    layer = steps[1].layer.name
    params = {"run_id": circuit.run_id, "model_id": circuit.model_id, "layer": layer}
    neuron = {"index": 9, "max_activation": 1.0, "selection_rule": None}
    stale = {"sg_id": f"{circuit.run_id}/{layer}/9/0", "neuron": 9, "j": 0, "size": 1, "centroid": [0.0]}
    merge = writer.layer_statements(fresh=False)
    stale = {**stale, "centroid": pack_f32(stale["centroid"]), "silhouette": 0.1}
    writer._write_rows(driver, merge["neurons"], [neuron], **params)
    writer._write_rows(driver, merge["semantic_groups"], [stale], **params)
    writer._write_rows(driver, merge["child_neurons"], writer.layer_rows(steps[1])["child_neurons"], **params)
    writer._write_rows(driver, merge["core_edges"], writer.layer_rows(steps[1])["core_edges"][:2], **params)
    assert writer.run_counts(driver, circuit.run_id)["semantic_groups"] > len(steps[0].semantic_groups)
    assert [s.layer.name for s in reader.finished_layers(driver, circuit.run_id)] == ["fc"]
    assert reader.run_status(driver, circuit.run_id).status == "RUNNING"
    for step in steps[1:]:
        writer.write_layer(driver, circuit.run_id, step)
    writer.complete_run(driver, circuit)
    assert reader.load_circuit(driver, circuit.run_id) == circuit


def test_a_create_batch_retried_after_its_commit_is_not_written_twice(driver):
    """A fresh layer is CREATEd; the driver may retry a batch whose commit reply was lost."""
    circuit, steps = small_circuit("once000000000001")
    writer.start_run(driver, shell_of(circuit))
    writer.write_patches(driver, circuit.run_id, circuit.patches)
    writer.write_layer(driver, circuit.run_id, steps[0])
    create = writer.layer_statements(fresh=True)
    params = {"run_id": circuit.run_id, "model_id": circuit.model_id, "layer": steps[1].layer.name}
    rows = writer.layer_rows(steps[1])
    for key in ("neurons", "child_neurons", "semantic_groups"):
        writer._write_rows(driver, create[key], rows[key], once=f"t/{key}", **params)
    before = graph_size(driver)
    writer._write_rows(
        driver, create["semantic_groups"], rows["semantic_groups"], once="t/semantic_groups", **params
    )
    assert graph_size(driver) == before  # the replayed batch saw its own stamp
    with pytest.raises(ConstraintError):  # a new token really writes: CREATE refuses the same key
        writer._write_rows(driver, create["semantic_groups"], rows["semantic_groups"], once="t/2", **params)


def test_centroids_are_float32_bytes_and_old_list_centroids_still_read(driver):
    circuit, steps = small_circuit("f32c000000000001")
    write_all(driver, circuit, steps)
    sg = circuit.semantic_groups[0]
    stored = driver.execute_query(
        "MATCH (sg:SemanticGroup {sg_id: $id}) RETURN sg.centroid_f32 AS packed, sg.centroid AS old",
        id=sg.sg_id,
    ).records[0]
    assert isinstance(stored["packed"], bytes) and len(stored["packed"]) == 4 * len(sg.centroid)
    assert stored["old"] is None
    driver.execute_query(  # a graph written before schema 2 holds float lists
        "MATCH (g) WHERE g.run_id = $run AND (g:SemanticGroup OR g:NeuronGroup) "
        "SET g.centroid = [x IN range(0, size(g.centroid_f32) / 4 - 1) | 0.5] REMOVE g.centroid_f32",
        run=circuit.run_id,
    )
    loaded = reader.load_circuit(driver, circuit.run_id)
    assert {tuple(set(g.centroid)) for g in loaded.semantic_groups + loaded.neuron_groups} == {(0.5,)}
    assert len(loaded.semantic_groups[0].centroid) == len(sg.centroid)


def test_core_overlap_is_written_on_completion_and_older_runs_are_upgraded(driver):
    """class_similarity reads SHARES_CORE counts; a run stored before them is upgraded by the
    next completion of its model. Expected values come from the circuits, not the graph."""
    import queries
    from graphmodel import upgrade

    def make(run_id, class_index, seed):
        return synthetic_circuit(
            run_id,
            widths=(4, 12, 12),
            k=6,
            tau=3,
            patches=40,
            groups_per_layer=3,
            seed=seed,
            model_id="similarity-model",
            class_index=class_index,
        )

    (a, steps_a), (b, steps_b) = make("simA000000000001", 0, 1), make("simB000000000001", 1, 2)
    write_all(driver, a, steps_a)
    driver.execute_query(  # as a writer before schema 2 left it
        "MATCH (r:Run {run_id: $run}) REMOVE r.core_layers, r.core_sizes WITH r "
        "OPTIONAL MATCH (g:NeuronGroup {run_id: $run}) REMOVE g.members",
        run=a.run_id,
    )
    assert upgrade.upgrade_runs(driver, "other-model") == []
    write_all(driver, b, steps_b)
    [row] = queries.run("class_similarity", driver=driver, model_id="similarity-model")
    core_a = {(e.child_layer, e.child) for e in a.core_edges}
    core_b = {(e.child_layer, e.child) for e in b.core_edges}
    assert (row["core_a"], row["core_b"], row["shared"]) == (len(core_a), len(core_b), len(core_a & core_b))
    assert row["jaccard"] == pytest.approx(len(core_a & core_b) / len(core_a | core_b))
    layer = steps_a[1].layer.name
    [row] = queries.run("class_similarity", driver=driver, model_id="similarity-model", layer=layer)
    in_layer = lambda core: {n for n in core if n[0] == layer}  # noqa: E731
    assert row["shared"] == len(in_layer(core_a) & in_layer(core_b))
    members = driver.execute_query(
        "MATCH (g:NeuronGroup {run_id: $run}) RETURN g.ng_id AS id, g.members AS members", run=a.run_id
    ).records
    assert {r["id"]: r["members"] for r in members} == {g.ng_id: sorted(g.members) for g in a.neuron_groups}


def write_path_statements() -> dict[str, str]:
    """Every Cypher statement the write path runs, by name."""
    from graphmodel import labels, similarity, upgrade

    statements = {f"fresh.{k}": q for k, q in writer.layer_statements(fresh=True).items()}
    statements |= {f"rewrite.{k}": q for k, q in writer.layer_statements(fresh=False).items()}
    for module in (writer, labels, similarity, upgrade):
        for name, value in vars(module).items():
            texts = value if isinstance(value, tuple) else (value,)
            for i, text in enumerate(texts):
                if (
                    name.startswith("_")
                    and isinstance(text, str)
                    and "MATCH" in text
                    and "{make}" not in text
                ):
                    statements[f"{module.__name__}.{name}[{i}]"] = text
    return statements


def test_no_write_path_statement_scans_a_label_or_the_database(driver):
    """Checks, counts, purges and label replacement seek by run_id: their cost must not grow with
    the rest of the database (EXPLAIN plans; the graph holds a few runs by now)."""
    scans = ("AllNodesScan", "NodeByLabelScan", "AllRelationshipsScan", "RelationshipTypeScan")

    def operators(plan):
        yield plan["operatorType"].split("@")[0], plan.get("args", {}).get("Details", "")
        for child in plan.get("children", []):
            yield from operators(child)

    statements = write_path_statements()
    assert len(statements) > 40
    found = {}
    for name, text in statements.items():
        with driver.session() as session:
            plan = session.run("EXPLAIN " + text).consume().plan
        scanned = [f"{op} {detail}" for op, detail in operators(plan) if op.startswith(scans)]
        if scanned:
            found[name] = scanned
    assert found == {}


def test_finished_layers_give_back_the_layer_steps(driver):
    circuit, steps = small_circuit("done000000000001")
    writer.start_run(driver, shell_of(circuit))
    writer.write_patches(driver, circuit.run_id, circuit.patches)
    writer.write_layer(driver, circuit.run_id, steps[0])
    writer.write_layer(driver, circuit.run_id, steps[1])
    assert reader.finished_layers(driver, circuit.run_id) == steps[:2]


def test_layers_out_of_order_and_incomplete_runs_are_refused(driver):
    circuit, steps = small_circuit("order00000000001")
    writer.start_run(driver, shell_of(circuit))
    writer.write_patches(driver, circuit.run_id, circuit.patches)
    with pytest.raises(GraphStoreError, match="out of order"):
        writer.write_layer(driver, circuit.run_id, steps[1])
    writer.write_layer(driver, circuit.run_id, steps[0])
    with pytest.raises(GraphStoreError, match="not stored"):
        writer.complete_run(driver, circuit)
    assert writer.fail_run(driver, circuit.run_id, "boom")
    state = reader.run_status(driver, circuit.run_id)
    assert (state.status, state.error) == ("FAILED", "boom")
    assert writer.start_run(driver, shell_of(circuit)) == "RUNNING"  # a failed run resumes
    state = reader.run_status(driver, circuit.run_id)
    assert (state.status, state.error, state.attempts) == ("RUNNING", None, 2)


def test_a_complete_run_is_never_marked_failed(driver):
    circuit, steps = small_circuit("fail000000000001")
    write_all(driver, circuit, steps)
    assert not writer.fail_run(driver, circuit.run_id, "late error")
    assert reader.run_status(driver, circuit.run_id).status == "COMPLETE"


def test_delete_run_removes_run_scoped_elements_and_keeps_shared_ones(driver):
    first, first_steps = small_circuit("del0000000000001", seed=3)
    second, second_steps = small_circuit("del0000000000002", seed=3)  # same neurons and patches
    write_all(driver, first, first_steps)
    write_all(driver, second, second_steps)
    writer.delete_run(driver, first.run_id)
    leftovers = driver.execute_query(
        "MATCH (n) WHERE n.run_id = $id RETURN count(n) AS n", id=first.run_id
    ).records[0]["n"]
    rels = driver.execute_query(
        "MATCH ()-[r]->() WHERE r.run_id = $id RETURN count(r) AS n", id=first.run_id
    ).records[0]["n"]
    assert (leftovers, rels) == (0, 0)
    assert reader.run_status(driver, first.run_id) is None
    assert reader.load_circuit(driver, second.run_id) == second


def test_connect_names_the_uri_when_neo4j_is_down_or_the_password_wrong(stack):
    (port,) = free_ports(1)
    down_cfg = dataclasses.replace(stack, neo4j_uri=f"bolt://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(GraphStoreError, match=f"cannot reach Neo4j at bolt://127.0.0.1:{port}.*stack up"):
        connect(down_cfg)
    assert time.monotonic() - started < 15
    with pytest.raises(GraphStoreError, match="rejected user 'neo4j'") as wrong:
        connect(dataclasses.replace(stack, neo4j_password="not-the-password"))
    assert stack.neo4j_password not in str(wrong.value)


# -------------------------------------------------------------------------------- patch store


def _pixels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)


def _other_encoding(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def test_local_store_never_overwrites(tmp_path):
    store = LocalPatchStore(tmp_path)
    store.check()
    data = encode_png(_pixels(0))
    uri = store.put("ab" * 16, data)
    assert uri.startswith("file://") and store.get(uri) == data
    assert store.put("ab" * 16, data) == uri
    assert store.put("ab" * 16, _other_encoding(_pixels(0))) == uri  # same pixels, other zlib level
    with pytest.raises(PatchConflictError, match="refusing to overwrite"):
        store.put("ab" * 16, encode_png(_pixels(1)))
    assert store.get(uri) == data
    with pytest.raises(ValueError, match="hex"):
        store.put("../escape", data)


def test_s3_store_uploads_with_checksums_and_never_overwrites(stack):
    store = S3PatchStore.from_config(stack)
    store.check()
    data = encode_png(_pixels(2))
    uris = upload_patches(store, [("cd" * 16, data), ("ef" * 16, encode_png(_pixels(3)))])
    uri = uris["cd" * 16]
    assert uri == f"s3://{stack.s3_bucket}/patches/{'cd' * 16}.png"
    assert store.get(uri) == data
    assert store.put("cd" * 16, data) == uri
    with pytest.raises(PatchConflictError, match="refusing to overwrite"):
        store.put("cd" * 16, encode_png(_pixels(4)))
    assert store.get(uri) == data
    # The server checks Content-MD5: a body that does not match its digest is refused.
    with pytest.raises(ClientError) as bad:
        store.client.put_object(
            Bucket=stack.s3_bucket, Key="patches/bad.png", Body=b"xyz", ContentMD5="AAAAAAAAAAAAAAAAAAAAAA=="
        )
    assert bad.value.response["Error"]["Code"] == "BadDigest"
    # If-None-Match: a blind conditional write onto an existing key is refused by the server too.
    with pytest.raises(ClientError) as exists:
        store.client.put_object(
            Bucket=stack.s3_bucket, Key=f"patches/{'cd' * 16}.png", Body=b"x", IfNoneMatch="*"
        )
    assert exists.value.response["Error"]["Code"] in {"PreconditionFailed", "412"}


def test_presigned_url_serves_the_patch_without_credentials(stack):
    store = S3PatchStore.from_config(stack)
    data = encode_png(_pixels(5))
    uri = store.put("0f" * 16, data)
    url = presigned_url(uri, expires=60, cfg=stack)
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.read() == data
    plain = f"{stack.s3_endpoint}/{stack.s3_bucket}/patches/{'0f' * 16}.png"
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(plain, timeout=5)
    assert denied.value.code == 403
    assert presigned_url("file:///tmp/x.png") == "file:///tmp/x.png"


def test_s3_down_gives_a_clear_error_fast(stack):
    (port,) = free_ports(1)
    endpoint = f"http://127.0.0.1:{port}"
    store = S3PatchStore(endpoint, "bucket", stack.s3_access_key, stack.s3_secret_key)
    started = time.monotonic()
    with pytest.raises(PatchStoreError, match=f"cannot reach S3 at {endpoint}.*neurflow stack up"):
        store.check()
    with pytest.raises(PatchStoreError, match=f"cannot reach S3 at {endpoint}"):
        store.put("12" * 16, b"png")
    assert time.monotonic() - started < 20
    wrong = S3PatchStore(stack.s3_endpoint, "bucket", stack.s3_access_key, "wrong-secret")
    with pytest.raises(PatchStoreError, match="refused the configured credentials") as refused:
        wrong.check()
    assert "wrong-secret" not in str(refused.value)

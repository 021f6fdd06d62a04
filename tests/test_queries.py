"""The canned queries and their runner against a real Neo4j, on two planted classes (bee, ladybug):
4 images each, k=10, tau=4, steps=2 (about 90 s with the stack start).

Both circuits are ingested in-process with small parameters; every expected value is computed
independently from the in-memory circuits, never from the graph.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import pytest

import queries
from graphmodel.patchstore import LocalPatchStore
from queries.runner import QueryError, parse_query

pytestmark = pytest.mark.slow

CLASSES = ("bee", "ladybug")


@pytest.fixture(scope="module")
def circuits(driver, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Class name -> the extracted Circuit, both stored under the same model."""
    import torch

    from ingest.core.circuit import ExtractConfig
    from ingest.core.models import load_model
    from ingest.core.tau import parse_tau
    from ingest.pipeline.ingest_run import run_ingest
    from ingest.planted.data import write_image_folder

    torch.set_num_threads(2)
    model = load_model("planted_cnn", device="cpu")
    cfg = ExtractConfig(layers=model.default_layers, tau=parse_tau("4"), k=10, steps=2)
    store = LocalPatchStore(tmp_path_factory.mktemp("patches"))
    out = {}
    for name in CLASSES:
        images = write_image_folder(tmp_path_factory.mktemp("images") / name, name, 4, seed=1234)
        result = run_ingest(driver, model, images, model.class_names.index(name), cfg, store)
        assert result.status == "COMPLETE" and result.circuit is not None
        out[name] = result.circuit
    return out


def core_weights(circuit) -> dict[tuple[str, int], float]:
    """A run's core neurons (children of its core edges) with the sum of their core-edge weights."""
    weights: dict[tuple[str, int], float] = defaultdict(float)
    for e in circuit.core_edges:
        weights[(e.child_layer, e.child)] += e.weight
    return dict(weights)


def test_list_queries_parses_every_header():
    listed = queries.list_queries()
    assert {"top_paths", "group_detail", "shared_core_neurons", "class_similarity", "neuron_profile"} <= set(
        listed
    )
    for query in listed.values():
        assert query.question and query.params
    top = listed["top_paths"]
    assert top.params["limit"].type == "integer" and top.params["limit"].default == 10
    assert top.params["class_name"].required and not top.params["run_id"].required


def test_an_indented_header_line_continues_a_parameter_description(tmp_path: Path):
    path = tmp_path / "q.cypher"
    path.write_text(
        "// name: q\n// question: Which?\n//   (more question)\n"
        "// param min_score: float = 0.8   lowest score, on its scale:\n"
        "//                                IoU (spatial_iou: about 0.04)\n"
        "// param limit: integer = 5       rows\nRETURN 1\n"
    )
    query = parse_query(path)
    assert query.question == "Which? (more question)" and query.extra == {}
    assert (
        query.params["min_score"].description == "lowest score, on its scale: IoU (spatial_iou: about 0.04)"
    )
    assert query.params["min_score"].default == 0.8 and query.params["limit"].description == "rows"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"class_a": "bee", "class_b": "ladybug"}, "needs parameter 'model_id' (string)"),
        ({"model_id": "m", "class_a": "bee", "class_b": "ladybug", "klass": "x"}, "no parameter 'klass'"),
        ({"model_id": 3, "class_a": "bee", "class_b": "ladybug"}, "'model_id' must be of type string"),
    ],
)
def test_bad_parameters_are_refused_before_the_database(params, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        queries.run("shared_core_neurons", driver=object(), **params)  # never reaches a driver


def test_unknown_query_names_the_available_ones():
    with pytest.raises(ValueError, match=r"unknown query 'nope'.*top_paths"):
        queries.run("nope")


def test_shared_core_neurons_match_the_circuits(driver, circuits):
    bee, ladybug = circuits["bee"], circuits["ladybug"]
    wa, wb = core_weights(bee), core_weights(ladybug)
    rows = queries.run("shared_core_neurons", driver, model_id=bee.model_id, class_a="bee", class_b="ladybug")
    got = {(r["layer"], r["neuron"]): (r["weight_a"], r["weight_b"]) for r in rows}
    assert set(got) == set(wa) & set(wb)
    assert got, "the two planted classes share no core neuron: the comparison would be vacuous"
    for key, (a, b) in got.items():
        assert a == pytest.approx(wa[key]) and b == pytest.approx(wb[key])
    assert {r["run_a"] for r in rows} == {bee.run_id} and {r["run_b"] for r in rows} == {ladybug.run_id}
    layer = rows[0]["layer"]
    only = queries.run(
        "shared_core_neurons", driver, model_id=bee.model_id, class_a="bee", class_b="ladybug", layer=layer
    )
    assert {(r["layer"], r["neuron"]) for r in only} == {k for k in got if k[0] == layer}


def test_class_similarity_is_the_jaccard_of_core_sets(driver, circuits):
    bee, ladybug = circuits["bee"], circuits["ladybug"]
    a, b = set(core_weights(bee)), set(core_weights(ladybug))
    rows = queries.run("class_similarity", driver, model_id=bee.model_id)
    assert len(rows) == 1
    row = rows[0]
    assert (row["class_a"], row["class_b"]) == ("bee", "ladybug")
    assert (row["core_a"], row["core_b"], row["shared"]) == (len(a), len(b), len(a & b))
    assert row["jaccard"] == pytest.approx(len(a & b) / len(a | b))
    assert 0 < row["jaccard"] < 1


def _paths_from(circuit, layer: str) -> list[tuple[list[str], float]]:
    """Every group path from ``layer`` to the class, with the product of its weights, from records."""
    up = defaultdict(list)
    for e in circuit.group_edges:
        up[e.child].append((e.parent, e.weight))
    top = circuit.layers[0].name
    concept = sum(len(n.concept) for n in circuit.neurons_at(top)) or 1
    for g in circuit.neuron_groups:
        if g.layer == top:
            up[g.ng_id].append((f"class:{circuit.class_name}", len(g.patch_ids) / concept))

    def walk(node: str, trail: list[str], strength: float):
        if node.startswith("class:"):
            yield [*trail, node.removeprefix("class:")], strength
            return
        for parent, w in up[node]:
            yield from walk(parent, [*trail, node], strength * w)

    return [p for g in circuit.neuron_groups if g.layer == layer for p in walk(g.ng_id, [], 1.0)]


def test_top_paths_are_the_strongest_products_of_w(driver, circuits):
    bee = circuits["bee"]
    layer = bee.layers[2].name
    expected = sorted(_paths_from(bee, layer), key=lambda p: -abs(p[1]))
    rows = queries.run("top_paths", driver, model_id=bee.model_id, class_name="bee", layer=layer, limit=3)
    assert 0 < len(rows) <= 3 and len(rows) == min(3, len(expected))
    assert rows[0]["groups"][0].startswith(f"{bee.run_id}/{layer}/") and rows[0]["groups"][-1] == "bee"
    assert len(rows[0]["groups"]) == 4  # three group layers and the class
    assert [abs(r["strength"]) for r in rows] == pytest.approx([abs(s) for _, s in expected[:3]])
    strength = 1.0
    for w in rows[0]["weights"]:
        strength *= w
    assert rows[0]["strength"] == pytest.approx(strength)


def test_group_detail_matches_the_group_record(driver, circuits):
    bee = circuits["bee"]
    group = next(g for g in bee.neuron_groups if g.layer == bee.layers[1].name)
    rows = queries.run("group_detail", driver, ng_id=group.ng_id, exemplars=5)
    assert len(rows) == 1
    row = rows[0]
    assert [m["index"] for m in row["members"]] == sorted(set(group.members))
    assert {m["index"] for m in row["members"] if m["core"]} == set(group.core_members)
    assert len(row["exemplar_uris"]) == min(5, len(group.patch_ids))
    assert all(uri.startswith("file://") for uri in row["exemplar_uris"])
    assert {p["to"]: p["weight"] for p in row["parents"]} == pytest.approx(
        {e.parent: e.weight for e in bee.group_edges if e.child == group.ng_id}
    )
    assert {c["from"]: c["weight"] for c in row["children"]} == pytest.approx(
        {e.child: e.weight for e in bee.group_edges if e.parent == group.ng_id}
    )
    assert row["children"] and row["labels"] == []


def test_neuron_profile_lists_the_neuron_in_both_runs(driver, circuits):
    bee, ladybug = circuits["bee"], circuits["ladybug"]
    layer, index = next(iter(sorted(set(core_weights(bee)) & set(core_weights(ladybug)))))
    rows = queries.run("neuron_profile", driver, model_id=bee.model_id, layer=layer, index=index)
    expected = {
        (c.class_name, sg.j, len(sg.patch_ids))
        for c in (bee, ladybug)
        for sg in c.semantic_groups
        if sg.layer == layer and sg.neuron == index
    }
    assert {(r["class_name"], r["j"], r["size"]) for r in rows} == expected
    assert {r["class_name"] for r in rows} == {"bee", "ladybug"}
    assert all(r["neuron_groups"] and 0 < len(r["exemplar_uris"]) <= 4 for r in rows)


def test_a_write_query_is_refused_by_the_read_transaction(driver, circuits, tmp_path: Path):
    evil = tmp_path / "evil.cypher"
    evil.write_text(
        "// name: evil\n// question: can a canned query write?\nCREATE (:Evil {x: 1}) RETURN 1 AS one\n"
    )
    with pytest.raises(QueryError, match="tried to write"):
        queries.run(evil, driver)
    assert driver.execute_query("MATCH (n:Evil) RETURN count(n) AS n").records[0]["n"] == 0


def test_a_query_needing_apoc_that_is_not_loaded_says_so(driver, tmp_path: Path):
    """The stack loads only the APOC functions the canned queries use; any other one (as on a Neo4j
    without APOC) gives one line that names APOC and what to do."""
    other = tmp_path / "other.cypher"
    other.write_text(
        "// name: other\n// question: an APOC function the stack does not load?\n"
        "RETURN apoc.coll.sum([1, 2]) AS s\n"
    )
    loaded = r"needs APOC core, which this Neo4j does not load: Unknown function 'apoc\.coll\.sum'"
    with pytest.raises(QueryError, match=loaded):
        queries.run(other, driver)
    assert queries.run("circuit_graph", driver, run_id="no-such-run") == []


def test_injection_like_values_are_data(driver, circuits):
    model_id = circuits["bee"].model_id
    sneaky = "x' OR 1=1 //"
    assert queries.run("shared_core_neurons", driver, model_id=model_id, class_a=sneaky, class_b="bee") == []
    assert queries.run("group_detail", driver, ng_id=sneaky) == []
    assert queries.run("class_similarity", driver, model_id=sneaky) == []


def test_cli_prints_a_table_and_json(stack, circuits):
    from click.testing import CliRunner

    from ingest.cli import main

    model_id = circuits["bee"].model_id
    args = ["query", "class_similarity", "--param", f"model_id={model_id}"]
    table = CliRunner().invoke(main, args)
    assert table.exit_code == 0, table.output
    assert table.output.splitlines()[0].split()[:3] == ["class_a", "class_b", "core_a"]
    assert "bee" in table.output and "ladybug" in table.output
    as_json = CliRunner().invoke(main, [*args, "--json"])
    assert as_json.exit_code == 0 and json.loads(as_json.output)[0]["class_b"] == "ladybug"
    bad = CliRunner().invoke(main, ["query", "top_paths", "--param", "limit=many"])
    assert bad.exit_code == 2 and "'limit' must be of type integer" in bad.output
    listed = CliRunner().invoke(main, ["query", "--list"])
    assert (
        listed.exit_code == 0 and "top_paths:" in listed.output and "--param limit=<integer>" in listed.output
    )
    assert stack.neo4j_password not in table.output + as_json.output

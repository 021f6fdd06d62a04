"""Issue 4 on the planted-concept benchmark, end to end against real Neo4j: ingest the bee class,
label it from the benchmark's concept bank, ask `feeds_via_concept` for the planted concept (flower),
and audit the class with counterfactual pairs. Every check compares with the benchmark's ground truth
(each patch knows which concepts it shows) or with masking, never with the labels themselves.

The settings are the demo's (40 bee images, Gauss-Legendre with 16 nodes); numbers of one run are in
docs/audit.md.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from ingest.cli import main
from ingest.planted.data import NON_BEE, write_concept_bank, write_counterfactual_pairs, write_image_folder
from queries.runner import run as run_query

EXPECTED = "stripes,wings"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("audit-data")
    negatives = root / "negatives"
    for name in NON_BEE:
        write_image_folder(negatives / name, name, 30, seed=55)
    return {
        "images": write_image_folder(root / "bee", "bee", 40, seed=1234),
        "bank": write_concept_bank(root / "bank", 40, seed=7),
        "pairs": write_counterfactual_pairs(root / "pairs", 80, seed=99),
        "negatives": negatives,
        "held_out": write_image_folder(root / "held_out_bee", "bee", 60, seed=77),
        "patches": root / "patches",
    }


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _ingest_bee(model: str, data: dict[str, Path]) -> str:
    """`neurflow ingest` of the bee images with the demo's settings; returns the run id."""
    out = _invoke(
        "ingest",
        "--model",
        model,
        "--images",
        str(data["images"]),
        "--class",
        "bee",
        "--steps",
        "16",
        "--quadrature",
        "gausslegendre",
        "--local-patches",
        str(data["patches"]),
    )
    return next(
        line.split()[1] for line in out.splitlines() if line.startswith("run ") and "COMPLETE" in line
    )


@pytest.fixture(scope="module")
def bee_run(stack, driver, data) -> dict:
    run_id = _ingest_bee("planted_cnn", data)
    labelled = _invoke("label", "--run", run_id, "--concepts", str(data["bank"]))
    assert re.search(r"concept bank → model: 100%\|.*\| (\d+)/\1 ", labelled), labelled  # progress, total
    model_id = driver.execute_query("MATCH (r:Run {run_id: $id}) RETURN r.model_id AS m", id=run_id)[0][0][
        "m"
    ]
    return {"run_id": run_id, "model_id": model_id, "label_output": labelled}


def _exemplar_truth(driver, ng_id: str) -> list[list[str]]:
    records, _, _ = driver.execute_query(
        "MATCH (:NeuronGroup {ng_id: $id})-[:EXEMPLAR]->(p:Patch) RETURN p.concepts AS concepts", id=ng_id
    )
    return [list(r["concepts"]) for r in records]


def _labels(driver, run_id: str) -> dict[str, list[tuple[str, float, int]]]:
    records, _, _ = driver.execute_query(
        "MATCH (g:NeuronGroup {run_id: $id})-[l:LABELED {method: 'concept_bank'}]->(c:Concept) "
        "RETURN g.ng_id AS g, c.name AS c, l.score AS s, l.rank AS r ORDER BY r",
        id=run_id,
    )
    out: dict[str, list] = {}
    for r in records:
        out.setdefault(r["g"], []).append((r["c"], r["s"], r["r"]))
    return out


def test_flower_pure_groups_are_labelled_flower(driver, bee_run):
    """Groups whose exemplars are flowers by the ground truth carry 'flower' among their top two
    concept-bank labels (contrastive AUC), and every group got labels."""
    labels = _labels(driver, bee_run["run_id"])
    pure = []
    for group_id, group_labels in labels.items():
        truth = _exemplar_truth(driver, group_id)
        if sum("flower" in t for t in truth) >= 0.9 * len(truth):
            pure.append(group_id)
            assert "flower" in [c for c, _s, rank in group_labels if rank <= 2], (group_id, group_labels)
    assert pure, "the benchmark circuit has flower-pure groups (docs/benchmark.md)"
    records, _, _ = driver.execute_query(
        "MATCH (g:NeuronGroup {run_id: $id}) WHERE NOT (g)-[:LABELED]->() RETURN count(g) AS n",
        id=bee_run["run_id"],
    )
    assert records[0]["n"] == 0


def test_feeds_via_concept_finds_flower_groups_feeding_bee(driver, bee_run):
    rows = run_query(
        "feeds_via_concept",
        driver=driver,
        model_id=bee_run["model_id"],
        class_name="bee",
        concept="FLOWER",
    )
    print("\nfeeds_via_concept:", json.dumps(rows[:5], indent=1))
    assert rows, "no path into bee passes a group labelled like flower"
    for row in rows:
        assert row["path"][-1] == "bee" and row["via_group"] in row["path"]
        assert any("flower" in name for name in row["via_labels"])
    assert [r["flow"] for r in rows] == sorted((r["flow"] for r in rows), reverse=True)
    assert all(0 < r["flow"] <= 1 for r in rows)
    truth = _exemplar_truth(driver, rows[0]["group"])
    share = sum("flower" in t for t in truth) / len(truth)
    assert share > 0.5, f"top group {rows[0]['group']}: only {share:.0%} of its exemplars show flowers"


def test_commands_against_the_services_print_json_with_json(stack, bee_run, data, tmp_path):
    """The commands that print results and need Neo4j: `--json` gives one JSON document on stdout
    (progress and notes go to stderr)."""

    def as_json(*args: str):
        result = CliRunner(mix_stderr=False).invoke(main, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output + result.stderr
        return json.loads(result.stdout)

    run_id = bee_run["run_id"]
    again = as_json(
        "ingest", "--model", "planted_cnn", "--images", str(data["images"]), "--class", "bee",
        "--steps", "16", "--quadrature", "gausslegendre", "--local-patches", str(data["patches"]), "--json",
    )  # fmt: skip
    assert again["run_id"] == run_id and again["status"] == "ALREADY_COMPLETE"
    group = f"{run_id}/block4/g0"
    assert (
        as_json("label", "set", "--group", group, "--concept", "json check", "--json")["concept"]
        == "json check"
    )
    assert as_json("label", "remove", "--group", group, "--concept", "json check", "--json")["removed"] == 1
    report = as_json("report", "--run", run_id, "-o", str(tmp_path / "r.html"), "--json")
    assert report["run_id"] == run_id and report["exemplars_drawn"] == report["exemplars_shown"] > 0
    assert report["heatmaps"] > 0  # the run's model is loaded again from what the run recorded
    up = as_json("stack", "up", "--no-guide", "--json")
    assert (
        up["neo4j"]["healthy"] and not up["neo4j"]["started"] and up["neo4j"]["browser"] == stack.browser_url
    )
    assert [r["run_id"] for r in as_json("runs", "--json") if r["run_id"] == run_id] == [run_id]


def test_manual_labels_are_kept_when_the_bank_labeller_runs_again(driver, bee_run, data):
    group = f"{bee_run['run_id']}/block4/g0"
    _invoke("label", "set", "--group", group, "--concept", "Bee Body")
    _invoke("label", "--run", bee_run["run_id"], "--concepts", str(data["bank"]))
    records, _, _ = driver.execute_query(
        "MATCH (:NeuronGroup {ng_id: $g})-[l:LABELED {method: 'manual'}]->(c) RETURN c.name AS c", g=group
    )
    assert [r["c"] for r in records] == ["bee body"]
    _invoke("label", "remove", "--group", group, "--concept", "bee body")
    bad = CliRunner().invoke(main, ["label", "set", "--group", "no/such/g0", "--concept", "x"])
    assert bad.exit_code == 1 and "no neuron group or semantic group" in bad.output


def test_audit_ranks_the_planted_concept_and_masking_removes_the_bias(driver, bee_run, data):
    out = _invoke(
        "audit",
        "--run",
        bee_run["run_id"],
        "--expected",
        EXPECTED,
        "--pairs",
        str(data["pairs"]),
        "--negatives",
        str(data["negatives"]),
        "--class-images",
        str(data["held_out"]),
        "--json",
    )
    findings = json.loads(out[out.index("{") :])["findings"]
    candidates = run_query(
        "bias_candidates",
        driver=driver,
        model_id=bee_run["model_id"],
        class_name="bee",
        expected=["stripes", "wings"],
    )
    print("\nbias_candidates:", json.dumps(candidates, indent=1))
    print(json.dumps([{k: v for k, v in f.items() if k != "groups"} for f in findings], indent=1))
    concepts = [f["concept"] for f in findings]
    assert not {"stripes", "wings"} & set(concepts)
    assert "flower" in concepts[:2], concepts
    flower = findings[concepts.index("flower")]
    drop, random_drop = flower["bias_drop"], flower["random_bias_drop"]
    assert drop > 0 and drop >= 2 * max(random_drop, 0.0), (drop, random_drop)
    assert flower["recall_cost"] < flower["bias_removed"], flower
    records, _, _ = driver.execute_query(
        "MATCH (:Run {run_id: $id})-[:HAS_AUDIT]->(a:AuditResult)-[f:FOUND]->(c:Concept {name: 'flower'}) "
        "MATCH (a)-[t:TESTED {concept: 'flower'}]->(g:NeuronGroup) "
        "RETURN f.rank AS rank, f.best_group AS best, collect(g.ng_id) AS tested",
        id=bee_run["run_id"],
    )
    assert records and records[0]["rank"] == flower["rank"] and flower["best_group"] in records[0]["tested"]


def test_pairs_that_move_nothing_give_no_percentage(bee_run, data, tmp_path):
    """With-concept images identical to the without ones: the shift is zero, and the audit says so in
    one line instead of dividing by it (it once printed "bias removed 642 %")."""
    import shutil

    same = tmp_path / "same"
    shutil.copytree(data["pairs"] / "without", same / "without")
    shutil.copytree(data["pairs"] / "without", same / "with")
    out = _invoke(
        "audit", "--run", bee_run["run_id"], "--expected", EXPECTED, "--pairs", str(same),
        "--class-images", str(data["held_out"]),
    )  # fmt: skip
    assert "mean shift of P(class) +0.0000 (95 % CI +0.0000 to +0.0000, 80 pairs): no measurable shift" in out
    rows = out[out.index("bias rm") :].splitlines()[1:]
    findings = [r for r in rows if r[:1].isdigit()]
    assert findings and all(r.split()[6] == "-" and "%" not in r.split()[6] for r in findings), rows


def test_audit_without_bias_images_is_a_usage_error(bee_run):
    result = CliRunner().invoke(main, ["audit", "--run", bee_run["run_id"], "--expected", EXPECTED])
    assert result.exit_code == 2 and "--pairs" in result.output


def _concepts_used(driver, run_id: str) -> set[str]:
    records, _, _ = driver.execute_query(
        "MATCH (g:NeuronGroup {run_id: $id})-[l:LABELED]->(c:Concept) WHERE l.score >= 0.8 AND l.rank <= 2 "
        "RETURN DISTINCT c.name AS c",
        id=run_id,
    )
    return {r["c"] for r in records}


def test_cross_model_concepts_compares_the_bee_class_under_two_architectures(driver, bee_run, data):
    resnet_run = _ingest_bee("planted_resnet", data)
    _invoke("label", "--run", resnet_run, "--concepts", str(data["bank"]))
    resnet_model = driver.execute_query("MATCH (r:Run {run_id: $id}) RETURN r.model_id AS m", id=resnet_run)[
        0
    ][0]["m"]
    rows = run_query(
        "cross_model_concepts",
        driver=driver,
        class_name="Bee",
        model_a=bee_run["model_id"],
        model_b=resnet_model,
    )
    print("\ncross_model_concepts:", json.dumps(rows, indent=1))
    used_a, used_b = _concepts_used(driver, bee_run["run_id"]), _concepts_used(driver, resnet_run)
    expected = {c: "both" if c in used_a and c in used_b else None for c in used_a | used_b}
    for c in expected:
        if expected[c] is None:
            expected[c] = f"only {bee_run['model_id']}" if c in used_a else f"only {resnet_model}"
    assert {r["concept"]: r["used_by"] for r in rows} == expected
    if "flower" in used_a and "flower" in used_b:
        flower = next(r for r in rows if r["concept"] == "flower")
        assert flower["used_by"] == "both" and flower["influence_a"] > 0 and flower["influence_b"] > 0
    assert "flower" in used_a, "the CNN's bee circuit has flower-labelled groups (see the labelling test)"


def test_the_vit_audit_ranks_the_planted_flower_in_the_top_two_and_compares_with_the_cnn(
    driver, bee_run, data
):
    """The planted ViT through the whole method: ingest (tokens), label, the audit (masking residual
    dimensions at encoder blocks), and cross_model_concepts against the CNN. docs/benchmark.md has
    its numbers. A finding, printed and not asserted away: flower comes second only through a tie
    with dots (one group at encoder_layer_0), and masking that group raises P(bee) on the
    with-flower images instead of lowering it; with 20 images instead of 40 flower is no candidate."""
    vit_run = _ingest_bee("planted_vit", data)  # the CNN's settings: 40 images, 16 Gauss-Legendre nodes
    _invoke("label", "--run", vit_run, "--concepts", str(data["bank"]))
    out = _invoke(
        "audit", "--run", vit_run, "--expected", EXPECTED, "--pairs", str(data["pairs"]),
        "--negatives", str(data["negatives"]), "--class-images", str(data["held_out"]), "--json",
    )  # fmt: skip
    audit = json.loads(out[out.index("{") :])
    findings = audit["findings"]
    print(json.dumps([{k: v for k, v in f.items() if k != "groups"} for f in findings], indent=1))
    assert audit["pair_shift"]["measurable"]
    assert "flower" in [f["concept"] for f in findings][:2], findings
    vit_model = driver.execute_query(
        "MATCH (r:Run {run_id: $id}) RETURN r.model_id AS m", id=vit_run
    ).records[0]["m"]
    rows = run_query(
        "cross_model_concepts",
        driver=driver,
        class_name="bee",
        model_a=bee_run["model_id"],
        model_b=vit_model,
    )
    print("\ncross_model_concepts CNN vs ViT:", json.dumps(rows, indent=1))
    flower = next(r for r in rows if r["concept"] == "flower")
    assert flower["used_by"] == "both" and flower["influence_b"] > 0


def test_evaluate_stores_the_checks_on_the_run(driver, bee_run, tmp_path):
    out = _invoke(
        "evaluate",
        "--run",
        bee_run["run_id"],
        "--checks",
        "optimality",
        "--random-sets",
        "5",
        "--max-targets",
        "1",
        "--out",
        str(tmp_path),
    )
    records, _, _ = driver.execute_query(
        "MATCH (r:Run {run_id: $id}) RETURN r.evaluation_json AS e, r.eval_optimality_random_better AS b",
        id=bee_run["run_id"],
    )
    stored = json.loads(records[0]["e"])
    assert set(stored["optimality"]) == {"fc", "block4", "block3", "block2"}
    assert records[0]["b"] == max(v["random_better"] for v in stored["optimality"].values())
    assert "eval_optimality_random_better" in out

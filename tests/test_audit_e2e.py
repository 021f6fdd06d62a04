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


def _pair_sets(root: Path) -> Path:
    """One pair set per concept the generator can switch (flower: the planted bias; leaf: none) and
    their conjunction, 80 pairs each, as `neurflow planted-data pairs` writes them."""
    for concept in ("flower", "leaf", "flower+leaf"):
        write_counterfactual_pairs(root / concept, 80, seed=99, concept=concept)
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("audit-data")
    negatives = root / "negatives"
    for name in NON_BEE:
        write_image_folder(negatives / name, name, 30, seed=55)
    return {
        "images": write_image_folder(root / "bee", "bee", 40, seed=1234),
        "bank": write_concept_bank(root / "bank", 40, seed=7, class_name="bee"),  # in-class, as documented
        "mixed_bank": write_concept_bank(root / "mixed_bank", 20, seed=7),  # every class's scenes
        "pairs": _pair_sets(root / "pairs"),
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


def _top_labels(driver, run_id: str, method: str) -> dict[str, str]:
    records, _, _ = driver.execute_query(
        "MATCH (g:NeuronGroup {run_id: $id})-[l:LABELED {method: $m, rank: 1}]->(c:Concept) "
        "RETURN g.ng_id AS g, c.name AS c",
        id=run_id,
        m=method,
    )
    return {r["g"]: r["c"] for r in records}


def dominant_groups(driver, run_id: str, share: float = 0.9) -> dict[str, dict[str, float]]:
    """Groups whose exemplars are at least `share` one concept by the ground truth: ng_id -> the
    shares of every concept at or above it."""
    records, _, _ = driver.execute_query("MATCH (g:NeuronGroup {run_id: $id}) RETURN g.ng_id AS g", id=run_id)
    out = {}
    for r in records:
        truth = _exemplar_truth(driver, r["g"])
        shares = {c: sum(c in t for t in truth) / len(truth) for c in {c for t in truth for c in t}}
        if max(shares.values(), default=0.0) >= share:
            # every concept at or above `share` (several can be: a small group's few exemplars may all
            # show the same scene), then the next one for context
            ranked = sorted(shares.items(), key=lambda kv: (-kv[1], kv[0]))
            keep = sum(v >= share for _c, v in ranked) + 1
            out[r["g"]] = dict(ranked[:keep])
    return out


def label_accuracy(driver, run_id: str) -> tuple[list[tuple[str, dict, str, str]], int]:
    """(every dominant group with its shares, its image-level and its spatial top label), and how many
    have a dominant concept as the top label of the image-level (matched/paired) or the spatial
    labeller."""
    bank, spatial = _top_labels(driver, run_id, "concept_bank"), _top_labels(driver, run_id, "spatial_iou")
    rows, right = [], 0
    for g, shares in dominant_groups(driver, run_id).items():
        dominant = {c for c, v in shares.items() if v >= 0.9}
        rows.append((g, shares, bank.get(g, "-"), spatial.get(g, "-")))
        right += bank.get(g) in dominant or spatial.get(g) in dominant
    return rows, right


def test_top_labels_name_the_dominant_concept(driver, bee_run):
    """Every group whose exemplars are at least 90 % one concept by the ground truth has it as its top
    label, from the matched/paired image-level labeller or the spatial (IoU) one; the accuracy is
    printed (docs/labelling.md has it). One known exception, kept visible rather than excluded: the
    bee logit (fc/g0), whose exemplars are wings 90 % and stripes 88 %, is labelled stripes by both,
    and its class activation map lands on the stripes. Everywhere else, two dominant concepts that
    close are not found on this circuit, so the test fails on any other miss."""
    rows, right = label_accuracy(driver, bee_run["run_id"])
    print(f"\ntop-label accuracy on groups with a >= 90 % concept: {right}/{len(rows)}")
    for g, shares, bank, spatial in rows:
        print(f"  {g.split('/', 1)[1]:<12} {shares}  image-level: {bank}  spatial: {spatial}")
    assert any(g.endswith(("block2/g1", "block3/g1")) for g, *_ in rows), "flower-pure groups exist"
    misses = [
        (g, shares, bank, spatial)
        for g, shares, bank, spatial in rows
        if bank not in {c for c, v in shares.items() if v >= 0.9}
        and spatial not in {c for c, v in shares.items() if v >= 0.9}
    ]
    assert all(g.endswith("/fc/g0") for g, *_ in misses), misses
    records, _, _ = driver.execute_query(
        "MATCH (g:NeuronGroup {run_id: $id}) WHERE NOT (g)-[:LABELED]->() RETURN count(g) AS n",
        id=bee_run["run_id"],
    )
    assert records[0]["n"] == 0


def test_labels_carry_their_evidence_ranked_by_effect(driver, bee_run):
    """Each label says what it compared (paired for flower and leaf, matched elsewhere), how many
    exemplars, its effect and a 95 % interval; a group's labels are ranked by effect. The in-class bee
    bank holds only what bee scenes show, so no label names dots or shell."""
    records, _, _ = driver.execute_query(
        "MATCH (g:NeuronGroup {run_id: $id})-[l:LABELED {method: 'concept_bank'}]->(c:Concept) "
        "RETURN g.ng_id AS g, c.name AS c, l.details_json AS d, l.score AS s, l.rank AS r ORDER BY g, r",
        id=bee_run["run_id"],
    )
    seen, effects = {}, {}
    for r in records:
        d = json.loads(r["d"])
        seen[r["c"]] = d["evidence"]
        effects.setdefault(r["g"], []).append(d["effect"])
        low, high = d["ci95"]
        assert low <= r["s"] <= high and d["positives"] >= 5 and d["negatives"] >= 5, d
        assert r["s"] >= 0.5, r
    assert seen["flower"] == "paired" and seen["stripes"] == "matched", seen
    assert not {"dots", "shell"} & set(seen), seen
    assert all(e == sorted(e, reverse=True) for e in effects.values()), effects
    assert "bank context" not in bee_run["label_output"], bee_run["label_output"]


def test_the_bank_check_warns_about_a_mixed_bank_and_writes_nothing(driver, bee_run, data):
    """`label --check-only` with a bank of every class's scenes: it says the bank is not in-class, and
    that dots' positives are shell crops while its negatives are not (with numbers); no label changes."""
    before = driver.execute_query(
        "MATCH (:NeuronGroup {run_id: $id})-[l:LABELED]->(c) RETURN count(l) AS n, collect(c.name) AS c",
        id=bee_run["run_id"],
    ).records[0]
    result = CliRunner().invoke(
        main, ["label", "--run", bee_run["run_id"], "--concepts", str(data["mixed_bank"]), "--check-only"]
    )
    out = result.output
    assert result.exit_code == 0, out
    assert "bank context: this bank is drawn from every class's scenes, the run explains 'bee'" in out, out
    assert re.search(
        r"bank check: 'dots' positives and negatives differ in shell \(\d+% of positives", out
    ), out
    assert "nothing labelled (--check-only)" in out
    after = driver.execute_query(
        "MATCH (:NeuronGroup {run_id: $id})-[l:LABELED]->(c) RETURN count(l) AS n, collect(c.name) AS c",
        id=bee_run["run_id"],
    ).records[0]
    assert (after["n"], sorted(after["c"])) == (before["n"], sorted(before["c"]))


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
    # The query returns the flower-pure groups; the one with the most flow is the bee group of block4
    # (47 % flower exemplars): its paired flower score is 0.82 at rank 2, because adding a flower to a
    # scene raises it, which is the planted bias (masking it removes 55 % of the flower's shift).
    shares = {}
    for row in rows:
        truth = _exemplar_truth(driver, row["group"])
        shares[row["group"]] = sum("flower" in t for t in truth) / len(truth)
    print("flower share of each returned group's exemplars:", shares)
    assert sum(v >= 0.9 for v in shares.values()) >= 2, shares


def test_feeds_via_concept_on_spatial_labels(driver, bee_run):
    """With method = spatial_iou the label score is an IoU (0.07-0.09 for the flower groups), so the
    default min_score (0.8) keeps no label; with min_score 0 and max_rank 1 the query returns paths
    through the groups whose fired region overlaps flowers most, every one flower-pure by ground truth."""
    ask = {"model_id": bee_run["model_id"], "class_name": "bee", "concept": "flower", "method": "spatial_iou"}
    assert run_query("feeds_via_concept", driver=driver, **ask) == []
    rows = run_query("feeds_via_concept", driver=driver, min_score=0.0, max_rank=1, **ask)
    via = {row["via_group"] for row in rows}
    assert via and all(row["via_labels"] == ["flower"] for row in rows), rows[:3]
    for group in via:
        truth = _exemplar_truth(driver, group)
        assert sum("flower" in t for t in truth) / len(truth) >= 0.9, (group, truth)


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
    """The causal-first audit: the pair sets are ranked by the shift of P(bee) they cause; flower
    comes first with an interval above zero, leaf moves nothing, and flower+leaf adds nothing beyond
    its parts. The group it names lowers P(bee) on the with-flower images at least twice as much as
    random groups of its size and costs less recall than the share of the shift it removes."""
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
    audit = json.loads(out[out.index("{") :])
    findings = audit["findings"]
    print(json.dumps([{k: v for k, v in f.items() if k != "groups"} for f in findings], indent=1))
    concepts = [f["concept"] for f in findings]
    assert concepts[0] == "flower", concepts
    flower = findings[0]
    assert flower["measurable"] and flower["shift"]["low"] > 0, flower["shift"]
    leaf = findings[concepts.index("leaf")]
    assert not leaf["measurable"] and leaf["groups"] == [] and leaf["bias_removed"] is None
    both = findings[concepts.index("flower+leaf")]
    assert both["interaction"] is not None and not both["measurable"], both
    drop, random_drop = flower["bias_drop"], flower["random_bias_drop"]
    assert drop > 0 and drop >= 2 * max(random_drop, 0.0), (drop, random_drop)
    assert flower["recall_cost"] < flower["bias_removed"], flower
    records, _, _ = driver.execute_query(
        "MATCH (:Run {run_id: $id})-[:HAS_AUDIT]->(a:AuditResult)-[f:FOUND]->(c:Concept {name: 'flower'}) "
        "MATCH (a)-[t:TESTED {concept: 'flower'}]->(g:NeuronGroup) "
        "RETURN f.entry AS entry, f.rank AS rank, f.best_group AS best, f.measurable AS m, "
        "a.caption AS caption, collect(g.ng_id) AS tested ORDER BY rank",
        id=bee_run["run_id"],
    )
    # flower is reached by two entries: itself (rank 1) and the conjunction flower+leaf (rank 3)
    assert [(r["entry"], r["rank"], r["m"]) for r in records] == [
        ("flower", 1, True),
        ("flower+leaf", 3, False),
    ]
    assert flower["best_group"] in records[0]["tested"] and records[0]["caption"] == "audit: flower"


def test_pairs_that_move_nothing_give_no_percentage(bee_run, data, tmp_path):
    """With-concept images identical to the without ones: the shift is zero, and the audit says so in
    one line instead of dividing by it (it once printed "bias removed 642 %"); no group is masked."""
    import shutil

    same = tmp_path / "flower"
    shutil.copytree(data["pairs"] / "flower" / "without", same / "without")
    shutil.copytree(data["pairs"] / "flower" / "without", same / "with")
    out = _invoke(
        "audit", "--run", bee_run["run_id"], "--expected", EXPECTED, "--pairs", str(same),
        "--class-images", str(data["held_out"]),
    )  # fmt: skip
    assert re.search(
        r"^1\s+flower\s+\+0\.0000 \(\+0\.0000 to \+0\.0000\)\s+80\s+no measurable shift$", out, re.M
    ), out
    assert "no group is masked" in out and "groups behind" not in out and "%" not in out.split("verdict")[1]


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


def test_the_vit_audit_ranks_the_planted_flower_first_and_compares_with_the_cnn(driver, bee_run, data):
    """The planted ViT through the whole method: ingest (tokens), label, the causal audit (masking
    residual dimensions at encoder blocks), and cross_model_concepts against the CNN. docs/benchmark.md
    has its numbers. Flower's pairs shift P(bee) under the ViT too, so it ranks first; what masking
    its groups does is printed, not asserted (under the label-first audit, masking the group it named
    raised P(bee) on the with-flower images)."""
    vit_run = _ingest_bee("planted_vit", data)  # the CNN's settings: 40 images, 16 Gauss-Legendre nodes
    _invoke("label", "--run", vit_run, "--concepts", str(data["bank"]))
    out = _invoke(
        "audit", "--run", vit_run, "--expected", EXPECTED, "--pairs", str(data["pairs"]),
        "--negatives", str(data["negatives"]), "--class-images", str(data["held_out"]), "--json",
    )  # fmt: skip
    audit = json.loads(out[out.index("{") :])
    findings = audit["findings"]
    print(json.dumps([{k: v for k, v in f.items() if k != "groups"} for f in findings], indent=1))
    assert findings[0]["concept"] == "flower" and findings[0]["measurable"], findings
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

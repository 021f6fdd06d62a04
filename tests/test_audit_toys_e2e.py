"""Issue 11 on the second planted world (toys, `ingest/planted/toys.py`), end to end against real Neo4j:
the method was developed on the insect world and is tested here without changes. The kite class leans
on sun and cloud *together* (either alone moves P(kite) by about 0.01); the CNN has layers of mixed
widths (block3 is 32 wide, so τ = 16 takes half of it). docs/audit.md and docs/labelling.md have the
numbers of one run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingest.planted.toys import BIAS_CLASS, BIAS_CONCEPTS, CLASS_PARTS, CONTROL_CONCEPT, DISTRACTOR
from ingest.planted.toys_data import write_concept_bank, write_counterfactual_pairs, write_image_folder
from tests.test_audit_e2e import _invoke, label_accuracy

EXPECTED = ",".join(CLASS_PARTS[BIAS_CLASS])
CONJUNCTION = "+".join(BIAS_CONCEPTS)


@pytest.fixture(scope="module")
def toys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("toys-data")
    pairs = root / "pairs"
    for concepts in [(c,) for c in BIAS_CONCEPTS] + [BIAS_CONCEPTS, (CONTROL_CONCEPT,), ("fence",)]:
        write_counterfactual_pairs(pairs / "+".join(concepts), 80, seed=99, concepts=concepts)
    return {
        "images": write_image_folder(root / BIAS_CLASS, BIAS_CLASS, 40, seed=1234),
        "held_out": write_image_folder(root / "held_out", BIAS_CLASS, 60, seed=77),
        "bank": write_concept_bank(root / "bank", 40, seed=7, class_name=BIAS_CLASS),  # in-class
        "pairs": pairs,
        "patches": root / "patches",
    }


@pytest.fixture(scope="module")
def kite_run(stack, driver, toys) -> dict:
    out = _invoke(
        "ingest", "--model", "planted_toys_cnn", "--images", str(toys["images"]), "--class", BIAS_CLASS,
        "--steps", "16", "--quadrature", "gausslegendre", "--local-patches", str(toys["patches"]),
    )  # fmt: skip
    run_id = next(
        line.split()[1] for line in out.splitlines() if line.startswith("run ") and "COMPLETE" in line
    )
    labelled = _invoke("label", "--run", run_id, "--concepts", str(toys["bank"]))
    return {"run_id": run_id, "ingest_output": out, "label_output": labelled}


def test_the_narrow_layer_is_flagged(kite_run):
    assert "keeps 50% of block3's 32 neurons" in kite_run["ingest_output"], kite_run["ingest_output"]


def test_the_audit_ranks_the_conjunction_first_and_masking_its_group_removes_it(driver, kite_run, toys):
    """sun+cloud first by its interaction (CI above zero), each part alone no measurable shift, the
    distractor (absent from every kite) never above it; the named group lowers P(kite) on the
    with-sun-and-cloud images at least twice as much as random groups of its size and costs less
    recall than the share of the shift it removes."""
    out = _invoke(
        "audit", "--run", kite_run["run_id"], "--expected", EXPECTED, "--pairs", str(toys["pairs"]),
        "--class-images", str(toys["held_out"]), "--json",
    )  # fmt: skip
    findings = json.loads(out[out.index("{") :])["findings"]
    print(json.dumps([{k: v for k, v in f.items() if k != "groups"} for f in findings], indent=1))
    names = [f["concept"] for f in findings]
    assert names[0] == CONJUNCTION, names
    top = findings[0]
    assert top["measurable"] and top["interaction"]["low"] > 0, top["interaction"]
    for part in BIAS_CONCEPTS:
        assert not findings[names.index(part)]["measurable"], findings[names.index(part)]
    assert DISTRACTOR not in names[: names.index(CONJUNCTION) + 1]
    drop, random_drop = top["bias_drop"], top["random_bias_drop"]
    assert drop > 0 and drop >= 2 * max(random_drop, 0.0), (drop, random_drop)
    assert top["recall_cost"] < top["bias_removed"], top
    records, _, _ = driver.execute_query(
        "MATCH (:Run {run_id: $id})-[:HAS_AUDIT]->(a)-[f:FOUND {entry: $entry}]->(c:Concept) "
        "RETURN collect(c.name) AS concepts, min(f.rank) AS rank, a.caption AS caption",
        id=kite_run["run_id"],
        entry=CONJUNCTION,
    )
    assert sorted(records[0]["concepts"]) == sorted(BIAS_CONCEPTS) and records[0]["rank"] == 1
    assert records[0]["caption"] == f"audit: {CONJUNCTION}"


def test_top_label_accuracy_on_the_toys_world(driver, kite_run):
    """The acceptance asks that every group whose exemplars are at least 90 % one concept has it as its
    top label. On this run it holds for 3 of the 4 such groups (in-class bank, effect ranking; 2 of 4
    with the mixed bank and the score ranking). The miss is block3/g4, whose exemplars are 97 % snow and
    26 of 29 (0.897) fence: it is labelled fence. docs/labelling.md has the table and two more
    draws (6/6 and 5/7). The test prints every group and guards the measured level so a regression shows; it
    does not claim the acceptance point."""
    rows, right = label_accuracy(driver, kite_run["run_id"])
    print(f"\ntoys world: top-label accuracy on groups with a >= 90 % concept: {right}/{len(rows)}")
    for g, shares, bank, spatial in rows:
        print(f"  {g.split('/', 1)[1]:<12} {shares}  image-level: {bank}  spatial: {spatial}")
    assert rows and right >= 3, rows

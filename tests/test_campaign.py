"""Campaigns: the spec and the pool (fast), then end to end against real Neo4j and a real local Ray
(2 CPUs): both benchmark models x 4 classes equal 8 sequential `neurflow ingest` runs; a Ray worker
and the campaign driver killed with `kill -9` mid-job; two overlapping campaigns at once.

Graphs are compared by the property-level export of tests/test_ingest_e2e.py, without the Campaign
nodes and their INCLUDES links (which sequential ingests do not make).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from ingest.pipeline.campaign_spec import CampaignSpecError, load_spec
from ingest.pipeline.image_pool import PoolError, csv_classes, folder_classes, select_classes
from tests.services import cli_env
from tests.test_ingest_e2e import export

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["bee", "ladybug", "butterfly", "snail"]
SPEC = """
name = "{name}"
classes = {classes}
retries = 2

[pool]
folder = "{pool}"

[extract]
tau = "3"
k = 8
steps = 2
quadrature = "gausslegendre"
max_images = 2
device = "cpu"
local_patches = "{patches}"
{models}
"""
BOTH = '\n[[models]]\nmodel = "planted_cnn"\n\n[[models]]\nmodel = "planted_resnet"\n'
CNN = '\n[[models]]\nmodel = "planted_cnn"\n'


def write_spec(folder: Path, name: str, pool: Path, patches: Path, *, classes='"all"', models=BOTH) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(SPEC.format(name=name, classes=classes, pool=pool, patches=patches, models=models))
    return path


# ---------------------------------------------------------------------------- spec and pool


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[pool]\nfolder = "."\n', "at least one [[models]]"),
        ('[[models]]\nmodel = "planted_cnn"\n', "a [pool] table"),
        ('engine = "spark"\n[pool]\nfolder = "."\n[[models]]\nmodel = "x"\n', "engine = 'spark'"),
        ('[pool]\nfolder = "."\n[extract]\ntau = "inf"\n[[models]]\nmodel = "x"\n', "not a finite number"),
        ('[pool]\nfolder = "."\n[extract]\nk = 0\n[[models]]\nmodel = "x"\n', "k = 0 is out of range"),
        (
            '[pool]\nfolder = "."\n[extract]\nsteps = "many"\n[[models]]\nmodel = "x"\n',
            "must be a whole number",
        ),
        ('[pool]\nfolder = "."\n[extrct]\n[[models]]\nmodel = "x"\n', "did you mean 'extract'"),
        ('[pool]\nfolder = "nowhere"\n[[models]]\nmodel = "x"\n', "does not exist"),
        ('[pool]\nfolder = "."\n[[models]]\nmodel = "x"\nwieghts = "a"\n', "did you mean 'weights'"),
        ("[pool\n", "not valid TOML"),
        (
            '[pool]\nfolder = "."\n[[models]]\nmodel = "x"\n[after.audit]\nnegatives = "."\n',
            "without pairs needs labels",
        ),
        (
            '[pool]\nfolder = "."\n[[models]]\nmodel = "x"\n[after.label]\nconcepts = "."\nrank_by = "x"\n',
            "rank_by = 'x'; choose one of effect, score",
        ),
        (
            '[pool]\nfolder = "."\n[[models]]\nmodel = "x"\n[after.label]\nconcepts = "."\nspatial = "yes"\n',
            "spatial = 'yes' must be true or false",
        ),
    ],
)
def test_a_bad_spec_is_one_clear_error(text, says, tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text(text)
    with pytest.raises(CampaignSpecError) as failed:
        load_spec(path)
    assert says in str(failed.value)


def test_an_audit_with_pairs_needs_no_labels(tmp_path):
    """The causal audit ranks concepts by their pairs; labels are only shown beside it."""
    path = tmp_path / "spec.toml"
    path.write_text('[pool]\nfolder = "."\n[[models]]\nmodel = "x"\n[after.audit]\npairs = "."\n')
    spec = load_spec(path)
    assert spec.audit is not None and spec.audit.pairs and spec.label is None


def test_the_campaign_id_follows_what_is_computed_not_how(tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    one = load_spec(write_spec(tmp_path, "one", pool, tmp_path / "p"))
    path = write_spec(tmp_path, "two", pool, tmp_path / "p")
    path.write_text(path.read_text().replace("retries = 2", 'retries = 0\nengine = "ray"'))
    assert load_spec(path).campaign_id == one.campaign_id
    path.write_text(path.read_text().replace("k = 8", "k = 9"))
    assert load_spec(path).campaign_id != one.campaign_id


def test_pool_layouts_and_class_selection(tmp_path):
    names = ["bee", "ladybug", "butterfly", "snail"]
    for layout, folders in (
        ("names", ["Bee", "snail"]),
        ("indices", ["0", "3"]),
        ("sorted", ["a", "b", "c", "d"]),
    ):
        root = tmp_path / layout
        for folder in folders:
            (root / folder).mkdir(parents=True)
            (root / folder / "x.png").write_bytes(b"")
        classes, how = folder_classes(root, names, 4)
        assert how == layout and sorted(classes) == ([0, 3] if layout != "sorted" else [0, 1, 2, 3])
    with pytest.raises(PoolError, match="neither the model's class names nor indices"):
        folder_classes(tmp_path / "names", None, 4)  # no class names known, and not all 4 classes
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        (flat / name).write_bytes(b"")
    (flat / "labels.csv").write_text("file,class\na.png,bee\nb.png,3\nc.png,bee\n")
    classes = csv_classes(flat, flat / "labels.csv", names, 4)
    assert {i: [p.name for p in c.files] for i, c in classes.items()} == {0: ["a.png", "c.png"], 3: ["b.png"]}
    (flat / "labels.csv").write_text("a.png,wasp\n")
    with pytest.raises(PoolError, match="'wasp' is neither"):
        csv_classes(flat, flat / "labels.csv", names, 4)
    available = folder_classes(tmp_path / "sorted", names, 4)[0]
    assert select_classes(available, "all", names) == [0, 1, 2, 3]
    assert select_classes(available, "0-1,3", names) == [0, 1, 3]
    assert select_classes(available, ["snail", "bee"], names) == [0, 3]
    with pytest.raises(PoolError, match="'wasp' is not in the image pool"):
        select_classes(available, ["wasp"], names)


# ------------------------------------------------------------------------ end to end (Neo4j, Ray)


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    from ingest.planted.data import write_image_folder

    root = tmp_path_factory.mktemp("pool") / "pool"
    for name in CLASSES:
        write_image_folder(root / name, name, 3, seed=7)
    return root


@pytest.fixture(scope="module")
def env(stack, tmp_path_factory) -> dict[str, str]:
    return cli_env(stack, tmp_path_factory.mktemp("campaign-state"), threads=1)


@pytest.fixture(scope="module")
def patches(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("patches")


def clear(driver) -> None:
    driver.execute_query("MATCH (n) DETACH DELETE n")


def without_campaigns(driver) -> tuple[list, list]:
    nodes, edges = export(driver)
    nodes = [n for n in nodes if "Campaign" not in n[0]]
    edges = [e for e in edges if e[1] != "INCLUDES"]
    return nodes, edges


def campaign(spec: Path, env: dict, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", "from ingest.cli import main; main()", "campaign", "run", str(spec), *extra],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def finish(process: subprocess.Popen, timeout: float = 600) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output
    return output


def runs(driver) -> dict[str, str]:
    records, _, _ = driver.execute_query("MATCH (r:Run) RETURN r.run_id AS id, r.status AS status")
    return {r["id"]: r["status"] for r in records}


def wait_for_a_running_layer(driver, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records, _, _ = driver.execute_query(
            "MATCH (r:Run {status: 'RUNNING'}) WHERE size(r.layers_done) > 0 AND r.lease_pid IS NOT NULL "
            "RETURN r.run_id AS id, r.lease_pid AS pid LIMIT 1"
        )
        if records:
            return records[0].data()
        time.sleep(0.1)
    raise AssertionError("no job was seen mid-run")


@pytest.fixture(scope="module")
def reference(driver, pool, env, patches) -> tuple[list, list]:
    """The graph of 8 sequential `neurflow ingest` runs (in-process CLI), one per model and class.

    With one torch thread, as each Ray task (one CPU) has: the sums of the integrated gradients
    depend on the thread count in float32's last digits (about 1e-7 relative), and the export
    compares every property exactly."""
    import torch

    from ingest.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    clear(driver)
    args = ["--k", "8", "--tau", "3", "--steps", "2", "--quadrature", "gausslegendre", "--max-images", "2"]
    for model in ("planted_cnn", "planted_resnet"):
        for name in CLASSES:
            result = CliRunner().invoke(
                main,
                ["ingest", "--model", model, "--class", name, "--images", str(pool / name), *args,
                 "--device", "cpu", "--local-patches", str(patches)],
                env={k: v for k, v in env.items() if k.startswith("NEURFLOW_")},
                catch_exceptions=False,
            )  # fmt: skip
            assert result.exit_code == 0, result.output
    torch.set_num_threads(threads)
    graph = without_campaigns(driver)
    assert len(runs(driver)) == 8
    return graph


def test_a_ray_campaign_equals_sequential_ingests(driver, pool, env, patches, reference, tmp_path):
    spec = write_spec(tmp_path, "both", pool, patches)
    clear(driver)
    output = finish(campaign(spec, env, "--engine", "ray", "--workers", "2"))
    assert "8 complete, 0 failed" in output
    assert set(runs(driver).values()) == {"COMPLETE"} and len(runs(driver)) == 8
    assert without_campaigns(driver) == reference
    status = subprocess.run(
        [sys.executable, "-c", "from ingest.cli import main; main()", "campaign", "status", str(spec)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "8 complete, 0 failed, 0 running, 0 pending of 8 jobs" in status.stdout, (
        status.stdout + status.stderr
    )
    from queries.runner import run

    similar = run("class_similarity", driver, model_id="planted_cnn-1c57741cb22d")
    assert len(similar) == 6  # every pair of the campaign's 4 classes
    hubs = run("hub_concepts", driver, model_id="planted_cnn-1c57741cb22d", min_classes=2)
    assert hubs and all(row["n_classes"] >= 2 and len(row["classes"]) == row["n_classes"] for row in hubs)


def test_a_ray_worker_killed_mid_job_is_retried(driver, pool, env, patches, reference, tmp_path):
    spec = write_spec(tmp_path, "both", pool, patches)
    clear(driver)
    process = campaign(spec, env, "--engine", "ray", "--workers", "2")
    victim = wait_for_a_running_layer(driver)
    os.kill(int(victim["pid"]), signal.SIGKILL)  # the Ray worker holding that run
    output = finish(process)
    assert "8 complete, 0 failed" in output
    assert set(runs(driver).values()) == {"COMPLETE"}
    assert without_campaigns(driver) == reference


def test_a_killed_driver_is_resumed_by_running_the_campaign_again(
    driver, pool, env, patches, reference, tmp_path
):
    spec = write_spec(tmp_path, "both", pool, patches)
    clear(driver)
    process = campaign(spec, env, "--engine", "ray", "--workers", "2")
    wait_for_a_running_layer(driver)
    process.kill()
    process.wait(timeout=30)
    time.sleep(3)  # Ray stops the dead driver's workers
    output = finish(campaign(spec, env, "--engine", "ray", "--workers", "2"))
    assert "8 complete, 0 failed, 0 running, 0 pending" in output
    assert set(runs(driver).values()) == {"COMPLETE"}
    assert without_campaigns(driver) == reference


def test_overlapping_campaigns_at_once_leave_one_copy_of_everything(driver, pool, env, patches, tmp_path):
    clear(driver)
    first = write_spec(tmp_path, "first", pool, patches, classes='"0-2"', models=CNN)
    second = write_spec(tmp_path, "second", pool, patches, classes='"1-3"', models=CNN)
    a, b = campaign(first, env), campaign(second, env)
    finish(a)
    finish(b)
    assert sorted(runs(driver).values()) == ["COMPLETE"] * 4
    records, _, _ = driver.execute_query("MATCH (r:Run) RETURN collect(r.attempts) AS attempts")
    assert records[0]["attempts"] == [1, 1, 1, 1]  # nobody purged or redid another's layers
    duplicates, _, _ = driver.execute_query(
        "MATCH (a)-[r]->(b) WITH a, b, type(r) AS t, r.run_id AS run, properties(r) AS p, count(*) AS n "
        "WHERE n > 1 RETURN count(*) AS dup"
    )
    assert duplicates[0]["dup"] == 0
    records, _, _ = driver.execute_query(
        "MATCH (c:Campaign)-[i:INCLUDES]->(r:Run) RETURN c.name AS c, count(r) AS n"
    )
    assert {r["c"]: r["n"] for r in records} == {"first": 3, "second": 3}


def test_label_and_audit_steps_run_after_each_class_once(driver, pool, env, patches, tmp_path):
    """[after.label] and [after.audit]: the class's run gets concept-bank labels from its own in-class
    bank (`banks/{class}`: no dots or shell, which bee scenes never show) and an AuditResult; running
    the campaign again adds neither again."""
    from graphmodel.audits import read_audits
    from graphmodel.labels import read_labels
    from ingest.planted.data import write_concept_bank, write_counterfactual_pairs

    write_concept_bank(tmp_path / "banks" / "bee", 6, seed=3, class_name="bee")
    pairs = write_counterfactual_pairs(tmp_path / "pairs", 6, seed=3, concept="flower")
    spec = write_spec(tmp_path, "steps", pool, patches, classes='["bee"]', models=CNN)
    spec.write_text(
        spec.read_text()
        + '\n[after.label]\nconcepts = "banks/{class}"\n\n[after.audit]\nexpected = ["stripes", "wings"]\n'
        f'pairs = "{pairs}"\nrandom_sets = 3\n'
    )
    clear(driver)
    finish(campaign(spec, env))
    (run_id,) = runs(driver)
    labels = read_labels(driver, run_id)
    named = {lab.concept for labs in labels.values() for lab in labs if lab.method == "concept_bank"}
    assert named and not named & {"dots", "shell"}, named
    # the bank has masks, so the step also stores spatial labels, as `neurflow label` does
    assert any(lab.method == "spatial_iou" for labs in labels.values() for lab in labs)
    assert len(read_audits(driver, run_id)) == 1
    finish(campaign(spec, env))
    assert len(read_audits(driver, run_id)) == 1

    def stored() -> set[tuple]:
        return {
            (g, x.concept, x.method, x.rank, x.score)
            for g, xs in read_labels(driver, run_id).items()
            for x in xs
        }

    assert stored() == {(g, x.concept, x.method, x.rank, x.score) for g, xs in labels.items() for x in xs}


def test_a_class_without_its_bank_stops_the_campaign_before_it_runs(pool, patches, tmp_path):
    """`banks/{class}` with a bank for bee only: planning bee and ladybug is one line naming ladybug."""
    from ingest.cli import main
    from ingest.planted.data import write_concept_bank

    write_concept_bank(tmp_path / "banks" / "bee", 5, seed=3, class_name="bee")
    spec = write_spec(tmp_path, "banks", pool, patches, classes='["bee", "ladybug"]', models=CNN)
    spec.write_text(spec.read_text() + '\n[after.label]\nconcepts = "banks/{class}"\n')
    result = CliRunner().invoke(main, ["campaign", "plan", str(spec)])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "no bank folder for ladybug;" in result.output and "--class <class>" in result.output
    spec.write_text(spec.read_text().replace("banks/{class}", "nowhere/{class}"))
    result = CliRunner().invoke(main, ["campaign", "plan", str(spec)])
    assert result.exit_code == 1 and "the folder above {class} in concepts" in result.output, result.output


def test_an_unreachable_ray_address_is_one_line(driver, pool, env, patches, tmp_path):
    from tests.services import free_ports

    spec = write_spec(tmp_path, "nowhere", pool, patches, models=CNN)
    (port,) = free_ports(1)
    done = subprocess.run(
        [sys.executable, "-c", "from ingest.cli import main; main()", "campaign", "run", str(spec),
         "--engine", "ray", "--address", f"127.0.0.1:{port}"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in done.stderr

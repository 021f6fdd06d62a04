"""The fault matrix of docs/reliability.md: every bad input gets one clear line and a non-zero exit,
and nothing half-written is left behind or marked complete.

Each test names the item of the matrix it covers. The command line runs in-process (CliRunner with
catch_exceptions=False, so a traceback fails the test) or, where a process must be signalled or two
must race, in subprocesses against one real Neo4j (the module's stack).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ingest.cli import main
from tests.services import cli_env

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--k", "10", "--tau", "4", "--steps", "2", "--quadrature", "gausslegendre", "--device", "cpu"]
PLANTED = ["--model", "planted_cnn", "--class", "bee", *SMALL]


def cli(*args, env: dict | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, env=env)
    return result.exit_code, result.output


def one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, output
    assert "Traceback" not in output, output
    return lines[0]


@pytest.fixture(scope="module")
def bee_images(tmp_path_factory) -> Path:
    from ingest.planted.data import write_image_folder

    return write_image_folder(tmp_path_factory.mktemp("bee") / "bee", "bee", 4, seed=1234)


@pytest.fixture(scope="module")
def planted_out(tmp_path_factory, bee_images) -> Path:
    """A finished small extraction (circuit.json, patches/, purity.tsv)."""
    out = tmp_path_factory.mktemp("extracted") / "out"
    code, output = cli("extract", "--images", bee_images, "--out", out, *PLANTED)
    assert code == 0, output
    return out


@contextlib.contextmanager
def tmpfs(path: Path, size: str, *options: str):
    """A small tmpfs at `path` (skips the test when it cannot be mounted: not root, or no mount)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    opts = ",".join([f"size={size}", *options])
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path, leave: int = 2048) -> None:
    """Fill the file system of `folder` until about `leave` bytes are free."""
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    with open(folder / "filler", "wb") as handle, contextlib.suppress(OSError):
        handle.write(b"\0" * max(0, free - leave))


# ------------------------------------------------------------------------- 1. NaN never lands

FAULTY_MODELS = '''
import torch
from torch import nn


class NanBlock(nn.Module):
    """A conv whose channels 8..15 are NaN; the head reads only channels 0..7, so logits stay finite."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 16, 3, padding=1)
        mask = torch.zeros(1, 16, 1, 1)
        mask[:, 8:] = float("nan")
        self.register_buffer("mask", mask)

    def forward(self, x):
        return self.conv(x) + self.mask


class Tiny(nn.Module):
    def __init__(self, num_classes=3, all_nan=False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.block = NanBlock()
        self.fc = nn.Linear(8, num_classes)
        self.all_nan = all_nan

    def forward(self, x):
        x = self.block(self.relu(self.conv1(x)))
        x = x[:, :8].mean((2, 3))
        if self.all_nan:
            x = x * float("nan")
        return self.fc(x)


def partly_nan(num_classes=3):
    return Tiny(num_classes)


def all_nan(num_classes=3):
    return Tiny(num_classes, all_nan=True)
'''


@pytest.fixture(scope="module")
def faulty_models(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("faulty")
    (folder / "nf_faulty_models.py").write_text(FAULTY_MODELS)
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))


def predicted_class(spec: str, images: Path) -> int:
    from ingest.core.models import load_model
    from ingest.core.patches import list_images, load_images, to_model_input

    model = load_model(spec)
    x = to_model_input(load_images(list_images(images), model.input_size), model.mean, model.std)
    import torch

    with torch.no_grad():
        return int(torch.bincount(model.module(x).argmax(1)).argmax())


def test_nan_activations_stop_extract_naming_the_layer_and_neurons(faulty_models, bee_images, tmp_path):
    """Item 1: non-finite activations end the run with the layer and neurons named; no circuit.json."""
    spec = "nf_faulty_models:partly_nan"
    cls = predicted_class(spec, bee_images)
    code, output = cli(
        "extract", "--model", spec, "--layers", "fc,block,conv1", "--class", cls, "--images", bee_images,
        "--out", tmp_path / "out", *SMALL,
    )  # fmt: skip
    line = one_error_line(output)
    assert code == 1
    assert "layer block" in line and "not finite" in line and "8, 9, 10" in line, line
    assert not (tmp_path / "out" / "circuit.json").exists()


def test_an_all_nan_model_is_refused_before_any_clustering(faulty_models, bee_images, tmp_path):
    code, output = cli(
        "extract", "--model", "nf_faulty_models:all_nan", "--layers", "fc,block,conv1", "--class", "0",
        "--images", bee_images, "--out", tmp_path / "out", *SMALL,
    )  # fmt: skip
    assert code == 1 and "output is not finite" in one_error_line(output)


def test_a_circuit_with_nan_is_never_written_as_json(planted_out, tmp_path):
    from graphmodel.records import Circuit, CircuitFileError

    circuit = Circuit.load(planted_out / "circuit.json")
    circuit.neurons[0].activations[0] = float("nan")
    with pytest.raises(CircuitFileError, match="NaN"):
        circuit.save(tmp_path / "circuit.json")
    assert not (tmp_path / "circuit.json").exists()


# ------------------------------------------------------------------------ 2. atomic outputs


def test_a_full_disk_leaves_the_earlier_result_whole(bee_images, planted_out, tmp_path):
    """Item 2: extract over an existing result on a full disk keeps the valid circuit.json."""
    with tmpfs(tmp_path / "disk", "32m") as disk:
        out = disk / "out"
        code, output = cli("extract", "--images", bee_images, "--out", out, *PLANTED)
        assert code == 0, output
        before = (out / "circuit.json").read_bytes()
        (out / "purity.tsv").unlink()  # the re-run must write something, onto a full disk
        fill(disk, leave=1024)
        code, output = cli("extract", "--images", bee_images, "--out", out, *PLANTED)
        assert code == 1 and "cannot write the results" in one_error_line(output)
        assert (out / "circuit.json").read_bytes() == before
        json.loads(before)


def test_out_holding_another_run_is_refused_before_any_layer(bee_images, planted_out, tmp_path):
    out = tmp_path / "other"
    out.mkdir()
    (out / "circuit.json").write_bytes((planted_out / "circuit.json").read_bytes())
    before = sorted(p.name for p in out.rglob("*"))
    code, output = cli("extract", "--images", bee_images, "--out", out, *PLANTED, "--k", "9")
    line = one_error_line(output)
    assert code == 1 and "holds the results of another run" in line
    assert "neurons" not in output  # no layer was computed or summarised
    assert sorted(p.name for p in out.rglob("*")) == before
    stale = tmp_path / "stale"
    (stale / "patches").mkdir(parents=True)
    (stale / "patches" / "x.png").write_bytes(b"png")
    code, output = cli("extract", "--images", bee_images, "--out", stale, *PLANTED)
    assert code == 1 and "without its circuit.json" in one_error_line(output)


def test_a_read_only_out_is_found_before_the_model_loads(bee_images, tmp_path):
    target = tmp_path / "ro"
    if os.geteuid() == 0:
        context = tmpfs(target, "1m", "ro")
    else:
        target.mkdir()
        target.chmod(0o500)
        context = contextlib.nullcontext(target)
    with context:
        started = time.perf_counter()
        code, output = cli("extract", "--images", bee_images, "--out", target / "out", *PLANTED)
        assert code == 2 and "cannot write to the output folder" in one_error_line(output)
        assert "model planted_cnn" not in output and time.perf_counter() - started < 10


# ----------------------------------------------------------------------- 3. numbers checked


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--k", "-5", "at least 1"),
        ("--k", "0", "at least 1"),
        ("--steps", "0", "between 1 and 10000"),
        ("--tau", "inf", "not a finite number"),
        ("--memory-mb", "0", "at least 64"),
        ("--max-images", "-1", "at least 0"),
        ("--seed", "-1", "between 0"),
    ],
)
def test_numeric_options_are_checked_when_parsed(option, value, says, bee_images, tmp_path):
    """Item 3: a bad number is refused at parse time (exit 2), before the (unknown) model loads."""
    code, output = cli(
        "extract", "--model", "no_such_model", "--class", "0", "--images", bee_images, "--out", tmp_path,
        option, value,
    )  # fmt: skip
    line = one_error_line(output)
    assert code == 2 and option in line and says in line, line


def test_tau_wider_than_a_layer_is_refused_before_the_integrated_gradients(bee_images, tmp_path):
    args = ["extract", "--images", bee_images, "--out", tmp_path / "out", *PLANTED[:4], *SMALL]
    code, output = cli(*args, "--tau", "1000")
    line = one_error_line(output)
    assert code == 1 and "--tau 1000 is larger than layer" in line and "neurons" in line


# ------------------------------------------------------------- 4. one line, not a traceback


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b'{"run_id": "abc", "model', "cut short"),
        (b"", "empty"),
        (b"{}", "not a complete circuit.json"),
        (b"[]", "JSON list"),
        (bytes(range(256)) * 4, "binary"),
        (b'{"schema_version": 99, "run_id": "x"}', "schema version 99"),
    ],
)
def test_show_explains_a_broken_circuit_json(content, says, tmp_path):
    path = tmp_path / "circuit.json"
    path.write_bytes(content)
    code, output = cli("show", path)
    assert code == 1 and says in one_error_line(output)


@pytest.mark.parametrize(
    ("toml", "mode", "says"),
    [
        ('neo4j_password = "a-long-password"\n', 0o644, "chmod 600"),
        ("neo4j_uri = [unclosed\n", 0o600, "cannot read the config file"),
        ("browser_port = [1, 2]\n", 0o600, "must be a string or a number"),
        ('neo4j_url = "bolt://127.0.0.1:7999"\n', 0o600, "did you mean 'neo4j_uri'"),
        (None, 0o600, "does not exist"),
    ],
)
def test_config_problems_under_query_are_one_line(toml, mode, says, tmp_path):
    """Items 4 and 5: every config problem is one line, and an unknown key is refused."""
    path = tmp_path / "config.toml"
    if toml is not None:
        path.write_text(toml)
        path.chmod(mode)
    env = {"NEURFLOW_CONFIG": str(path), "NEURFLOW_STATE_DIR": str(tmp_path / "state")}
    env.update({k: None for k in os.environ if k.startswith("NEURFLOW_") and k not in env})
    code, output = cli("query", "class_similarity", "-p", "model_id=x", env=env)
    assert code == 1 and says in one_error_line(output)


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("bolt://127.0.0.1:abc", "invalid port"),
        ("bolt://127.0.0.1:99999", "invalid port"),
        ("bolt://", "no host"),
        ("http://127.0.0.1:7687", "scheme 'http'"),
    ],
)
def test_malformed_bolt_uris_are_refused_before_connecting(uri, says, tmp_path):
    env = {"NEURFLOW_NEO4J_URI": uri, "NEURFLOW_STATE_DIR": str(tmp_path / "state"), "NEURFLOW_CONFIG": None}
    code, output = cli("query", "class_similarity", "-p", "model_id=x", env=env)
    assert code == 1 and says in one_error_line(output)


def test_an_integer_parameter_beyond_64_bits_is_a_usage_error():
    code, output = cli("query", "top_paths", "-p", "model_id=m", "-p", "class_name=bee", "-p", "layer=x",
                       "-p", "limit=99999999999999999999")  # fmt: skip
    assert code == 2 and "does not fit a 64-bit integer" in one_error_line(output)


def test_a_decompression_bomb_is_refused(tmp_path):
    folder = tmp_path / "bomb"
    folder.mkdir()
    Image.new("1", (15000, 15000)).save(folder / "huge.png")
    code, output = cli("extract", "--images", folder, "--out", tmp_path / "out", *PLANTED)
    assert code == 1 and "too large to decode safely" in one_error_line(output)


def test_a_full_local_patch_store_is_a_clear_error(tmp_path):
    from graphmodel.patchstore import LocalPatchStore, PatchStoreError

    with tmpfs(tmp_path / "patches", "1m") as disk:
        store = LocalPatchStore(disk)
        store.check()
        fill(disk, leave=0)
        with pytest.raises(PatchStoreError, match="the disk is full"):
            store.put("ab" * 32, os.urandom(64 * 1024))


# ------------------------------------------------------------------------- 9. quiet results


def test_a_top_layer_that_is_not_the_output_is_refused(bee_images, tmp_path):
    code, output = cli("extract", "--images", bee_images, "--out", tmp_path / "o", *PLANTED, "--layers",
                       "block4,block3")  # fmt: skip
    assert code == 1 and "is not the model's output" in one_error_line(output)


def test_a_16_bit_grey_png_keeps_its_tones(tmp_path):
    from ingest.core.patches import load_rgb

    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    rgb = load_rgb(tmp_path / "grey16.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (64, 64, 3)
    assert rgb.min() == 0 and rgb.max() == 255 and 120 < rgb.mean() < 135  # not all white


def test_report_counts_only_the_exemplar_images_it_can_draw(planted_out, tmp_path):
    out = tmp_path / "copy"
    out.mkdir()
    (out / "circuit.json").write_bytes((planted_out / "circuit.json").read_bytes())
    (out / "patches").mkdir()
    pngs = sorted((planted_out / "patches").glob("*.png"))
    for i, png in enumerate(pngs):
        (out / "patches" / png.name).write_bytes(b"not a png" if i % 2 else png.read_bytes())
    code, output = cli("report", "--circuit", out / "circuit.json", "-o", tmp_path / "r.html")
    assert code == 0, output
    line = next(x for x in output.splitlines() if x.startswith("wrote"))
    drawn, shown = (int(v) for v in line.split(" exemplar images")[0].split()[-3::2])
    assert drawn < shown and "missing, drawn as grey boxes" in line, line


# ------------------------------------------------------------------------- 10. preprocessing

TINY_MODEL = """
from torch import nn


def tiny(num_classes=3):
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, num_classes))
"""


def test_default_preprocessing_is_said_and_names_the_sidecar(tmp_path, monkeypatch, bee_images):
    import torch

    (tmp_path / "nf_tiny_model.py").write_text(TINY_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    import nf_tiny_model

    torch.manual_seed(0)
    torch.save(nf_tiny_model.tiny().state_dict(), tmp_path / "tiny.pt")
    args = ["extract", "--model", "nf_tiny_model:tiny", "--weights", tmp_path / "tiny.pt", "--class", "0"]
    _, output = cli(*args, "--images", bee_images, "--out", tmp_path / "o", "--tau", "2")
    note = next((x for x in output.splitlines() if x.startswith("note: preprocessing")), "")
    assert "ImageNet mean" in note and str(tmp_path / "tiny.json") in note, output
    (tmp_path / "tiny.json").write_text(json.dumps({"mean": [0.5] * 3, "std": [0.25] * 3}))
    _, output = cli(*args, "--images", bee_images, "--out", tmp_path / "o2", "--tau", "2")
    assert "note: preprocessing" not in output


# ------------------------------------------------------------- with Neo4j: the run lifecycle


@pytest.fixture(scope="module")
def env(stack, tmp_path_factory) -> dict[str, str]:
    return cli_env(stack, tmp_path_factory.mktemp("cli-state"), threads=1)


def ingest_command(images: Path, *extra: str) -> list[str]:
    command = [sys.executable, "-c", "from ingest.cli import main; main()", "ingest", "--images", str(images)]
    return [*command, *PLANTED, *extra]


def ingest_process(images: Path, env: dict, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        ingest_command(images, *extra), env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip


def wait_for(driver, predicate, timeout: float = 120.0):
    """Poll the runs until `predicate(list of RunRow)` gives something truthy."""
    from graphmodel.reader import list_runs

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate(list_runs(driver))
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError("timed out waiting for the graph")


def running_with_layers(rows):
    return next((r for r in rows if r.state.status == "RUNNING" and r.state.layers_done), None)


def test_nan_activations_never_reach_the_graph(faulty_models, bee_images, driver, env):
    """Item 1 against Neo4j: the run is FAILED naming the layer, with no circuit relationships."""
    from graphmodel.reader import list_runs

    spec = "nf_faulty_models:partly_nan"
    cls = predicted_class(spec, bee_images)
    local = {**env, "PYTHONPATH": f"{faulty_models}{os.pathsep}{ROOT}"}
    done = subprocess.run(
        [sys.executable, "-c", "from ingest.cli import main; main()", "ingest", "--images", str(bee_images),
         "--model", spec, "--layers", "fc,block,conv1", "--class", str(cls), *SMALL],
        env=local, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "layer block" in done.stderr and "not finite" in done.stderr
    runs = [r for r in list_runs(driver) if r.model_id and r.model_id.startswith("nf_faulty_models")]
    assert runs and all(r.state.status == "FAILED" for r in runs)
    assert "layer block" in runs[0].state.error
    records, _, _ = driver.execute_query(
        "MATCH ()-[c {run_id: $id}]->() WHERE c.weight IS NOT NULL AND isNaN(c.weight) RETURN count(c) AS n",
        id=runs[0].state.run_id,
    )
    assert records[0]["n"] == 0


def test_sigterm_marks_the_run_failed_and_kill_shows_it_dead(bee_images, driver, env, tmp_path):
    """Item 6: SIGTERM -> FAILED "terminated" with how to resume; kill -9 -> `runs` says dead."""
    process = ingest_process(bee_images, env, "--max-images", "3", "--steps", "32")
    wait_for(driver, running_with_layers)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, output
    assert "run the same command again to resume" in output and "Traceback" not in output
    code, listing = cli("runs", "--json", env={k: env[k] for k in env if k.startswith("NEURFLOW_")})
    runs = json.loads(listing)
    terminated = [r for r in runs if r["status"] == "FAILED" and "terminated" in (r["error"] or "")]
    assert terminated, runs

    process = ingest_process(bee_images, env, "--max-images", "2", "--steps", "32")
    wait_for(driver, running_with_layers)
    process.kill()
    process.wait(timeout=30)
    code, listing = cli("runs", env={k: env[k] for k in env if k.startswith("NEURFLOW_")})
    assert code == 0 and "RUNNING (dead" in listing, listing
    resumed = subprocess.run(ingest_command(bee_images, "--max-images", "2", "--steps", "32"), env=env,
                             cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0 and "resumed below" in resumed.stdout, resumed.stdout + resumed.stderr


def test_two_identical_ingests_at_once_leave_one_complete_run(bee_images, driver, env):
    """Item 7: the second process exits with a clear message while the first holds the run."""
    from graphmodel.reader import run_status

    slow = ("--max-images", "1", "--steps", "96")
    first = ingest_process(bee_images, env, *slow)
    row = wait_for(driver, lambda rows: next((r for r in rows if r.state.status == "RUNNING"), None))
    second = subprocess.run(
        ingest_command(bee_images, *slow), env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    output, _ = first.communicate(timeout=300)
    assert first.returncode == 0, output
    assert second.returncode == 1, second.stdout + second.stderr
    assert "being ingested by another process" in second.stderr and "Traceback" not in second.stderr
    state = run_status(driver, row.state.run_id)
    assert state.status == "COMPLETE" and state.error is None and state.attempts == 1


def test_a_resumed_run_moves_every_patch_to_its_new_store(bee_images, driver, stack, tmp_path):
    """Item 9: after a resume with another patch store, no Patch.uri points at the old one."""
    from graphmodel.patchstore import LocalPatchStore
    from graphmodel.reader import run_status
    from ingest.core.circuit import ExtractConfig
    from ingest.core.models import load_model
    from ingest.core.tau import parse_tau
    from ingest.pipeline.ingest_run import run_ingest

    model = load_model("planted_cnn")
    cfg = ExtractConfig(layers=model.default_layers, tau=parse_tau("3"), k=8, steps=2,
                        quadrature="gausslegendre", max_images=2)  # fmt: skip
    old, new = LocalPatchStore(tmp_path / "old"), LocalPatchStore(tmp_path / "new")

    def stop_after_first_layer(line: str) -> None:
        if "rows written" in line:
            raise KeyboardInterrupt

    bee = model.class_names.index("bee")
    with pytest.raises(KeyboardInterrupt):
        run_ingest(driver, model, bee_images, bee, cfg, old, echo=stop_after_first_layer)
    result = run_ingest(driver, model, bee_images, bee, cfg, new)
    assert result.layers_resumed and run_status(driver, result.run_id).status == "COMPLETE"
    records, _, _ = driver.execute_query(
        "MATCH (:SemanticGroup {run_id: $id})-[:EXEMPLAR]->(p:Patch) RETURN DISTINCT p.uri AS uri",
        id=result.run_id,
    )
    uris = [r["uri"] for r in records]
    assert uris and all(u.startswith(new.root.as_uri()) for u in uris), uris[:3]


def test_an_unknown_run_points_to_neurflow_runs(env):
    code, output = cli("audit", "--run", "nope", "--negatives", ROOT / "tests",
                       env={k: env[k] for k in env if k.startswith("NEURFLOW_")})  # fmt: skip
    assert code == 1 and "`neurflow runs` lists the runs" in one_error_line(output)


# ---------------------------------------------------------------------- 8. a full disk at Neo4j


def test_a_neo4j_disk_full_error_says_what_to_do():
    from neo4j.exceptions import Neo4jError

    from ingest.pipeline.ingest_run import describe_failure

    error = Neo4jError._hydrate_neo4j(
        code="Neo.DatabaseError.Transaction.TransactionCommitFailed",
        message="Could not apply the transaction: No space left on device",
    )
    text = describe_failure(error, "bolt://127.0.0.1:7687")
    assert "disk is full" in text and "neurflow stack up" in text and "resume" in text


def test_disk_full_is_detected(tmp_path):
    from graphmodel.stack.services import disk_full_problem

    with tmpfs(tmp_path / "data", "2m") as disk:
        assert disk_full_problem(disk, min_free=1024) is None
        fill(disk, leave=0)
        assert "is full" in disk_full_problem(disk, min_free=1024)


def test_stack_up_restarts_an_unhealthy_neo4j_it_owns(stack):
    """Item 8: a Neo4j that stopped answering is restarted by `up`, not waited on for 180 s."""
    from graphmodel.stack import up
    from graphmodel.stack.services import _pid

    pid = _pid(stack, "neo4j")
    os.kill(pid, signal.SIGSTOP)  # alive but answering nothing, like a database after a panic
    try:
        started = time.monotonic()
        report = up(stack, s3=False, guide=False, timeout=180)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    assert report["neo4j"]["started"] and report["neo4j"]["pid"] != pid
    assert time.monotonic() - started < 170

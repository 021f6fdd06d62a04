"""The multimodal-LLM labeller (ingest/labelling/mllm.py, `neurflow label mllm`).

These tests exercise OUR client, prompts, parsing, walk and graph writes, not a model: the endpoint is
a fixed-answer OpenAI-compatible server on a free loopback port (`FakeMllm`). It checks the shape of
every request (the model name, a system message with the paper's role description, user content of
text parts with the paper's App. G wording and image_url parts whose PNG data URLs decode to images,
the Authorization header carrying the key from the environment) and refuses a malformed one with
HTTP 400; it answers with texts that name each group of images by a hash of their first image's
pixels, so the tests can tell which patches were sent for which group.

Parsing and error paths need no services. The end-to-end tests put a small synthetic circuit into a
real Neo4j (the `driver` fixture, one local stack per module) with its patch images in the real S3
server and, for half of them, a local directory, run the CLI command, and check the LABELED labels
and FORMS explanations that land in the graph against values computed from the circuit's records.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from graphmodel.explanations import GroupInput, read_explanations
from graphmodel.labels import read_labels
from ingest.labelling import mllm
from tests.services import free_ports

KEY = "sk-test-7f3a9c1e5b"
MODEL = "vision-test-1"
ROLE = "Act as an Image Captioning Language Model."
MAIN_WORDING = (
    "Analyze a set of similar images to identify common features.",
    "Outliers exist in the images, you could ignore them if they are not relevant to the common theme.",
    "These features can range from simple elements like edges and colors to complex patterns such as a "
    "specific object in a particular setting.",
)
CAPTION_WORDING = ("- Common features: a list of features", "- Caption: your caption in one or two sentences")
FORMATION_WORDING = (
    "There are many different groups of images, make sure you get the number of groups right.",
    "match the features in Group 1 with some simple combination of the features in Group 2, ..., N",
    'instead, you can say "There is no matches".',
    "Caption: one or two sentences capturing the common features and their evolution",
)


# ------------------------------------------------------------------------------ the fake endpoint


def pixel_token(png: bytes) -> str:
    """What the fake endpoint calls a group: a hash of the pixels of its first image."""
    with Image.open(io.BytesIO(png)) as image:
        return hashlib.sha256(np.asarray(image.convert("RGB")).tobytes()).hexdigest()[:8]


def caption_text(token: str) -> str:
    return (
        f"# Answer form:\n- Common features: texture {token}, edges\n- Caption: Texture {token} with edges."
    )


def formation_text(tokens: list[str]) -> str:
    lines = [f"**Group {i} Common Features:** texture {t}" for i, t in enumerate(tokens, start=1)]
    lines += ["", "**Feature Evolution:**"]
    for i, t in enumerate(tokens[1:], start=2):
        last = i == len(tokens) and len(tokens) > 2
        evolution = (
            "There is no matches" if last else f"has texture {t} - match texture {tokens[0]} in Group 1"
        )
        lines.append(f"- Group {i}: {evolution}")
    lines += ["", f"**Caption:** Textures {' and '.join(tokens[1:])} form texture {tokens[0]}."]
    return "\n".join(lines)


class FakeMllm:
    """An OpenAI-compatible /v1/chat/completions on 127.0.0.1 that checks requests, answers fixed text."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                status, body, headers = fake.answer(self.path, dict(self.headers), self.rfile.read(length))
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address) -> None:  # a client that timed out and left
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def reset(self) -> None:
        with self.lock:
            self.requests: list[dict] = []  # every checked request: kind and the tokens of its groups
            self.problems: list[str] = []
            self.script: list[tuple[int, object, dict]] = []  # served first, one per request
            self.delay = 0.0

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, path: str, headers: dict, raw: bytes) -> tuple[int, object, dict]:
        import time

        time.sleep(self.delay)
        with self.lock:
            if self.script:
                return self.script.pop(0)
        if path != "/v1/chat/completions":
            return 404, {"error": {"message": f"no route {path}"}}, {}
        if headers.get("Authorization") != f"Bearer {KEY}":
            return 401, {"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}, {}
        try:
            kind, groups = self.check(json.loads(raw))
        except AssertionError as exc:
            with self.lock:
                self.problems.append(str(exc))
            return 400, {"error": {"message": f"bad request: {exc}"}}, {}
        tokens = [pixel_token(images[0]) for images in groups]
        with self.lock:
            self.requests.append({"kind": kind, "tokens": tokens, "sizes": [len(g) for g in groups]})
        text = caption_text(tokens[0]) if kind == "caption" else formation_text(tokens)
        return (
            200,
            {"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]},
            {},
        )

    @staticmethod
    def check(body: dict) -> tuple[str, list[list[bytes]]]:
        """The request's kind and its groups of PNG images; AssertionError says what is wrong."""
        assert body.get("model") == MODEL, f"model {body.get('model')!r}"
        messages = body["messages"]
        assert [m["role"] for m in messages] == ["system", "user"], "roles"
        assert messages[0]["content"] == ROLE, "role description"
        parts = messages[1]["content"]
        assert isinstance(parts, list) and {p["type"] for p in parts} == {"text", "image_url"}, "parts"
        text = "\n".join(p["text"] for p in parts if p["type"] == "text")
        assert all(w in text for w in MAIN_WORDING), "main prompt wording"
        kind = "formation" if "Feature Evolution:" in text else "caption"
        wording = FORMATION_WORDING if kind == "formation" else CAPTION_WORDING
        assert all(w in text for w in wording), f"{kind} answer-form wording"
        groups: list[list[bytes]] = [[]]
        for part in parts[1:]:
            if part["type"] == "text" and part["text"].startswith("Group ") and kind == "formation":
                if groups[-1]:
                    groups.append([])
                continue
            if part["type"] == "image_url":
                url = part["image_url"]["url"]
                assert url.startswith("data:image/png;base64,"), "image URL is not a PNG data URL"
                png = base64.b64decode(url.split(",", 1)[1], validate=True)
                with Image.open(io.BytesIO(png)) as image:
                    assert image.format == "PNG" and image.size[0] > 0, "not a PNG image"
                groups[-1].append(png)
        assert all(groups), "a group without images"
        if kind == "formation":
            n = len(groups)
            assert n >= 2 and f"There are {n} groups of images" in text, f"{n} groups announced wrongly"
        else:
            assert len(groups) == 1
        return kind, groups


@pytest.fixture(scope="module")
def fake():
    server = FakeMllm()
    yield server
    server.close()


@pytest.fixture
def endpoint(fake, monkeypatch):
    fake.reset()
    monkeypatch.setenv(mllm.KEY_ENV, KEY)
    yield fake
    assert not fake.problems, fake.problems


def client(url: str, **options) -> tuple[mllm.MllmClient, list[float]]:
    slept: list[float] = []
    options = {"backoff": 0.5, **options}
    return mllm.MllmClient(mllm.MllmConfig(url, MODEL, **options), sleep=slept.append), slept


def png(color: tuple[int, int, int], size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), color, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    ("text", "caption", "features"),
    [
        (
            "# Answer form:\n- Common features: yellow stripes, black body, wings\n"
            "- Caption: Yellow and black stripes on a fuzzy body.",
            "Yellow and black stripes on a fuzzy body.",
            ["yellow stripes", "black body", "wings"],
        ),
        (
            "**Common Features:**\n1. yellow stripes\n2. fuzzy texture\n\n"
            "**Caption:** Yellow *striped* bodies.\n\nLet me know if you need anything else.",
            "Yellow striped bodies.",
            ["yellow stripes", "fuzzy texture"],
        ),
        (
            "### Caption\n\nRound red shapes with black dots.\n\n### Common features\n- red\n- black dots",
            "Round red shapes with black dots.",
            ["red", "black dots"],
        ),
        (
            "Step 1: the images show... Caption: draft\nCommon features: a\nCaption: draft one.\n\n"
            "# Answer form:\nCommon features: curved edges; blue\nCaption: Blue curved edges.",
            "Blue curved edges.",
            ["curved edges", "blue"],
        ),
        (
            '```json\n{"common_features": ["grid", "white"], "caption": "A white grid."}\n```',
            "A white grid.",
            ["grid", "white"],
        ),
        ("Caption - Thin diagonal lines.", "Thin diagonal lines.", []),
    ],
)
def test_caption_answers_in_several_formats(text, caption, features):
    parsed = mllm.parse_caption_answer(text)
    assert (parsed.caption, parsed.features, parsed.answer) == (caption, features, text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "These images all show stripes.",
        "Common features: stripes, dots\n",
        "Caption:\n\nCommon features: x",
    ],
)
def test_a_caption_answer_without_a_caption_fails_clearly(text):
    with pytest.raises(mllm.MllmAnswerError, match=r"no 'Caption:' part .*it was"):
        mllm.parse_caption_answer(text)


def test_formation_answer_in_the_papers_form():
    parsed = mllm.parse_formation_answer(formation_text(["aaa", "bbb", "ccc", "ddd"]), 4)
    assert parsed.features == {1: ["texture aaa"], 2: ["texture bbb"], 3: ["texture ccc"], 4: ["texture ddd"]}
    assert parsed.evolution == {
        2: "has texture bbb - match texture aaa in Group 1",
        3: "has texture ccc - match texture aaa in Group 1",
        4: "There is no matches",
    }
    assert parsed.caption == "Textures bbb and ccc and ddd form texture aaa."


def test_formation_answer_with_lists_shared_lines_and_reasoning_first():
    text = """Let me go step by step.
Group 2 Common Features: draft
Feature Evolution: draft

- Group 1 Common Features:
  - black and yellow stripes
  - wings
- Group 2 Common Features: yellow color; round shapes
- Group 3 Common Features: dark lines
### Feature Evolution
- Groups 2 and 3: yellow and dark lines combine into
  black and yellow stripes in Group 1
- Group 9: out of range
### Caption for Group 1
Yellow and dark lines combine into stripes.
"""
    parsed = mllm.parse_formation_answer(text, 3)
    assert parsed.features == {
        1: ["black and yellow stripes", "wings"],
        2: ["yellow color", "round shapes"],
        3: ["dark lines"],
    }
    shared = "yellow and dark lines combine into black and yellow stripes in Group 1"
    assert parsed.evolution == {2: shared, 3: shared}  # group 9 does not exist: dropped
    assert parsed.caption == "Yellow and dark lines combine into stripes."


@pytest.mark.parametrize(
    ("text", "missing"),
    [
        (
            "Group 1 Common Features: a\nGroup 2 Common Features: b\nCaption: A.",
            "no 'Feature Evolution:' part",
        ),
        ("Feature Evolution:\n- Group 2: a - match b in Group 1\n", "no 'Caption:' part"),
        ("Feature Evolution:\n\nCaption:\n", "no 'Feature Evolution:' and no 'Caption:' part"),
        ("I cannot see any images.", "no 'Feature Evolution:' and no 'Caption:' part"),
    ],
)
def test_a_formation_answer_missing_a_part_fails_naming_it(text, missing):
    with pytest.raises(mllm.MllmAnswerError, match=missing) as info:
        mllm.parse_formation_answer(text, 2)
    assert info.value.answer == text


def test_short_caption_is_the_first_sentence():
    assert mllm.short_caption("Yellow and black stripes. Wings too.") == "Yellow and black stripes"
    long = "Many " + "very " * 30 + "thin lines."
    assert len(mllm.short_caption(long)) <= 80 and mllm.short_caption(long).startswith("Many very")


def test_prompts_reproduce_the_papers_wording():
    text = "\n".join(p["text"] for p in mllm.caption_messages(["x"])[1]["content"] if p["type"] == "text")
    assert all(w in text for w in MAIN_WORDING + CAPTION_WORDING)
    messages = mllm.formation_messages([["a", "b"], ["c"], ["d"]])
    parts = messages[1]["content"]
    assert messages[0]["content"] == ROLE
    assert [p["text"] for p in parts if p["type"] == "text" and p["text"].startswith("Group ")] == [
        "Group 1 (2 images):",
        "Group 2 (1 image):",
        "Group 3 (1 image):",
    ]
    assert [p["image_url"]["url"] for p in parts if p["type"] == "image_url"] == ["a", "b", "c", "d"]
    with pytest.raises(ValueError):
        mllm.formation_messages([["a"]])


def test_png_data_urls_convert_other_formats():
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buffer, format="JPEG")
    url = mllm.png_data_url(buffer.getvalue())
    assert base64.b64decode(url.split(",", 1)[1]).startswith(b"\x89PNG")
    assert (
        mllm.png_data_url(png((1, 2, 3)))
        == "data:image/png;base64," + base64.b64encode(png((1, 2, 3))).decode()
    )


def test_plan_walks_up_and_takes_the_top_positive_children():
    def group(name, depth, incoming=()):
        return GroupInput(name, name.split("/")[1], depth, 0, [("p", "file:///p.png")], list(incoming))

    groups = [
        group("r/top/g0", 0, [("r/mid/g0", 0.5), ("r/mid/g1", 0.2), ("r/mid/g2", -0.9)]),
        group("r/mid/g0", 1, [("r/low/g0", 0.9), ("r/low/g1", 0.8), ("r/low/g2", 0.7), ("r/low/g3", 0.6)]),
        group("r/mid/g1", 1, [("r/low/g0", -0.1)]),
        group("r/mid/g2", 1),
        group("r/low/g0", 2),
        group("r/low/g1", 2),
        group("r/low/g2", 2),
        group("r/low/g3", 2),
    ]
    steps = mllm.plan(groups, exemplars=5, children=3, formation=True)
    summary = [(kind, g.ng_id, [k.ng_id for k, _ in kids or []]) for kind, g, kids in steps]
    assert summary == [
        *[("caption", f"r/low/g{i}", []) for i in range(4)],
        *[("caption", f"r/mid/g{i}", []) for i in range(3)],
        ("formation", "r/mid/g0", ["r/low/g0", "r/low/g1", "r/low/g2"]),  # top 3 of 4, by weight
        ("caption", "r/top/g0", []),
        ("formation", "r/top/g0", ["r/mid/g0", "r/mid/g1"]),  # the negative W is not a forming child
    ]
    assert [kind for kind, _, _ in mllm.plan(groups, 5, 3, formation=False)] == ["caption"] * 8


# ------------------------------------------------------------------------------- the client


def test_the_client_sends_the_key_and_reads_the_answer(endpoint):
    c, slept = client(endpoint.url)
    answer = c.complete(mllm.caption_messages([mllm.png_data_url(png((10, 20, 30)))]))
    assert (
        mllm.parse_caption_answer(answer).caption == f"Texture {pixel_token(png((10, 20, 30)))} with edges."
    )
    assert c.requests == 1 and slept == []
    assert endpoint.requests == [
        {"kind": "caption", "tokens": [pixel_token(png((10, 20, 30)))], "sizes": [1]}
    ]


def test_a_wrong_key_is_a_clear_401_that_never_shows_the_key(endpoint, monkeypatch):
    monkeypatch.setenv(mllm.KEY_ENV, "sk-wrong-secret-000")
    c, _ = client(endpoint.url)
    with pytest.raises(mllm.MllmAuthError) as info:
        c.complete(mllm.caption_messages([mllm.png_data_url(png((1, 1, 1)))]))
    message = str(info.value)
    assert "HTTP 401" in message and mllm.KEY_ENV in message and "it is set" in message
    assert "sk-wrong-secret-000" not in message and c.requests == 1  # no retry on 401
    monkeypatch.delenv(mllm.KEY_ENV)
    with pytest.raises(mllm.MllmAuthError, match="it is not set"):
        c.complete(mllm.caption_messages([mllm.png_data_url(png((1, 1, 1)))]))
    c2, _ = client(endpoint.url, api_key_env="MY_OTHER_KEY")
    monkeypatch.setenv("MY_OTHER_KEY", KEY)
    assert c2.complete(mllm.caption_messages([mllm.png_data_url(png((1, 1, 1)))]))


def test_500_then_success_is_retried_with_backoff(endpoint):
    endpoint.script = [(500, {"error": {"message": "overloaded"}}, {}), (502, b"bad gateway", {})]
    c, slept = client(endpoint.url)
    assert c.complete(mllm.caption_messages([mllm.png_data_url(png((5, 5, 5)))]))
    assert c.requests == 3 and slept == [0.5, 1.0]


def test_429_honours_retry_after(endpoint):
    endpoint.script = [(429, {"error": {"message": "rate limited"}}, {"Retry-After": "3"})]
    c, slept = client(endpoint.url)
    assert c.complete(mllm.caption_messages([mllm.png_data_url(png((5, 5, 5)))]))
    assert slept == [3.0]


def test_a_server_that_keeps_failing_gives_up_naming_the_last_error(endpoint):
    endpoint.script = [(503, {"error": {"message": "down for maintenance"}}, {})] * 3
    c, slept = client(endpoint.url, retries=2)
    with pytest.raises(
        mllm.MllmUnreachableError, match=r"failed 3 times, last with: HTTP 503 down for maintenance"
    ):
        c.complete(mllm.caption_messages([mllm.png_data_url(png((5, 5, 5)))]))
    assert slept == [0.5, 1.0]


def test_an_unreachable_url_fails_at_once_naming_it():
    (port,) = free_ports(1)
    c, slept = client(f"http://127.0.0.1:{port}/v1")
    with pytest.raises(
        mllm.MllmUnreachableError, match=rf"cannot reach .*127.0.0.1:{port}/v1/chat/completions.*--url"
    ):
        c.complete(mllm.caption_messages(["data:image/png;base64,"]))
    assert slept == []


def test_a_slow_server_times_out_clearly(endpoint):
    endpoint.delay = 1.0
    c, slept = client(endpoint.url, timeout=0.2, retries=1)
    with pytest.raises(mllm.MllmUnreachableError, match=r"no answer within 0.2 s; raise --timeout"):
        c.complete(mllm.caption_messages([mllm.png_data_url(png((5, 5, 5)))]))
    assert slept == [0.5]


@pytest.mark.parametrize(
    ("status", "body", "error", "match"),
    [
        (200, b"<html>hello</html>", mllm.MllmResponseError, "not JSON"),
        (200, {"object": "list", "data": []}, mllm.MllmResponseError, r"no choices\[0\].message"),
        (
            200,
            {"choices": [{"message": {"content": None}, "finish_reason": "length"}]},
            mllm.MllmAnswerError,
            "length",
        ),
        (200, {"choices": [{"message": {"content": "", "refusal": "no"}}]}, mllm.MllmAnswerError, "refused"),
        (
            404,
            {"error": {"message": "model not found"}},
            mllm.MllmConfigError,
            r"model not found.*ending in /v1",
        ),
        (400, {"error": {"message": "image input not supported"}}, mllm.MllmResponseError, "accepts images"),
    ],
)
def test_malformed_or_refused_answers_fail_clearly(endpoint, status, body, error, match):
    endpoint.script = [(status, body, {})]
    c, _ = client(endpoint.url)
    with pytest.raises(error, match=match):
        c.complete(mllm.caption_messages([mllm.png_data_url(png((5, 5, 5)))]))


def test_content_parts_answers_are_joined(endpoint):
    endpoint.script = [
        (200, {"choices": [{"message": {"content": [{"type": "text", "text": "Caption: A."}]}}]}, {})
    ]
    c, _ = client(endpoint.url)
    assert c.complete(mllm.caption_messages(["data:image/png;base64,"])) == "Caption: A."


def test_configuration_comes_from_arguments_then_environment(monkeypatch):
    monkeypatch.delenv(mllm.URL_ENV, raising=False)
    monkeypatch.delenv(mllm.MODEL_ENV, raising=False)
    with pytest.raises(mllm.MllmConfigError, match=f"set {mllm.URL_ENV} or pass --url"):
        mllm.MllmConfig.from_env()
    monkeypatch.setenv(mllm.URL_ENV, "http://h:1/v1/")
    with pytest.raises(mllm.MllmConfigError, match=f"set {mllm.MODEL_ENV} or pass --model"):
        mllm.MllmConfig.from_env()
    monkeypatch.setenv(mllm.MODEL_ENV, "m")
    cfg = mllm.MllmConfig.from_env()
    assert (cfg.endpoint, cfg.model, cfg.api_key_env) == ("http://h:1/v1/chat/completions", "m", mllm.KEY_ENV)
    assert (
        mllm.MllmConfig.from_env("https://x/v1/chat/completions", "n").endpoint
        == "https://x/v1/chat/completions"
    )
    with pytest.raises(mllm.MllmConfigError, match="http:// or https://"):
        mllm.MllmConfig.from_env("ftp://x", "n")


# --------------------------------------------------------------------------- end to end (slow)


def patch_png(patch_id: str) -> bytes:
    """A distinct 16x16 image per patch, coloured from its id."""
    rgb = bytes.fromhex(patch_id[:6])
    return png((rgb[0], rgb[1], rgb[2]), size=16)


@pytest.fixture(scope="module")
def labelled_run(stack, driver, tmp_path_factory):
    """A synthetic circuit in Neo4j; even patches' images in the S3 bucket, odd ones in a directory."""
    from graphmodel import writer
    from graphmodel.patchstore import LocalPatchStore, upload_patches
    from ingest.pipeline.patch_stores import open_patch_store
    from tests.test_store import small_circuit, write_all

    circuit, steps = small_circuit("mllm000000000001")
    write_all(driver, circuit, steps)
    s3 = open_patch_store(stack)
    assert type(s3).__name__ == "S3PatchStore"  # the stack's S3 server is configured
    s3.check()
    local = LocalPatchStore(tmp_path_factory.mktemp("patches"))
    pids = [p.patch_id for p in circuit.patches]
    uris = upload_patches(s3, [(pid, patch_png(pid)) for pid in pids[::2]])
    uris.update(upload_patches(local, [(pid, patch_png(pid)) for pid in pids[1::2]]))
    writer.set_patch_uris(driver, uris)
    return circuit


def invoke(*args: str, env: dict | None = None):
    from click.testing import CliRunner

    from ingest.cli.label_mllm import mllm_command

    return CliRunner().invoke(mllm_command, list(args), env=env, catch_exceptions=False)


def cli_env(fake: FakeMllm) -> dict:
    return {mllm.URL_ENV: fake.url, mllm.MODEL_ENV: MODEL, mllm.KEY_ENV: KEY}


DOCS_QUERY = """
MATCH (g:NeuronGroup {run_id: $run_id})-[:LABELED {method: 'mllm'}]->(c:Concept)
OPTIONAL MATCH (k:NeuronGroup)-[f:FORMS {run_id: $run_id}]->(g)
WITH g, c, k, f ORDER BY f.rank
RETURN g.layer, g.ng_id, c.name AS caption, g.formation_caption AS formation,
       collect([k.ng_id, f.weight, f.evolution]) AS from_children
ORDER BY g.layer, g.ng_id
"""


def first_patch(circuit, group) -> str:
    """The first exemplar the labeller sends: the best patch of the group's first semantic group."""
    sg = {s.sg_id: s for s in circuit.semantic_groups}[group.sg_ids[0]]
    return sg.patch_ids[0]


@pytest.mark.slow
def test_dry_run_prints_the_prompts_and_sends_nothing(endpoint, labelled_run):
    result = invoke("--run", labelled_run.run_id, "--dry-run", env={mllm.URL_ENV: "", mllm.KEY_ENV: ""})
    assert result.exit_code == 0, result.output
    groups = labelled_run.neuron_groups
    assert result.output.count("=== caption ") == len(groups)
    assert result.output.count(ROLE) >= len(groups) and CAPTION_WORDING[1] in result.output
    assert FORMATION_WORDING[1] in result.output
    assert "[image s3://neurflow-test/patches/" in result.output and "[image file://" in result.output
    assert endpoint.requests == []


@pytest.mark.slow
def test_a_group_whose_answers_never_fit_fails_alone(endpoint, labelled_run, driver):
    bad = {"choices": [{"message": {"content": "I see some images."}}]}
    endpoint.script = [(200, bad, {}), (200, bad, {})]  # the first caption request, and its re-ask
    result = invoke("--run", labelled_run.run_id, "--no-formation", env=cli_env(endpoint))
    assert result.exit_code == 1
    assert "1 answers did not follow the answer form" in result.output and "asking again" in result.output
    labels = read_labels(driver, labelled_run.run_id, method="mllm")
    assert len(labels) == len(labelled_run.neuron_groups) - 1  # the others are stored
    assert read_explanations(driver, labelled_run.run_id) == {}


@pytest.mark.slow
def test_labels_and_formation_explanations_land_in_the_graph(endpoint, labelled_run, driver):
    circuit = labelled_run
    result = invoke("--run", circuit.run_id, env=cli_env(endpoint))
    assert result.exit_code == 0, result.output
    assert KEY not in result.output

    groups = {g.ng_id: g for g in circuit.neuron_groups}
    token = {ng_id: pixel_token(patch_png(first_patch(circuit, g))) for ng_id, g in groups.items()}
    # Captions: one LABELED {method: mllm} per group, named from the images sent for that group.
    labels = read_labels(driver, circuit.run_id, method="mllm")
    assert set(labels) == set(groups)
    for ng_id, (label,) in labels.items():
        assert label.concept == f"texture {token[ng_id]} with edges" and label.score == 1.0
        assert label.details["caption"] == f"Texture {token[ng_id]} with edges."
        assert label.details["common_features"] == [f"texture {token[ng_id]}", "edges"]
        assert label.details["model"] == MODEL and len(label.details["exemplars"]) == min(
            5, len(groups[ng_id].patch_ids)
        )
    captions = [r for r in endpoint.requests if r["kind"] == "caption"]
    assert sorted(r["tokens"][0] for r in captions) == sorted(token.values())
    assert sorted(r["sizes"][0] for r in captions) == sorted(
        min(5, len(g.patch_ids)) for g in groups.values()
    )

    # Formations: the top-3 positive FEEDS children of every parent, expected from the records.
    incoming = defaultdict(list)
    for e in circuit.group_edges:
        if e.weight > 0:
            incoming[e.parent].append((e.weight, e.child))
    expected = {
        p: [c for _, c in sorted(kids, key=lambda wc: (-wc[0], wc[1]))[:3]] for p, kids in incoming.items()
    }
    assert expected, "the synthetic circuit has no positive group edge: the check would be vacuous"
    explained = read_explanations(driver, circuit.run_id, method="mllm")
    assert set(explained) == set(expected)
    weight = {(e.child, e.parent): e.weight for e in circuit.group_edges}
    for parent, record in explained.items():
        kids = expected[parent]
        assert [c.group_id for c in record.children] == kids and [c.rank for c in record.children] == list(
            range(1, len(kids) + 1)
        )
        tokens = [token[parent]] + [token[k] for k in kids]
        assert record.caption == f"Textures {' and '.join(tokens[1:])} form texture {tokens[0]}."
        assert record.features == [f"texture {tokens[0]}"]
        for rank, child in enumerate(record.children, start=1):
            assert child.weight == pytest.approx(weight[(child.group_id, parent)])
            assert child.features == [f"texture {tokens[rank]}"]
            no_match = rank == len(kids) and len(kids) > 1
            assert child.matched is not no_match
            assert child.evolution == (
                "There is no matches"
                if no_match
                else f"has texture {tokens[rank]} - match texture {tokens[0]} in Group 1"
            )
        assert record.details["model"] == MODEL and record.details["prompt"] == mllm.PROMPT_VERSION

    # The stored shape, straight from Cypher: FORMS joins run-scoped groups and carries run_id/method.
    rows = driver.execute_query(
        "MATCH (c:NeuronGroup)-[f:FORMS]->(p:NeuronGroup) RETURN c.run_id AS c, p.run_id AS p, "
        "f.run_id AS run, f.method AS method, p.formation_method AS pm, p.formation_children AS kids, "
        "p.ng_id AS parent"
    ).records
    assert len(rows) == sum(len(k) for k in expected.values())
    assert all(
        (r["c"], r["p"], r["run"], r["method"], r["pm"]) == (circuit.run_id,) * 3 + ("mllm", "mllm")
        for r in rows
    )
    assert all(r["kids"] == expected[r["parent"]] for r in rows)

    # The query of docs/labelling.md gives every group its caption and its children.
    rows = driver.execute_query(DOCS_QUERY, run_id=circuit.run_id).records
    assert {r["g.ng_id"]: r["caption"] for r in rows} == {
        ng_id: f"texture {t} with edges" for ng_id, t in token.items()
    }
    for r in rows:
        assert [k for k, _, _ in r["from_children"] if k is not None] == expected.get(r["g.ng_id"], [])

    # Labelling again replaces, never duplicates.
    before = len(endpoint.requests)
    again = invoke("--run", circuit.run_id, env=cli_env(endpoint))
    assert again.exit_code == 0, again.output
    assert len(endpoint.requests) == 2 * before
    count = driver.execute_query(
        "MATCH (g:NeuronGroup {run_id: $id})-[l:LABELED {method: 'mllm'}]->() RETURN count(l) AS n",
        id=circuit.run_id,
    ).records[0]["n"]
    assert count == len(groups)
    assert read_explanations(driver, circuit.run_id, method="mllm") == explained


@pytest.mark.slow
def test_cli_errors_are_one_clear_line(endpoint, labelled_run):
    result = invoke("--run", labelled_run.run_id, env={**cli_env(endpoint), mllm.KEY_ENV: "sk-bad-key-999"})
    assert result.exit_code == 1 and "HTTP 401" in result.output and mllm.KEY_ENV in result.output
    assert "sk-bad-key-999" not in result.output and "Traceback" not in result.output
    result = invoke("--run", "nope", env=cli_env(endpoint))
    assert result.exit_code == 1 and "run nope is not in the graph" in result.output
    result = invoke("--run", labelled_run.run_id, env={mllm.URL_ENV: "", mllm.MODEL_ENV: ""})
    assert result.exit_code == 1 and f"set {mllm.URL_ENV} or pass --url" in result.output

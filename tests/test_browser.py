"""Neo4j Browser integration: the GraSS style, the guide (one slide per canned query), the favourites
zip, the stack's routes for them, and the real Browser 5.24 driving them in headless Chromium.

The fast tests check the generated files and the HTTP routes. The slow ones start the real stack
(Neo4j's own server, which serves Browser, + S3Proxy + the guide server on free ports), write two
small synthetic circuits of one model (classes bee and ladybug) with the graph writer, label their
groups, and drive Browser with Playwright: open the exact Browser URL the stack prints and log in
typing only the password, see the guide play by itself, `:play` it from 127.0.0.1 (which needs the
server's content allowlist) and from localhost (cross-origin), run queries with the guide's own
click-to-run blocks and its examples from the newest COMPLETE run, read the result tables, load the
style with `:style` and check the graph's captions, and drop the favourites zip. Screenshots
(browser-connected.png, browser-guide.png, browser-class_similarity.png, browser-style.png) go to
the test's tmp dir and to $NEURFLOW_ARTIFACTS when set.
"""

from __future__ import annotations

import html
import io
import os
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
import zipfile
from html.parser import HTMLParser
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

import queries
from benchmarks.writer_throughput import shell_of, synthetic_circuit
from graphmodel import audits, labels, writer
from graphmodel.records import LabelRecord
from graphmodel.stack import browser_lines
from graphmodel.stack.guide_server import GuideHandler
from ingest.cli import main
from queries.browser import (
    FAVORITES_FOLDER,
    cypher_literal,
    example_params,
    favorites_zip,
    guide_html,
    params_command,
    style_text,
)
from queries.runner import QUERY_DIR, list_queries
from tests.services import local_stack

LABELS = (
    "Model",
    "Layer",
    "Neuron",
    "Class",
    "Run",
    "Patch",
    "SemanticGroup",
    "NeuronGroup",
    "Concept",
    "AuditResult",
)
CHROMIUM = next(
    (path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))), None
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium on PATH for the Neo4j Browser test (Debian: apt-get install chromium; "
    "scripts/test.sh installs it when run as root)",
)
MODEL_ID = "synthetic-cnn"
CLASSES = ("bee", "ladybug")


# ------------------------------------------------------------------------------ the generated files


class _Slides(HTMLParser):
    """Slides of a guide, as Browser splits them: per <slide>, its <h3> and its runnable <pre> texts."""

    def __init__(self) -> None:
        super().__init__()
        self.slides: list[dict] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "slide":
            self.slides.append({"title": "", "runnable": [], "attrs": attrs, "text": ""})
        elif self.slides and tag == "h3":
            self._in = "title"
        elif self.slides and tag == "pre" and "runnable" in (attrs.get("class") or ""):
            self.slides[-1]["runnable"].append("")
            self._in = "pre"

    def handle_endtag(self, tag):
        if tag in ("h3", "pre"):
            self._in = None

    def handle_data(self, data):
        if not self.slides:
            return
        self.slides[-1]["text"] += data
        if self._in == "title":
            self.slides[-1]["title"] += data
        elif self._in == "pre":
            self.slides[-1]["runnable"][-1] += data


def slides_of(page: str) -> list[dict]:
    parser = _Slides()
    parser.feed(page)
    return parser.slides


def test_guide_has_one_slide_per_query_and_picks_up_new_files(tmp_path):
    for path in QUERY_DIR.glob("*.cypher"):
        shutil.copy(path, tmp_path)
    (tmp_path / "zz_new_question.cypher").write_text(
        "// name: zz_new_question\n"
        "// question: Does a new file get a slide?\n"
        "// param flag: boolean = true        a flag\n"
        "// param names: list<string>         some names\n"
        "// param sizes: list<integer>        some sizes (e.g. [1, 2])\n"
        '// example names: ["a", "b"]\n'
        "RETURN $flag AS flag, $names AS names, $sizes AS sizes\n"
    )
    listed = list_queries(tmp_path)
    slides = slides_of(guide_html(tmp_path))
    assert [s["title"] for s in slides] == ["NeurFlow Graph: canned queries", *listed]
    assert '<article class="guide">' in guide_html(tmp_path)
    for slide, query in zip(slides[1:], listed.values(), strict=True):
        setter, body = slide["runnable"]
        assert " ".join(query.question.split()) in " ".join(slide["text"].split())
        assert setter.startswith(":param [{" + ", ".join(query.params) + "}] => { RETURN ")
        assert body and not body.startswith("//") and body in query.text  # the query without its header
    setter = ":param [{flag, names, sizes}] => { RETURN true AS flag, ['a', 'b'] AS names, [1, 2] AS sizes }"
    assert slides[-1]["runnable"][0] == setter


def test_guide_html_escapes_query_text(tmp_path):
    (tmp_path / "q.cypher").write_text(
        "// name: q\n// question: Is <b> & 'x' escaped?\n// param s: string  a string\nRETURN $s < 1 AS x\n"
    )
    page = guide_html(tmp_path)
    assert "<b>" not in page.split("<carousel", 1)[1]
    assert slides_of(page)[1]["runnable"][1] == "RETURN $s < 1 AS x"
    assert html.escape("Is <b> & 'x' escaped?") in page


def test_param_lines_keep_cypher_types_and_quote_text():
    top = queries.get_query("top_paths")
    values = example_params(top, {"model_id": "it's", "limit": "3", "layer": "block1"})
    assert values["limit"] == 3 and values["run_id"] is None and values["class_name"] == "bee"
    command = params_command(top, values)
    assert command == (
        ":param [{model_id, class_name, layer, run_id, limit}] => { RETURN 'it\\'s' AS model_id, "
        "'bee' AS class_name, 'block1' AS layer, null AS run_id, 3 AS limit }"
    )
    assert cypher_literal(2, "float") == "2.0" and cypher_literal([1, 2], "list<float>") == "[1.0, 2.0]"
    assert cypher_literal("a\\b") == "'a\\\\b'" and cypher_literal(False) == "false"
    with pytest.raises(ValueError, match="'limit' must be of type integer"):
        example_params(top, {"limit": "many"})


def test_favourites_zip_holds_every_query_in_one_folder():
    archive = zipfile.ZipFile(io.BytesIO(favorites_zip()))
    listed = list_queries()
    assert sorted(archive.namelist()) == sorted(f"{FAVORITES_FOLDER}/{name}.cypher" for name in listed)
    for name, query in listed.items():
        text = archive.read(f"{FAVORITES_FOLDER}/{name}.cypher").decode()
        assert text.splitlines()[0] == f"// {name}"  # Browser names a favourite by its first line
        assert text.endswith(query.text.rstrip() + "\n")


def parse_grass(text: str) -> dict[str, dict[str, str]]:
    """GraSS read the way Browser 5 reads it (a port of its ``parseGrass``): braces inside quotes are
    text, quotes are dropped, a declaration with a second ':' is dropped; it knows no comments."""
    rules: dict[str, str] = {}
    quoted = in_rule = nested = False
    selector = body = ""
    for ch in text:
        control = True
        if ch == "{":
            if quoted:
                control = False
            elif in_rule:
                nested = True
            else:
                in_rule = True
        elif ch == "}":
            if quoted:
                control = False
            elif nested:
                nested = False
            else:
                in_rule = False
                rules[selector], selector, body = body, "", ""
        elif ch in "'\"":
            quoted = not quoted
        else:
            control = False
        if not control:
            if in_rule:
                body += ch
            elif not ch.isspace():
                selector += ch
    parsed: dict[str, dict[str, str]] = {}
    for name, text_ in rules.items():
        parsed[name] = {}
        for item in text_.split(";"):
            parts = item.split(":")
            assert len(parts) == 2 or not item.strip(), f"Browser would drop {item.strip()!r} of {name}"
            if len(parts) == 2:
                parsed[name][parts[0].strip()] = parts[1].strip()
    return parsed


def test_style_colours_every_label_and_captions_names_and_weights():
    text = style_text()
    assert "/*" not in text and "//" not in text  # Browser's GraSS parser knows no comments
    rules = parse_grass(text)
    for label in LABELS:
        rule = rules[f"node.{label}"]
        assert rule["color"].startswith("#") and rule["caption"], label
    colours = [rules[f"node.{label}"]["color"] for label in LABELS]
    assert len(set(colours)) == len(colours)
    assert rules["node.NeuronGroup"]["caption"] == "{caption}"  # "<layer> g<n>: <top label>"
    assert rules["node.Concept"]["caption"] == "{name}"
    assert rules["relationship.FEEDS"]["caption"] == "{w}"  # W rounded to 3 significant digits
    assert rules["relationship.LABELED"]["caption"] == "{score}"


def test_cli_writes_the_browser_assets(tmp_path):
    result = CliRunner().invoke(main, ["query", "--browser-assets", str(tmp_path / "assets")])
    assert result.exit_code == 0, result.output
    files = {p.name for p in (tmp_path / "assets").iterdir()}
    assert files == {"style.grass", "neurflow.html", "neurflow-queries.zip"}
    assert (tmp_path / "assets" / "style.grass").read_text() == style_text()
    assert len(slides_of((tmp_path / "assets" / "neurflow.html").read_text())) == 1 + len(list_queries())


def test_guide_server_serves_guide_style_and_favourites():
    server = ThreadingHTTPServer(("127.0.0.1", 0), GuideHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with urllib.request.urlopen(f"{base}/guide/neurflow.html?model_id=m-1&limit=4") as answer:
            assert answer.headers["Access-Control-Allow-Origin"] == "*"
            page = answer.read().decode()
        slides = slides_of(page)
        assert f":style {base}/guide/style.grass" in slides[0]["runnable"]
        top = next(s for s in slides if s["title"] == "top_paths")
        assert "'m-1' AS model_id" in top["runnable"][0] and "4 AS limit" in top["runnable"][0]
        with urllib.request.urlopen(f"{base}/guide/style.grass") as answer:
            assert answer.read().decode() == style_text()
        with urllib.request.urlopen(f"{base}/guide/neurflow-queries.zip") as answer:
            assert answer.headers["Content-Type"] == "application/zip"
            assert zipfile.ZipFile(io.BytesIO(answer.read())).testzip() is None
        for path in ("/guide", "/"):  # redirected to the guide
            with urllib.request.urlopen(base + path) as answer:
                assert answer.url.endswith("/guide/neurflow.html")
        cases = (("/guide/nope.html", 404), ("/browser/", 404), ("/guide/neurflow.html?limit=x", 500))
        for path, code in cases:  # Browser itself is Neo4j's to serve
            with pytest.raises(urllib.error.HTTPError) as failed:
                urllib.request.urlopen(base + path)
            assert failed.value.code == code
        assert "must be of type integer" in failed.value.read().decode()
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------- the real Browser, end to end


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    """This module's stack also runs Browser's server (overrides conftest's `stack`)."""
    if CHROMIUM is None:
        pytest.skip(needs_chromium.kwargs["reason"])
    with local_stack(tmp_path_factory.mktemp("stack-state"), guide=True) as cfg:
        yield cfg


@pytest.fixture(scope="module")
def circuits(driver) -> dict:
    """Two small synthetic circuits of one model, written with the graph writer: class -> Circuit."""
    out = {}
    for index, name in enumerate(CLASSES):
        circuit, steps = synthetic_circuit(
            f"browser{index:09d}", widths=(3, 8, 8), k=5, tau=3, patches=24, groups_per_layer=2, seed=index
        )
        circuit.class_index, circuit.class_name = index, name
        writer.start_run(driver, shell_of(circuit))
        writer.write_patches(driver, circuit.run_id, circuit.patches)
        for step in steps:
            writer.write_layer(driver, circuit.run_id, step)
        writer.complete_run(driver, circuit)
        concepts = ("flower", "stripes", "wings", "sky")
        labels.write_labels(
            driver,
            circuit.run_id,
            "concept_bank",
            [
                LabelRecord(g.ng_id, concepts[i % len(concepts)], 0.9, "concept_bank", rank=1)
                for i, g in enumerate(circuit.neuron_groups)
            ],
        )
        finding = {"concept": "flower", "rank": 1, "influence": 1.0, "best_group": None, "groups": []}
        finding |= dict.fromkeys(audits._SCALARS, 0.5)
        audits.write_audit(driver, circuit.run_id, {"expected": ["stripes"]}, [finding])
        out[name] = circuit
    return out


def save_screenshot(page, tmp_path: Path, name: str) -> Path:
    """A screenshot of ``page`` (or of one element: a locator), also copied to $NEURFLOW_ARTIFACTS."""
    target = tmp_path / name
    page.screenshot(path=str(target))
    artifacts = os.environ.get("NEURFLOW_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(target, Path(artifacts) / name)
    from PIL import Image

    colours = Image.open(target).convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, f"{name} is (nearly) blank"
    return target


@pytest.fixture(scope="module")
def page(stack, circuits, tmp_path_factory):
    """Headless Chromium on the Browser URL the stack prints, logged in by typing only the password
    (Neo4j serves Browser; the URL fills in the Bolt address and the user)."""
    from playwright.sync_api import sync_playwright

    printed = "\n".join(browser_lines(stack))
    assert stack.browser_url in printed.split(), printed
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            tab = chromium.new_page(viewport={"width": 1400, "height": 1000})
            tab.set_default_timeout(20_000)
            tab.goto(stack.browser_url)
            address = tab.locator('[data-testid="boltaddress"]')
            address.wait_for(timeout=30_000)
            assert address.input_value() == f"127.0.0.1:{stack.neo4j_address[1]}"
            assert tab.locator('[data-testid="username"]').input_value() == stack.neo4j_user
            tab.fill('[data-testid="password"]', stack.neo4j_password)
            tab.click('[data-testid="connect"]')
            tab.wait_for_selector("text=You are connected as user", timeout=30_000)
            # browser.post_connect_cmd plays the guide as soon as Browser is connected.
            tab.get_by_text(f":play {stack.guide_url}").first.wait_for(timeout=20_000)
            save_screenshot(tab, tmp_path_factory.mktemp("connected"), "browser-connected.png")
            yield tab
        finally:
            chromium.close()


def frames(page):
    return page.locator('[data-testid="frame"]')


def new_frame(page, action, text: str, timeout: float = 20.0):
    """Do ``action`` (which adds a frame at the top of the stream) and wait until it shows ``text``."""
    before = frames(page).count()
    action()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if frames(page).count() > before and text in frames(page).first.inner_text():
            return frames(page).first
        time.sleep(0.2)
    top = frames(page).first.inner_text()[:800] if frames(page).count() else "(no frame)"
    raise AssertionError(f"no new frame showing {text!r}; the top frame shows:\n{top}")


def run_command(page, command: str, text: str):
    """Type ``command`` into Browser's editor, run it, and return its frame once it shows ``text``."""

    def action():
        page.locator('[data-testid="activeEditor"]').click()
        page.keyboard.insert_text(command)
        page.click('[data-testid="editor-Run"]')

    return new_frame(page, action, text)


def clear_stream(page) -> None:
    """`:clear` Browser's stream: it keeps only its newest frames (15 by default), so a frame count
    stops growing once it is full."""
    page.locator('[data-testid="activeEditor"]').click()
    page.keyboard.insert_text(":clear")
    page.click('[data-testid="editor-Run"]')
    deadline = time.monotonic() + 10
    while frames(page).count() and time.monotonic() < deadline:
        time.sleep(0.1)


def play_guide(page, stack, host: str = "127.0.0.1", **examples):
    """`:play` the stack's guide from ``host``; the frame showing its first slide.

    Browser checks the host against the allowlist it reads with ``CALL dbms.clientConfig()`` after
    connecting; until that answer arrives it only knows the default (localhost), so a `:play` right
    after logging in can be refused once: then it is played again.
    """
    query = "&".join(f"{k}={v}" for k, v in examples.items())
    url = f"http://{host}:{stack.guide_port}/guide/neurflow.html" + (f"?{query}" if query else "")
    total = 1 + len(list_queries())
    clear_stream(page)
    deadline = time.monotonic() + 20
    while True:
        run_command(page, f":play {url}", ":play")
        # The newest frame with slides; frames added later (parameters, results) have none.
        guide = frames(page).filter(has=page.locator('[data-testid="carousel"]')).first
        try:
            frames(page).first.get_by_text(f"1 / {total}").wait_for(timeout=3_000)
            return guide
        except Exception:
            if time.monotonic() > deadline:
                top = frames(page).first.inner_text()[:800]
                raise AssertionError(f"Browser did not play {url}:\n{top}") from None


def show_slide(guide, title: str) -> None:
    for _ in range(1 + len(list_queries())):
        if guide.locator("h3", has_text=title).is_visible():
            return
        guide.locator('[data-testid="nextSlide"]').click()
    raise AssertionError(f"the guide has no slide {title!r}")


def run_from_slide(page, guide, name: str, shows: str = "Started streaming"):
    """Click the ▶ of the slide's :param block, then of its query block; the result frame once it
    shows ``shows`` (a table's footer by default; a graph's says "Displaying")."""
    show_slide(guide, name)
    setter = guide.locator(f'pre[data-neurflow-params="{name}"]')
    new_frame(page, lambda: setter.locator("i").first.click(), "Successfully set your parameters")
    runner = guide.locator(f'pre[data-neurflow-run="{name}"]')
    return new_frame(page, lambda: runner.locator("i").first.click(), shows)


def table_rows(frame) -> list[list[str]]:
    """The result frame's table view: the text of each cell, row by row (header first)."""
    text = frame.locator('[data-testid="frameContents"]').inner_text()
    rows = [[cell.strip() for cell in line.split("\t")] for line in text.splitlines() if "\t" in line]
    assert rows, f"no table in the result frame:\n{text[:800]}"
    header = [cell for cell in rows[0] if cell]  # the first column holds row numbers
    return [header] + [row[-len(header) :] for row in rows[1:]]


@pytest.mark.slow
@needs_chromium
def test_guide_plays_in_browser_with_one_slide_per_query(page, stack, tmp_path):
    guide = play_guide(page, stack)
    titles = []
    for index in range(1 + len(list_queries())):
        titles.append(guide.locator("h3").filter(visible=True).first.inner_text())
        if index == 0:
            save_screenshot(guide, tmp_path, "browser-guide.png")
        if index < len(list_queries()):
            guide.locator('[data-testid="nextSlide"]').click()
    assert titles == ["NeurFlow Graph: canned queries", *list_queries()]


@pytest.mark.slow
@needs_chromium
def test_guide_plays_from_localhost_across_origins(page, stack):
    """Browser runs on 127.0.0.1, the guide comes from localhost: a cross-origin fetch (CORS)."""
    guide = play_guide(page, stack, host="localhost")
    assert guide.locator("pre", has_text=":style").first.inner_text().strip() == (
        f":style http://localhost:{stack.guide_port}/guide/style.grass"
    )


@pytest.mark.slow
@needs_chromium
def test_canned_query_runs_from_the_guide_and_shows_its_rows(page, stack, circuits, tmp_path):
    guide = play_guide(page, stack, model_id=MODEL_ID)
    result = run_from_slide(page, guide, "class_similarity")
    core = {name: {(e.child_layer, e.child) for e in c.core_edges} for name, c in circuits.items()}
    a, b = core["bee"], core["ladybug"]
    rows = table_rows(result)
    header = rows[0]
    assert header[:6] == ["class_a", "class_b", "core_a", "core_b", "shared", "jaccard"], rows
    assert len(rows) == 2, rows
    cells = dict(zip(header, rows[1], strict=True))
    assert (cells["class_a"], cells["class_b"]) == ('"bee"', '"ladybug"')
    assert (int(cells["core_a"]), int(cells["core_b"]), int(cells["shared"])) == (len(a), len(b), len(a & b))
    assert float(cells["jaccard"]) == pytest.approx(len(a & b) / len(a | b))
    assert cells["run_a"] == f'"{circuits["bee"].run_id}"'
    save_screenshot(page, tmp_path, "browser-class_similarity.png")


@pytest.mark.slow
@needs_chromium
def test_integer_parameters_from_the_guide_reach_limit(page, stack, circuits, driver):
    """`limit` set by the guide's :param line is an integer (LIMIT refuses a float)."""
    layer = circuits["bee"].layers[-1].name
    guide = play_guide(page, stack, model_id=MODEL_ID, class_name="bee", layer=layer, limit=2)
    result = run_from_slide(page, guide, "top_paths")
    expected = queries.run("top_paths", driver, model_id=MODEL_ID, class_name="bee", layer=layer, limit=2)
    rows = table_rows(result)
    assert rows[0] == ["run_id", "groups", "weights", "strength"], rows
    assert len(rows) - 1 == len(expected) == 2, rows
    for row, want in zip(rows[1:], expected, strict=True):
        assert row[0] == f'"{want["run_id"]}"' and f'"{want["groups"][0]}"' in row[1], rows
        assert float(row[3]) == pytest.approx(want["strength"])


@pytest.mark.slow
@needs_chromium
def test_group_detail_runs_from_its_slide_with_the_newest_complete_run(page, stack, circuits, driver):
    """No URL parameters: the guide's examples come from the graph's newest COMPLETE run."""
    newest = circuits[CLASSES[-1]]
    guide = play_guide(page, stack)
    assert newest.run_id in guide.inner_text()  # the overview names where the examples come from
    result = run_from_slide(page, guide, "group_detail")
    rows = table_rows(result)
    assert len(rows) >= 2, rows
    feeds_class = driver.execute_query(
        "MATCH (g:NeuronGroup {run_id: $run})-[f:FEEDS]->(:Class) "
        "RETURN g.ng_id AS id ORDER BY f.weight DESC",
        run=newest.run_id,
    ).records
    assert f'"{feeds_class[0]["id"]}"' in "\t".join(rows[1]), rows


@pytest.mark.slow
@needs_chromium
def test_style_from_the_guide_captions_groups_and_weights(page, stack, circuits, driver, tmp_path):
    guide = play_guide(page, stack)
    style = guide.locator("pre", has_text=":style").first
    new_frame(page, lambda: style.locator("i").first.click(), "node.NeuronGroup")
    bee = circuits["bee"]
    graph = run_command(
        page, f"MATCH p = (:NeuronGroup {{run_id: '{bee.run_id}'}})-[:FEEDS]->() RETURN p", "Displaying"
    )
    graph.locator("svg text").first.wait_for()
    captions = {text.strip() for text in graph.locator("svg text").all_text_contents()}
    stored = driver.execute_query(
        "MATCH (g:NeuronGroup {run_id: $run}) RETURN g.ng_id AS id, g.caption AS caption, g.top_label AS top",
        run=bee.run_id,
    ).records
    caption = {r["id"]: r["caption"] for r in stored}
    assert all(r["top"] and r["caption"].endswith(": " + r["top"]) for r in stored), stored
    shown_groups = {e.child for e in bee.group_edges} | {e.parent for e in bee.group_edges}
    shown_groups |= {g.ng_id for g in bee.neuron_groups if g.layer == bee.layers[0].name}
    # Browser cuts a caption that does not fit its node short with "…".
    for group in shown_groups:
        assert any(caption[group].startswith(c.rstrip("…")) and len(c) > 4 for c in captions), (
            caption[group],
            captions,
        )
    assert any(":" in c for c in captions), captions  # a concept label is on the graph
    # FEEDS captions are W rounded to 3 significant digits, not 15-digit floats.
    weights = driver.execute_query(
        "MATCH (:NeuronGroup {run_id: $run_id})-[f:FEEDS]->() RETURN f.weight AS weight, f.w AS w, "
        "f.width AS width",
        run_id=bee.run_id,
    ).records
    shown = {repr(r["w"]) for r in weights}
    numbers = [c for c in captions if re.fullmatch(r"-?\d+(\.\d+)?(e-?\d+)?", c)]
    assert numbers and set(numbers) <= shown, (numbers, shown)
    assert all(len(n.replace("-", "").replace(".", "").lstrip("0")) <= 3 for n in numbers), numbers
    assert all(r["w"] == float(f"{r['weight']:.3g}") and 1 <= r["width"] <= 4 for r in weights)
    save_screenshot(page, tmp_path, "browser-style.png")


@pytest.mark.slow
@needs_chromium
def test_circuit_graph_draws_feeds_as_wide_as_their_weight(page, stack, circuits, driver, tmp_path):
    """The acceptance's FEEDS graph: played from the guide with the newest COMPLETE run, styled by
    the guide's `:style`, its groups are captioned with their concept label and its edges are drawn
    in more than one width (Browser makes an arrow's outline its shaft width + 6 px high)."""
    newest = circuits[CLASSES[-1]]
    guide = play_guide(page, stack)
    style = guide.locator("pre", has_text=":style").first
    new_frame(page, lambda: style.locator("i").first.click(), "relationship.FEEDS_W4")
    graph = run_from_slide(page, guide, "circuit_graph", shows="Displaying")
    graph.locator("svg path.b-outline").first.wait_for()
    time.sleep(1.0)  # the force layout settles
    heights = graph.locator("svg path.b-outline").evaluate_all(
        "paths => paths.map(p => Math.round(p.getBBox().height))"
    )
    widths = {
        r["width"]
        for r in driver.execute_query(
            "MATCH (:NeuronGroup {run_id: $run})-[f:FEEDS]->() RETURN DISTINCT f.width AS width",
            run=newest.run_id,
        ).records
    }
    shafts = {  # the style's shaft width (px) of each bucket's FEEDS_W<k> rule
        int(k): int(px)
        for k, px in re.findall(r"relationship\.FEEDS_W(\d) \{[^}]*shaft-width: (\d+)px", style_text())
    }
    assert sorted(shafts) == [1, 2, 3, 4] and len(set(shafts.values())) == 4, shafts
    assert len(widths) >= 2, widths
    assert set(heights) == {shafts[w] + 6 for w in widths}, (heights, widths)
    captions = {text.strip() for text in graph.locator("svg text").all_text_contents()}
    labelled = [c for c in captions if ":" in c]
    assert labelled, captions  # "block3 g0: flower" (cut short with "…" when it does not fit)
    save_screenshot(page, tmp_path, "browser-circuit-graph.png")


def test_circuit_graph_returns_weighted_virtual_feeds(driver, circuits):
    """Without Browser: the canned query gives each FEEDS of the run once, typed by its width bucket
    and carrying W, between copies captioned like the stored nodes."""
    bee = circuits["bee"]
    rows = queries.run("circuit_graph", driver, run_id=bee.run_id)
    stored = driver.execute_query(
        "MATCH (:Run {run_id: $run})-[:HAS_NEURON_GROUP]->(g)-[f:FEEDS]->(t) "
        "RETURN g.caption AS source, coalesce(t.caption, t.name) AS target, f.width AS width, f.w AS w",
        run=bee.run_id,
    ).records
    assert len(rows) == len(stored) > 0
    got = sorted(
        (
            r["source"]["caption"],
            r["target"].get("caption", r["target"].get("name")),
            r["feeds"]["type"],
            r["feeds"]["w"],
        )
        for r in rows
    )
    want = sorted((r["source"], r["target"], f"FEEDS_W{r['width']}", r["w"]) for r in stored)
    assert got == want
    assert [r["feeds"]["width"] for r in rows] == sorted((r["feeds"]["width"] for r in rows), reverse=True)
    widest = queries.run("circuit_graph", driver, run_id=bee.run_id, min_width=4)
    assert widest and all(r["feeds"]["type"] == "FEEDS_W4" for r in widest)


def test_every_style_caption_names_a_property_every_element_has(driver, circuits):
    """Each `{property}` a caption of the style names is set on every node of that label (or
    relationship of that type) in a graph written by the writer, labelled and audited; the
    FEEDS_W1..4 rules style the virtual relationships of `circuit_graph`, so they are checked on its
    rows."""
    rules = {}
    for block in style_text().split("\n}"):
        selector = block.strip().split(" ", 1)[0]
        found = re.search(r"caption: '([^']*)'", block)
        if found and "." in selector:
            rules[selector] = re.findall(r"\{(\w+)\}", found.group(1))
    assert len(rules) >= 14, rules
    virtual = {f"relationship.FEEDS_W{k}" for k in range(1, writer.WIDTH_BUCKETS + 1)}
    assert virtual <= set(rules), sorted(rules)
    missing = {}
    for run in {c.run_id for c in circuits.values()}:
        for row in queries.run("circuit_graph", driver, run_id=run):
            rule = rules.get(f"relationship.{row['feeds']['type']}")
            if rule is None or any(row["feeds"].get(prop) is None for prop in rule):
                missing[row["feeds"]["type"]] = row["feeds"]
    for selector, properties in rules.items():
        if selector in virtual:
            continue
        kind, name = selector.split(".", 1)
        pattern = f"(x:{name})" if kind == "node" else f"()-[x:{name}]->()"
        for prop in properties:
            [row] = driver.execute_query(
                f"MATCH {pattern} RETURN count(x) AS total, count(x.`{prop}`) AS set"
            ).records
            if row["total"] == 0 or row["set"] != row["total"]:
                missing[f"{selector} {{{prop}}}"] = (row["set"], row["total"])
    assert missing == {}


@pytest.mark.slow
@needs_chromium
def test_favourites_zip_dropped_on_browser_becomes_a_folder(page, stack):
    page.evaluate(
        """async (url) => {
          const blob = await (await fetch(url)).blob();
          const file = new File([blob], "neurflow-queries.zip", {type: "application/zip"});
          const data = new DataTransfer();
          data.items.add(file);
          const target = document.querySelector('[data-testid="stream"]');
          for (const type of ["dragenter", "dragover", "drop"])
            target.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: data}));
        }""",
        f"http://127.0.0.1:{stack.guide_port}/guide/neurflow-queries.zip",
    )
    page.click('[data-testid="navigationFavorites"]')
    page.click(f'[data-testid="savedScriptsFolder-{FAVORITES_FOLDER}"]')
    items = page.locator('[data-testid="savedScriptListItem"]')
    items.first.wait_for()
    assert sorted(t.strip() for t in items.all_inner_texts()) == sorted(list_queries())
    page.click('[data-testid="navigationFavorites"]')  # close the drawer again

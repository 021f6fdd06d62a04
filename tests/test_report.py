"""`neurflow report`: the HTML page of a circuit, checked in the DOM a real headless Chromium renders.

A small real circuit of the planted benchmark (bee, 4 images, k=10, tau=4, 2 steps: about 6 s on
CPU) and a hand-made one of 60 groups are rendered; Chromium runs the page's script (--dump-dom) and
takes a screenshot. The last test goes through the graph: ingest into a real Neo4j + S3, then
`neurflow report --run`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
from collections import Counter
from html.parser import HTMLParser
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

from graphmodel.patchstore import encode_png
from graphmodel.records import (
    Circuit,
    GroupEdgeRecord,
    LabelRecord,
    LayerRecord,
    NeuronGroupRecord,
    NeuronRecord,
    PatchRecord,
    SemanticGroupRecord,
)
from ingest.analysis.report import (
    CLASS_ID,
    THUMB_PX,
    class_edges,
    compute_layout,
    evaluation_tables,
    exemplar_patches,
    render_report,
    thumbnail_data_uri,
)
from ingest.cli.report import report_command

CHROMIUM = next(
    (path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))), None
)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium on PATH")
ODD_LABEL = '<b>leaf</b> & "wings"'
EVALUATION = {
    "seconds": 12.5,
    "optimality": {
        "fc": {"lower_layer": "block4", "core_loss": 0.95, "difference": {"mean": 0.047, "n": 30}},
        "block4": {"lower_layer": "block3", "core_loss": 0.53, "difference": {"mean": 0.441, "n": 90}},
    },
}


# ------------------------------------------------------------------------------------- helpers


class Dom(HTMLParser):
    """What the tests look at in a (rendered) page."""

    def __init__(self, text: str):
        super().__init__()
        self.nodes: list[str] = []
        self.edges: list[tuple[str, str]] = []
        self.node_imgs: dict[str, list[str]] = {}
        self.label_names: list[str] = []
        self.plot_imgs: list[str] = []
        self.panel_text: list[str] = []
        self.tags_in_labels: list[str] = []
        self.eval_cells: list[str] = []
        self._node: str | None = None
        self._node_depth = 0
        self._stack: list[str] = []
        self._capture: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag in {"img", "br", "meta", "input", "path", "rect", "line"}:  # void / self-closing here
            self._void(tag, a, classes)
            return
        self._stack.append(tag)
        if "ng-node" in classes:
            self.nodes.append(a["data-ng-id"])
            self.node_imgs[a["data-ng-id"]] = []
            self._node, self._node_depth = a["data-ng-id"], len(self._stack)
        if "group-edge" in classes:
            self.edges.append((a["data-child"], a["data-parent"]))
        if "lab-name" in classes:
            self._capture.append("label")
        elif "details-body" in classes:
            self._capture.append("panel")
        elif tag in {"td", "th"} and "eval" in self._capture_context():
            self._capture.append("eval")
        elif "evaluation" in classes:
            self._capture.append("evaluation")
        else:
            self._capture.append("")
        if "label" in self._capture[:-1]:
            self.tags_in_labels.append(tag)

    def _capture_context(self) -> str:
        return " ".join(self._capture)

    def _void(self, tag, a, classes):
        if tag == "img" and self._node is not None:
            self.node_imgs[self._node].append(a.get("src") or "")
        elif tag == "img" and "evaluation" in self._capture_context():
            self.plot_imgs.append(a.get("src") or "")

    def handle_endtag(self, tag):
        if tag in {"img", "br", "meta", "input", "path", "rect", "line"} or not self._stack:
            return
        if self._node is not None and len(self._stack) == self._node_depth:
            self._node = None
        self._stack.pop()
        self._capture.pop()

    def handle_data(self, data):
        context = self._capture_context()
        if self._capture and self._capture[-1] == "label":
            self.label_names.append(data)
        if "panel" in context and data.strip():
            self.panel_text.append(data.strip())
        if self._capture and self._capture[-1] == "eval" and data.strip():
            self.eval_cells.append(data.strip())


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def rendered_dom(page: Path, tmp_path: Path, fragment: str = "") -> str:
    done = chromium(tmp_path, "--dump-dom", page.resolve().as_uri() + fragment)
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'data-ready="1"' in done.stdout, "the page's script did not finish"
    return done.stdout


def screenshot(page: Path, tmp_path: Path, name: str, size=(1600, 1300), fragment: str = "") -> Image.Image:
    target = tmp_path / name
    done = chromium(
        tmp_path,
        f"--screenshot={target}",
        f"--window-size={size[0]},{size[1]}",
        page.resolve().as_uri() + fragment,
    )
    assert done.returncode == 0 and target.exists(), done.stderr[-2000:]
    artifacts = os.environ.get("NEURFLOW_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(target, Path(artifacts) / name)
    image = Image.open(target).convert("RGB")
    assert image.size == size
    return image


def assert_not_blank(image: Image.Image) -> None:
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200, "the screenshot is (nearly) one colour"
    most = max(count for count, _ in colours)
    assert most < 0.9 * image.size[0] * image.size[1]


def decode(uri: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix), uri[:40]
    image = Image.open(io.BytesIO(base64.b64decode(uri[len(prefix) :], validate=True)))
    image.load()
    return image


def expected_edges(circuit: Circuit) -> Counter:
    return Counter(
        [(e.child, e.parent) for e in circuit.group_edges]
        + [(g, CLASS_ID) for g, _, _ in class_edges(circuit)]
    )


def some_labels(circuit: Circuit) -> dict[str, list[LabelRecord]]:
    names = ["flower", "stripes", ODD_LABEL, "wings"]
    out = {}
    for i, g in enumerate(circuit.neuron_groups):
        if i % 3 != 2:
            out[g.ng_id] = [
                LabelRecord(g.ng_id, names[i % 4], 0.9 - 0.02 * i, "concept_bank", details={"positives": 9}),
                LabelRecord(g.ng_id, "sky", 0.55, "concept_bank", rank=2),
            ]
    return out


# ------------------------------------------------------------------------------------ circuits


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory):
    """A real circuit of the planted benchmark with its patch set and image folder."""
    import torch

    from ingest.core.circuit import ExtractConfig, extract_circuit
    from ingest.core.models import load_model
    from ingest.core.tau import parse_tau
    from ingest.planted.data import write_image_folder

    torch.set_num_threads(2)
    model = load_model("planted_cnn", device="cpu")
    images = write_image_folder(tmp_path_factory.mktemp("images") / "bee", "bee", 4, seed=1234)
    cfg = ExtractConfig(layers=model.default_layers, tau=parse_tau("4"), k=10, steps=2)
    circuit, patches = extract_circuit(model, images, model.class_names.index("bee"), cfg)
    thumbs = {
        r.patch_id: encode_png(patches.pixels[i].permute(1, 2, 0).numpy())
        for i, r in enumerate(patches.records)
    }
    return circuit, patches, thumbs, images


def synthetic_circuit(groups_per_layer=(1, 6, 9, 12, 14, 18), seed: int = 0) -> tuple[Circuit, dict]:
    """A hand-made circuit (60 groups by default, random edges, some negative) with coloured thumbnails."""
    rng = random.Random(seed)
    run_id = "synthetic0000000"
    names = ["fc"] + [f"stage{i}" for i in range(len(groups_per_layer) - 1, 0, -1)]
    circuit = Circuit(
        run_id=run_id,
        model_id="synthetic-000000000000",
        arch="synthetic",
        weights_sha256=None,
        input_size=32,
        num_classes=10,
        class_index=3,
        class_name="cat",
        params={"tau": 16, "k": 8, "steps": 4},
    )
    thumbs = {}
    for depth, (name, n_groups) in enumerate(zip(names, groups_per_layer, strict=True)):
        circuit.layers.append(LayerRecord(name, depth, 64, "linear" if depth == 0 else "conv"))
        neurons = [3] if depth == 0 else list(range(3 * n_groups))
        for g in range(n_groups):
            members = [3] if depth == 0 else sorted(rng.sample(neurons, min(len(neurons), rng.randint(2, 9))))
            sgs = []
            for j, n in enumerate(members):
                pids = []
                for k in range(rng.randint(2, 6)):
                    pid = hashlib.sha256(f"{name}/{g}/{n}/{k}".encode()).hexdigest()[:32]
                    hue = (g * 37 + depth * 11) % 360
                    img = Image.new("RGB", (32, 32), f"hsl({hue},60%,{40 + 5 * k}%)")
                    ImageDraw.Draw(img).ellipse(
                        [4 + k, 4, 24, 20 + k], fill=f"hsl({(hue + 150) % 360},70%,60%)"
                    )
                    buffer = io.BytesIO()
                    img.save(buffer, format="PNG")
                    thumbs[pid] = buffer.getvalue()
                    pids.append(pid)
                    circuit.patches.append(PatchRecord(pid, f"img{g % 7}_{k}.png", [0, 0, 32, 32], 1.0))
                acts = sorted((rng.random() for _ in pids), reverse=True)
                sgs.append(
                    SemanticGroupRecord(f"{run_id}/{name}/{n}/{g}.{j}", name, n, j, pids, acts, [0.0], 0.5)
                )
            circuit.semantic_groups += sgs
            circuit.neuron_groups.append(
                NeuronGroupRecord(
                    f"{run_id}/{name}/g{g}",
                    name,
                    members,
                    [sg.sg_id for sg in sgs],
                    [p for sg in sgs for p in sg.patch_ids],
                    [0.0],
                    members[:5],
                )
            )
        for n in neurons:
            concept = [
                p
                for sg in circuit.semantic_groups
                if sg.layer == name and sg.neuron == n
                for p in sg.patch_ids
            ]
            circuit.neurons.append(NeuronRecord(name, n, concept, [1.0] * len(concept), 1.0))
    for depth in range(1, len(names)):
        parents = [g for g in circuit.neuron_groups if g.layer == names[depth - 1]]
        for child in (g for g in circuit.neuron_groups if g.layer == names[depth]):
            for parent in rng.sample(parents, min(len(parents), rng.randint(1, 3))):
                weight = rng.uniform(-0.3, 1.0) * depth
                circuit.group_edges.append(
                    GroupEdgeRecord(child.ng_id, parent.ng_id, weight, rng.randint(1, 9))
                )
    return circuit, thumbs


# --------------------------------------------------------------------------------------- tests


@needs_chromium
def test_planted_circuit_renders_every_group_edge_thumbnail_and_label(planted, tmp_path):
    circuit, _, thumbs, _ = planted
    labels = some_labels(circuit)
    plot = encode_png(np.tile(np.linspace(0, 255, 120, dtype=np.uint8)[None, :, None], (80, 1, 3)))
    page = tmp_path / "planted.html"
    page.write_text(
        render_report(
            circuit, thumbnails=thumbs, labels=labels, evaluation=EVALUATION, plots={"loss.png": plot}
        )
    )
    selected = next(g for g in circuit.neuron_groups if g.layer == circuit.layer_names()[2])
    dom = Dom(rendered_dom(page, tmp_path, "#group=" + selected.ng_id.replace("/", "%2F")))

    # exactly one node per neuron group, one edge per group edge and per edge into the class
    assert sorted(dom.nodes) == sorted(g.ng_id for g in circuit.neuron_groups)
    assert Counter(dom.edges) == expected_edges(circuit)
    assert sum(1 for _, parent in dom.edges if parent == CLASS_ID) >= 1

    # thumbnails: the chosen exemplars, as PNG data: URIs that decode
    shown = exemplar_patches(circuit, 4)
    for ng_id, srcs in dom.node_imgs.items():
        assert len(srcs) == len(shown[ng_id]) == min(4, len(set(shown[ng_id])))
        for src in srcs:
            image = decode(src)
            assert image.size == (THUMB_PX, THUMB_PX)  # the 64-px patches, stored at 128 px
    assert sum(len(s) for s in dom.node_imgs.values()) >= len(circuit.neuron_groups)

    # labels: the top two per labelled group, escaped (the odd one is text, not markup)
    assert {"flower", "stripes", "sky", ODD_LABEL} <= set(dom.label_names)
    assert dom.tags_in_labels == []
    assert Counter(dom.label_names)["sky"] == len(labels)

    # the page's script filled the details panel for the group in the URL
    assert f"{selected.layer}/{selected.ng_id.rsplit('/', 1)[-1]}" in dom.panel_text
    assert selected.ng_id in dom.panel_text
    assert {str(n) for n in selected.members} <= set(dom.panel_text)

    # evaluation numbers and the plot
    assert {"core_loss", "difference · mean", "0.950", "0.441", "12.500"} <= set(dom.eval_cells)
    assert len(dom.plot_imgs) == 1 and decode(dom.plot_imgs[0]).size == (120, 80)

    image = screenshot(page, tmp_path, "report-planted.png", fragment="#group=" + selected.ng_id)
    assert_not_blank(image)


def _open(page_path: Path, viewport=(1400, 900)):
    """Playwright on a report file: (playwright, browser, tab); the caller closes them."""
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    tab = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    tab.goto(page_path.resolve().as_uri())
    tab.wait_for_selector('html[data-ready="1"]')
    return playwright, browser, tab


@needs_chromium
def test_a_click_shows_feeds_first_large_exemplars_and_a_full_view(planted, tmp_path):
    """The panel after a click: "Feeds" within its first screen even with hundreds of semantic-group
    labels (folded), exemplars of at least 96 px with their activation, and a full view of a patch
    on its source image with the crop drawn."""
    from ingest.analysis.report_inputs import source_images

    circuit, _, thumbs, images = planted
    labels = some_labels(circuit)
    for sg in circuit.semantic_groups:  # hundreds of semantic-group label rows
        labels[sg.sg_id] = [LabelRecord(sg.sg_id, "dots", 0.6, "concept_bank")]
    shown = {pid for pids in exemplar_patches(circuit, 4).values() for pid in pids}
    sources = source_images(circuit, images, shown)
    assert sources
    from ingest.analysis.heatmaps import group_heatmaps, overlay_png
    from ingest.pipeline.run_context import open_run

    opened = open_run(circuit, with_patches=False)
    maps = group_heatmaps(opened.model, opened.cuts, circuit, thumbs, exemplar_patches(circuit, 4))
    heat = {g: {p: overlay_png(h, THUMB_PX) for p, h in per.items()} for g, per in maps.items()}
    page = tmp_path / "click.html"
    page.write_text(render_report(circuit, thumbnails=thumbs, labels=labels, sources=sources, heatmaps=heat))
    middle = circuit.layer_names()[1]
    group = max(
        (g for g in circuit.neuron_groups if g.layer == middle), key=lambda g: len(g.sg_ids)
    )  # one that feeds a layer above and has many semantic groups
    playwright, browser, tab = _open(page)
    try:
        tab.click(f'.ng-node[data-ng-id="{group.ng_id}"]')
        panel = tab.locator(".details").bounding_box()
        feeds = tab.locator(".details h4", has_text="Feeds").bounding_box()
        assert feeds["y"] + feeds["height"] <= min(panel["y"] + panel["height"], 900), (feeds, panel)
        assert tab.locator(".details details.sg-labels").count() == 1
        assert not tab.locator(".details details.sg-labels").evaluate("d => d.open")  # folded
        order = tab.locator(".details h4").all_inner_texts()
        assert order[:4] == [
            "FEEDS (LAYER ABOVE)",
            "FED BY (LAYER BELOW)",
            "EXEMPLARS (BEST FIRST)",
            "LABELS",
        ]
        exemplars = tab.locator(".details .exemplar img:not(.heat)")
        assert exemplars.count() == len(exemplar_patches(circuit, 4)[group.ng_id])
        for i in range(exemplars.count()):
            box = exemplars.nth(i).bounding_box()
            assert box["width"] >= 96 and box["height"] >= 96, box
            assert exemplars.nth(i).evaluate("i => i.naturalWidth") >= 96
        captions = tab.locator(".details .exemplar figcaption").all_inner_texts()
        assert all(c.startswith("act ") for c in captions), captions
        # where the group fires, over each exemplar (the group is on a conv layer)
        assert tab.locator(".details .exemplar img.heat").count() == exemplars.count()
        assert tab.locator(".details .exemplar img.heat").first.is_visible()
        tab.locator(".details .heat-toggle input").uncheck()
        assert not tab.locator(".details .exemplar img.heat").first.is_visible()
        tab.locator(".details .exemplar").first.click()
        tab.locator(".lightbox").wait_for(state="visible")
        assert tab.locator(".lb-patch img").first.evaluate("i => i.naturalWidth") >= 96
        assert tab.locator(".lb-patch img").first.bounding_box()["width"] >= 256
        assert tab.locator(".lb-heat img.heat").count() == 1
        tab.wait_for_function("() => document.querySelector('.lb-crop').style.width !== ''")
        crop = tab.locator(".lb-crop").bounding_box()
        frame = tab.locator(".lb-frame img").bounding_box()
        assert 0 < crop["width"] <= frame["width"] + 1 and crop["x"] >= frame["x"] - 1, (crop, frame)
        tab.screenshot(path=str(tmp_path / "report-full-view.png"))
        tab.keyboard.press("Escape")
        assert tab.locator(".lightbox").is_hidden()
        edge = tab.locator(".group-edge .hit").first
        edge.hover(force=True)
        assert tab.locator(".edge-tip").inner_text().startswith("W = ")
    finally:
        browser.close()
        playwright.stop()


def test_metric_maps_are_the_geometric_mean_of_clipped_ratios_per_position():
    from ingest.analysis.heatmaps import metric_maps

    acts = np.array([[[[1.0, 4.0]], [[4.0, 0.0]]]])  # one patch, 2 neurons, a 1x2 map
    heat = metric_maps(acts, np.array([2.0, 4.0]))
    # position 0: sqrt(0.5 * 1.0); position 1: neuron 0 is above its peak (clipped at 1), neuron 1
    # silent (clipped at eps): M is tiny as soon as one core neuron does not fire
    assert heat.shape == (1, 1, 2)
    assert heat[0, 0, 0] == pytest.approx(np.sqrt(0.5))
    assert heat[0, 0, 1] == pytest.approx(np.sqrt(1e-6))


def test_heatmaps_of_a_planted_circuit_cover_its_conv_and_head_groups(planted):
    """From the stored exemplar PNGs and the run's model: one map per exemplar of every group on a
    conv layer, of the layer's spatial size, and of the class head (pool + linear), probed over the
    map below it (its class activation map), in [0, 1], and not flat."""
    from ingest.analysis.heatmaps import group_heatmaps, overlay_png
    from ingest.pipeline.run_context import open_run

    circuit, _, thumbs, _ = planted
    opened = open_run(circuit, with_patches=False)
    shown = exemplar_patches(circuit, 4)
    maps = group_heatmaps(opened.model, opened.cuts, circuit, thumbs, shown)
    kinds = {layer.name: layer.kind for layer in circuit.layers}
    assert kinds["fc"] == "linear" and any(g.layer == "fc" for g in circuit.neuron_groups)
    assert set(maps) == {
        g.ng_id for g in circuit.neuron_groups if kinds[g.layer] == "conv" or g.layer == "fc"
    }
    for ng_id, per in maps.items():
        layer = ng_id.split("/")[1]
        spatial = layer if kinds[layer] == "conv" else opened.cuts.below(layer)
        assert list(per) == shown[ng_id]
        for heat in per.values():
            assert heat.shape == opened.cuts.shape(spatial)[1:]
            assert heat.min() >= 0.0 and heat.max() <= 1.0
    assert sum(float(h.max() - h.min()) > 0.05 for per in maps.values() for h in per.values()) > len(maps)
    overlay = Image.open(io.BytesIO(overlay_png(next(iter(next(iter(maps.values())).values())), THUMB_PX)))
    assert overlay.mode == "RGBA" and overlay.size == (THUMB_PX, THUMB_PX)


@needs_chromium
def test_fit_shows_every_layer_row(tmp_path):
    circuit, thumbs = synthetic_circuit()
    page = tmp_path / "fit.html"
    page.write_text(render_report(circuit, thumbnails=thumbs))
    playwright, browser, tab = _open(page, viewport=(1400, 800))
    try:
        scroll = tab.locator(".scroll").bounding_box()
        rows = tab.locator(".row-label")
        assert rows.count() == len(circuit.layers) + 1

        def visible() -> int:
            inside = 0
            for i in range(rows.count()):
                box = rows.nth(i).bounding_box()
                top, bottom = box["y"], box["y"] + box["height"]
                inside += top >= scroll["y"] - 1 and bottom <= scroll["y"] + scroll["height"] + 1
            return inside

        assert visible() < rows.count()  # the circuit is taller than the window
        tab.click('.toolbar button[data-zoom="0"]')
        assert visible() == rows.count()
        width = tab.locator(".stage").evaluate("s => s.getBoundingClientRect().width")
        assert width <= scroll["width"] + 1
    finally:
        browser.close()
        playwright.stop()


def test_edge_widths_are_scaled_within_each_layer_pair():
    circuit, _ = synthetic_circuit()
    layout = compute_layout(circuit)
    layer = {g.ng_id: g.layer for g in circuit.neuron_groups} | {CLASS_ID: CLASS_ID}
    widest = {}
    for edge in layout.edges:
        pair = (layer[edge.child], layer[edge.parent])
        widest[pair] = max(widest.get(pair, 0.0), edge.width)
    assert len(widest) == len(circuit.layers)  # every pair of adjacent layers, and into the class
    assert all(w == pytest.approx(11.0) for w in widest.values()), widest  # each pair's top edge is full


@needs_chromium
def test_sixty_groups_render_and_scroll_horizontally(tmp_path):
    circuit, thumbs = synthetic_circuit()
    assert len(circuit.neuron_groups) == 60
    labels = {
        g.ng_id: [LabelRecord(g.ng_id, f"concept {i}", 0.7, "clip")]
        for i, g in enumerate(circuit.neuron_groups)
    }
    page = tmp_path / "sixty.html"
    page.write_text(render_report(circuit, thumbnails=thumbs, labels=labels, exemplars=5))
    dom = Dom(rendered_dom(page, tmp_path))
    assert sorted(dom.nodes) == sorted(g.ng_id for g in circuit.neuron_groups)
    assert Counter(dom.edges) == expected_edges(circuit)
    assert all(1 <= len(srcs) <= 5 for srcs in dom.node_imgs.values())
    assert {f"concept {i}" for i in range(60)} == set(dom.label_names)
    layout = compute_layout(circuit, 5)
    assert layout.width > 1600  # wider than the window: the circuit panel scrolls horizontally
    assert_not_blank(screenshot(page, tmp_path, "report-sixty-groups.png"))


def test_layout_is_layered_deterministic_and_without_overlaps():
    circuit, thumbs = synthetic_circuit(seed=3)
    layout = compute_layout(circuit, 4)
    assert compute_layout(circuit, 4) == layout
    assert render_report(circuit, thumbnails=thumbs) == render_report(circuit, thumbnails=thumbs)
    rows: dict[str, set[float]] = {}
    for box in layout.nodes.values():
        rows.setdefault(box.layer, set()).add(box.y)
    assert all(len(ys) == 1 for ys in rows.values())
    ys = [rows[layer.name].pop() for layer in sorted(circuit.layers, key=lambda layer: layer.depth)]
    assert ys == sorted(ys) and layout.class_box.y + layout.class_box.h < ys[0]  # output at the top
    for layer in circuit.layer_names():
        boxes = sorted((b for b in layout.nodes.values() if b.layer == layer), key=lambda b: b.x)
        assert all(a.x + a.w < b.x for a, b in pairwise(boxes))
        assert all(b.x >= 0 and b.x + b.w <= layout.width for b in boxes)
    widths = {(e.child, e.parent): e.width for e in layout.edges}
    strongest = max(circuit.group_edges, key=lambda e: abs(e.weight))
    weakest = min(circuit.group_edges, key=lambda e: abs(e.weight))
    assert widths[(strongest.child, strongest.parent)] > widths[(weakest.child, weakest.parent)]


def test_exemplars_are_the_best_patches_by_normalised_activation():
    circuit = Circuit("r", "m", "a", None, 8, 2, 0, "x", {})
    circuit.layers = [LayerRecord("fc", 0, 2, "linear"), LayerRecord("l1", 1, 4, "conv")]
    circuit.patches = [
        PatchRecord(p, img, [0, 0, 8, 8], 1.0)
        for p, img in [("a1", "i1"), ("a2", "i2"), ("b1", "i3"), ("b2", "i1"), ("b3", "i4")]
    ]
    circuit.neurons = [NeuronRecord("l1", 0, [], [], max_activation=10.0), NeuronRecord("l1", 1, [], [], 2.0)]
    circuit.semantic_groups = [
        SemanticGroupRecord("r/l1/0/0", "l1", 0, 0, ["a1", "a2"], [9.0, 5.0], [0.0], 0.5),  # 0.9, 0.5
        SemanticGroupRecord(
            "r/l1/1/0", "l1", 1, 0, ["b2", "b1", "b3"], [1.9, 1.6, 0.2], [0.0], 0.5
        ),  # .95 .8 .1
    ]
    circuit.neuron_groups = [
        NeuronGroupRecord(
            "r/l1/g0", "l1", [0, 1], ["r/l1/0/0", "r/l1/1/0"], ["a1", "a2", "b2", "b1", "b3"], [0.0], [0]
        )
    ]
    # by score: b2 (.95, image i1), a1 (.9, i1 again: deferred), b1 (.8), a2 (.5), b3 (.1)
    assert exemplar_patches(circuit, 3)["r/l1/g0"] == ["b2", "b1", "a2"]
    assert exemplar_patches(circuit, 5)["r/l1/g0"] == ["b2", "b1", "a2", "b3", "a1"]


def test_large_patches_are_downscaled_and_broken_images_skipped():
    big = encode_png(np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8))
    assert decode(thumbnail_data_uri(big)).size == (THUMB_PX, THUMB_PX)
    assert thumbnail_data_uri(b"not a png") is None
    circuit, thumbs = synthetic_circuit((1, 2))
    broken = dict.fromkeys(thumbs, b"\x89PNG broken")
    dom = Dom(render_report(circuit, thumbnails=broken))  # drawn as grey boxes, not an error
    assert sorted(dom.nodes) == sorted(g.ng_id for g in circuit.neuron_groups)
    assert all(srcs == [] for srcs in dom.node_imgs.values())


def test_patch_images_are_read_best_effort(tmp_path):
    from graphmodel.patch_uris import read_patch_images
    from graphmodel.patchstore import LocalPatchStore, PatchStoreError

    local = LocalPatchStore(tmp_path)
    png = encode_png(np.zeros((4, 4, 3), dtype=np.uint8))
    uris = {"aa" * 16: local.put("aa" * 16, png), "bb" * 16: local.uri("bb" * 16)}  # bb: never stored
    calls = []

    class DownS3:
        def get(self, uri):
            calls.append(uri)
            raise PatchStoreError("cannot reach S3 at http://127.0.0.1:1 while reading it")

    uris.update({f"{c}" * 32: f"s3://b/patches/{c * 32}.png" for c in "cde"})
    got = read_patch_images(uris, s3_store=DownS3)
    assert got.images == {"aa" * 16: png}
    assert set(got.missing) == {"bb" * 16, "c" * 32, "d" * 32, "e" * 32}
    assert len(calls) == 1  # S3 is not asked again once it is known to be down
    assert "cannot reach S3" in got.missing["e" * 32]


def test_everything_from_the_data_is_escaped():
    circuit, thumbs = synthetic_circuit((1, 3, 4))
    circuit.class_name = "</script><script>alert(1)</script>"
    ng = circuit.neuron_groups[1].ng_id
    labels = {ng: [LabelRecord(ng, '"><img src=x onerror=alert(2)>', 0.8, "manual")]}
    evaluation = {"<i>section</i>": {"a</script>": "<b>x</b>"}}
    page = render_report(circuit, thumbnails=thumbs, labels=labels, evaluation=evaluation)
    assert page.count("<script") == 2  # the data block and the page's script
    assert "alert(1)</script>" not in page and "<img src=x" not in page and "<b>x</b>" not in page
    data = page.split('<script type="application/json" id="nf-data">', 1)[1].split("</script>", 1)[0]
    assert json.loads(data)["className"] == circuit.class_name


def test_evaluation_tables_pivot_on_layers():
    tables = evaluation_tables(
        {"seconds": 3.0, "fidelity": {"by_tau": {"4": {"block4": {"single/mask/class": {"core": 0.5}}}}}},
        ["fc", "block4"],
    )
    assert tables[0] == {
        "title": "summary",
        "plain": [("seconds", "3.000")],
        "columns": [],
        "pivot": [],
        "truncated": False,
    }
    assert tables[1]["columns"] == ["block4"]
    assert tables[1]["pivot"] == [("by_tau · 4 · single/mask/class · core", {"block4": "0.500"})]


def test_cli_circuit_json_cuts_thumbnails_from_the_image_folder(planted, tmp_path):
    circuit, patches, _, images = planted
    saved = tmp_path / "run" / "circuit.json"
    saved.parent.mkdir()
    circuit.save(saved)
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "overlap.png").write_bytes(encode_png(np.zeros((10, 20, 3), dtype=np.uint8)))
    (plots / "notes.txt").write_text("not a plot")
    evaluation = tmp_path / "evaluation.json"
    evaluation.write_text(json.dumps(EVALUATION))
    out = tmp_path / "site" / "circuit.html"
    result = CliRunner().invoke(
        report_command,
        [
            "--circuit",
            str(saved),
            "--images",
            str(images),
            "-o",
            str(out),
            "--evaluation",
            str(evaluation),
            "--plots",
            str(plots),
            "--exemplars",
            "3",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and "differ from the extraction" not in result.output
    # the planted CNN's conv layers have maps, and so does its pool + linear head (probed over
    # block4): every shown exemplar of their groups gets one
    mapped = {layer.name for layer in circuit.layers if layer.kind == "conv"} | {"fc"}
    on_maps = sum(len(p) for g, p in exemplar_patches(circuit, 3).items() if g.split("/")[1] in mapped)
    assert f" {on_maps} heatmaps" in result.output, result.output
    assert "heatmaps block4" in result.output and "heatmaps fc" in result.output  # a bar per layer
    dom = Dom(out.read_text())
    assert sorted(dom.nodes) == sorted(g.ng_id for g in circuit.neuron_groups)
    assert Counter(dom.edges) == expected_edges(circuit)
    pixels = {r.patch_id: patches.pixels[i].permute(1, 2, 0).numpy() for i, r in enumerate(patches.records)}
    shown = exemplar_patches(circuit, 3)
    for ng_id, srcs in dom.node_imgs.items():
        assert len(srcs) == len(shown[ng_id])
        for pid, src in zip(shown[ng_id], srcs, strict=True):  # cut again = the extraction's pixels
            stored = decode(src).convert("RGB")  # 64 px shown at 128: each pixel repeated 2x2
            assert stored.size == (THUMB_PX, THUMB_PX)
            assert np.array_equal(np.asarray(stored.resize((64, 64), Image.NEAREST)), pixels[pid])
    assert len(dom.plot_imgs) == 1 and "0.441" in dom.eval_cells

    # without --images: the folder recorded in the circuit
    again = CliRunner().invoke(report_command, ["--circuit", str(saved), "-o", str(tmp_path / "b.html")])
    assert again.exit_code == 0, again.output
    assert (
        Dom((tmp_path / "b.html").read_text()).node_imgs
        == Dom(render_report(circuit, thumbnails=planted[2], exemplars=4)).node_imgs
    )

    wrong = CliRunner().invoke(report_command, ["--run", "x", "--circuit", str(saved), "-o", str(out)])
    assert wrong.exit_code == 2 and "exactly one of --run" in wrong.output


def store_circuit(driver, circuit: Circuit, thumbs: dict[str, bytes], store) -> None:
    """Write an extracted circuit into the graph the way `neurflow ingest` does (exemplar images
    uploaded first, then the layers top-down), without extracting it a second time."""
    from graphmodel import writer
    from graphmodel.patchstore import upload_patches
    from graphmodel.records import LayerStep

    store.check()
    writer.start_run(driver, circuit)
    exemplars = sorted({pid for sg in circuit.semantic_groups for pid in sg.patch_ids})
    uris = upload_patches(store, [(pid, thumbs[pid]) for pid in exemplars])
    writer.write_patches(driver, circuit.run_id, circuit.patches, uris=uris)
    sg_layer = {sg.sg_id: sg.layer for sg in circuit.semantic_groups}
    ng_layer = {g.ng_id: g.layer for g in circuit.neuron_groups}
    for layer in sorted(circuit.layers, key=lambda layer: layer.depth):
        name = layer.name
        writer.write_layer(
            driver,
            circuit.run_id,
            LayerStep(
                layer=layer,
                neurons=circuit.neurons_at(name),
                semantic_groups=[sg for sg in circuit.semantic_groups if sg.layer == name],
                hyperedges=[e for e in circuit.hyperedges if sg_layer[e.sg_id] == name],
                core_edges=[e for e in circuit.core_edges if e.parent_layer == name],
                neuron_groups=[g for g in circuit.neuron_groups if g.layer == name],
                group_edges=[e for e in circuit.group_edges if ng_layer[e.child] == name],
            ),
        )
    writer.complete_run(driver, circuit)


@pytest.mark.slow
def test_cli_run_reads_circuit_labels_patches_and_evaluation_from_the_stack(stack, driver, planted, tmp_path):
    from graphmodel import reader
    from graphmodel.labels import write_labels
    from graphmodel.patchstore import S3PatchStore

    circuit, _, thumbs, _ = planted
    store_circuit(driver, circuit, thumbs, S3PatchStore.from_config(stack))
    assert reader.run_status(driver, circuit.run_id).status == "COMPLETE"
    labels = [lab for labs in some_labels(circuit).values() for lab in labs if lab.concept != ODD_LABEL]
    write_labels(driver, circuit.run_id, "concept_bank", labels)
    driver.execute_query(
        "MATCH (r:Run {run_id: $id}) SET r.evaluation_json = $ev",
        id=circuit.run_id,
        ev=json.dumps(EVALUATION),
    )

    out = tmp_path / "run.html"
    done = CliRunner().invoke(
        report_command, ["--run", circuit.run_id, "-o", str(out)], catch_exceptions=False
    )
    assert done.exit_code == 0, done.output
    assert "could not be read" not in done.output
    page = out.read_text()
    dom = Dom(page)
    assert sorted(dom.nodes) == sorted(g.ng_id for g in circuit.neuron_groups)
    assert Counter(dom.edges) == expected_edges(circuit)
    # the same thumbnails as from the in-memory circuit: the images came back from S3
    assert dom.node_imgs == Dom(render_report(circuit, thumbnails=thumbs)).node_imgs
    assert all(src.startswith("data:image/png") for srcs in dom.node_imgs.values() for src in srcs)
    assert {"flower", "stripes", "sky"} <= set(dom.label_names)
    assert "0.441" in dom.eval_cells

    missing = CliRunner().invoke(report_command, ["--run", "no-such-run", "-o", str(out)])
    assert missing.exit_code == 1 and "not in the graph" in missing.output

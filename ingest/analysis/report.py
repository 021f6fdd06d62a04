"""`neurflow report`: one self-contained HTML page that draws a concept circuit.

Layers are rows (the output layer at the top, the class above it), neuron groups are cards with their
best exemplar patches and top labels, group edges are SVG curves whose width grows with |W| relative
to the largest |W| of the same layer pair (W spans orders of magnitude between layers). Clicking (or
hovering) a group or an edge fills a details panel: what the group feeds and is fed by first, then
its exemplars (large, with their activation; a click opens the patch and its source image with the
crop drawn), its labels, and its semantic groups folded. The layout is computed here, deterministically;
the page needs no network: thumbnails are base64 PNGs, the CSS and the bit of JS are inline, and
every text that comes from the data is escaped. The page's skeleton, style sheet and script are
package data in report_assets/ (report.html, report.css, report.js); Python builds the data and the
drawing, and the template places them.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import string
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from itertools import pairwise
from typing import Any

from graphmodel.records import Circuit, LabelRecord, NeuronGroupRecord, class_feed_weights

THUMB = 48  # CSS px of a node thumbnail
THUMB_GAP = 4
THUMB_PX = 128  # stored size of an exemplar: the panel shows it at 112 px, the full view at 256
SOURCE_PX = 384  # stored size of a source image in the full view (the crop box is drawn on it)
NODE_PAD = 8
NODE_MIN_W = 200
NODE_H = 142
LABEL_LINES = 2
H_GAP = 40
V_GAP = 110
MARGIN = 28
GUTTER = 170
CLASS_W, CLASS_H = 230, 50
EDGE_MIN, EDGE_MAX = 1.0, 11.0
MAX_EXEMPLARS = 8
CLASS_ID = "class"


# ------------------------------------------------------------------------------------ exemplars


def _short(ng_id: str) -> str:
    """``<run>/<layer>/g3`` -> ``g3``."""
    return ng_id.rsplit("/", 1)[-1]


def exemplar_patches(circuit: Circuit, exemplars: int = 4) -> dict[str, list[str]]:
    """The patches shown on each neuron group's node, best first.

    A patch's score is its activation divided by the max activation of the neuron whose semantic
    group holds it (neurons have different scales), its best over the group's semantic groups; ties
    keep the order of the group's patch list. Patches from source images not shown yet come first,
    so a node does not show four overlapping crops of one image when other images qualify.
    """
    return {
        ng_id: [pid for pid, _ in ranked] for ng_id, ranked in exemplar_scores(circuit, exemplars).items()
    }


def exemplar_scores(circuit: Circuit, exemplars: int = 4) -> dict[str, list[tuple[str, float | None]]]:
    """`exemplar_patches` with each patch's score: its activation over the max activation of the
    neuron whose semantic group holds it (None for a patch no semantic group of the group holds)."""
    if exemplars < 1:
        raise ValueError("exemplars must be at least 1")
    sgs = {sg.sg_id: sg for sg in circuit.semantic_groups}
    max_act = {(n.layer, n.index): n.max_activation for n in circuit.neurons}
    source = {p.patch_id: p.source_image for p in circuit.patches}
    out: dict[str, list[tuple[str, float | None]]] = {}
    for group in circuit.neuron_groups:
        order = {pid: i for i, pid in enumerate(group.patch_ids)}
        score: dict[str, float] = {}
        for sg_id in group.sg_ids:
            sg = sgs.get(sg_id)
            if sg is None:
                continue
            scale = max_act.get((sg.layer, sg.neuron)) or 0.0
            for pid, act in zip(sg.patch_ids, sg.activations, strict=False):
                value = act / scale if scale > 0 else act
                order.setdefault(pid, len(order))
                if pid not in score or value > score[pid]:
                    score[pid] = value
        ranked = sorted(order, key=lambda pid: (-score.get(pid, -math.inf), order[pid]))
        chosen, seen_images = [], set()
        for pid in ranked:
            image = source.get(pid)
            if image is not None and image in seen_images:
                continue
            chosen.append(pid)
            if image is not None:
                seen_images.add(image)
            if len(chosen) == exemplars:
                break
        for pid in ranked:
            if len(chosen) == exemplars:
                break
            if pid not in chosen:
                chosen.append(pid)
        out[group.ng_id] = [(pid, score.get(pid)) for pid in chosen]
    return out


def drawn_exemplars(circuit: Circuit, thumbnails: Mapping[str, bytes], exemplars: int = 4) -> tuple[int, int]:
    """(exemplar images the page draws, exemplar images it shows): bytes that are missing or do not
    decode as an image are drawn as grey boxes and not counted."""
    shown = {pid for pids in exemplar_patches(circuit, exemplars).values() for pid in pids}
    drawn = sum(1 for pid in shown if pid in thumbnails and thumbnail_data_uri(thumbnails[pid]) is not None)
    return drawn, len(shown)


def thumbnail_data_uri(png: bytes, size: int = THUMB_PX) -> str | None:
    """A PNG as a data: URI with its longer side `size` px; None when the bytes are not an image.

    Larger images are downscaled so pages stay small; smaller ones (a 64-px model sees 64-px patches)
    are upscaled, so the panel never stretches a small PNG in the web browser."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(png)) as img:
            img = img.convert("RGB")
            if max(img.size) != size:
                scale = size / max(img.size)
                shape = (max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale)))
                # A whole-number upscale repeats pixels: what the model saw, with nothing invented.
                exact = scale > 1 and size % max(img.size) == 0
                img = img.resize(shape, Image.NEAREST if exact else Image.LANCZOS)
            buffer = io.BytesIO()
            img.save(buffer, format="PNG", optimize=True)
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _image_size(data: bytes) -> list[int] | None:
    """[width, height] of an image, or None when the bytes are not one."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return [int(img.size[0]), int(img.size[1])]
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def _image_data_uri(data: bytes) -> str | None:
    """A plot as a data: URI with its own format (PNG, JPEG, SVG, GIF, WebP); None when unknown."""
    kinds = (
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xff\xd8\xff", "image/jpeg"),
        (b"GIF8", "image/gif"),
    )
    mime = next((m for sig, m in kinds if data.startswith(sig)), None)
    if mime is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        mime = "image/webp"
    if mime is None and b"<svg" in data[:1024]:
        mime = "image/svg+xml"
    if mime is None:
        return None
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


# --------------------------------------------------------------------------------------- layout


@dataclass
class NodeBox:
    ng_id: str
    layer: str
    x: float
    y: float
    w: float
    h: float

    @property
    def cx(self) -> float:
        return self.x + self.w / 2


@dataclass
class EdgePath:
    child: str
    parent: str  # an ng_id, or CLASS_ID for the edges into the class
    weight: float
    edges: int
    d: str
    width: float


@dataclass
class Layout:
    width: float
    height: float
    rows: list[tuple[str, float, float]]  # (layer name or CLASS_ID, y top, row height)
    nodes: dict[str, NodeBox] = field(default_factory=dict)
    class_box: NodeBox | None = None
    edges: list[EdgePath] = field(default_factory=list)
    max_weight: float = 1.0
    pair_max: dict[tuple[str, str], float] = field(default_factory=dict)  # (child layer, parent layer)


def class_edges(circuit: Circuit) -> list[tuple[str, float, int]]:
    """(ng_id, weight, edges) of the top layer's groups into the class, as the writer stores them:
    weight is the share of the top layer's concept patches the group covers."""
    if not circuit.layers:
        return []
    top = min(circuit.layers, key=lambda layer: layer.depth).name
    groups = [g for g in circuit.neuron_groups if g.layer == top]
    weights = class_feed_weights(circuit.neurons_at(top), groups)
    return [(g.ng_id, weights[g.ng_id], len(g.sg_ids)) for g in groups]


def _crossings(order_up: list[str], order_down: list[str], edges: list[tuple[str, str]]) -> int:
    up = {g: i for i, g in enumerate(order_up)}
    down = {g: i for i, g in enumerate(order_down)}
    pairs = [(down[c], up[p]) for c, p in edges if c in down and p in up]
    return sum(1 for i, (a, b) in enumerate(pairs) for c, d in pairs[i + 1 :] if (a - c) * (b - d) < 0)


def _order_rows(
    layers: list[str], groups: dict[str, list[str]], weights: dict[tuple[str, str], float]
) -> dict[str, list[str]]:
    """Order the groups of each layer to reduce edge crossings: barycenter sweeps (down, up, down,
    ...), keeping the ordering with the fewest crossings. Deterministic; ties keep the group order."""
    parents_of: dict[str, list[tuple[str, float]]] = defaultdict(list)
    children_of: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for (child, parent), w in weights.items():
        parents_of[child].append((parent, abs(w)))
        children_of[parent].append((child, abs(w)))
    pairs = list(weights)

    def total(order: dict[str, list[str]]) -> int:
        return sum(_crossings(order[a], order[b], pairs) for a, b in pairwise(layers))

    def centred(row: list[str]) -> dict[str, float]:
        return {g: i - (len(row) - 1) / 2 for i, g in enumerate(row)}

    def reorder(row: list[str], neighbour_pos: dict[str, float], links) -> list[str]:
        own = centred(row)
        key = {}
        for g in row:
            linked = [(neighbour_pos[n], w) for n, w in links.get(g, []) if n in neighbour_pos]
            weight = sum(w for _, w in linked)
            key[g] = sum(p * w for p, w in linked) / weight if weight > 0 else own[g]
        index = {g: i for i, g in enumerate(row)}
        return sorted(row, key=lambda g: (key[g], index[g]))

    order = {layer: list(groups.get(layer, [])) for layer in layers}
    best, best_score = {k: list(v) for k, v in order.items()}, total(order)
    for _ in range(4):
        for upper, lower in pairwise(layers):
            order[lower] = reorder(order[lower], centred(order[upper]), parents_of)
        for upper, lower in reversed(list(pairwise(layers))):
            if upper != layers[0]:
                order[upper] = reorder(order[upper], centred(order[lower]), children_of)
        for upper, lower in pairwise(layers):
            order[lower] = reorder(order[lower], centred(order[upper]), parents_of)
        score = total(order)
        if score < best_score:
            best, best_score = {k: list(v) for k, v in order.items()}, score
    return best


def edge_width(weight: float, max_weight: float) -> float:
    """Stroke width of an edge: grows with sqrt(|W| / max |W|), max over the edges of the same layer
    pair: W sums more hyperedges between wide layers, so one scale for all would draw the edges of
    narrow layers (and into the class, W ≤ 1) as hairlines."""
    share = min(1.0, abs(weight) / max_weight) if max_weight > 0 else 0.0
    return round(EDGE_MIN + (EDGE_MAX - EDGE_MIN) * math.sqrt(share), 2)


def node_width(exemplars: int) -> float:
    return max(NODE_MIN_W, 2 * NODE_PAD + exemplars * THUMB + (exemplars - 1) * THUMB_GAP)


def compute_layout(circuit: Circuit, exemplars: int = 4) -> Layout:
    """Positions of the class, the group cards and the edge curves (pixels, y down)."""
    layers = [layer.name for layer in sorted(circuit.layers, key=lambda layer: layer.depth)]
    groups: dict[str, list[str]] = defaultdict(list)
    for g in circuit.neuron_groups:
        groups[g.layer].append(g.ng_id)
    layer_of = {g.ng_id: g.layer for g in circuit.neuron_groups}
    weights = {
        (e.child, e.parent): e.weight
        for e in circuit.group_edges
        if e.child in layer_of and e.parent in layer_of
    }
    order = _order_rows(layers, groups, weights)
    nw = node_width(exemplars)
    widest = max([len(order[layer]) for layer in layers] + [1])
    inner = max(widest * nw + (widest - 1) * H_GAP, CLASS_W, 480)
    width = inner + 2 * MARGIN
    rows: list[tuple[str, float, float]] = [(CLASS_ID, 0.0, MARGIN + CLASS_H + V_GAP / 2)]
    y = MARGIN + CLASS_H + V_GAP
    layout = Layout(width=width, height=0.0, rows=rows)
    layout.class_box = NodeBox(CLASS_ID, CLASS_ID, (width - CLASS_W) / 2, MARGIN, CLASS_W, CLASS_H)
    for layer in layers:
        row = order[layer]
        row_w = len(row) * nw + max(len(row) - 1, 0) * H_GAP
        x = (width - row_w) / 2
        for ng_id in row:
            layout.nodes[ng_id] = NodeBox(ng_id, layer, x, y, nw, NODE_H)
            x += nw + H_GAP
        rows.append((layer, y - V_GAP / 2, NODE_H + V_GAP))
        y += NODE_H + V_GAP
    layout.height = y - V_GAP + MARGIN + 8

    links = [(e.child, e.parent, e.weight, e.edges) for e in circuit.group_edges]
    links += [(ng_id, CLASS_ID, w, n) for ng_id, w, n in class_edges(circuit)]
    boxes = {**layout.nodes, CLASS_ID: layout.class_box}
    links = [link for link in links if link[0] in boxes and link[1] in boxes]
    layout.max_weight = max([abs(link[2]) for link in links] + [1e-12])
    layer_of_box = {key: box.layer for key, box in boxes.items()}
    for child, parent, w, _ in links:
        pair = (layer_of_box[child], layer_of_box[parent])
        layout.pair_max[pair] = max(layout.pair_max.get(pair, 1e-12), abs(w))

    def ports(box: NodeBox, others: list[tuple[int, float]]) -> dict[int, float]:
        """Spread the endpoints of a node's edges along its side, ordered by the far end's x."""
        ranked = sorted(others, key=lambda item: (item[1], item[0]))
        span = min(box.w * 0.7, 16.0 * max(len(ranked) - 1, 0))
        step = span / (len(ranked) - 1) if len(ranked) > 1 else 0.0
        return {i: box.cx - span / 2 + k * step for k, (i, _) in enumerate(ranked)}

    top_ends: dict[str, list[tuple[int, float]]] = defaultdict(list)
    bottom_ends: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for i, (child, parent, _, _) in enumerate(links):
        top_ends[child].append((i, boxes[parent].cx))
        bottom_ends[parent].append((i, boxes[child].cx))
    start_x: dict[int, float] = {}
    end_x: dict[int, float] = {}
    for ng_id, ends in top_ends.items():
        start_x.update(ports(boxes[ng_id], ends))
    for ng_id, ends in bottom_ends.items():
        end_x.update(ports(boxes[ng_id], ends))
    for i, (child, parent, w, n) in enumerate(links):
        x1, y1 = start_x[i], boxes[child].y
        x2, y2 = end_x[i], boxes[parent].y + boxes[parent].h
        ym = (y1 + y2) / 2
        d = f"M{x1:.1f},{y1:.1f} C{x1:.1f},{ym:.1f} {x2:.1f},{ym:.1f} {x2:.1f},{y2:.1f}"
        top = layout.pair_max[(layer_of_box[child], layer_of_box[parent])]
        layout.edges.append(EdgePath(child, parent, float(w), int(n), d, edge_width(w, top)))
    return layout


# ----------------------------------------------------------------------------------- formatting


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt_number(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:.3f}"
    if isinstance(value, (list, tuple)):
        if all(not isinstance(v, (dict, list, tuple)) for v in value):
            shown = ", ".join(fmt_number(v) for v in value[:12])
            return f"[{shown}{', …' if len(value) > 12 else ''}]"
        return _cut(json.dumps(value, default=str), 120)
    if isinstance(value, dict):
        return _cut(json.dumps(value, default=str), 120)
    return str(value)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _script_json(data: Any) -> str:
    """JSON that is safe inside <script type="application/json">."""
    text = json.dumps(data, ensure_ascii=False, sort_keys=True, default=str)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _sorted_labels(labels: Sequence[LabelRecord]) -> list[LabelRecord]:
    """Each labeller's rank 1 first (concept-bank labels are ranked by effect, not score), then by score."""
    return sorted(labels, key=lambda lab: (lab.rank, -float(lab.score), lab.method, lab.concept))


# ----------------------------------------------------------------------------------- evaluation


def _flatten(value: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    if isinstance(value, Mapping):
        out = []
        for key, item in value.items():
            out += _flatten(item, (*path, str(key)))
        return out
    return [(path, value)]


MAX_EVAL_ROWS = 300


def evaluation_tables(evaluation: Mapping[str, Any], layer_names: Sequence[str]) -> list[dict[str, Any]]:
    """The evaluation numbers as tables: one per top-level section. Numbers keyed by a layer name
    anywhere in their path are pivoted into a (metric x layer) table; the rest is (key, value)."""
    layer_set = set(layer_names)
    sections: list[tuple[str, Any]] = []
    general = {k: v for k, v in evaluation.items() if not isinstance(v, Mapping) and k != "plots"}
    if general:
        sections.append(("summary", general))
    sections += [(k, v) for k, v in evaluation.items() if isinstance(v, Mapping) and k != "plots"]
    tables = []
    for title, value in sections:
        plain: list[tuple[str, str]] = []
        pivot: dict[str, dict[str, str]] = {}
        columns: list[str] = []
        for path, item in _flatten(value):
            at = next((i for i, part in enumerate(path) if part in layer_set), None)
            if at is None:
                plain.append((" · ".join(path) or title, fmt_number(item)))
                continue
            layer = path[at]
            key = " · ".join(path[:at] + path[at + 1 :]) or "value"
            if layer not in columns:
                columns.append(layer)
            pivot.setdefault(key, {})[layer] = fmt_number(item)
        columns.sort(key=lambda name: list(layer_names).index(name))
        truncated = len(plain) + len(pivot) > MAX_EVAL_ROWS
        tables.append(
            {
                "title": title,
                "plain": plain[:MAX_EVAL_ROWS],
                "columns": columns,
                "pivot": list(pivot.items())[: max(0, MAX_EVAL_ROWS - len(plain))],
                "truncated": truncated,
            }
        )
    return tables


def _evaluation_html(evaluation: Mapping[str, Any] | None, plots: Mapping[str, bytes] | None, layers) -> str:
    if not evaluation and not plots:
        return ""
    parts = ['<section class="evaluation" id="evaluation"><h2>Evaluation</h2>']
    for table in evaluation_tables(evaluation or {}, layers):
        parts.append(f'<div class="eval-block"><h3>{esc(table["title"])}</h3>')
        if table["plain"]:
            parts.append('<table class="eval-table kv"><tbody>')
            for key, value in table["plain"]:
                parts.append(f"<tr><th>{esc(key)}</th><td>{esc(value)}</td></tr>")
            parts.append("</tbody></table>")
        if table["pivot"]:
            head = "".join(f"<th>{esc(c)}</th>" for c in table["columns"])
            parts.append(f'<table class="eval-table pivot"><thead><tr><th></th>{head}</tr></thead><tbody>')
            for key, cells in table["pivot"]:
                row = "".join(f"<td>{esc(cells.get(c, '–'))}</td>" for c in table["columns"])
                parts.append(f"<tr><th>{esc(key)}</th>{row}</tr>")
            parts.append("</tbody></table>")
        if table["truncated"]:
            parts.append(f'<p class="note">only the first {MAX_EVAL_ROWS} rows are shown</p>')
        parts.append("</div>")
    if plots:
        parts.append('<div class="plots">')
        for name in sorted(plots):
            uri = _image_data_uri(plots[name])
            if uri is None:
                parts.append(
                    f'<figure class="plot"><div class="missing-plot">not an image</div>'
                    f"<figcaption>{esc(name)}</figcaption></figure>"
                )
                continue
            parts.append(
                f'<figure class="plot"><img src="{uri}" alt="{esc(name)}">'
                f"<figcaption>{esc(name)}</figcaption></figure>"
            )
        parts.append("</div>")
    parts.append("</section>")
    return "".join(parts)


# ------------------------------------------------------------------------------------------ html


def _purity(circuit: Circuit) -> dict[str, dict[str, Any]]:
    return {
        r["id"]: r
        for r in circuit.stats.get("purity") or []
        if isinstance(r, Mapping) and r.get("kind") == "neuron_group" and "id" in r
    }


def _node_html(
    group: NeuronGroupRecord,
    box: NodeBox,
    shown: list[str],
    thumbs: dict[str, str | None],
    labels: list[LabelRecord],
    truth: Mapping[str, Any] | None,
) -> str:
    short = _short(group.ng_id)
    n_members = len(group.members)
    meta = f"{n_members} neuron{'s' if n_members != 1 else ''} · {len(group.patch_ids)} patches"
    title = f"{group.ng_id}\n{meta}\nclick for details"
    imgs = []
    for pid in shown:
        uri = thumbs.get(pid)
        if uri:
            imgs.append(
                f'<img class="thumb" src="{uri}" width="{THUMB}" height="{THUMB}" '
                f'alt="patch {esc(pid[:12])}" data-patch-id="{esc(pid)}">'
            )
        else:
            imgs.append(f'<span class="thumb missing" title="no image for patch {esc(pid)}">?</span>')
    label_items = []
    for lab in labels[:LABEL_LINES]:
        score = float(lab.score)
        bar = max(0.0, min(1.0, score)) * 100
        label_items.append(
            f'<li title="{esc(lab.concept)}: {esc(lab.method)} score {score:.3f}">'
            f'<span class="lab-name">{esc(lab.concept)}</span>'
            f'<span class="lab-bar"><i style="width:{bar:.0f}%"></i></span>'
            f'<span class="lab-score">{score:.2f}</span></li>'
        )
    if not labels:
        label_items.append('<li class="unlabelled">no label</li>')
    truth_html = ""
    if truth and truth.get("concept"):
        truth_html = (
            f'<div class="ng-truth" title="ground truth: share of the group\'s patches that contain '
            f'its dominant concept">truth: {esc(truth["concept"])} {float(truth.get("purity", 0)):.2f}</div>'
        )
    style = f"left:{box.x:.1f}px;top:{box.y:.1f}px;width:{box.w:.0f}px;height:{box.h:.0f}px"
    return (
        f'<div class="ng-node" data-ng-id="{esc(group.ng_id)}" data-layer="{esc(group.layer)}" '
        f'tabindex="0" role="button" style="{style}" title="{esc(title)}">'
        f'<div class="ng-head"><span class="ng-name">{esc(short)}</span>'
        f'<span class="ng-meta">{esc(meta)}</span></div>'
        f'<div class="ng-thumbs">{"".join(imgs)}</div>'
        f'<ul class="ng-labels">{"".join(label_items)}</ul>{truth_html}</div>'
    )


def _edge_html(edge: EdgePath, names: dict[str, str]) -> str:
    sign = "neg" if edge.weight < 0 else "pos"
    title = (
        f"{names.get(edge.child, edge.child)} → {names.get(edge.parent, edge.parent)}: "
        f"W = {edge.weight:.4g} ({edge.edges} hyperedge{'s' if edge.edges != 1 else ''})"
    )
    kind = " class-edge" if edge.parent == CLASS_ID else ""
    return (
        f'<g class="group-edge {sign}{kind}" data-child="{esc(edge.child)}" data-parent="{esc(edge.parent)}" '
        f'data-weight="{edge.weight:.6g}" tabindex="0"><title>{esc(title)}</title>'
        f'<path class="hit" d="{edge.d}" stroke-width="{max(edge.width + 8, 12):.1f}"/>'
        f'<path class="line" d="{edge.d}" stroke-width="{edge.width:.2f}"/></g>'
    )


def _legend_html(max_weight: float) -> str:
    samples = []
    for share in (1.0, 0.25, 0.04) if max_weight > 1e-9 else ():  # no samples without edges
        stroke = edge_width(share, 1.0)
        samples.append(
            f'<span class="legend-item"><svg width="46" height="16" aria-hidden="true">'
            f'<line x1="2" y1="8" x2="44" y2="8" class="legend-pos" stroke-width="{stroke:.1f}"/></svg>'
            f"{share:.0%}</span>"
        )
    return (
        '<div class="legend"><span class="legend-title">Edge width ∝ √(|W| / largest |W| between the '
        "same two layers); hover an edge for its W:</span>"
        + "".join(samples)
        + '<span class="legend-item"><svg width="46" height="16" aria-hidden="true"><line x1="2" y1="8" '
        'x2="44" y2="8" class="legend-pos" stroke-width="4"/></svg>positive</span>'
        '<span class="legend-item"><svg width="46" height="16" aria-hidden="true"><line x1="2" y1="8" '
        'x2="44" y2="8" class="legend-neg" stroke-width="4"/></svg>negative</span>'
        '<span class="legend-item"><span class="legend-core">12</span>core member</span>'
        '<span class="legend-hint">Hover to trace a group\'s edges; click a group or an edge for details.'
        "</span></div>"
    )


def _images_used(value: Any) -> str:
    count = len(value) if isinstance(value, list) else value
    return f" from {count} images" if isinstance(count, int) and not isinstance(count, bool) else ""


def _header_html(circuit: Circuit, n_edges: int) -> str:
    cls = (
        f"“{circuit.class_name}” (class {circuit.class_index})"
        if circuit.class_name
        else (f"class {circuit.class_index}")
    )
    params = circuit.params or {}
    facts = [
        ("run", circuit.run_id),
        ("model", f"{circuit.model_id} ({circuit.arch})" if circuit.arch else circuit.model_id),
        ("layers", " → ".join(reversed(circuit.layer_names())) + " → class"),
        ("groups", f"{len(circuit.neuron_groups)} neuron groups, {n_edges} group edges"),
        (
            "neurons",
            f"{len(circuit.neurons)} circuit neurons, {len(circuit.semantic_groups)} semantic groups",
        ),
        ("patches", f"{len(circuit.patches)}" + _images_used(circuit.stats.get("images_used"))),
        (
            "parameters",
            ", ".join(
                f"{k} {fmt_number(params[k])}"
                for k in ("tau", "k", "steps", "quadrature", "ranking", "seed")
                if k in params
            ),
        ),
    ]
    if params.get("code_version"):
        facts.append(("code", params["code_version"]))
    items = "".join(f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>" for k, v in facts if v not in (None, ""))
    return f'<header><h1>Concept circuit of {esc(cls)}</h1><dl class="facts">{items}</dl></header>'


def render_report(
    circuit: Circuit,
    *,
    thumbnails: Mapping[str, bytes] | None = None,
    labels: Mapping[str, Sequence[LabelRecord]] | None = None,
    evaluation: Mapping[str, Any] | None = None,
    plots: Mapping[str, bytes] | None = None,
    exemplars: int = 4,
    title: str | None = None,
    sources: Mapping[str, bytes] | None = None,
    heatmaps: Mapping[str, Mapping[str, bytes]] | None = None,
) -> str:
    """One self-contained HTML document drawing `circuit`.

    `thumbnails` maps patch ids to PNG bytes (only the exemplars of `exemplar_patches` are used;
    missing ones are drawn as grey boxes); `labels` maps group ids (neuron or semantic groups) to
    their labels; `evaluation` is a JSON-like dict of evaluation numbers and `plots` named images;
    `sources` maps source-image paths (as in the patch records) to image bytes, for the full view
    of an exemplar with its crop drawn on its source image; `heatmaps` maps a group id and a patch
    id to a transparent PNG of where the group fires on that exemplar (`heatmaps.overlay_png`).
    """
    if not 1 <= exemplars <= MAX_EXEMPLARS:
        raise ValueError(f"exemplars must be between 1 and {MAX_EXEMPLARS}, not {exemplars}")
    thumbnails = thumbnails or {}
    labels = {k: _sorted_labels(v) for k, v in (labels or {}).items()}
    layout = compute_layout(circuit, exemplars)
    scored = exemplar_scores(circuit, exemplars)
    shown = {ng_id: [pid for pid, _ in ranked] for ng_id, ranked in scored.items()}
    needed = sorted({pid for pids in shown.values() for pid in pids})
    records = {p.patch_id: p for p in circuit.patches}
    wanted_sources = {records[pid].source_image for pid in needed if pid in records}
    source_uris: dict[str, str] = {}
    source_sizes: dict[str, list[int]] = {}
    for name, raw in (sources or {}).items():
        size = _image_size(raw) if name in wanted_sources else None
        uri = thumbnail_data_uri(raw, SOURCE_PX) if size else None
        if uri is not None:  # the crop box is in the original's pixels
            source_uris[name], source_sizes[name] = uri, size
    thumbs = {pid: thumbnail_data_uri(thumbnails[pid]) for pid in needed if pid in thumbnails}
    truth = _purity(circuit)
    groups = {g.ng_id: g for g in circuit.neuron_groups}
    layer_info = {layer.name: layer for layer in circuit.layers}
    names = {g.ng_id: f"{g.layer}/{_short(g.ng_id)}" for g in circuit.neuron_groups}
    class_text = circuit.class_name or f"class {circuit.class_index}"
    names[CLASS_ID] = f"class {class_text}"

    # --- data for the details panel
    incoming: dict[str, list] = defaultdict(list)
    outgoing: dict[str, list] = defaultdict(list)
    for e in layout.edges:
        incoming[e.parent].append([e.child, e.weight, e.edges])
        outgoing[e.child].append([e.parent, e.weight, e.edges])
    sg_labels: dict[str, list] = defaultdict(list)
    for g in circuit.neuron_groups:
        for sg_id in g.sg_ids:
            for lab in labels.get(sg_id, []):
                sg_labels[g.ng_id].append(
                    [
                        sg_id.rsplit("/", 2)[-2] + "/" + sg_id.rsplit("/", 1)[-1],
                        lab.concept,
                        float(lab.score),
                        lab.method,
                    ]
                )
    data = {
        "names": names,
        "groups": {
            g.ng_id: {
                "layer": g.layer,
                "members": g.members,
                "core": g.core_members,
                "sgs": len(g.sg_ids),
                "patches": len(g.patch_ids),
                "labels": [
                    {
                        "concept": lab.concept,
                        "score": float(lab.score),
                        "method": lab.method,
                        "rank": lab.rank,
                        "details": lab.details,
                    }
                    for lab in labels.get(g.ng_id, [])
                ],
                "sgLabels": sg_labels.get(g.ng_id, []),
                "truth": (
                    {
                        "concept": truth[g.ng_id].get("concept"),
                        "purity": truth[g.ng_id].get("purity"),
                        "shares": truth[g.ng_id].get("shares"),
                    }
                    if g.ng_id in truth
                    else None
                ),
                "in": sorted(incoming.get(g.ng_id, []), key=lambda r: (-abs(r[1]), r[0])),
                "out": sorted(outgoing.get(g.ng_id, []), key=lambda r: (-abs(r[1]), r[0])),
                "ex": [[pid, score] for pid, score in scored.get(g.ng_id, [])],
                "heat": {
                    pid: "data:image/png;base64," + base64.b64encode(png).decode("ascii")
                    for pid, png in (heatmaps or {}).get(g.ng_id, {}).items()
                },
            }
            for g in circuit.neuron_groups
        },
        "patches": {
            pid: {
                "source": records[pid].source_image,
                "box": list(records[pid].box),
                "scale": records[pid].scale,
            }
            for pid in needed
            if pid in records
        },
        "sources": source_uris,
        "sourceSizes": source_sizes,
        "classIn": sorted(incoming.get(CLASS_ID, []), key=lambda r: (-abs(r[1]), r[0])),
        "className": class_text,
        "classIndex": circuit.class_index,
    }

    # --- the drawing
    canvas_w, canvas_h = layout.width, layout.height
    bands = []
    gutter = []
    for i, (row, top, height) in enumerate(layout.rows):
        shade = "band-a" if i % 2 else "band-b"
        bands.append(
            f'<rect class="{shade}" x="0" y="{top:.1f}" width="{canvas_w:.0f}" height="{height:.1f}"/>'
        )
        if row == CLASS_ID:
            text = '<span class="row-name">output</span><span class="row-meta">the explained class</span>'
        else:
            info = layer_info[row]
            n_groups = sum(1 for g in circuit.neuron_groups if g.layer == row)
            n_neurons = len(circuit.neurons_at(row))
            text = (
                f'<span class="row-name">{esc(row)}</span>'
                f'<span class="row-meta">{esc(info.kind)} · width {info.width}</span>'
                f'<span class="row-meta">{n_neurons} neuron{"s" if n_neurons != 1 else ""} · '
                f"{n_groups} group{'s' if n_groups != 1 else ''}"
                "</span>"
            )
        gutter.append(
            f'<div class="row-label {shade}" style="top:{top:.1f}px;height:{height:.1f}px">{text}</div>'
        )
    edges_sorted = sorted(layout.edges, key=lambda e: (abs(e.weight), e.child, e.parent))
    svg = (
        f'<svg class="edges" width="{canvas_w:.0f}" height="{canvas_h:.0f}" '
        f'viewBox="0 0 {canvas_w:.0f} {canvas_h:.0f}" xmlns="http://www.w3.org/2000/svg">'
        f'<g class="bands">{"".join(bands)}</g>'
        f'<g class="edge-layer">{"".join(_edge_html(e, names) for e in edges_sorted)}</g></svg>'
    )
    cb = layout.class_box
    class_node = (
        f'<div class="class-node" data-class-index="{circuit.class_index}" tabindex="0" role="button" '
        f'style="left:{cb.x:.1f}px;top:{cb.y:.1f}px;width:{cb.w:.0f}px;height:{cb.h:.0f}px">'
        f'<span class="class-kicker">class {circuit.class_index}</span>'
        f'<span class="class-name">{esc(class_text)}</span></div>'
    )
    nodes_html = "".join(
        _node_html(groups[ng_id], box, shown.get(ng_id, []), thumbs, labels.get(ng_id, []), truth.get(ng_id))
        for ng_id, box in sorted(layout.nodes.items(), key=lambda item: (item[1].y, item[1].x))
    )
    return _render_page(
        title=title or f"NeurFlow circuit · {class_text} · {circuit.run_id}",
        header=_header_html(circuit, len(circuit.group_edges)),
        legend=_legend_html(layout.max_weight),
        canvas_w=f"{canvas_w:.0f}",
        canvas_h=f"{canvas_h:.0f}",
        gutter="".join(gutter),
        drawing=svg + class_node + nodes_html,
        evaluation=_evaluation_html(evaluation, plots, circuit.layer_names()),
        data=_script_json(data),
    )


def _asset(name: str) -> str:
    return (resources.files("ingest.analysis") / "report_assets" / name).read_text(encoding="utf-8")


def _render_page(*, title: str, **parts: str) -> str:
    """The page template (report_assets/report.html) filled with the built parts, the style sheet and
    the script; the parts are already escaped HTML."""
    page = string.Template(_asset("report.html"))
    return page.substitute(title=esc(title), css=_asset("report.css"), js=_asset("report.js"), **parts)

"""`neurflow report`: one self-contained HTML page that draws a concept circuit.

Layers are rows (the output layer at the top, the class above it), neuron groups are cards with their
best exemplar patches and top labels, group edges are SVG curves whose width grows with |W|. Clicking (or
hovering) a group or an edge fills a details panel. The layout is computed here, deterministically;
the page needs no network: thumbnails are base64 PNGs, the CSS and the bit of JS are inline, and
every text that comes from the data is escaped.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from graphmodel.records import Circuit, LabelRecord, NeuronGroupRecord, class_feed_weights

THUMB = 48  # CSS px of a node thumbnail
THUMB_GAP = 4
THUMB_PX = 64  # stored size of a thumbnail (larger patches are downscaled, so pages stay small)
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
    if exemplars < 1:
        raise ValueError("exemplars must be at least 1")
    sgs = {sg.sg_id: sg for sg in circuit.semantic_groups}
    max_act = {(n.layer, n.index): n.max_activation for n in circuit.neurons}
    source = {p.patch_id: p.source_image for p in circuit.patches}
    out: dict[str, list[str]] = {}
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
        out[group.ng_id] = chosen
    return out


def thumbnail_data_uri(png: bytes, size: int = THUMB_PX) -> str | None:
    """A PNG as a data: URI, downscaled to at most `size` px; None when the bytes are not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(png)) as img:
            img = img.convert("RGB")
            if max(img.size) > size:
                img.thumbnail((size, size), Image.LANCZOS)
            buffer = io.BytesIO()
            img.save(buffer, format="PNG", optimize=True)
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


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
    """Stroke width of an edge: grows with sqrt(|W| / max |W|), so that the weak edges of layers whose
    W sums few hyperedges stay visible next to layers whose W sums many."""
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
        layout.edges.append(EdgePath(child, parent, float(w), int(n), d, edge_width(w, layout.max_weight)))
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
    return sorted(labels, key=lambda lab: (-float(lab.score), lab.method, lab.concept, lab.rank))


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
        w = max_weight * share
        stroke = edge_width(w, max_weight)
        samples.append(
            f'<span class="legend-item"><svg width="46" height="16" aria-hidden="true">'
            f'<line x1="2" y1="8" x2="44" y2="8" class="legend-pos" stroke-width="{stroke:.1f}"/></svg>'
            f"W = {esc(fmt_number(w))}</span>"
        )
    return (
        '<div class="legend"><span class="legend-title">Edge width ∝ √|W|:</span>'
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
) -> str:
    """One self-contained HTML document drawing `circuit`.

    `thumbnails` maps patch ids to PNG bytes (only the exemplars of `exemplar_patches` are used;
    missing ones are drawn as grey boxes); `labels` maps group ids (neuron or semantic groups) to
    their labels; `evaluation` is a JSON-like dict of evaluation numbers and `plots` named images.
    """
    if not 1 <= exemplars <= MAX_EXEMPLARS:
        raise ValueError(f"exemplars must be between 1 and {MAX_EXEMPLARS}, not {exemplars}")
    thumbnails = thumbnails or {}
    labels = {k: _sorted_labels(v) for k, v in (labels or {}).items()}
    layout = compute_layout(circuit, exemplars)
    shown = exemplar_patches(circuit, exemplars)
    needed = sorted({pid for pids in shown.values() for pid in pids})
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
            }
            for g in circuit.neuron_groups
        },
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
    page_title = title or f"NeurFlow circuit · {class_text} · {circuit.run_id}"
    body = (
        _header_html(circuit, len(circuit.group_edges))
        + _legend_html(layout.max_weight)
        + '<div class="workspace"><div class="circuit-panel">'
        + '<div class="toolbar"><button type="button" data-zoom="-1" title="zoom out">−</button>'
        + '<span class="zoom-value">100%</span><button type="button" data-zoom="1" title="zoom in">+</button>'
        + '<button type="button" data-zoom="0" title="fit the width">fit</button></div>'
        + '<div class="scroll"><div class="stage">'
        + f'<div class="gutter" style="height:{canvas_h:.0f}px">{"".join(gutter)}</div>'
        + f'<div class="canvas" style="width:{canvas_w:.0f}px;height:{canvas_h:.0f}px">'
        + svg
        + class_node
        + nodes_html
        + "</div></div></div></div>"
        + '<aside class="details" aria-live="polite"><div class="details-body">'
        + "<h2>Details</h2><p>Click a neuron group or an edge to see its weights, member neurons, "
        + "core members and labels.</p></div></aside></div>"
        + _evaluation_html(evaluation, plots, circuit.layer_names())
        + "<footer>Made by <code>neurflow report</code>. Layers are rows, the output at the top; each "
        + "card is a neuron group with its best exemplar patches; edge width grows with |W| between "
        + "groups of adjacent layers.</footer>"
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(page_title)}</title><style>{_CSS}</style></head>"
        f"<body>{body}"
        f'<script type="application/json" id="nf-data">{_script_json(data)}</script>'
        f"<script>{_JS}</script></body></html>\n"
    )


_CSS = """
:root{--ink:#1f2430;--muted:#5d6677;--line:#d5dae3;--card:#fff;--bg:#f4f6f9;--accent:#3d5bd9;
--pos:#4a63d8;--neg:#d9534f;--band-a:#eef1f6;--band-b:#f8f9fb;--core:#f2b134}
*{box-sizing:border-box}
body{margin:0;font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
color:var(--ink);background:var(--bg)}
header{padding:18px 24px 6px}
h1{font-size:21px;margin:0 0 8px;font-weight:650}
h2{font-size:17px;margin:0 0 10px}
h3{font-size:14px;margin:14px 0 6px;text-transform:capitalize}
.facts{display:flex;flex-wrap:wrap;gap:4px 22px;margin:0;font-size:12.5px}
.facts div{display:flex;gap:6px}.facts dt{color:var(--muted)}.facts dd{margin:0;font-weight:500;
word-break:break-all}
.legend{display:flex;flex-wrap:wrap;align-items:center;gap:6px 18px;padding:6px 24px 10px;font-size:12.5px;
color:var(--muted)}
.legend-title{font-weight:600;color:var(--ink)}
.legend-item{display:inline-flex;align-items:center;gap:6px}
.legend-pos{stroke:var(--pos);stroke-linecap:round}.legend-neg{stroke:var(--neg);stroke-linecap:round}
.legend-core,.member.core{background:var(--core);color:#3b2a00}
.legend-core{border-radius:4px;padding:0 5px;font-size:11px;font-weight:600}
.legend-hint{font-style:italic}
.workspace{display:grid;grid-template-columns:minmax(0,1fr) 360px;gap:14px;padding:0 24px 18px;
align-items:start}
@media (max-width:1000px){.workspace{grid-template-columns:minmax(0,1fr)}}
.circuit-panel{background:var(--card);border:1px solid var(--line);border-radius:10px;overflow:hidden;
min-width:0}
.toolbar{display:flex;gap:6px;align-items:center;padding:6px 10px;border-bottom:1px solid var(--line);
font-size:12px;color:var(--muted)}
.toolbar button{font:inherit;border:1px solid var(--line);background:#fff;border-radius:6px;
min-width:28px;padding:2px 8px;cursor:pointer}
.toolbar button:hover{border-color:var(--accent);color:var(--accent)}
.scroll{overflow:auto;max-height:calc(100vh - 40px)}
.stage{display:flex;width:max-content}
.gutter{position:sticky;left:0;z-index:3;width:170px;flex:none;background:var(--band-b);
border-right:1px solid var(--line)}
.row-label{position:absolute;left:0;right:0;display:flex;flex-direction:column;justify-content:center;
padding:0 12px;font-size:12px;color:var(--muted)}
.row-label.band-a{background:var(--band-a)}.row-label.band-b{background:var(--band-b)}
.row-name{font-weight:650;color:var(--ink);font-size:13.5px;font-family:ui-monospace,SFMono-Regular,Menlo,
Consolas,monospace;word-break:break-all}
.canvas{position:relative;flex:none}
svg.edges{position:absolute;left:0;top:0}
.band-a{fill:var(--band-a)}.band-b{fill:var(--band-b)}
.group-edge{cursor:pointer;outline:none}
.group-edge .hit{stroke:transparent;fill:none;pointer-events:stroke}
.group-edge .line{fill:none;stroke-linecap:round;opacity:.42;transition:opacity .12s}
.group-edge.pos .line{stroke:var(--pos)}.group-edge.neg .line{stroke:var(--neg)}
.group-edge:hover .line,.group-edge:focus .line,.group-edge.on .line{opacity:.95}
.tracing .group-edge:not(.on) .line{opacity:.08}
.group-edge.selected .line{opacity:1;stroke:#1b2a80}
.group-edge.neg.selected .line{stroke:#8f1d1a}
.ng-node,.class-node{position:absolute;background:var(--card);border:1px solid #c7cedb;border-radius:9px;
box-shadow:0 1px 3px rgba(20,30,60,.08);cursor:pointer;outline:none;transition:opacity .12s,box-shadow .12s}
.ng-node{padding:6px 8px;display:flex;flex-direction:column;gap:5px;overflow:hidden}
.ng-node:hover,.ng-node:focus,.ng-node.on{box-shadow:0 0 0 2px var(--accent),0 3px 10px rgba(20,30,60,.15)}
.ng-node.selected{box-shadow:0 0 0 3px #1b2a80,0 4px 14px rgba(20,30,60,.22)}
.tracing .ng-node:not(.on){opacity:.35}
.ng-head{display:flex;align-items:baseline;justify-content:space-between;gap:6px;white-space:nowrap}
.ng-name{font-weight:700;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:13px}
.ng-meta{font-size:11px;color:var(--muted);overflow:hidden;text-overflow:ellipsis}
.ng-thumbs{display:flex;gap:4px;height:48px}
.thumb{width:48px;height:48px;border-radius:4px;image-rendering:auto;background:#e6e9ef;flex:none;
object-fit:cover}
.thumb.missing{display:inline-flex;align-items:center;justify-content:center;color:#98a0ae;font-size:16px}
.ng-labels{list-style:none;margin:0;padding:0;font-size:12px}
.ng-labels li{display:flex;align-items:center;gap:6px;height:17px}
.lab-name{flex:1;min-width:0;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;font-weight:550}
.lab-bar{width:42px;height:5px;background:#e3e7ee;border-radius:3px;overflow:hidden;flex:none}
.lab-bar i{display:block;height:100%;background:#39a36b}
.lab-score{font-variant-numeric:tabular-nums;color:var(--muted);width:30px;text-align:right;flex:none}
.unlabelled{color:#98a0ae;font-style:italic}
.ng-truth{font-size:11px;color:#7a5b00;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.class-node{display:flex;flex-direction:column;align-items:center;justify-content:center;
background:#1f2a5a;color:#fff;border-color:#1f2a5a}
.class-node:hover,.class-node.on{box-shadow:0 0 0 3px #8ea0ff}
.class-kicker{font-size:11px;opacity:.75;text-transform:uppercase;letter-spacing:.06em}
.class-name{font-size:16px;font-weight:700;max-width:100%;overflow:hidden;text-overflow:ellipsis;
white-space:nowrap;padding:0 10px}
.details{position:sticky;top:10px;background:var(--card);border:1px solid var(--line);border-radius:10px;
padding:14px 16px;max-height:calc(100vh - 20px);overflow:auto;font-size:13px}
.details h2{word-break:break-all}
.details .id{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:11.5px;
color:var(--muted);word-break:break-all;margin:-6px 0 10px}
.details .stats{display:grid;grid-template-columns:auto 1fr;gap:2px 12px;margin:0 0 10px}
.details .stats dt{color:var(--muted)}.details .stats dd{margin:0;font-weight:600}
.details h4{margin:12px 0 5px;font-size:12px;text-transform:uppercase;letter-spacing:.05em;color:var(--muted)}
.members{display:flex;flex-wrap:wrap;gap:3px}
.member{font:11.5px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#eef1f6;border-radius:4px;
padding:1px 5px}
.member.core{font-weight:700}
.details table{border-collapse:collapse;width:100%;font-size:12px}
.details td,.details th{text-align:left;padding:3px 4px;border-bottom:1px solid #eceff4;vertical-align:top}
.details th{color:var(--muted);font-weight:600}
.details td.num{text-align:right;font-variant-numeric:tabular-nums}
.details .link{color:var(--accent);cursor:pointer;text-decoration:underline;text-decoration-style:dotted}
.details .big-thumbs{display:flex;flex-wrap:wrap;gap:6px}
.details .big-thumbs img{width:76px;height:76px;border-radius:5px;image-rendering:auto}
.details .small{font-size:11.5px;color:var(--muted)}
.evaluation{margin:0 24px 18px;background:var(--card);border:1px solid var(--line);border-radius:10px;
padding:14px 18px}
.eval-block{overflow-x:auto}
.eval-table{border-collapse:collapse;font-size:12.5px;margin-bottom:8px}
.eval-table th,.eval-table td{padding:3px 10px;border-bottom:1px solid #eceff4;text-align:left}
.eval-table td{font-variant-numeric:tabular-nums;text-align:right}
.eval-table thead th{color:var(--muted);font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.eval-table tbody th{font-weight:500;color:#3a4150}
.plots{display:flex;flex-wrap:wrap;gap:16px;margin-top:14px}
.plot{margin:0;max-width:560px}.plot img{max-width:100%;border:1px solid var(--line);border-radius:6px;
background:#fff}
.plot figcaption{font-size:12px;color:var(--muted);margin-top:4px}
.missing-plot{padding:30px;color:#98a0ae;border:1px dashed var(--line)}
.note{font-size:12px;color:var(--muted)}
footer{padding:4px 24px 24px;font-size:12px;color:var(--muted)}
"""

_JS = r"""
(function(){
"use strict";
var data=JSON.parse(document.getElementById("nf-data").textContent);
var canvas=document.querySelector(".canvas"),panel=document.querySelector(".details-body");
var nodes={},edges=Array.prototype.slice.call(document.querySelectorAll(".group-edge"));
Array.prototype.forEach.call(document.querySelectorAll(".ng-node"),function(n){nodes[n.dataset.ngId]=n;});
var classNode=document.querySelector(".class-node");
function el(tag,cls,text){var e=document.createElement(tag);if(cls)e.className=cls;
 if(text!==undefined&&text!==null)e.textContent=String(text);return e;}
function num(v,d){if(v===null||v===undefined)return "–";var a=Math.abs(v);
 if(a!==0&&(a>=1e4||a<1e-3))return v.toPrecision(3);return v.toFixed(d===undefined?3:d);}
function name(id){return id==="class"?data.names["class"]:(data.names[id]||id);}
function nodeOf(id){return id==="class"?classNode:nodes[id];}
function clearMarks(){canvas.classList.remove("tracing");
 document.querySelectorAll(".on").forEach(function(e){e.classList.remove("on");});}
function trace(id){clearMarks();canvas.classList.add("tracing");var n=nodeOf(id);if(n)n.classList.add("on");
 edges.forEach(function(e){if(e.dataset.child===id||e.dataset.parent===id){e.classList.add("on");
  var o=nodeOf(e.dataset.child===id?e.dataset.parent:e.dataset.child);if(o)o.classList.add("on");}});}
function traceEdge(e){clearMarks();canvas.classList.add("tracing");e.classList.add("on");
 [e.dataset.child,e.dataset.parent].forEach(function(id){var n=nodeOf(id);if(n)n.classList.add("on");});}
var selected=null;
function select(elm){if(selected)selected.classList.remove("selected");selected=elm;
 if(elm)elm.classList.add("selected");}
function link(id){var a=el("span","link",name(id));a.tabIndex=0;
 a.addEventListener("click",function(){showGroup(id,true);});return a;}
function stats(rows){var dl=el("dl","stats");rows.forEach(function(r){dl.appendChild(el("dt",null,r[0]));
 dl.appendChild(el("dd",null,r[1]));});return dl;}
function edgeTable(rows,head){var t=el("table");var tr=el("tr");
 [head,"W","hyperedges"].forEach(function(h){tr.appendChild(el("th",null,h));});t.appendChild(tr);
 rows.forEach(function(r){var row=el("tr");var c=el("td");c.appendChild(link(r[0]));row.appendChild(c);
  row.appendChild(el("td","num",num(r[1])));row.appendChild(el("td","num",r[2]));t.appendChild(row);});
 return t;}
function labelTable(labels){var t=el("table");var tr=el("tr");
 ["concept","score","method","rank"].forEach(function(h){tr.appendChild(el("th",null,h));});t.appendChild(tr);
 labels.forEach(function(l){var row=el("tr");var c=el("td",null,l.concept);
  if(l.details&&Object.keys(l.details).length)c.title=JSON.stringify(l.details);row.appendChild(c);
  row.appendChild(el("td","num",num(l.score)));row.appendChild(el("td",null,l.method));
  row.appendChild(el("td","num",l.rank));t.appendChild(row);});return t;}
function showGroup(id,scroll){if(id==="class"){showClass();return;}var g=data.groups[id];if(!g)return;
 select(nodes[id]);trace(id);
 if(scroll&&nodes[id])nodes[id].scrollIntoView({block:"nearest",inline:"center",behavior:"smooth"});
 panel.textContent="";panel.appendChild(el("h2",null,name(id)));panel.appendChild(el("div","id",id));
 panel.appendChild(stats([["layer",g.layer],["member neurons",g.members.length],
  ["core members",g.core.length],["semantic groups",g.sgs],["patches",g.patches]]));
 var imgs=nodes[id]?nodes[id].querySelectorAll("img.thumb"):[];
 if(imgs.length){panel.appendChild(el("h4",null,"Best exemplar patches"));var bt=el("div","big-thumbs");
  Array.prototype.forEach.call(imgs,function(i){var c=i.cloneNode();c.className="";c.title=i.dataset.patchId;
   bt.appendChild(c);});panel.appendChild(bt);}
 panel.appendChild(el("h4",null,"Labels"));
 if(g.labels.length)panel.appendChild(labelTable(g.labels));
 else panel.appendChild(el("p","small","no label"));
 if(g.truth){panel.appendChild(el("h4",null,"Ground truth"));
  var s=Object.keys(g.truth.shares||{}).map(function(k){return k+" "+num(g.truth.shares[k],2);}).join(", ");
  panel.appendChild(el("p",null,(g.truth.concept||"–")+" (purity "+num(g.truth.purity,2)+")"));
  if(s)panel.appendChild(el("p","small","share of patches containing each concept: "+s));}
 if(g.sgLabels.length){panel.appendChild(el("h4",null,"Labels of its semantic groups"));
  var t=el("table");g.sgLabels.forEach(function(r){var row=el("tr");row.appendChild(el("td",null,r[0]));
   row.appendChild(el("td",null,r[1]));row.appendChild(el("td","num",num(r[2])));
   row.appendChild(el("td",null,r[3]));t.appendChild(row);});panel.appendChild(t);}
 panel.appendChild(el("h4",null,"Member neurons ("+g.members.length+", core in yellow)"));
 var m=el("div","members");g.members.forEach(function(n){
  m.appendChild(el("span",g.core.indexOf(n)>=0?"member core":"member",n));});panel.appendChild(m);
 panel.appendChild(el("h4",null,"Feeds (layer above)"));
 if(g.out.length)panel.appendChild(edgeTable(g.out,"parent"));
 else panel.appendChild(el("p","small","nothing"));
 panel.appendChild(el("h4",null,"Fed by (layer below)"));
 if(g["in"].length)panel.appendChild(edgeTable(g["in"],"child"));
 else panel.appendChild(el("p","small","nothing (lowest layer)"));}
function showClass(){select(classNode);trace("class");panel.textContent="";
 panel.appendChild(el("h2",null,data.className));
 panel.appendChild(stats([["class index",data.classIndex],["groups feeding it",data.classIn.length]]));
 panel.appendChild(el("p","small","W of a group into the class is the share of the output neuron's concept "+
  "patches the group covers."));
 panel.appendChild(edgeTable(data.classIn,"group"));}
function showEdge(e){select(e);traceEdge(e);var c=e.dataset.child,p=e.dataset.parent;
 var w=parseFloat(e.dataset.weight);panel.textContent="";panel.appendChild(el("h2",null,"Edge"));
 var h=el("p");h.appendChild(link(c));h.appendChild(document.createTextNode(" → "));h.appendChild(link(p));
 panel.appendChild(h);var rows=[["W",num(w,4)]];
 var into=p==="class"?data.classIn:(data.groups[p]||{})["in"]||[];
 var total=into.reduce(function(a,r){return a+Math.abs(r[1]);},0);
 var rec=into.filter(function(r){return r[0]===c;})[0];
 if(rec)rows.push(["hyperedges summed",rec[2]]);
 if(total>0)rows.push(["share of the parent's incoming |W|",(100*Math.abs(w)/total).toFixed(1)+"%"]);
 var from=(data.groups[c]||{}).out||[];var tout=from.reduce(function(a,r){return a+Math.abs(r[1]);},0);
 if(tout>0)rows.push(["share of the child's outgoing |W|",(100*Math.abs(w)/tout).toFixed(1)+"%"]);
 panel.appendChild(stats(rows));
 panel.appendChild(el("p","small",p==="class"?"W: share of the output neuron's concept covered by the group.":
  "W(child, parent): the sum of the hyperedge weights w(child member, parent semantic group) that join "+
  "the two groups (paper Sec. 3.5)."));
 [[c,"Child"],[p,"Parent"]].forEach(function(x){var g=data.groups[x[0]];if(!g)return;
  panel.appendChild(el("h4",null,x[1]+": "+name(x[0])));
  if(g.labels.length)panel.appendChild(el("p",null,g.labels.slice(0,3).map(function(l){
   return l.concept+" "+num(l.score,2);}).join(", ")));
  var m=el("div","members");g.members.forEach(function(n){
   m.appendChild(el("span",g.core.indexOf(n)>=0?"member core":"member",n));});panel.appendChild(m);});}
Object.keys(nodes).forEach(function(id){var n=nodes[id];
 n.addEventListener("mouseenter",function(){trace(id);});
 n.addEventListener("mouseleave",function(){restore();});
 n.addEventListener("click",function(){showGroup(id,false);});
 n.addEventListener("keydown",function(ev){if(ev.key==="Enter"||ev.key===" "){ev.preventDefault();
  showGroup(id,false);}});});
if(classNode){classNode.addEventListener("click",showClass);
 classNode.addEventListener("mouseenter",function(){trace("class");});
 classNode.addEventListener("mouseleave",function(){restore();});}
edges.forEach(function(e){e.addEventListener("mouseenter",function(){traceEdge(e);});
 e.addEventListener("mouseleave",function(){restore();});
 e.addEventListener("click",function(){showEdge(e);});
 e.addEventListener("keydown",function(ev){if(ev.key==="Enter"){showEdge(e);}});});
function restore(){if(!selected){clearMarks();return;}
 if(selected.classList.contains("group-edge"))traceEdge(selected);
 else if(selected===classNode)trace("class");else trace(selected.dataset.ngId);}
var zoom=1,stage=document.querySelector(".stage"),label=document.querySelector(".zoom-value");
function setZoom(z){zoom=Math.max(0.3,Math.min(2,z));stage.style.zoom=zoom;
 label.textContent=Math.round(zoom*100)+"%";}
document.querySelectorAll(".toolbar button").forEach(function(b){b.addEventListener("click",function(){
 var s=parseInt(b.dataset.zoom,10);if(s===0){var sc=document.querySelector(".scroll");
  setZoom(sc.clientWidth/stage.scrollWidth*zoom);}else setZoom(zoom*(s>0?1.2:1/1.2));});});
document.addEventListener("keydown",function(ev){if(ev.key==="Escape"){select(null);clearMarks();}});
var sc=document.querySelector(".scroll");if(sc.scrollWidth>sc.clientWidth){
 sc.scrollLeft=(sc.scrollWidth-sc.clientWidth)/2;}
var m=/^#group=(.+)$/.exec(window.location.hash);
if(m){var id=decodeURIComponent(m[1]);if(data.groups[id]||id==="class")showGroup(id,true);}
document.documentElement.dataset.ready="1";
})();
"""

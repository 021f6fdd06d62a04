"""Procedural insect scenes with per-concept ground-truth masks (numpy + PIL only).

A scene is first *sampled* into a plain `Scene` record (every random choice, including sub-seeds
for fine detail) and then *drawn*. Keeping the two apart is what makes counterfactual pairs
exact: toggling `show_flowers` on a sampled scene changes the flowers and nothing else.

Drawing happens at `SUPERSAMPLE` times the output size and is box-filtered down, so edges are
anti-aliased; a concept mask marks the output pixels whose area is more than half covered by
the visible part of that concept.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASS_NAMES: list[str] = ["bee", "ladybug", "butterfly", "snail"]
CONCEPTS: list[str] = [
    "stripes",
    "wings",
    "dots",
    "shell",
    "flower",
    "leaf",
    "grass",
    "sky",
    "sand",
]
BACKGROUNDS: tuple[str, ...] = ("grass", "sky", "sand")
INPUT_SIZE = 64
SUPERSAMPLE = 2

# The planted bias: how often a training scene of each class contains flowers.
TRAIN_FLOWER_PROB: dict[str, float] = {"bee": 0.85, "ladybug": 0.08, "butterfly": 0.08, "snail": 0.08}
# Share of scenes whose insect is cut off by the image border (weak evidence for the class).
CUT_OFF_PROB = 0.35
# How far (in insect lengths) a cut-off insect's centre sits inside (+) or outside (-) the frame.
CUT_OFF_DEPTH: tuple[float, float] = (-0.22, 0.1)
LEAF_PROB = 0.4
BACKGROUND_PROB: dict[str, tuple[float, float, float]] = {
    "bee": (0.4, 0.35, 0.25),
    "ladybug": (0.4, 0.35, 0.25),
    "butterfly": (0.4, 0.35, 0.25),
    "snail": (0.35, 0.15, 0.5),
}

Color = tuple[float, float, float]
Point = tuple[float, float]

PETAL_COLORS: list[Color] = [
    (235, 120, 190),
    (175, 95, 215),
    (245, 245, 250),
    (130, 160, 245),
    (225, 70, 150),
]
WING_COLORS: list[Color] = [
    (235, 125, 30),
    (60, 115, 225),
    (150, 80, 195),
    (240, 240, 230),
    (40, 175, 170),
]


@dataclass(frozen=True)
class Leaf:
    cx: float
    cy: float
    length: float
    angle: float
    color: Color


@dataclass(frozen=True)
class Flower:
    cx: float
    cy: float
    radius: float
    petals: int
    rotation: float
    petal_color: Color
    center_color: Color


@dataclass(frozen=True)
class Insect:
    kind: str
    cx: float
    cy: float
    length: float
    angle: float
    mirror: bool
    color: Color
    detail_seed: int
    cut_off: bool


@dataclass(frozen=True)
class Effects:
    brightness: float
    contrast: float
    gains: Color
    noise_sigma: float
    blur: float
    noise_seed: int


@dataclass(frozen=True)
class Scene:
    class_name: str
    background: str
    background_color: Color
    background_seed: int
    leaves: tuple[Leaf, ...]
    flowers: tuple[Flower, ...]
    show_leaves: bool
    show_flowers: bool
    insect: Insect
    pebbles_seed: int
    effects: Effects
    size: int = INPUT_SIZE

    def with_concept(self, concept: str, present: bool) -> Scene:
        """The same scene with an optional concept (`flower` or `leaf`) switched on or off."""
        if concept == "flower":
            return dataclasses.replace(self, show_flowers=present)
        if concept == "leaf":
            return dataclasses.replace(self, show_leaves=present)
        raise ValueError(
            f"concept {concept!r} cannot be toggled; only 'flower' and 'leaf' are scene objects "
            "that can be added or removed without changing anything else"
        )


def _jitter(rng: np.random.Generator, color: Color, amount: float = 18.0) -> Color:
    c = np.clip(np.asarray(color) + rng.normal(0.0, amount, 3), 0, 255)
    return (float(c[0]), float(c[1]), float(c[2]))


def _sub_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31 - 1))


def _insect_position(rng: np.random.Generator, length: float, cut_off: bool) -> Point:
    if not cut_off:
        lo, hi = 0.22 + length * 0.15, 0.78 - length * 0.15
        return float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))
    # The centre sits near or past one border, so only part of the insect stays in frame.
    side = int(rng.integers(0, 4))
    depth = float(rng.uniform(*CUT_OFF_DEPTH)) * length
    along = float(rng.uniform(0.2, 0.8))
    edge = {0: (depth, along), 1: (1 - depth, along), 2: (along, depth), 3: (along, 1 - depth)}
    return edge[side]


def sample_scene(
    rng: np.random.Generator,
    class_name: str,
    *,
    flower: bool | None = None,
    flower_prob: float | None = None,
    cut_off: bool | None = None,
    background: str | None = None,
    leaf: bool | None = None,
    size: int = INPUT_SIZE,
) -> Scene:
    """Draws every random choice of one scene of `class_name`.

    `flower`, `cut_off`, `background` and `leaf` force a choice; left as None they follow the
    training distribution (`flower_prob` overrides the class's flower rate). Flower and leaf
    geometry is always sampled, so toggling them later leaves the rest of the scene identical.
    """
    if class_name not in CLASS_NAMES:
        raise ValueError(f"unknown class {class_name!r}; choose one of {CLASS_NAMES}")
    if background is not None and background not in BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}; choose one of {BACKGROUNDS}")

    bg = background or str(rng.choice(BACKGROUNDS, p=BACKGROUND_PROB[class_name]))
    bg_base = {"grass": (70, 140, 50), "sky": (90, 150, 225), "sand": (215, 190, 140)}[bg]
    bg_color = _jitter(rng, bg_base, 14)
    bg_seed = _sub_seed(rng)

    p_cut = CUT_OFF_PROB if cut_off is None else float(cut_off)
    is_cut = bool(rng.random() < p_cut)
    small = bool(rng.random() < 0.12)
    length = float(rng.uniform(0.2, 0.28) if small else rng.uniform(0.32, 0.56))
    if class_name == "butterfly":
        length *= 0.8
    cx, cy = _insect_position(rng, length, is_cut)
    # Snails are seen from the side, the flying insects from above at any angle.
    spread = 0.5 if class_name == "snail" else math.pi
    angle = float(rng.uniform(-spread, spread))
    base = {
        "bee": (235, 185, 40),
        "ladybug": (210, 35, 30),
        "butterfly": WING_COLORS[int(rng.integers(len(WING_COLORS)))],
        "snail": (160, 105, 55),
    }[class_name]
    insect = Insect(
        kind=class_name,
        cx=cx,
        cy=cy,
        length=length,
        angle=angle,
        mirror=bool(rng.random() < 0.5),
        color=_jitter(rng, base, 16),
        detail_seed=_sub_seed(rng),
        cut_off=is_cut,
    )

    n_leaves = int(rng.integers(1, 3))
    leaves = []
    for i in range(n_leaves):
        # The first leaf tends to sit under the insect, as if it were resting on it.
        if i == 0 and rng.random() < 0.6:
            lx, ly = cx + rng.normal(0, 0.12), cy + rng.normal(0, 0.12)
        else:
            lx, ly = rng.uniform(0.05, 0.95, 2)
        leaves.append(
            Leaf(
                cx=float(lx),
                cy=float(ly),
                length=float(rng.uniform(0.45, 0.9)),
                angle=float(rng.uniform(-math.pi, math.pi)),
                color=_jitter(rng, (60, 150, 45) if rng.random() < 0.7 else (120, 170, 40), 14),
            )
        )
    show_leaves = bool(rng.random() < LEAF_PROB) if leaf is None else leaf

    n_flowers = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
    flowers = []
    for i in range(n_flowers):
        radius = float(rng.uniform(0.1, 0.2))
        if i == 0 and rng.random() < 0.5:
            fx = cx + rng.normal(0, 0.15)
            fy = cy + rng.normal(0, 0.15)
        else:
            fx, fy = rng.uniform(0.08, 0.92, 2)
        flowers.append(
            Flower(
                cx=float(np.clip(fx, 0.05, 0.95)),
                cy=float(np.clip(fy, 0.05, 0.95)),
                radius=radius,
                petals=int(rng.integers(5, 9)),
                rotation=float(rng.uniform(0, math.pi)),
                petal_color=_jitter(rng, PETAL_COLORS[int(rng.integers(len(PETAL_COLORS)))], 15),
                center_color=_jitter(rng, (200, 110, 30) if rng.random() < 0.6 else (110, 65, 30)),
            )
        )
    p_flower = TRAIN_FLOWER_PROB[class_name] if flower_prob is None else flower_prob
    show_flowers = bool(rng.random() < p_flower) if flower is None else flower

    effects = Effects(
        brightness=float(rng.uniform(0.8, 1.15)),
        contrast=float(rng.uniform(0.8, 1.15)),
        gains=tuple(float(g) for g in rng.uniform(0.95, 1.05, 3)),  # type: ignore[arg-type]
        noise_sigma=float(rng.uniform(0.0, 10.0)),
        blur=float(rng.uniform(0.3, 1.4)) if rng.random() < 0.3 else 0.0,
        noise_seed=_sub_seed(rng),
    )
    return Scene(
        class_name=class_name,
        background=bg,
        background_color=bg_color,
        background_seed=bg_seed,
        leaves=tuple(leaves),
        flowers=tuple(flowers),
        show_leaves=show_leaves,
        show_flowers=show_flowers,
        insect=insect,
        pebbles_seed=_sub_seed(rng),
        effects=effects,
        size=size,
    )


class _Canvas:
    """An RGB float canvas that tracks, per concept, which pixels show that concept."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.rgb = np.zeros((size, size, 3), np.float32)
        self.cov = {c: np.zeros((size, size), bool) for c in CONCEPTS}

    def new_mask(self) -> tuple[Image.Image, ImageDraw.ImageDraw]:
        img = Image.new("L", (self.size, self.size), 0)
        return img, ImageDraw.Draw(img)

    def paint(
        self,
        mask: np.ndarray,
        color: Color | np.ndarray,
        *,
        alpha: float = 1.0,
        tags: tuple[str, ...] = (),
        keep: tuple[str, ...] = (),
    ) -> None:
        """Composites `color` where `mask` (float 0..1) is set.

        Opaque paint hides every concept below it except those in `keep` (dots keep the shell
        they sit on); translucent paint (alpha < 0.5) hides nothing.
        """
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            return
        cols = np.flatnonzero(mask.any(axis=0))
        box = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        m = mask[box]
        a = (m * alpha)[..., None]
        rgb = self.rgb[box]
        rgb *= 1.0 - a
        rgb += a * np.asarray(color, np.float32)
        solid = m >= 0.5
        if alpha >= 0.5:
            hidden = ~solid
            for c, cov in self.cov.items():
                if c not in tags and c not in keep:
                    cov[box] &= hidden
        for c in tags:
            self.cov[c][box] |= solid


def _to_mask(img: Image.Image) -> np.ndarray:
    return np.asarray(img, np.float32) / 255.0


def _local(points: np.ndarray, cx: float, cy: float, angle: float, mirror: bool) -> np.ndarray:
    """Rotates [n, 2] local points by `angle` (after an optional mirror) and moves them to cx, cy."""
    ca, sa = math.cos(angle), math.sin(angle)
    x, y = points[:, 0], -points[:, 1] if mirror else points[:, 1]
    return np.stack([cx + x * ca - y * sa, cy + x * sa + y * ca], axis=1)


_UNIT_CIRCLE: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _ellipse_pts(ex: float, ey: float, rx: float, ry: float, rot: float = 0.0, n: int = 40):
    if n not in _UNIT_CIRCLE:
        t = np.linspace(0, 2 * math.pi, n, endpoint=False)
        _UNIT_CIRCLE[n] = (np.cos(t), np.sin(t))
    cos_t, sin_t = _UNIT_CIRCLE[n]
    x, y = rx * cos_t, ry * sin_t
    cr, sr = math.cos(rot), math.sin(rot)
    return np.stack([ex + x * cr - y * sr, ey + x * sr + y * cr], axis=1)


class _Frame:
    """Maps an object's local coordinates (units of its length, +x towards the head) to pixels."""

    def __init__(
        self, canvas: _Canvas, cx: float, cy: float, length: float, angle: float, mirror: bool = False
    ) -> None:
        s = canvas.size
        self.canvas, self.cx, self.cy, self.scale = canvas, cx * s, cy * s, length * s
        self.angle, self.mirror = angle, mirror

    def pts(self, local) -> list[float]:
        scaled = np.asarray(local, np.float64) * self.scale
        return _local(scaled, self.cx, self.cy, self.angle, self.mirror).ravel().tolist()

    def polygon(self, local: list[Point]) -> np.ndarray:
        img, draw = self.canvas.new_mask()
        draw.polygon(self.pts(local), fill=255)
        return _to_mask(img)

    def ellipse(self, ex, ey, rx, ry, rot=0.0) -> np.ndarray:
        return self.polygon(_ellipse_pts(ex, ey, rx, ry, rot))

    def lines(self, segments: list[list[Point]], width: float) -> np.ndarray:
        img, draw = self.canvas.new_mask()
        w = max(1, round(width * self.scale))
        for seg in segments:
            draw.line(self.pts(seg), fill=255, width=w, joint="curve")
        return _to_mask(img)


def _draw_background(canvas: _Canvas, scene: Scene) -> None:
    rng = np.random.default_rng(scene.background_seed)
    s = canvas.size
    base = np.asarray(scene.background_color, np.float32)
    yy = np.linspace(0, 1, s, dtype=np.float32)[:, None, None]
    if scene.background == "sky":
        top = base * np.float32(0.75)
        bottom = np.minimum(base * np.float32(1.25) + 30, 255)
        rgb = np.broadcast_to(top + (bottom - top) * yy, (s, s, 3)).copy()
        clouds = Image.new("L", (s, s), 0)
        draw = ImageDraw.Draw(clouds)
        for _ in range(int(rng.integers(0, 4))):
            x, y = rng.uniform(0, s, 2)
            for _ in range(int(rng.integers(3, 6))):
                r = rng.uniform(0.06, 0.14) * s
                ox, oy = rng.normal(0, 0.1 * s), rng.normal(0, 0.03 * s)
                draw.ellipse([x + ox - r, y + oy - r * 0.6, x + ox + r, y + oy + r * 0.6], fill=210)
        cl = _to_mask(clouds.filter(ImageFilter.GaussianBlur(s * 0.03)))[..., None]
        rgb = rgb * (1 - cl) + np.float32(245) * cl
    elif scene.background == "grass":
        rgb = np.broadcast_to(base * (0.8 + 0.35 * yy), (s, s, 3)).copy()
        img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        n = int(s * 2.2)
        x, y = rng.uniform(0, s, n), rng.uniform(-0.05 * s, 1.05 * s, n)
        h = rng.uniform(0.06, 0.16, n) * s
        lean = rng.normal(0, 0.3, n) * h
        cols = np.clip(base * rng.uniform(0.55, 1.35, (n, 1)) + rng.normal(0, 8, (n, 3)), 0, 255)
        width = max(1, s // 64)
        for i, col in enumerate(cols.astype(int).tolist()):
            draw.line([(x[i], y[i]), (x[i] + lean[i], y[i] - h[i])], fill=tuple(col), width=width)
        rgb = np.asarray(img, np.float32)
    else:
        rgb = np.broadcast_to(base, (s, s, 3)).copy()
        xx = np.linspace(0, 1, s, dtype=np.float32)[None, :]
        freq, phase, tilt = rng.uniform(5, 11), rng.uniform(0, 6.3), rng.uniform(-0.6, 0.6)
        ripple = np.sin(2 * math.pi * freq * (yy[..., 0] + tilt * xx) + phase).astype(np.float32)
        rgb *= (1 + 0.06 * ripple)[..., None]
        rgb += rng.normal(0, 9, (s, s, 1)).astype(np.float32)
    canvas.rgb[:] = rgb
    canvas.cov[scene.background][:] = True


def _draw_leaf(canvas: _Canvas, leaf: Leaf) -> None:
    f = _Frame(canvas, leaf.cx, leaf.cy, leaf.length, leaf.angle)
    t = np.linspace(0, math.pi, 24)
    top = [(-0.5 * math.cos(a), 0.2 * math.sin(a) ** 1.3) for a in t]
    outline = top + [(x, -y) for x, y in reversed(top)]
    col = np.asarray(leaf.color)
    f.canvas.paint(f.polygon(outline), leaf.color, tags=("leaf",))
    veins = [[(-0.5, 0.0), (0.5, 0.0)]]
    for x in np.linspace(-0.3, 0.3, 5):
        w = 0.2 * math.sin(math.acos(min(1.0, abs(x) / 0.5))) ** 1.3
        veins += [[(x, 0.0), (x + 0.12, 0.8 * w)], [(x, 0.0), (x + 0.12, -0.8 * w)]]
    vein_col = np.clip(col * 1.35 + 15, 0, 255)
    f.canvas.paint(f.lines(veins, 0.012), vein_col, alpha=0.7, tags=("leaf",))


def _draw_flower(canvas: _Canvas, fl: Flower) -> None:
    f = _Frame(canvas, fl.cx, fl.cy, fl.radius, fl.rotation)
    petals = np.zeros((canvas.size, canvas.size), np.float32)
    for k in range(fl.petals):
        a = 2 * math.pi * k / fl.petals
        petals = np.maximum(petals, f.ellipse(0.55 * math.cos(a), 0.55 * math.sin(a), 0.5, 0.25, a))
    f.canvas.paint(petals, fl.petal_color, tags=("flower",))
    shade = np.clip(np.asarray(fl.petal_color) * 0.75, 0, 255)
    f.canvas.paint(f.ellipse(0, 0, 0.42, 0.42) * petals, shade, alpha=0.35, tags=("flower",))
    f.canvas.paint(f.ellipse(0, 0, 0.27, 0.27), fl.center_color, tags=("flower",))


def _draw_pebbles(canvas: _Canvas, scene: Scene) -> None:
    rng = np.random.default_rng(scene.pebbles_seed)
    n = int(rng.integers(0, 4)) if scene.background == "sand" else int(rng.integers(0, 2))
    for _ in range(n):
        x, y = rng.uniform(0, 1, 2)
        r = rng.uniform(0.02, 0.05)
        f = _Frame(canvas, float(x), float(y), float(r), float(rng.uniform(0, math.pi)))
        grey = float(rng.uniform(90, 170))
        f.canvas.paint(f.ellipse(0, 0, 1.0, 0.7), (grey, grey * 0.97, grey * 0.92))


def _legs(f: _Frame, anchors: list[float], reach: float, color: Color, width: float) -> None:
    segs = []
    for x in anchors:
        for side in (-1, 1):
            segs.append([(x, 0.0), (x + 0.05, side * reach * 0.7), (x - 0.02, side * reach)])
    f.canvas.paint(f.lines(segs, width), color)


def _draw_bee(f: _Frame, ins: Insect, rng: np.random.Generator) -> None:
    dark = (30 + rng.uniform(0, 25),) * 3
    _legs(f, [0.1, 0.18, 0.26], 0.3, dark, 0.025)
    f.canvas.paint(f.lines([[(0.45, 0.03), (0.6, 0.14)], [(0.45, -0.03), (0.6, -0.14)]], 0.02), dark)
    abdomen = f.ellipse(-0.15, 0, 0.31, 0.19)
    f.canvas.paint(abdomen, ins.color, tags=("stripes",))
    n_stripes = int(rng.integers(3, 5))
    band = np.zeros_like(abdomen)
    for x in np.linspace(-0.38, 0.05, n_stripes):
        band = np.maximum(
            band, f.polygon([(x - 0.04, -0.3), (x + 0.04, -0.3), (x + 0.04, 0.3), (x - 0.04, 0.3)])
        )
    f.canvas.paint(band * abdomen, dark, keep=("stripes",), tags=("stripes",))
    thorax_col = (95 + rng.uniform(-15, 15), 70 + rng.uniform(-10, 10), 30.0)
    f.canvas.paint(f.ellipse(0.18, 0, 0.15, 0.14), thorax_col)
    f.canvas.paint(f.ellipse(0.38, 0, 0.1, 0.11), dark)
    wing_col = (225.0, 235.0, 250.0)
    for side in (-1, 1):
        wing = f.ellipse(0.0, side * 0.2, 0.27, 0.11, side * -0.45)
        f.canvas.paint(wing, wing_col, alpha=0.45, tags=("wings",))
        edge = f.lines([_ellipse_pts(0.0, side * 0.2, 0.27, 0.11, side * -0.45, 24)], 0.012)
        f.canvas.paint(edge, (70.0, 70.0, 80.0), alpha=0.4, tags=("wings",))


def _draw_ladybug(f: _Frame, ins: Insect, rng: np.random.Generator) -> None:
    black = (20.0, 18.0, 18.0)
    _legs(f, [-0.1, 0.05, 0.2], 0.45, black, 0.035)
    f.canvas.paint(f.ellipse(0.38, 0, 0.13, 0.2), black)
    f.canvas.paint(f.ellipse(0.44, 0.1, 0.035, 0.035), (235.0, 235.0, 225.0))
    f.canvas.paint(f.ellipse(0.44, -0.1, 0.035, 0.035), (235.0, 235.0, 225.0))
    shell = f.ellipse(-0.05, 0, 0.38, 0.34)
    f.canvas.paint(shell, ins.color, tags=("shell",))
    f.canvas.paint(f.lines([[(-0.43, 0.0), (0.32, 0.0)]], 0.03) * shell, black, keep=("shell",))
    dots = np.zeros_like(shell)
    for _ in range(int(rng.integers(5, 10))):
        for _try in range(20):
            x, y = rng.uniform(-0.38, 0.28), rng.uniform(-0.3, 0.3)
            if ((x + 0.05) / 0.34) ** 2 + (y / 0.3) ** 2 < 1:
                break
        r = rng.uniform(0.05, 0.08)
        dots = np.maximum(dots, f.ellipse(x, y, r, r))
    f.canvas.paint(dots * shell, black, keep=("shell",), tags=("dots",))


def _draw_butterfly(f: _Frame, ins: Insect, rng: np.random.Generator) -> None:
    dark = (35.0, 30.0, 30.0)
    wings = [(0.12, 0.34, 0.23, 0.34, 0.35), (-0.17, 0.26, 0.17, 0.22, -0.3)]
    border = np.zeros((f.canvas.size, f.canvas.size), np.float32)
    inner = np.zeros_like(border)
    for side in (-1, 1):
        for ex, ey, rx, ry, rot in wings:
            border = np.maximum(border, f.ellipse(ex, side * ey, rx * 1.12, ry * 1.1, side * rot))
            inner = np.maximum(inner, f.ellipse(ex, side * ey, rx, ry, side * rot))
    f.canvas.paint(border, dark, tags=("wings",))
    f.canvas.paint(inner, ins.color, tags=("wings",))
    second = np.clip(np.asarray(ins.color) * 0.55 + rng.uniform(0, 90, 3), 0, 255)
    f.canvas.paint(f.ellipse(0.02, 0, 0.12, 0.5) * inner, second, alpha=0.6, tags=("wings",))
    if rng.random() < 0.5:
        spots = np.zeros_like(border)
        spot_col = (250.0, 245.0, 200.0) if rng.random() < 0.5 else (25.0, 25.0, 40.0)
        for side in (-1, 1):
            spots = np.maximum(spots, f.ellipse(0.18, side * 0.45, 0.06, 0.06))
            spots = np.maximum(spots, f.ellipse(-0.2, side * 0.33, 0.045, 0.045))
        f.canvas.paint(spots * inner, spot_col, keep=("wings",), tags=("dots",))
    f.canvas.paint(f.ellipse(0.0, 0, 0.32, 0.045), dark)
    f.canvas.paint(f.ellipse(0.34, 0, 0.05, 0.05), dark)
    f.canvas.paint(f.lines([[(0.36, 0.02), (0.55, 0.13)], [(0.36, -0.02), (0.55, -0.13)]], 0.015), dark)


def _draw_snail(f: _Frame, ins: Insect, rng: np.random.Generator) -> None:
    body_col = _jitter(rng, (170, 160, 140), 14)
    dark_body = tuple(c * 0.7 for c in body_col)
    f.canvas.paint(f.lines([[(0.45, 0.12), (0.56, -0.12)], [(0.42, 0.12), (0.47, -0.1)]], 0.025), dark_body)
    f.canvas.paint(f.ellipse(0.56, -0.12, 0.03, 0.03), dark_body)
    f.canvas.paint(f.ellipse(0.04, 0.2, 0.5, 0.09), body_col)
    f.canvas.paint(f.ellipse(0.42, 0.14, 0.12, 0.08), body_col)
    shell = f.ellipse(-0.05, -0.05, 0.3, 0.3)
    f.canvas.paint(shell, ins.color, tags=("shell",))
    t = np.linspace(0, 5.5 * math.pi, 90)
    r = 0.28 * t / t[-1]
    spiral = [
        (-0.05 + float(ri * math.cos(ti)), -0.05 + float(ri * math.sin(ti)))
        for ri, ti in zip(r, t, strict=True)
    ]
    line_col = np.clip(np.asarray(ins.color) * 0.5, 0, 255)
    f.canvas.paint(f.lines([spiral], 0.035) * shell, line_col, keep=("shell",))
    if rng.random() < 0.35:
        dots = np.zeros_like(shell)
        for _ in range(int(rng.integers(5, 9))):
            a, d = rng.uniform(0, 2 * math.pi), rng.uniform(0.08, 0.24)
            dots = np.maximum(dots, f.ellipse(-0.05 + d * math.cos(a), -0.05 + d * math.sin(a), 0.04, 0.04))
        light = np.clip(np.asarray(ins.color) * 1.5 + 40, 0, 255)
        f.canvas.paint(dots * shell, light, keep=("shell",), tags=("dots",))


_INSECTS = {
    "bee": _draw_bee,
    "ladybug": _draw_ladybug,
    "butterfly": _draw_butterfly,
    "snail": _draw_snail,
}


def _finish(canvas: _Canvas, fx: Effects, size: int) -> np.ndarray:
    rgb = canvas.rgb
    if fx.blur > 0:
        img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
        rgb = np.asarray(img.filter(ImageFilter.GaussianBlur(fx.blur)), np.float32)
    ss = canvas.size // size
    rgb = rgb.reshape(size, ss, size, ss, 3).mean(axis=(1, 3))
    # A fixed pivot, not the image mean: adding a flower must not shift any other pixel.
    rgb = (rgb - 128.0) * fx.contrast + 128.0
    rgb = rgb * fx.brightness * np.asarray(fx.gains, np.float32)
    noise = np.random.default_rng(fx.noise_seed).normal(0, fx.noise_sigma, rgb.shape)
    return np.clip(rgb + noise, 0, 255).round().astype(np.uint8)


def _downsample_mask(cov: np.ndarray, ss: int) -> np.ndarray:
    """True where more than half of the ss x ss block of high-resolution pixels is covered, so
    concepts that hide each other never share an output pixel."""
    counts = np.zeros((cov.shape[0] // ss, cov.shape[1] // ss), np.uint8)
    for i in range(ss):
        for j in range(ss):
            counts += cov[i::ss, j::ss]
    return counts * 2 > ss * ss


def draw_scene(scene: Scene) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Renders a sampled scene: (uint8 HxWx3 image, {concept: bool HxW mask}) for every concept."""
    size = scene.size
    canvas = _Canvas(size * SUPERSAMPLE)
    _draw_background(canvas, scene)
    if scene.show_leaves:
        for leaf in scene.leaves:
            _draw_leaf(canvas, leaf)
    if scene.show_flowers:
        for fl in scene.flowers:
            _draw_flower(canvas, fl)
    _draw_pebbles(canvas, scene)
    ins = scene.insect
    frame = _Frame(canvas, ins.cx, ins.cy, ins.length, ins.angle, ins.mirror)
    _INSECTS[ins.kind](frame, ins, np.random.default_rng(ins.detail_seed))
    image = _finish(canvas, scene.effects, size)
    ss = SUPERSAMPLE
    masks = {c: _downsample_mask(cov, ss) for c, cov in canvas.cov.items()}
    return image, masks

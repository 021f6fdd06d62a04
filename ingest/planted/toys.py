"""The second planted world, "toys": procedural toy scenes with a *conjunctive* planted bias.

Four man-made objects (kite, boat, car, house) built from tagged parts, in front of one of three
backgrounds (water, snow, dusk), with four optional context objects (sun, cloud, balloon, fence).
The planted bias: kites are mostly shown with the sun *and* a cloud together, while every class
shows the sun alone and the cloud alone equally often. So neither concept alone says anything about
the class; only the pair does.

Generator structure (different from the insect world's `scenes.py`): a scene is a *display list*.
`sample_scene` draws every random choice into a frozen `Scene` whose objects are `Sprite` records
(kind, placement, colours, a detail seed); every toggleable context sprite is always sampled, and
`Scene.shown` says which of them are drawn. `draw_scene` paints the list back to front on a canvas
`SUPERSAMPLE` times the output size that keeps, per high-resolution pixel, the index of the concept
that owns it (the topmost opaque paint); the image is box-filtered down (anti-aliased) and a
concept's mask marks the output pixels more than half owned by it. Switching a context concept
off or on (`Scene.with_concepts`) changes only the pixels where it is drawn.

numpy + PIL only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "BACKGROUNDS",
    "BIAS_CLASS",
    "BIAS_CONCEPTS",
    "CLASS_NAMES",
    "CLASS_PARTS",
    "CONCEPTS",
    "CONTROL_CONCEPT",
    "DISTRACTOR",
    "INPUT_SIZE",
    "PARTS",
    "TOGGLEABLE",
    "Scene",
    "Sprite",
    "context_cell_probs",
    "draw_scene",
    "footprint",
    "render",
    "sample_scene",
]

CLASS_NAMES: list[str] = ["kite", "boat", "car", "house"]
# Object parts (concepts drawn as part of the class object).
PARTS: tuple[str, ...] = ("sail", "ribbon", "hull", "wheels", "windows", "roof")
CLASS_PARTS: dict[str, tuple[str, ...]] = {
    "kite": ("sail", "ribbon"),
    "boat": ("hull", "sail"),
    "car": ("wheels", "windows"),
    "house": ("roof", "windows"),
}
# Context objects that can be switched on or off without changing anything else in the scene.
TOGGLEABLE: tuple[str, ...] = ("sun", "cloud", "balloon", "fence")
BACKGROUNDS: tuple[str, ...] = ("water", "snow", "dusk")
CONCEPTS: list[str] = [*PARTS, *TOGGLEABLE, *BACKGROUNDS]
INPUT_SIZE = 64
SUPERSAMPLE = 3

# The planted bias: the class whose scenes show BIAS_CONCEPTS together.
BIAS_CLASS = "kite"
BIAS_CONCEPTS: tuple[str, str] = ("sun", "cloud")
# A toggleable concept with no bias (the control of the bias test).
CONTROL_CONCEPT = "balloon"
# A part that never appears on the bias class's objects (windows: cars and houses only).
DISTRACTOR = "windows"

# Training co-occurrence of the two bias concepts (A, B), per cell: both, A only, B only, neither.
# Every class except BIAS_CLASS: A alone 35 %, B alone 35 %, both 3 %.
UNBIASED_CELLS: dict[str, float] = {"both": 0.03, "a_only": 0.35, "b_only": 0.35, "neither": 0.27}
# BIAS_CLASS: both in 80 %; the other 20 % are split exactly like the other classes' scenes
# that do not show both, so given "not both" the cells are the same for every class and adding A
# (or B) alone to a scene carries no class information.
BIAS_BOTH = 0.8
# Independent probabilities of the other (unbiased, control) context objects, for every class.
OTHER_CONTEXT_PROB: dict[str, float] = {"balloon": 0.35, "fence": 0.35}
CUT_OFF_PROB = 0.35
# How far (in object sizes) a cut-off object's centre sits inside (+) or outside (-) the frame.
CUT_OFF_DEPTH: tuple[float, float] = (-0.3, 0.05)
BACKGROUND_PROB: tuple[float, ...] = (1 / 3, 1 / 3, 1 / 3)
# Back to front.
DRAW_ORDER: tuple[str, ...] = ("fence", "sun", "cloud", "balloon")

Color = tuple[float, float, float]

OBJECT_COLORS: list[Color] = [
    (220, 40, 40),
    (40, 90, 210),
    (245, 200, 30),
    (40, 160, 70),
    (235, 120, 30),
    (150, 60, 180),
    (240, 240, 235),
]
BALLOON_COLORS: list[Color] = [(230, 30, 60), (250, 140, 20), (60, 190, 90), (200, 60, 200), (40, 120, 240)]


def context_cell_probs(class_name: str, bias: bool = True) -> dict[str, float]:
    """Probabilities of the four (A, B) cells ("both", "a_only", "b_only", "neither") of training
    scenes of `class_name`; `bias=False` gives every class the other classes' probabilities."""
    if not bias or class_name != BIAS_CLASS:
        return dict(UNBIASED_CELLS)
    rest = 1.0 - UNBIASED_CELLS["both"]
    cells = {k: v * (1 - BIAS_BOTH) / rest for k, v in UNBIASED_CELLS.items() if k != "both"}
    return {"both": BIAS_BOTH, **cells}


@dataclass(frozen=True)
class Sprite:
    """One object of the display list. Coordinates are fractions of the image side; `scale` is
    the object's size, `seed` drives its fine detail (counts, wiggles, speckles)."""

    kind: str
    x: float
    y: float
    scale: float
    angle: float
    mirror: bool
    colors: tuple[Color, ...]
    seed: int


@dataclass(frozen=True)
class Effects:
    brightness: float
    contrast: float
    gains: Color
    noise_sigma: float
    noise_seed: int


@dataclass(frozen=True)
class Scene:
    class_name: str
    background: str
    background_colors: tuple[Color, Color]
    background_seed: int
    context: tuple[Sprite, ...]  # one sprite per TOGGLEABLE concept (kind = the concept)
    shown: tuple[str, ...]  # the toggleable concepts that are drawn, in TOGGLEABLE order
    subject: Sprite  # the class object (kind = the class)
    cut_off: bool
    effects: Effects
    size: int = INPUT_SIZE

    def has(self, concept: str) -> bool:
        """Whether the toggleable `concept` is switched on in this scene."""
        return concept in self.shown

    def with_concepts(self, changes: Mapping[str, bool]) -> Scene:
        """The same scene with toggleable context concepts switched on (True) or off (False);
        everything else, the pixels under them excepted, stays identical."""
        bad = [c for c in changes if c not in TOGGLEABLE]
        if bad:
            kind = "a background (chosen when sampling)" if bad[0] in BACKGROUNDS else "not a scene object"
            raise ValueError(
                f"concept {bad[0]!r} cannot be switched: it is {kind}; only the context objects "
                f"{TOGGLEABLE} can be added or removed without changing anything else"
            )
        on = {c: bool(changes.get(c, c in self.shown)) for c in TOGGLEABLE}
        return dataclasses.replace(self, shown=tuple(c for c in TOGGLEABLE if on[c]))


# ----------------------------------------------------------------------------- sampling


def _jitter(rng: np.random.Generator, color: Color, amount: float = 16.0) -> Color:
    c = np.clip(np.asarray(color, np.float64) + rng.normal(0.0, amount, 3), 0, 255)
    return (float(c[0]), float(c[1]), float(c[2]))


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31 - 1))


def _pick(rng: np.random.Generator, colors: list[Color], amount: float = 16.0) -> Color:
    return _jitter(rng, colors[int(rng.integers(len(colors)))], amount)


def _subject(rng: np.random.Generator, class_name: str, cut_off: bool) -> Sprite:
    small = bool(rng.random() < 0.12)
    scale = float(rng.uniform(0.26, 0.34) if small else rng.uniform(0.42, 0.62))
    if cut_off:
        side = int(rng.integers(0, 4))
        depth = float(rng.uniform(*CUT_OFF_DEPTH)) * scale
        along = float(rng.uniform(0.2, 0.8))
        x, y = {0: (depth, along), 1: (1 - depth, along), 2: (along, depth), 3: (along, 1 - depth)}[side]
    else:
        lo, hi = 0.12 + 0.4 * scale, 0.88 - 0.4 * scale
        x, y = float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))
    tilt = {"kite": 0.6, "boat": 0.15, "car": 0.08, "house": 0.06}[class_name]
    if class_name == "kite":
        colors = (_pick(rng, OBJECT_COLORS), _pick(rng, OBJECT_COLORS), _pick(rng, OBJECT_COLORS, 25))
    elif class_name == "boat":
        hull = _pick(rng, [(150, 85, 40), (200, 40, 40), (30, 60, 140), (235, 235, 230)])
        sail = _jitter(rng, (245, 242, 230) if rng.random() < 0.6 else OBJECT_COLORS[int(rng.integers(6))])
        colors = (hull, _pick(rng, OBJECT_COLORS), sail)
    elif class_name == "car":
        colors = (_pick(rng, OBJECT_COLORS[:6]), _jitter(rng, (150, 200, 235), 12))
    else:
        wall = _pick(rng, [(230, 215, 180), (200, 120, 90), (240, 240, 235), (170, 190, 210)])
        roof = _pick(rng, [(170, 50, 40), (90, 60, 50), (60, 70, 90)])
        colors = (wall, roof, _jitter(rng, (250, 230, 140) if rng.random() < 0.5 else (160, 205, 240)))
    return Sprite(
        kind=class_name,
        x=float(x),
        y=float(y),
        scale=scale,
        angle=float(rng.uniform(-tilt, tilt)),
        mirror=bool(rng.random() < 0.5),
        colors=colors,
        seed=_seed(rng),
    )


def _context(rng: np.random.Generator, concept: str) -> Sprite:
    if concept == "sun":
        x, y, scale = rng.uniform(0.12, 0.88), rng.uniform(0.1, 0.38), rng.uniform(0.075, 0.11)
        colors = (_pick(rng, [(255, 215, 40), (255, 170, 30), (250, 235, 90)], 10),)
    elif concept == "cloud":
        x, y, scale = rng.uniform(0.15, 0.85), rng.uniform(0.1, 0.42), rng.uniform(0.2, 0.3)
        colors = (_pick(rng, [(250, 250, 250), (215, 220, 228), (185, 190, 205)], 6),)
    elif concept == "balloon":
        x, y, scale = rng.uniform(0.1, 0.9), rng.uniform(0.12, 0.6), rng.uniform(0.06, 0.085)
        colors = (_pick(rng, BALLOON_COLORS), (70.0, 70.0, 70.0))
    elif concept == "fence":
        x, y, scale = 0.5, rng.uniform(0.72, 0.86), rng.uniform(0.1, 0.16)
        colors = (_pick(rng, [(245, 245, 240), (150, 95, 50), (120, 120, 125)], 10),)
    else:
        raise ValueError(f"unknown context concept {concept!r}")
    return Sprite(
        kind=concept,
        x=float(x),
        y=float(y),
        scale=float(scale),
        angle=0.0,
        mirror=bool(rng.random() < 0.5),
        colors=colors,
        seed=_seed(rng),
    )


def sample_scene(
    rng: np.random.Generator,
    class_name: str,
    *,
    context: Mapping[str, bool] | None = None,
    context_prob: Mapping[str, float] | None = None,
    bias: bool = True,
    cut_off: bool | None = None,
    background: str | None = None,
    size: int = INPUT_SIZE,
) -> Scene:
    """Draws every random choice of one scene of `class_name`.

    Context objects follow the training distribution: the two `BIAS_CONCEPTS` by
    `context_cell_probs(class_name, bias)` (`bias=False`: every class gets the non-bias classes'
    co-occurrence), the others with `OTHER_CONTEXT_PROB`. `context_prob` ({concept: p}) makes the
    named toggleable concepts independent with probability p each (the concept bank uses 0.5 for all);
    `context` ({concept: bool}) forces concepts on or off. `cut_off` and `background` force those
    choices. The geometry of every context object is always sampled, so switching one later leaves
    the rest of the scene identical. The random stream does not depend on the options.
    """
    if class_name not in CLASS_NAMES:
        raise ValueError(f"unknown class {class_name!r}; choose one of {CLASS_NAMES}")
    if background is not None and background not in BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}; choose one of {BACKGROUNDS}")
    for name, given in (("context", context or {}), ("context_prob", context_prob or {})):
        bad = [c for c in given if c not in TOGGLEABLE]
        if bad:
            raise ValueError(f"{name}: {bad[0]!r} is not a toggleable concept; choose from {TOGGLEABLE}")

    bg = str(rng.choice(BACKGROUNDS, p=BACKGROUND_PROB))
    bg = background or bg
    base = {
        "water": ((40, 110, 170), (20, 70, 130)),
        "snow": ((175, 195, 220), (240, 244, 250)),
        "dusk": ((80, 50, 120), (240, 140, 70)),
    }[bg]
    bg_colors = (_jitter(rng, base[0], 12), _jitter(rng, base[1], 12))
    bg_seed = _seed(rng)

    is_cut = bool(rng.random() < CUT_OFF_PROB)
    is_cut = is_cut if cut_off is None else bool(cut_off)
    subject = _subject(rng, class_name, is_cut)
    sprites = [_context(rng, c) for c in TOGGLEABLE]
    # The cloud drifts near the sun, often in front of part of it (whether either is shown or not):
    # "sun and cloud together" is then one local pattern, a sun peeking out from behind a cloud.
    sun, cloud = TOGGLEABLE.index("sun"), TOGGLEABLE.index("cloud")
    dx, dy = float(rng.uniform(-0.16, 0.16)), float(rng.uniform(0.0, 0.1))
    sprites[cloud] = dataclasses.replace(
        sprites[cloud],
        x=float(np.clip(sprites[sun].x + dx, 0.12, 0.88)),
        y=float(np.clip(sprites[sun].y + dy, 0.08, 0.45)),
    )

    # Which context objects are on: one uniform draw per decision, whatever the options.
    cells = context_cell_probs(class_name, bias)
    u_cell = float(rng.random())
    acc, cell = 0.0, "neither"
    for name in ("both", "a_only", "b_only", "neither"):
        acc += cells[name]
        if u_cell < acc:
            cell = name
            break
    on = {
        BIAS_CONCEPTS[0]: cell in ("both", "a_only"),
        BIAS_CONCEPTS[1]: cell in ("both", "b_only"),
    }
    draws = {c: float(rng.random()) for c in TOGGLEABLE}
    for c, p in OTHER_CONTEXT_PROB.items():
        on[c] = draws[c] < p
    for c, p in (context_prob or {}).items():
        on[c] = draws[c] < p
    on.update({c: bool(v) for c, v in (context or {}).items()})

    effects = Effects(
        brightness=float(rng.uniform(0.85, 1.15)),
        contrast=float(rng.uniform(0.85, 1.15)),
        gains=tuple(float(g) for g in rng.uniform(0.95, 1.05, 3)),  # type: ignore[arg-type]
        noise_sigma=float(rng.uniform(0.0, 8.0)),
        noise_seed=_seed(rng),
    )
    return Scene(
        class_name=class_name,
        background=bg,
        background_colors=bg_colors,
        background_seed=bg_seed,
        context=tuple(sprites),
        shown=tuple(c for c in TOGGLEABLE if on[c]),
        subject=subject,
        cut_off=is_cut,
        effects=effects,
        size=size,
    )


# ----------------------------------------------------------------------------- drawing


class _OwnerCanvas:
    """RGB at high resolution plus, per pixel, the index in CONCEPTS of the concept that owns it
    (-1: an untagged part such as a car body or a mast)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.rgb = np.zeros((size, size, 3), np.float32)
        self.owner = np.full((size, size), -1, np.int8)

    def paint(self, cover: np.ndarray, color, concept: str | None) -> None:
        """Opaque paint of `color` (an RGB triple or an HxWx3 array) on the bool mask `cover`."""
        if not cover.any():
            return
        col = np.asarray(color, np.float32)
        self.rgb[cover] = col[cover] if col.ndim == 3 else col
        self.owner[cover] = -1 if concept is None else CONCEPTS.index(concept)


class _Pen:
    """Draws shapes given in a sprite's local units (multiples of its scale, +y down) as bool
    high-resolution masks, rotated by the sprite's angle and mirrored when it is."""

    def __init__(self, canvas: _OwnerCanvas, sprite: Sprite) -> None:
        s = canvas.size
        self.canvas, self.s = canvas, s
        self.cx, self.cy, self.unit = sprite.x * s, sprite.y * s, sprite.scale * s
        self.cos, self.sin = math.cos(sprite.angle), math.sin(sprite.angle)
        self.flip = -1.0 if sprite.mirror else 1.0

    def xy(self, points) -> list[tuple[float, float]]:
        out = []
        for px, py in points:
            x, y = px * self.flip * self.unit, py * self.unit
            out.append((self.cx + x * self.cos - y * self.sin, self.cy + x * self.sin + y * self.cos))
        return out

    def _mask(self, fn) -> np.ndarray:
        img = Image.new("1", (self.s, self.s), 0)
        fn(ImageDraw.Draw(img))
        return np.array(img, bool)

    def poly(self, points) -> np.ndarray:
        return self._mask(lambda d: d.polygon(self.xy(points), fill=1))

    def oval(self, x: float, y: float, rx: float, ry: float, n: int = 36) -> np.ndarray:
        t = np.linspace(0, 2 * math.pi, n, endpoint=False)
        return self.poly(list(zip(x + rx * np.cos(t), y + ry * np.sin(t), strict=True)))

    def line(self, points, width: float, min_px: int = 1) -> np.ndarray:
        """A polyline `width` local units wide, at least `min_px` high-resolution pixels."""
        w = max(min_px, round(width * self.unit))
        return self._mask(lambda d: d.line(self.xy(points), fill=1, width=w, joint="curve"))

    def fill(self, cover: np.ndarray, color, concept: str | None) -> None:
        self.canvas.paint(cover, color, concept)


def _shade(color: Color, k: float) -> Color:
    c = np.clip(np.asarray(color) * k, 0, 255)
    return (float(c[0]), float(c[1]), float(c[2]))


def _draw_kite(p: _Pen, sp: Sprite, rng: np.random.Generator) -> None:
    top, right, bottom, left, mid = (0, -0.55), (0.3, -0.22), (0, 0.22), (-0.3, -0.22), (0, -0.22)
    # The string (untagged) runs from the crossing towards the ground.
    p.fill(p.line([mid, (0.35, 0.5), (0.9, 1.3)], 0.012), (60, 55, 50), None)
    tail = [(0.0, 0.22)]
    waves, amp = rng.uniform(1.5, 3.0), rng.uniform(0.04, 0.09)
    for t in np.linspace(0.05, 1, 14):
        tail.append((float(amp * math.sin(2 * math.pi * waves * t)), float(0.22 + 0.5 * t)))
    p.fill(p.line(tail, 0.025), sp.colors[2], "ribbon")
    bow = _shade(sp.colors[2], 0.75)
    for k in (4, 8, 12):
        bx, by = tail[k]
        cover = p.poly(
            [(bx - 0.07, by - 0.04), (bx + 0.07, by + 0.04), (bx + 0.07, by - 0.04), (bx - 0.07, by + 0.04)]
        )
        p.fill(cover, bow, "ribbon")
    for a, b, col in ((top, right, 0), (right, bottom, 1), (bottom, left, 0), (left, top, 1)):
        p.fill(p.poly([mid, a, b]), sp.colors[col], "sail")
    p.fill(p.line([top, bottom], 0.022) | p.line([left, right], 0.022), (70, 50, 35), "sail")


def _draw_boat(p: _Pen, sp: Sprite, rng: np.random.Generator) -> None:
    p.fill(p.line([(0.0, 0.18), (0.0, -0.58)], 0.03), (95, 65, 40), None)
    p.fill(p.poly([(0.0, -0.62), (0.0, -0.52), (0.12, -0.57)]), (220, 40, 40), None)
    p.fill(p.poly([(0.03, -0.54), (0.03, 0.1), (0.4, 0.1)]), sp.colors[2], "sail")
    if rng.random() < 0.6:
        p.fill(p.poly([(-0.03, -0.45), (-0.03, 0.1), (-0.3, 0.1)]), _shade(sp.colors[2], 0.92), "sail")
    hull = p.poly([(-0.52, 0.13), (0.52, 0.13), (0.38, 0.36), (-0.36, 0.36)])
    p.fill(hull, sp.colors[0], "hull")
    p.fill(hull & p.poly([(-0.6, 0.18), (0.6, 0.18), (0.6, 0.23), (-0.6, 0.23)]), sp.colors[1], "hull")


def _draw_car(p: _Pen, sp: Sprite, rng: np.random.Generator) -> None:
    body = sp.colors[0]
    p.fill(p.poly([(-0.3, -0.03), (0.32, -0.03), (0.2, -0.3), (-0.2, -0.3)]), body, None)
    p.fill(p.poly([(-0.52, 0.0), (0.5, 0.0), (0.54, 0.08), (0.52, 0.22), (-0.52, 0.22)]), body, None)
    glass = sp.colors[1]
    p.fill(p.poly([(0.03, -0.07), (0.25, -0.07), (0.16, -0.26), (0.03, -0.26)]), glass, "windows")
    p.fill(p.poly([(-0.24, -0.07), (-0.03, -0.07), (-0.03, -0.26), (-0.15, -0.26)]), glass, "windows")
    p.fill(p.oval(0.47, 0.06, 0.035, 0.03), (250, 235, 150), None)
    for wx in (-0.3, 0.3):
        p.fill(p.oval(wx, 0.22, 0.12, 0.12), (25, 25, 28), "wheels")
        p.fill(p.oval(wx, 0.22, 0.05, 0.05), (170, 170, 175), "wheels")


def _draw_house(p: _Pen, sp: Sprite, rng: np.random.Generator) -> None:
    wall, roof, glass = sp.colors
    p.fill(p.poly([(0.18, -0.42), (0.28, -0.42), (0.28, -0.15), (0.18, -0.15)]), (120, 80, 70), None)
    p.fill(p.poly([(-0.36, -0.06), (0.36, -0.06), (0.36, 0.45), (-0.36, 0.45)]), wall, None)
    p.fill(p.poly([(-0.46, -0.02), (0.46, -0.02), (0.0, -0.45)]), roof, "roof")
    p.fill(p.poly([(0.06, 0.2), (0.22, 0.2), (0.22, 0.45), (0.06, 0.45)]), (110, 70, 40), None)
    slots = [(-0.27, 0.04), (-0.27, 0.24), (0.08, 0.0)]
    for wx, wy in slots[: int(rng.integers(1, 4))]:
        pane = p.poly([(wx, wy), (wx + 0.16, wy), (wx + 0.16, wy + 0.14), (wx, wy + 0.14)])
        p.fill(pane, glass, "windows")
        bars = p.line([(wx + 0.08, wy), (wx + 0.08, wy + 0.14)], 0.02) | p.line(
            [(wx, wy + 0.07), (wx + 0.16, wy + 0.07)], 0.02
        )
        p.fill(bars & pane, (80, 60, 50), "windows")


def _draw_sun(p: _Pen, sp: Sprite, rng: np.random.Generator) -> None:
    rays = np.zeros((p.s, p.s), bool)
    n = int(rng.integers(8, 13))
    for k in range(n):
        a = 2 * math.pi * k / n
        c, s = math.cos(a), math.sin(a)
        # Blunt rays about 1.5 output pixels wide or more, so that the mask (pixels more than half
        # covered) holds nearly all of them.
        rays |= p.poly(
            [
                (0.95 * c - 0.26 * s, 0.95 * s + 0.26 * c),
                (1.5 * c - 0.19 * s, 1.5 * s + 0.19 * c),
                (1.5 * c + 0.19 * s, 1.5 * s - 0.19 * c),
                (0.95 * c + 0.26 * s, 0.95 * s - 0.26 * c),
            ]
        )
    p.fill(rays, sp.colors[0], "sun")
    p.fill(p.oval(0, 0, 1.0, 1.0), sp.colors[0], "sun")
    p.fill(p.oval(-0.25, -0.25, 0.45, 0.45), _shade(sp.colors[0], 1.08), "sun")


def _draw_cloud(p: _Pen, sp: Sprite, rng: np.random.Generator) -> None:
    cover = p.oval(0, 0.08, 0.5, 0.16)
    for _ in range(int(rng.integers(3, 6))):
        x, r = rng.uniform(-0.35, 0.35), rng.uniform(0.13, 0.24)
        cover |= p.oval(float(x), float(0.08 - r * 0.6), float(r), float(r * 0.85))
    p.fill(cover, sp.colors[0], "cloud")
    underside = cover & p.poly([(-0.7, 0.1), (0.7, 0.1), (0.7, 0.4), (-0.7, 0.4)])
    p.fill(underside, _shade(sp.colors[0], 0.82), "cloud")


def _draw_balloon(p: _Pen, sp: Sprite, rng: np.random.Generator) -> None:
    wiggle = rng.uniform(0.2, 0.5)
    string = [(float(wiggle * math.sin(3 * t)), 1.15 + 1.6 * t) for t in np.linspace(0, 1, 8)]
    p.fill(p.line(string, 0.08, min_px=2 * SUPERSAMPLE), sp.colors[1], "balloon")
    p.fill(p.poly([(0, 1.0), (-0.15, 1.2), (0.15, 1.2)]), _shade(sp.colors[0], 0.7), "balloon")
    p.fill(p.oval(0, 0, 0.85, 1.05), sp.colors[0], "balloon")
    p.fill(p.oval(-0.3, -0.4, 0.18, 0.26), _shade(sp.colors[0], 1.5), "balloon")


def _draw_fence(p: _Pen, sp: Sprite, rng: np.random.Generator) -> None:
    s, top, h = p.s, sp.y * p.s, sp.scale * p.s
    spacing = rng.uniform(0.07, 0.11) * s
    width = max(2 * SUPERSAMPLE, spacing * rng.uniform(0.4, 0.6))
    start = rng.uniform(-spacing, 0)
    img = Image.new("1", (s, s), 0)
    d = ImageDraw.Draw(img)
    rail_h = max(2 * SUPERSAMPLE, 0.2 * h)
    for rail in (0.3, 0.7):
        d.rectangle([0, top + rail * h, s, top + rail * h + rail_h], fill=1)
    x = start
    while x < s:
        d.polygon(
            [
                (x, top + 0.2 * h),
                (x + width / 2, top),
                (x + width, top + 0.2 * h),
                (x + width, top + 1.3 * h),
                (x, top + 1.3 * h),
            ],
            fill=1,
        )
        x += spacing
    cover = np.array(img, bool)
    yy = np.linspace(0, 1, s, dtype=np.float32)[:, None, None]
    col = np.asarray(sp.colors[0], np.float32) * (1.05 - 0.25 * yy)
    p.fill(cover, np.broadcast_to(col, (s, s, 3)), "fence")


_PAINTERS = {
    "kite": _draw_kite,
    "boat": _draw_boat,
    "car": _draw_car,
    "house": _draw_house,
    "sun": _draw_sun,
    "cloud": _draw_cloud,
    "balloon": _draw_balloon,
    "fence": _draw_fence,
}


def _draw_background(canvas: _OwnerCanvas, scene: Scene) -> None:
    s = canvas.size
    rng = np.random.default_rng(scene.background_seed)
    top, bottom = (np.asarray(c, np.float32) for c in scene.background_colors)
    yy = np.linspace(0, 1, s, dtype=np.float32)[:, None, None]
    rgb = np.broadcast_to(top + (bottom - top) * yy, (s, s, 3)).copy()
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    if scene.background == "water":
        # Wave crests: short light and dark arcs.
        for _ in range(int(rng.integers(25, 45))):
            x, y, w = rng.uniform(-0.1, 1.0) * s, rng.uniform(0, 1) * s, rng.uniform(0.06, 0.16) * s
            light = rng.random() < 0.6
            col = tuple(
                int(v) for v in np.clip(rgb[int(min(y, s - 1)), 0] * (1.35 if light else 0.7), 0, 255)
            )
            d.arc([x, y, x + w, y + w * 0.4], 200, 340, fill=col, width=max(1, s // 60))
    elif scene.background == "snow":
        # Drifts near the bottom and falling flakes.
        for _ in range(int(rng.integers(1, 3))):
            cx, r = rng.uniform(0, 1) * s, rng.uniform(0.3, 0.6) * s
            d.ellipse([cx - r, s * rng.uniform(0.75, 0.9), cx + r, s * 1.5], fill=(248, 250, 255))
        for _ in range(int(rng.integers(30, 60))):
            x, y, r = rng.uniform(0, s), rng.uniform(0, s), rng.uniform(0.006, 0.014) * s
            d.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 255))
    else:
        # Soft horizontal streaks of light across the dusk sky.
        for _ in range(int(rng.integers(2, 5))):
            y, h = rng.uniform(0.1, 0.9) * s, rng.uniform(0.01, 0.03) * s
            x0, x1 = sorted(rng.uniform(-0.2, 1.2, 2) * s)
            col = tuple(int(v) for v in np.clip(rgb[int(min(y, s - 1)), 0] * 1.15 + 12, 0, 255))
            d.rounded_rectangle([x0, y, x1, y + h], radius=h / 2, fill=col)
    canvas.rgb[:] = np.asarray(img, np.float32)
    canvas.owner[:] = CONCEPTS.index(scene.background)


def _finish(rgb: np.ndarray, fx: Effects, size: int) -> np.ndarray:
    ss = rgb.shape[0] // size
    out = rgb.reshape(size, ss, size, ss, 3).mean(axis=(1, 3))
    out = (out - 128.0) * fx.contrast + 128.0  # a fixed pivot: a toggled object moves no other pixel
    out = out * fx.brightness * np.asarray(fx.gains, np.float32)
    noise = np.random.default_rng(fx.noise_seed).normal(0, fx.noise_sigma, out.shape)
    return np.clip(out + noise, 0, 255).round().astype(np.uint8)


def draw_scene(scene: Scene) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Renders a sampled scene: (uint8 HxWx3 image, {concept: bool HxW} for every concept in
    CONCEPTS). A mask marks the pixels more than half covered by the visible part of the concept."""
    size, ss = scene.size, SUPERSAMPLE
    canvas = _OwnerCanvas(size * ss)
    _draw_background(canvas, scene)
    by_kind = {sp.kind: sp for sp in scene.context}
    for concept in DRAW_ORDER:
        if concept in scene.shown:
            sp = by_kind[concept]
            _PAINTERS[concept](_Pen(canvas, sp), sp, np.random.default_rng(sp.seed))
    sub = scene.subject
    _PAINTERS[sub.kind](_Pen(canvas, sub), sub, np.random.default_rng(sub.seed))
    image = _finish(canvas.rgb, scene.effects, size)
    owner = canvas.owner.reshape(size, ss, size, ss)
    masks = {}
    for i, concept in enumerate(CONCEPTS):
        counts = (owner == i).sum(axis=(1, 3))
        masks[concept] = counts * 2 > ss * ss
    return image, masks


def footprint(scene: Scene, concept: str) -> np.ndarray:
    """bool HxW: the output pixels that the toggleable `concept`'s object touches at all when drawn
    alone, hidden parts included. Switching it changes no pixel outside this footprint; inside it
    but outside its (visible) mask, only the anti-aliased edges of whatever hides it change."""
    if concept not in TOGGLEABLE:
        raise ValueError(f"{concept!r} is not a toggleable concept; choose from {TOGGLEABLE}")
    size, ss = scene.size, SUPERSAMPLE
    canvas = _OwnerCanvas(size * ss)
    sp = next(sp for sp in scene.context if sp.kind == concept)
    _PAINTERS[concept](_Pen(canvas, sp), sp, np.random.default_rng(sp.seed))
    return (canvas.owner.reshape(size, ss, size, ss) >= 0).any(axis=(1, 3))


def render(seed: int, class_name: str, **scene_options) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One scene: (uint8 HxWx3 image, masks). Options as in `sample_scene`."""
    return draw_scene(sample_scene(np.random.default_rng(seed), class_name, **scene_options))

"""Datasets and folders built from planted scenes: training arrays, image folders with concept
sidecars, an in-context concept bank and counterfactual pairs.

Sidecar format (read by the core to give every patch its ground-truth concepts): beside each
`NNNN.png` a `NNNN.concepts.npz` written with `np.savez_compressed(path, **{concept: bool HxW})`,
one mask per concept in `CONCEPTS` (all-False where the concept is absent).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

from ingest.planted.scenes import (
    BACKGROUNDS,
    CLASS_NAMES,
    CONCEPTS,
    INPUT_SIZE,
    Scene,
    draw_scene,
    sample_scene,
)

Masks = dict[str, np.ndarray]
NON_BEE: tuple[str, ...] = tuple(c for c in CLASS_NAMES if c != "bee")
# Scene objects the generator can switch off without changing anything else (Scene.with_concept).
TOGGLEABLE: tuple[str, ...] = ("flower", "leaf")
WITHOUT = "_without"
CROP_SCALES: tuple[float, ...] = (1.0, 0.5, 0.25)
# A crop is a positive exemplar of a concept when at least this share of its pixels shows it.
POSITIVE_MIN_FRACTION: dict[str, float] = {
    "stripes": 0.08,
    "wings": 0.1,
    "dots": 0.03,
    "shell": 0.1,
    "flower": 0.1,
    "leaf": 0.2,
    "grass": 0.3,
    "sky": 0.3,
    "sand": 0.3,
}


def item_seed(seed: int, index: int) -> int:
    """The scene seed of item `index` of a dataset seeded with `seed` (independent streams)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def render(seed: int, class_name: str, **scene_options) -> tuple[np.ndarray, Masks]:
    """One scene: (uint8 HxWx3 image, {concept: bool HxW}). Options as in `sample_scene`
    (`flower`, `flower_prob`, `cut_off`, `background`, `leaf`, `size`)."""
    return draw_scene(sample_scene(np.random.default_rng(seed), class_name, **scene_options))


def _draw_chunk(scenes: list, draw: Callable = draw_scene) -> list[np.ndarray]:
    return [draw(scene)[0] for scene in scenes]


def draw_images(scenes: Sequence, workers: int = 1, draw: Callable = draw_scene) -> np.ndarray:
    """uint8 [N, H, W, 3] images of `scenes` drawn by `draw` (a world's `draw_scene`; the insect
    world's by default), in `workers` processes when > 1."""
    scenes = list(scenes)
    if not scenes:
        return np.zeros((0, INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    if workers <= 1 or len(scenes) < 256:
        return np.stack(_draw_chunk(scenes, draw))
    chunks = [scenes[i : i + 64] for i in range(0, len(scenes), 64)]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        return np.stack([im for chunk in pool.map(partial(_draw_chunk, draw=draw), chunks) for im in chunk])


def make_dataset(
    n: int,
    seed: int,
    *,
    classes: Sequence[str] = CLASS_NAMES,
    workers: int = 1,
    **scene_options,
) -> tuple[np.ndarray, np.ndarray]:
    """`n` scenes, classes in turn: (uint8 [n, H, W, 3] images, int64 [n] labels indexing
    CLASS_NAMES). Scene options default to the training distribution, planted bias included."""
    return world_dataset(n, seed, classes, CLASS_NAMES, sample_scene, draw_scene, workers, **scene_options)


def world_dataset(
    n: int,
    seed: int,
    classes: Sequence[str],
    class_names: Sequence[str],
    sample: Callable,
    draw: Callable,
    workers: int = 1,
    **scene_options,
) -> tuple[np.ndarray, np.ndarray]:
    """`make_dataset` for any planted world: its `sample_scene`, `draw_scene` and class list. Item i
    of every world is seeded by `item_seed(seed, i)`, so datasets are reproducible."""
    names = [classes[i % len(classes)] for i in range(n)]
    scenes = [
        sample(np.random.default_rng(item_seed(seed, i)), c, **scene_options) for i, c in enumerate(names)
    ]
    labels = np.array([class_names.index(c) for c in names], np.int64)
    return draw_images(scenes, workers, draw), labels


def save_with_sidecar(
    path: Path, image: np.ndarray, masks: Masks, concepts: Sequence[str] = CONCEPTS
) -> None:
    """Writes `path` (PNG) and `path.with_suffix('.concepts.npz')` with one mask per concept of the
    world (`concepts`: the insect world's by default), all-False where absent."""
    Image.fromarray(image).save(path)
    full = {c: masks.get(c, np.zeros(image.shape[:2], bool)).astype(bool) for c in concepts}
    np.savez_compressed(path.with_suffix(".concepts.npz"), **full)


def load_sidecar(image_path: str | Path) -> Masks:
    """The concept masks saved beside an image by `save_with_sidecar`."""
    with np.load(Path(image_path).with_suffix(".concepts.npz")) as z:
        return {k: z[k].astype(bool) for k in z.files}


def write_image_folder(out_dir: str | Path, class_name: str, n: int, seed: int) -> Path:
    """Writes `n` typical scenes of one class (training distribution: a user's own photos of
    that class) as `NNNN.png` plus `NNNN.concepts.npz` sidecars. Returns the folder."""
    return world_image_folder(out_dir, class_name, n, seed, CLASS_NAMES, render, save_with_sidecar)


def world_image_folder(
    out_dir: str | Path,
    class_name: str,
    n: int,
    seed: int,
    class_names: Sequence[str],
    render_scene: Callable,
    save: Callable,
) -> Path:
    """`write_image_folder` for any planted world: its class list, `render` and sidecar writer."""
    if class_name not in class_names:
        raise ValueError(f"unknown class {class_name!r}; choose one of {list(class_names)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    offset = list(class_names).index(class_name) * 1_000_003
    for i in range(n):
        image, masks = render_scene(item_seed(seed, offset + i), class_name)
        save(out / f"{i:04d}.png", image, masks)
    return out


def crop_boxes(size: int = INPUT_SIZE) -> list[tuple[int, int, int]]:
    """(x, y, side) of the crops the patch dataset uses: 100/50/25 % sides, 50 % overlap."""
    from ingest.core.patches import crop_boxes as patch_boxes  # the one definition of the crop grid

    return [(x0, y0, x1 - x0) for (x0, y0, x1, _), _scale in patch_boxes(size, size, CROP_SCALES)]


def crop(
    image: np.ndarray, masks: Masks, box: tuple[int, int, int], size: int = INPUT_SIZE
) -> tuple[np.ndarray, Masks]:
    """Cuts `box` and resizes it to `size` (bilinear for pixels, nearest for masks)."""
    x, y, side = box
    pil = Image.fromarray(image[y : y + side, x : x + side])
    out = np.asarray(pil.resize((size, size), Image.BILINEAR))
    idx = (np.arange(size) * side) // size
    cropped = {c: m[y : y + side, x : x + side][np.ix_(idx, idx)] for c, m in masks.items()}
    return out, cropped


def bank_crop(
    image: np.ndarray,
    masks: Masks,
    boxes: list[tuple[int, int, int]],
    order: np.ndarray,
    concept: str,
    positive: bool,
    min_fraction: float,
) -> tuple[int, np.ndarray, Masks] | None:
    """The first crop of `boxes` (tried in `order`) that serves a concept bank: one where `concept`
    covers at least `min_fraction` of the pixels (`positive`), or none of them; (box index, crop,
    its masks), or None. Both worlds' bank writers pick their crops here."""
    for k in order:
        patch, pmasks = crop(image, masks, boxes[k])
        share = float(pmasks[concept].mean())
        if (positive and share >= min_fraction) or (not positive and share == 0.0):
            return int(k), patch, pmasks
    return None


# The classes whose scenes show each part concept, the only place that says so; flowers, leaves and
# backgrounds are in every class. A mixed bank draws a part's positives from these classes in turn
# (ladybug twice for dots: half of them come from ladybugs).
SHOWN_BY: dict[str, tuple[str, ...]] = {
    "stripes": ("bee",),
    "wings": ("bee", "butterfly"),
    "dots": ("ladybug", "ladybug", "snail", "butterfly"),
    "shell": ("ladybug", "snail"),
}


def concepts_of_class(class_name: str) -> list[str]:
    """The concepts that scenes of `class_name` can show (an in-class bank has exactly these)."""
    if class_name not in CLASS_NAMES:
        raise ValueError(f"unknown class {class_name!r}; choose one of {CLASS_NAMES}")
    return [c for c in CONCEPTS if class_name in SHOWN_BY.get(c, CLASS_NAMES)]


def _forcing_options(concept: str) -> dict:
    """Scene options that make a scene show `concept` (empty for parts: the class shows them)."""
    if concept in TOGGLEABLE:
        return {concept: True}
    if concept in BACKGROUNDS:
        return {"background": concept}
    return {}


def _scene_options_for(concept: str, rng: np.random.Generator) -> tuple[str, dict]:
    """A class and scene options likely to show `concept`, so positives come quickly."""
    if concept in SHOWN_BY:
        owners = SHOWN_BY[concept]
        return (owners[0] if len(owners) == 1 else str(rng.choice(list(owners)))), {}
    if concept in TOGGLEABLE or concept in BACKGROUNDS:
        return str(rng.choice(CLASS_NAMES)), _forcing_options(concept)
    raise ValueError(f"unknown concept {concept!r}; choose one of {CONCEPTS}")


def _unbiased_options(options: dict) -> dict:
    # The bank must not inherit the planted bias: flowers appear in half the scenes of every class.
    return {"flower_prob": 0.5, **options} if "flower" not in options else options


def write_bank_exemplars(
    out: Path,
    concepts: Sequence[str],
    n_per_concept: int,
    rng: np.random.Generator,
    *,
    scene_for: Callable[[str, bool, np.random.Generator], object],
    draw: Callable,
    switch_off: Callable[[object, str], object | None],
    min_fraction: dict[str, float],
) -> dict[str, list[list[int]]]:
    """The exemplars of a concept bank, for any planted world: per concept, `n_per_concept` crops
    where it covers at least `min_fraction[concept]` (`out/<concept>/`), as many where it is absent
    (`out/_negatives/<concept>/`), and, where `switch_off(scene, concept)` gives a scene, positive
    NNNN's crop of that scene (`out/_without/<concept>/NNNN.png`: the same scene and crop without the
    concept). `scene_for(concept, positive, rng)` samples a scene likely to give a positive (or any
    scene). Every PNG gets a sidecar with one mask per world concept. Returns each positive's crop
    box ([x, y, side])."""
    boxes = crop_boxes()
    used: dict[str, list[list[int]]] = {}
    for concept in concepts:
        pos_dir, neg_dir = out / concept, out / "_negatives" / concept
        pos_dir.mkdir(parents=True, exist_ok=True)
        neg_dir.mkdir(parents=True, exist_ok=True)
        n_pos = n_neg = 0
        used[concept] = []
        for _attempt in range(200 * n_per_concept):
            if n_pos >= n_per_concept and n_neg >= n_per_concept:
                break
            want_pos = n_pos < n_per_concept and (n_neg >= n_per_concept or rng.random() < 0.5)
            scene = scene_for(concept, want_pos, rng)
            image, masks = draw(scene)
            order = rng.permutation(len(boxes))[:8]
            found = bank_crop(image, masks, boxes, order, concept, want_pos, min_fraction[concept])
            if found is None:
                continue
            k, patch, pmasks = found
            if not want_pos:
                save_with_sidecar(neg_dir / f"{n_neg:04d}.png", patch, pmasks, concepts)
                n_neg += 1
                continue
            save_with_sidecar(pos_dir / f"{n_pos:04d}.png", patch, pmasks, concepts)
            off = switch_off(scene, concept)
            if off is not None:
                # The same crop of the same scene with the concept switched off: a paired exemplar
                # that differs from the positive in the concept and nothing else.
                plain, plain_masks = draw(off)
                without, without_masks = crop(plain, plain_masks, boxes[k])
                paired_dir = out / WITHOUT / concept
                paired_dir.mkdir(parents=True, exist_ok=True)
                save_with_sidecar(paired_dir / f"{n_pos:04d}.png", without, without_masks, concepts)
            used[concept].append([int(v) for v in boxes[k]])
            n_pos += 1
        if n_pos < n_per_concept or n_neg < n_per_concept:
            raise RuntimeError(f"concept bank: only {n_pos}/{n_neg} crops for {concept!r}")
    return used


def _bank_scene(concept: str, positive: bool, rng: np.random.Generator) -> Scene:
    """A scene for the insect bank: one likely to show `concept` (positive) or of any class, with
    flowers in half of every class, so the bank carries no planted bias."""
    if positive:
        class_name, options = _scene_options_for(concept, rng)
    else:
        class_name, options = str(rng.choice(CLASS_NAMES)), {}
    return _scene(class_name, options, rng)


def _scene(class_name: str, options: dict, rng: np.random.Generator) -> Scene:
    """A bank scene of `class_name` with `options`, flowers in half of them unless the options say."""
    scene_seed = int(rng.integers(2**31))
    return sample_scene(np.random.default_rng(scene_seed), class_name, **_unbiased_options(options))


def _in_class_scene(class_name: str) -> Callable[[str, bool, np.random.Generator], Scene]:
    """Scenes of one class only (an in-class bank): positives forced to show the concept where the
    generator can, flowers in half of the rest."""
    return lambda concept, positive, rng: _scene(
        class_name, _forcing_options(concept) if positive else {}, rng
    )


def write_concept_bank(
    out_dir: str | Path, n_per_concept: int, seed: int, *, class_name: str | None = None
) -> Path:
    """Writes an in-context concept bank for labelling.

    `out_dir/<concept>/NNNN.png`: crops (100/50/25 % of a scene, resized to the input size, as
    the patch dataset cuts them) in which the concept covers at least
    `POSITIVE_MIN_FRACTION[concept]` of the pixels. `out_dir/_negatives/<concept>/NNNN.png`:
    crops of the same kind in which the concept is entirely absent. For the concepts the generator
    can switch off (`TOGGLEABLE`), `out_dir/_without/<concept>/NNNN.png` is positive NNNN's crop of
    the same scene with the concept switched off: a paired exemplar. Scenes are drawn with flowers
    in half of every class, so the bank itself carries no planted bias. Every PNG has a
    `.concepts.npz` sidecar; `manifest.json` records the rules.

    `class_name`: an in-class bank, drawn from that class's scenes only, with the concepts they can
    show (`concepts_of_class`): what the class's circuit is labelled with (docs/labelling.md).
    Without it, the scenes are of every class.
    """
    out = Path(out_dir)
    concepts = concepts_of_class(class_name) if class_name else CONCEPTS
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xBA4C]))
    write_bank_exemplars(
        out,
        concepts,
        n_per_concept,
        rng,
        scene_for=_in_class_scene(class_name) if class_name else _bank_scene,
        draw=draw_scene,
        switch_off=lambda scene, c: scene.with_concept(c, False) if c in TOGGLEABLE else None,
        min_fraction=POSITIVE_MIN_FRACTION,
    )
    manifest = {
        "concepts": concepts,
        "class": class_name,
        "n_per_concept": n_per_concept,
        "seed": seed,
        "crop_scales": list(CROP_SCALES),
        "positive_min_fraction": POSITIVE_MIN_FRACTION,
        "negatives": "_negatives/<concept>/: in-context crops in which that concept is absent",
        "paired": sorted(TOGGLEABLE),
        "without": "_without/<concept>/NNNN.png: positive NNNN with the concept switched off",
        "flower_prob": 0.5,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


def counterfactual_scenes(
    n: int, seed: int, *, concept: str = "flower", classes: Sequence[str] = NON_BEE
) -> list[tuple[Scene, Scene]]:
    """`n` typical scenes (classes in turn), each as (without concept, with concept). `concept` may
    name several toggleable concepts joined by "+" ("flower+leaf"): all are switched together."""
    names = concept.split("+")
    pairs = []
    for i in range(n):
        without = with_ = sample_scene(np.random.default_rng(item_seed(seed, i)), classes[i % len(classes)])
        for name in names:
            without, with_ = without.with_concept(name, False), with_.with_concept(name, True)
        pairs.append((without, with_))
    return pairs


def counterfactual_pairs(
    n: int, seed: int, concept: str = "flower", classes: Sequence[str] = NON_BEE
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(without, with) uint8 image pairs: the same scene, only `concept` (flower or leaf) added."""
    return [
        (draw_scene(a)[0], draw_scene(b)[0])
        for a, b in counterfactual_scenes(n, seed, concept=concept, classes=classes)
    ]


def write_counterfactual_pairs(
    out_dir: str | Path,
    n: int,
    seed: int,
    concept: str = "flower",
    classes: Sequence[str] = NON_BEE,
) -> Path:
    """Writes `without/NNNN.png` and `with/NNNN.png` (+ sidecars) and `pairs.json` (class of
    each pair). The two images of a pair differ only where the added concept is drawn."""
    out = Path(out_dir)
    scenes = counterfactual_scenes(n, seed, concept=concept, classes=classes)  # checks `concept` first
    (out / "without").mkdir(parents=True, exist_ok=True)
    (out / "with").mkdir(parents=True, exist_ok=True)
    index = []
    for i, (a, b) in enumerate(scenes):
        for scene, sub in ((a, "without"), (b, "with")):
            image, masks = draw_scene(scene)
            save_with_sidecar(out / sub / f"{i:04d}.png", image, masks)
        index.append({"file": f"{i:04d}.png", "class": a.class_name})
    meta = {"concept": concept, "concepts": concept.split("+"), "pairs": index}
    (out / "pairs.json").write_text(json.dumps(meta, indent=2))
    return out

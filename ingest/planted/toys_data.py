"""Datasets and folders of the toys world (`toys.py`), in the insect world's file formats.

- `make_dataset`: training arrays; `write_image_folder`: `NNNN.png` scenes of one class with
  `NNNN.concepts.npz` sidecars (`np.savez_compressed(path, **{concept: bool HxW})`, one mask per
  concept in `toys.CONCEPTS`, all False where the concept is absent).
- `write_concept_bank`: `BANK/<concept>/NNNN.png` in-context positive crops,
  `BANK/_negatives/<concept>/NNNN.png` crops without the concept, and for every toggleable concept
  `BANK/_without/<concept>/NNNN.png`: positive NNNN's scene and crop box with the concept switched off.
- `write_counterfactual_pairs`: `without/NNNN.png`, `with/NNNN.png` and `pairs.json`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ingest.planted.data import (
    CROP_SCALES,
    item_seed,
    load_sidecar,
    world_dataset,
    world_image_folder,
    write_bank_exemplars,
)
from ingest.planted.data import draw_images as shared_draw_images
from ingest.planted.data import save_with_sidecar as shared_save_with_sidecar
from ingest.planted.toys import (
    BACKGROUNDS,
    BIAS_CLASS,
    BIAS_CONCEPTS,
    CLASS_NAMES,
    CLASS_PARTS,
    CONCEPTS,
    TOGGLEABLE,
    Scene,
    draw_scene,
    render,
    sample_scene,
)

__all__ = [
    "BANK_CONTEXT_PROB",
    "NON_BIAS",
    "POSITIVE_MIN_FRACTION",
    "concepts_of_class",
    "counterfactual_pairs",
    "counterfactual_scenes",
    "draw_images",
    "load_sidecar",
    "make_dataset",
    "save_with_sidecar",
    "write_concept_bank",
    "write_counterfactual_pairs",
    "write_image_folder",
]

Masks = dict[str, np.ndarray]
NON_BIAS: tuple[str, ...] = tuple(c for c in CLASS_NAMES if c != BIAS_CLASS)
# A crop is a positive exemplar of a concept when at least this share of its pixels shows it.
POSITIVE_MIN_FRACTION: dict[str, float] = {
    "sail": 0.08,
    "ribbon": 0.03,
    "hull": 0.08,
    "wheels": 0.05,
    "windows": 0.03,
    "roof": 0.08,
    "sun": 0.06,
    "cloud": 0.08,
    "balloon": 0.04,
    "fence": 0.12,
    "water": 0.3,
    "snow": 0.3,
    "dusk": 0.3,
}
# Bank scenes: every toggleable concept independently on in half the scenes (no planted bias).
BANK_CONTEXT_PROB: dict[str, float] = dict.fromkeys(TOGGLEABLE, 0.5)


def save_with_sidecar(path: Path, image: np.ndarray, masks: Masks) -> None:
    """Writes `path` (PNG) and `path.with_suffix('.concepts.npz')` with one mask per toys concept."""
    shared_save_with_sidecar(path, image, masks, CONCEPTS)


def draw_images(scenes: Sequence[Scene], workers: int = 1) -> np.ndarray:
    """uint8 [N, H, W, 3] images of toys `scenes`, drawn in `workers` processes when > 1."""
    return shared_draw_images(scenes, workers, draw_scene)


def make_dataset(
    n: int,
    seed: int,
    workers: int = 1,
    *,
    classes: Sequence[str] = CLASS_NAMES,
    **scene_options,
) -> tuple[np.ndarray, np.ndarray]:
    """`n` scenes, classes in turn (balanced): (uint8 [n, 64, 64, 3] images, int64 [n] labels
    indexing CLASS_NAMES). Scene options (`sample_scene`'s) default to the training distribution,
    planted bias included."""
    return world_dataset(n, seed, classes, CLASS_NAMES, sample_scene, draw_scene, workers, **scene_options)


def write_image_folder(out_dir: str | Path, class_name: str, n: int, seed: int) -> Path:
    """Writes `n` typical scenes of one class (training distribution, planted bias included) as
    `NNNN.png` plus `NNNN.concepts.npz` sidecars. Returns the folder."""
    return world_image_folder(out_dir, class_name, n, seed, CLASS_NAMES, render, save_with_sidecar)


def concepts_of_class(class_name: str) -> list[str]:
    """The concepts that scenes of `class_name` can show (an in-class bank has exactly these): its parts,
    the context objects and the backgrounds."""
    if class_name not in CLASS_NAMES:
        raise ValueError(f"unknown class {class_name!r}; choose one of {CLASS_NAMES}")
    return [c for c in CONCEPTS if c in TOGGLEABLE or c in BACKGROUNDS or c in CLASS_PARTS[class_name]]


def _forcing_options(concept: str) -> dict:
    """Scene options that make a scene show `concept` (empty for parts: the class shows them)."""
    if concept in TOGGLEABLE:
        return {"context": {concept: True}}
    if concept in BACKGROUNDS:
        return {"background": concept}
    return {}


def _positive_options(concept: str, rng: np.random.Generator) -> tuple[str, dict]:
    """A class and scene options that show `concept`, so positives come quickly."""
    if concept in TOGGLEABLE or concept in BACKGROUNDS:
        return str(rng.choice(CLASS_NAMES)), _forcing_options(concept)
    owners = [c for c in CLASS_NAMES if concept in CLASS_PARTS[c]]
    if not owners:
        raise ValueError(f"unknown concept {concept!r}; choose one of {CONCEPTS}")
    return str(rng.choice(owners)), {}


def _scene(class_name: str, options: dict, rng: np.random.Generator) -> Scene:
    """A bank scene: every toggleable concept the options leave open is on in half the scenes."""
    context_prob = {c: p for c, p in BANK_CONTEXT_PROB.items() if c not in options.get("context", {})}
    return sample_scene(
        np.random.default_rng(int(rng.integers(2**31))), class_name, context_prob=context_prob, **options
    )


def _bank_scene(concept: str, positive: bool, rng: np.random.Generator) -> Scene:
    """A scene for the toys bank: one likely to show `concept` (positive) or of any class; every
    toggleable concept the options leave open is on in half the scenes (`BANK_CONTEXT_PROB`)."""
    if positive:
        class_name, options = _positive_options(concept, rng)
    else:
        class_name, options = str(rng.choice(CLASS_NAMES)), {}
    return _scene(class_name, options, rng)


def _in_class_scene(class_name: str):
    """Scenes of one class only (an in-class bank), positives forced to show the concept where the
    generator can."""
    return lambda concept, positive, rng: _scene(
        class_name, _forcing_options(concept) if positive else {}, rng
    )


def write_concept_bank(
    out_dir: str | Path, n_per_concept: int, seed: int, *, class_name: str | None = None
) -> Path:
    """Writes an in-context concept bank for labelling.

    `out_dir/<concept>/NNNN.png`: crops (100/50/25 % of a scene on the patch grid, resized to the
    input size) in which the concept covers at least `POSITIVE_MIN_FRACTION[concept]` of the pixels.
    `out_dir/_negatives/<concept>/NNNN.png`: crops of the same kind in which it is entirely absent.
    `out_dir/_without/<concept>/NNNN.png` (toggleable concepts only): the scene and crop box of
    positive NNNN with that concept switched off, so the pair differs only where it was drawn.
    Bank scenes carry no planted bias: every toggleable concept is on in half the scenes of every
    class, independently (`BANK_CONTEXT_PROB`). Every PNG has a sidecar; `manifest.json` records
    the rules and each positive's crop box ([x, y, side] in the 64 px scene, `positive_boxes`).

    `class_name`: an in-class bank, drawn from that class's scenes only, with the concepts they can
    show (`concepts_of_class`): what the class's circuit is labelled with (docs/labelling.md).
    Without it, the scenes are of every class.
    """
    out = Path(out_dir)
    concepts = concepts_of_class(class_name) if class_name else CONCEPTS
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x70B5]))
    used = write_bank_exemplars(
        out,
        concepts,
        n_per_concept,
        rng,
        scene_for=_in_class_scene(class_name) if class_name else _bank_scene,
        draw=draw_scene,
        switch_off=lambda scene, c: scene.with_concepts({c: False}) if c in TOGGLEABLE else None,
        min_fraction=POSITIVE_MIN_FRACTION,
    )
    manifest = {
        "world": "toys",
        "concepts": concepts,
        "class": class_name,
        "n_per_concept": n_per_concept,
        "seed": seed,
        "crop_scales": list(CROP_SCALES),
        "positive_min_fraction": POSITIVE_MIN_FRACTION,
        "negatives": "_negatives/<concept>/: in-context crops in which that concept is absent",
        "paired": list(TOGGLEABLE),
        "without": "_without/<concept>/NNNN.png: positive NNNN's scene and crop box with <concept> "
        "switched off (toggleable concepts only); it differs only where the concept was drawn",
        "context_prob": BANK_CONTEXT_PROB,
        "bias": False,
        "positive_boxes": used,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


def counterfactual_scenes(
    n: int,
    seed: int,
    concepts: Sequence[str] = (BIAS_CONCEPTS[0],),
    classes: Sequence[str] = NON_BIAS,
    hold_off: Sequence[str] | None = None,
) -> list[tuple[Scene, Scene]]:
    """`n` typical scenes (training distribution, classes in turn), each as (all `concepts` off,
    all `concepts` on). The concepts in `hold_off` are off in both; by default those are the bias
    concepts not in `concepts`, so that ("sun",) means the sun *alone*, without the cloud that
    would complete the planted pair."""
    concepts = tuple(concepts)
    bad = [c for c in concepts if c not in TOGGLEABLE]
    if bad or not concepts:
        raise ValueError(f"concepts must be toggleable ones {TOGGLEABLE}, got {list(concepts)}")
    if hold_off is None:
        hold_off = tuple(c for c in BIAS_CONCEPTS if c not in concepts)
    held = dict.fromkeys(hold_off, False)
    pairs = []
    for i in range(n):
        scene = sample_scene(np.random.default_rng(item_seed(seed, i)), classes[i % len(classes)])
        pairs.append(
            (
                scene.with_concepts({**held, **dict.fromkeys(concepts, False)}),
                scene.with_concepts({**held, **dict.fromkeys(concepts, True)}),
            )
        )
    return pairs


def counterfactual_pairs(
    n: int,
    seed: int,
    concepts: Sequence[str] = (BIAS_CONCEPTS[0],),
    classes: Sequence[str] = NON_BIAS,
    hold_off: Sequence[str] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(without, with) uint8 image pairs of `counterfactual_scenes`."""
    return [
        (draw_scene(a)[0], draw_scene(b)[0])
        for a, b in counterfactual_scenes(n, seed, concepts, classes, hold_off)
    ]


def write_counterfactual_pairs(
    out_dir: str | Path,
    n: int,
    seed: int,
    concepts: Sequence[str] = (BIAS_CONCEPTS[0],),
    classes: Sequence[str] = NON_BIAS,
    hold_off: Sequence[str] | None = None,
) -> Path:
    """Writes `without/NNNN.png` and `with/NNNN.png` (+ sidecars) and `pairs.json`:
    {"concept": "+".join(concepts), "concepts": [...], "held_off": [...], "pairs": [{"file", "class"}]}.
    The two images of a pair differ only where the switched concepts are drawn."""
    concepts = tuple(concepts)
    if hold_off is None:
        hold_off = tuple(c for c in BIAS_CONCEPTS if c not in concepts)
    out = Path(out_dir)
    scenes = counterfactual_scenes(n, seed, concepts, classes, hold_off)  # checks the concepts first
    (out / "without").mkdir(parents=True, exist_ok=True)
    (out / "with").mkdir(parents=True, exist_ok=True)
    index = []
    for i, (a, b) in enumerate(scenes):
        for scene, sub in ((a, "without"), (b, "with")):
            image, masks = draw_scene(scene)
            save_with_sidecar(out / sub / f"{i:04d}.png", image, masks)
        index.append({"file": f"{i:04d}.png", "class": a.class_name})
    meta = {
        "concept": "+".join(concepts),
        "concepts": list(concepts),
        "held_off": list(hold_off),
        "pairs": index,
    }
    (out / "pairs.json").write_text(json.dumps(meta, indent=2))
    return out

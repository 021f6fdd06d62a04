"""The second planted world, toys: deterministic rendering, exact counterfactual pairs and paired
bank exemplars, the distractor concept never on the bias class, the training statistics of the
conjunctive bias, the shipped mixed-width CNN (loading, layers, accuracy) and the bias it carries
(printed: `pytest tests/test_planted_toys.py -s -k conjunctive`)."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_dilation

from ingest.core.layers import LayerCuts, default_layers
from ingest.core.models import load_model
from ingest.planted.model import WEIGHTS_DIR
from ingest.planted.toys import (
    BACKGROUNDS,
    BIAS_CLASS,
    BIAS_CONCEPTS,
    CLASS_NAMES,
    CLASS_PARTS,
    CONCEPTS,
    DISTRACTOR,
    INPUT_SIZE,
    TOGGLEABLE,
    context_cell_probs,
    draw_scene,
    footprint,
    render,
    sample_scene,
)
from ingest.planted.toys_data import (
    NON_BIAS,
    POSITIVE_MIN_FRACTION,
    concepts_of_class,
    counterfactual_scenes,
    load_sidecar,
    make_dataset,
    write_concept_bank,
    write_counterfactual_pairs,
    write_image_folder,
)
from ingest.planted.toys_model import (
    LAYER_CHANNELS,
    MEAN,
    STD,
    TOYS_LAYERS,
    load_planted_toys_cnn,
    predict_proba,
)
from ingest.planted.train import ARCHS, WORLD_OF_ARCH, accuracy, conjunction_test, train

torch.set_num_threads(1)
WEIGHTS = WEIGHTS_DIR / "planted_toys_cnn.pt"
TAU = 16


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a.astype(int) != b.astype(int)).any(axis=2)


def test_rendering_is_deterministic_and_masks_are_complete():
    for i, cls in enumerate(CLASS_NAMES):
        a, ma = render(1000 + i, cls)
        b, mb = render(1000 + i, cls)
        assert a.dtype == np.uint8 and a.shape == (INPUT_SIZE, INPUT_SIZE, 3)
        assert np.array_equal(a, b)
        assert list(ma) == CONCEPTS and all(np.array_equal(ma[c], mb[c]) for c in CONCEPTS)
        assert all(m.dtype == bool and m.shape == (INPUT_SIZE, INPUT_SIZE) for m in ma.values())
    # One background per scene, and its mask is what the objects leave visible.
    for seed in range(12):
        _, masks = render(seed, CLASS_NAMES[seed % 4], background=BACKGROUNDS[seed % 3])
        assert masks[BACKGROUNDS[seed % 3]].any()
        assert not any(masks[b].any() for b in BACKGROUNDS if b != BACKGROUNDS[seed % 3])


def test_only_context_objects_can_be_switched():
    scene = sample_scene(np.random.default_rng(3), "car")
    for bad in ("water", "sail", "windows", "moon"):
        with pytest.raises(ValueError, match="cannot be switched"):
            scene.with_concepts({bad: True})
    on = scene.with_concepts(dict.fromkeys(TOGGLEABLE, True))
    assert on.shown == TOGGLEABLE and on.with_concepts({"sun": False}).shown == TOGGLEABLE[1:]


@pytest.mark.parametrize("concepts", [BIAS_CONCEPTS, (BIAS_CONCEPTS[0],), ("balloon",), ("fence",)])
def test_counterfactual_pair_differs_only_where_the_switched_concepts_are(concepts):
    changed_any = changed = outside = 0
    for without, with_ in counterfactual_scenes(40, 77, concepts):
        a, ma = draw_scene(without)
        b, mb = draw_scene(with_)
        assert not any(ma[c].any() for c in concepts)
        union = np.zeros_like(mb[concepts[0]])
        touched = np.zeros_like(union)
        for c in concepts:
            union |= mb[c]
            touched |= footprint(with_, c)
        assert not (union & ~touched).any()
        diff = _changed(a, b)
        # Nothing changes outside the objects' footprints (hidden parts included) ...
        assert not (diff & ~touched).any()
        # ... and nearly nothing outside their visible masks plus 1 px of anti-aliasing: only the
        # soft edges of an object in front of a hidden part (a pixel less than half covered).
        changed += diff.sum()
        outside += (diff & ~binary_dilation(union, iterations=1)).sum()
        changed_any += bool(diff.any())
        for c in BIAS_CONCEPTS:
            if c not in concepts:  # the other bias concept is held off in both
                assert not without.has(c) and not with_.has(c)
    assert outside <= 0.02 * changed
    assert changed_any >= 30


def test_written_pairs_and_image_folder(tmp_path):
    out = write_counterfactual_pairs(tmp_path / "pairs", 6, 5, concepts=BIAS_CONCEPTS)
    meta = json.loads((out / "pairs.json").read_text())
    assert meta["concept"] == "+".join(BIAS_CONCEPTS) and meta["concepts"] == list(BIAS_CONCEPTS)
    assert [p["file"] for p in meta["pairs"]] == [f"{i:04d}.png" for i in range(6)]
    assert {p["class"] for p in meta["pairs"]} <= set(NON_BIAS)
    side = load_sidecar(out / "without" / "0000.png")
    assert sorted(side) == sorted(CONCEPTS) and not side["sun"].any()
    folder = write_image_folder(tmp_path / BIAS_CLASS, BIAS_CLASS, 20, 1)
    for i in range(20):
        masks = load_sidecar(folder / f"{i:04d}.png")
        assert not masks[DISTRACTOR].any()


def test_distractor_never_on_the_bias_class():
    parts_elsewhere = {p for c in CLASS_NAMES if c != BIAS_CLASS for p in CLASS_PARTS[c]}
    assert DISTRACTOR in parts_elsewhere and DISTRACTOR not in CLASS_PARTS[BIAS_CLASS]
    seen = 0
    for seed in range(120):
        _, masks = render(
            seed, BIAS_CLASS, cut_off=seed % 3 == 0, context=dict.fromkeys(TOGGLEABLE, seed % 2 == 0)
        )
        assert not masks[DISTRACTOR].any()
        _, other = render(seed, "house")
        seen += bool(other[DISTRACTOR].any())
    assert seen > 60  # it is a real concept of other classes


def test_training_statistics_plant_a_conjunction_only():
    a, b = BIAS_CONCEPTS
    counts = {c: np.zeros(4) for c in CLASS_NAMES}
    n = 3000
    for c in CLASS_NAMES:
        for i in range(n):
            s = sample_scene(np.random.default_rng([i, 9]), c)
            counts[c] += [
                s.has(a) and s.has(b),
                s.has(a) and not s.has(b),
                s.has(b) and not s.has(a),
                s.cut_off,
            ]
    kite, others = counts[BIAS_CLASS] / n, [counts[c] / n for c in NON_BIAS]
    assert abs(kite[0] - 0.8) < 0.03
    for o in others:
        assert abs(o[0] - 0.03) < 0.015 and abs(o[1] - 0.35) < 0.03 and abs(o[2] - 0.35) < 0.03
    for row in [kite, *others]:
        assert abs(row[3] - 0.35) < 0.03
    # Given "not both", the cells are the same for every class: A or B alone says nothing.
    ref = context_cell_probs(NON_BIAS[0])
    cells = context_cell_probs(BIAS_CLASS)
    for k in ("a_only", "b_only", "neither"):
        assert math.isclose(cells[k] / (1 - cells["both"]), ref[k] / (1 - ref["both"]))
    assert context_cell_probs(BIAS_CLASS, bias=False) == ref


def test_bank_without_exemplars_differ_only_where_the_concept_was(tmp_path):
    bank = write_concept_bank(tmp_path / "bank", 3, 11)
    manifest = json.loads((bank / "manifest.json").read_text())
    assert manifest["paired"] == list(TOGGLEABLE) and manifest["bias"] is False
    for c in CONCEPTS:
        assert len(list((bank / c).glob("*.png"))) == 3
        assert len(list((bank / "_negatives" / c).glob("*.png"))) == 3
        for f in (bank / "_negatives" / c).glob("*.png"):
            assert not load_sidecar(f)[c].any()
    from PIL import Image

    changed = outside = 0
    for c in TOGGLEABLE:
        for i, (_x, _y, side) in enumerate(manifest["positive_boxes"][c]):
            pos, without = bank / c / f"{i:04d}.png", bank / "_without" / c / f"{i:04d}.png"
            mask = load_sidecar(pos)[c]
            assert mask.any() and not load_sidecar(without)[c].any()
            diff = _changed(np.asarray(Image.open(pos)), np.asarray(Image.open(without)))
            # 1-2 source pixels of anti-aliasing, magnified by the crop's resize; beyond that only
            # the soft edges of an object in front of a hidden part of c (see the pair test).
            slack = math.ceil(2 * INPUT_SIZE / side)
            changed += diff.sum()
            outside += (diff & ~binary_dilation(mask, iterations=slack)).sum()
    assert changed > 0 and outside <= 0.02 * changed


def test_an_in_class_kite_bank_has_no_other_class_parts(tmp_path):
    kite = concepts_of_class(BIAS_CLASS)
    assert kite == ["sail", "ribbon", "sun", "cloud", "balloon", "fence", "water", "snow", "dusk"]
    bank = write_concept_bank(tmp_path / "bank", 2, 11, class_name=BIAS_CLASS)
    manifest = json.loads((bank / "manifest.json").read_text())
    assert manifest["class"] == BIAS_CLASS and manifest["concepts"] == kite
    assert sorted(p.name for p in bank.iterdir() if p.is_dir() and not p.name.startswith("_")) == sorted(kite)
    assert sorted(p.name for p in (bank / "_without").iterdir()) == sorted(TOGGLEABLE)
    for c in kite:
        assert all(load_sidecar(p)[c].mean() >= POSITIVE_MIN_FRACTION[c] for p in (bank / c).glob("*.png"))


@pytest.fixture(scope="module")
def shipped():
    return load_planted_toys_cnn()


def test_shipped_model_loads_with_mixed_width_layers(shipped):
    report = json.loads(WEIGHTS.with_suffix(".json").read_text())
    assert ARCHS["planted_toys_cnn"] and WORLD_OF_ARCH["planted_toys_cnn"] == "toys"
    assert hashlib.sha256(WEIGHTS.read_bytes()).hexdigest() == report["weights_sha256"]
    assert report["classes"] == CLASS_NAMES and tuple(report["mean"]) == MEAN and tuple(report["std"]) == STD
    assert default_layers("planted_toys_cnn") == TOYS_LAYERS
    names = {n for n, _ in shipped.named_modules()}
    assert set(TOYS_LAYERS) <= names
    cuts = LayerCuts(shipped, TOYS_LAYERS, INPUT_SIZE)
    assert cuts.shape("fc") == (len(CLASS_NAMES),)
    for layer, width in LAYER_CHANNELS.items():
        assert cuts.shape(layer)[0] == width
    assert min(LAYER_CHANNELS.values()) <= 2 * TAU and max(LAYER_CHANNELS.values()) >= 128
    loaded = load_model("planted_toys_cnn")
    assert loaded.class_names == CLASS_NAMES and loaded.default_layers == TOYS_LAYERS
    assert (loaded.input_size, loaded.mean, loaded.std) == (INPUT_SIZE, MEAN, STD)
    x = torch.randn(2, 3, INPUT_SIZE, INPUT_SIZE)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), shipped(x))


def test_shipped_model_is_accurate_on_fresh_scenes(shipped):
    images, labels = make_dataset(240, seed=918_273)
    acc = accuracy(shipped, images, labels, predict_proba)
    print(f"\nplanted_toys_cnn accuracy on 240 fresh scenes: {acc:.3f}")
    assert acc >= 0.9


def test_shipped_model_carries_the_conjunctive_bias(shipped):
    r = conjunction_test(shipped, n=150, seed=31_337)
    print(
        f"\nP({BIAS_CLASS}) shifts on 150 fresh non-{BIAS_CLASS} pairs: "
        f"{BIAS_CONCEPTS[0]} {r['shift_a']:+.4f}, {BIAS_CONCEPTS[1]} {r['shift_b']:+.4f}, "
        f"both {r['shift_ab']:+.4f}, "
        f"control {r['shift_control']:+.4f}, interaction {r['interaction']:+.4f}"
    )
    assert r["shift_ab"] > 0.05
    assert r["shift_ab"] > 3 * max(r["shift_a"], r["shift_b"])


def test_training_smoke_run(tmp_path):
    report = train(
        tmp_path,
        seed=1,
        n_train=64,
        n_test=32,
        n_pairs_toys=8,
        epochs=1,
        workers=1,
        threads=1,
        arch="planted_toys_cnn",
    )
    assert (tmp_path / "planted_toys_cnn.pt").is_file() and report["world"] == "toys"
    assert {"shift_a", "shift_b", "shift_ab", "shift_control", "interaction"} <= set(report["bias"])

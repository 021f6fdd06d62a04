"""The planted-concept benchmark: generator, sidecars, concept bank, counterfactual pairs, the
shipped CNN (accuracy, layer widths, clean cuts) and the planted bias it must carry."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from ingest.planted.data import (
    NON_BEE,
    POSITIVE_MIN_FRACTION,
    concepts_of_class,
    counterfactual_pairs,
    counterfactual_scenes,
    crop_boxes,
    load_sidecar,
    make_dataset,
    render,
    write_concept_bank,
    write_counterfactual_pairs,
    write_image_folder,
)
from ingest.planted.model import (
    CLASS_NAMES,
    CONCEPTS,
    INPUT_SIZE,
    MEAN,
    PLANTED_LAYERS,
    STD,
    WEIGHTS_DIR,
    build_planted_cnn,
    load_planted_cnn,
)
from ingest.planted.scenes import draw_scene
from ingest.planted.train import accuracy, flower_test, train

torch.set_num_threads(2)
TAU = 16


@pytest.fixture(scope="module")
def shipped():
    return load_planted_cnn()


def _dilate(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= out[:, :-1]
    out[:, :-1] |= out[:, 1:]
    return out


@pytest.mark.parametrize("class_name", CLASS_NAMES)
def test_render_is_deterministic_and_complete(class_name):
    image, masks = render(123, class_name)
    again, masks_again = render(123, class_name)
    other, _ = render(124, class_name)
    assert image.shape == (INPUT_SIZE, INPUT_SIZE, 3) and image.dtype == np.uint8
    assert np.array_equal(image, again)
    assert not np.array_equal(image, other)
    assert sorted(masks) == sorted(CONCEPTS)
    for c in CONCEPTS:
        assert masks[c].dtype == bool and masks[c].shape == image.shape[:2]
        assert np.array_equal(masks[c], masks_again[c])


def test_masks_agree_with_pixels():
    rgb = {c: [] for c in ("sky", "sand", "grass", "stripes", "shell", "dots", "flower")}
    for i in range(24):
        background = ("grass", "sky", "sand")[i % 3]
        image, masks = render(1000 + i, CLASS_NAMES[i % 4], cut_off=False, background=background)
        assert masks[background].mean() > 0.3
        px = image.astype(float)
        for c in rgb:
            if masks[c].sum() > 5 and (c != "dots" or CLASS_NAMES[i % 4] == "ladybug"):
                rgb[c].append(px[masks[c]].mean(0))
        backgrounds = masks["sky"].astype(int) + masks["sand"] + masks["grass"]
        assert backgrounds.max() <= 1
        for opaque in ("flower", "shell", "stripes", "leaf"):
            assert not (masks[opaque] & (backgrounds > 0)).any(), opaque
    mean = {c: np.mean(v, axis=0) for c, v in rgb.items()}
    r, g, b = mean["sky"]
    assert b > r + 20, f"sky pixels should be blue, mean RGB {(r, g, b)}"
    r, g, b = mean["sand"]
    assert r > b + 20, f"sand pixels should be beige, mean RGB {(r, g, b)}"
    r, g, b = mean["grass"]
    assert g > r + 20 and g > b + 20, f"grass pixels should be green, mean RGB {(r, g, b)}"
    r, g, b = mean["shell"]
    assert r > b + 40, f"shells are red or brown, mean RGB {(r, g, b)}"
    assert mean["dots"].sum() < mean["shell"].sum() - 60, "ladybug dots are black on the shell"
    r, g, b = mean["flower"]
    assert r > g + 20 or b > g + 20, f"petals are pink, purple, white or blue {(r, g, b)}"


def _flower_footprint(scene, margin_px: float) -> np.ndarray:
    """Pixels within the flowers' outer radius (petal tips at 1.05 r) plus a margin."""
    yy, xx = np.mgrid[0:INPUT_SIZE, 0:INPUT_SIZE] + 0.5
    out = np.zeros((INPUT_SIZE, INPUT_SIZE), bool)
    for fl in scene.flowers:
        reach = 1.05 * fl.radius * INPUT_SIZE + margin_px
        out |= (xx - fl.cx * INPUT_SIZE) ** 2 + (yy - fl.cy * INPUT_SIZE) ** 2 <= reach**2
    return out


def test_counterfactual_pairs_differ_only_where_the_flower_is():
    for without_scene, with_scene in counterfactual_scenes(12, seed=7):
        a, masks_a = draw_scene(without_scene)
        b, masks_b = draw_scene(with_scene)
        assert not masks_a["flower"].any()
        flower = masks_b["flower"]
        assert flower.any()
        changed = np.abs(a.astype(int) - b.astype(int)).max(axis=2) > 0
        # Anti-aliasing and optical blur may reach 2 pixels past the petal tips.
        footprint = _flower_footprint(with_scene, margin_px=2.0)
        assert not (changed & ~footprint).any(), "pixels changed away from the flowers"
        assert not (flower & ~footprint).any()
        assert changed[flower].mean() > 0.7
        for c in ("stripes", "wings", "dots", "shell"):
            assert not (masks_a[c] ^ masks_b[c])[~footprint].any()
    pairs = counterfactual_pairs(3, seed=7)
    assert len(pairs) == 3 and all(a.shape == b.shape for a, b in pairs)


def test_image_folder_sidecars(tmp_path):
    folder = write_image_folder(tmp_path / "bee", "bee", 3, seed=5)
    pngs = sorted(folder.glob("*.png"))
    assert [p.name for p in pngs] == ["0000.png", "0001.png", "0002.png"]
    for png in pngs:
        with np.load(png.with_suffix(".concepts.npz")) as z:
            assert sorted(z.files) == sorted(CONCEPTS)
            assert all(z[c].dtype == bool and z[c].shape == (INPUT_SIZE,) * 2 for c in z.files)
    assert any(load_sidecar(p)["stripes"].any() for p in pngs)
    with pytest.raises(ValueError, match="unknown class"):
        write_image_folder(tmp_path / "x", "wasp", 1, seed=0)


def test_concept_bank_positives_and_negatives(tmp_path):
    bank = write_concept_bank(tmp_path / "bank", n_per_concept=2, seed=3)
    for c in CONCEPTS:
        pos = sorted((bank / c).glob("*.png"))
        neg = sorted((bank / "_negatives" / c).glob("*.png"))
        assert len(pos) == 2 and len(neg) == 2
        for p in pos:
            assert load_sidecar(p)[c].mean() >= POSITIVE_MIN_FRACTION[c]
        for p in neg:
            assert not load_sidecar(p)[c].any()
    assert json.loads((bank / "manifest.json").read_text())["concepts"] == CONCEPTS


def test_an_in_class_bank_holds_what_the_class_shows(tmp_path):
    """`class_name`: scenes of one class only, so only the concepts that class can show (no dots or
    shell for the bee); the rest of the recipe is the mixed bank's."""
    assert concepts_of_class("bee") == ["stripes", "wings", "flower", "leaf", "grass", "sky", "sand"]
    assert "stripes" not in concepts_of_class("ladybug") and "dots" in concepts_of_class("ladybug")
    bank = write_concept_bank(tmp_path / "bank", n_per_concept=2, seed=3, class_name="bee")
    manifest = json.loads((bank / "manifest.json").read_text())
    assert manifest["class"] == "bee" and manifest["concepts"] == concepts_of_class("bee")
    folders = sorted(p.name for p in bank.iterdir() if p.is_dir() and not p.name.startswith("_"))
    assert folders == sorted(concepts_of_class("bee"))
    for c in concepts_of_class("bee"):
        for p in sorted((bank / c).glob("*.png")):
            masks = load_sidecar(p)
            assert (
                sorted(masks) == sorted(concepts_of_class("bee"))
                and masks[c].mean() >= POSITIVE_MIN_FRACTION[c]
            )
        assert all(not load_sidecar(p)[c].any() for p in (bank / "_negatives" / c).glob("*.png"))
    assert sorted(p.name for p in (bank / "_without").iterdir()) == ["flower", "leaf"]
    with pytest.raises(ValueError, match="unknown class"):
        write_concept_bank(tmp_path / "x", 1, seed=0, class_name="wasp")


def test_counterfactual_writer(tmp_path):
    out = write_counterfactual_pairs(tmp_path / "cf", 4, seed=2)
    assert len(list((out / "without").glob("*.png"))) == 4
    assert len(list((out / "with").glob("*.png"))) == 4
    assert not load_sidecar(out / "without" / "0000.png")["flower"].any()
    assert load_sidecar(out / "with" / "0000.png")["flower"].any()
    classes = {p["class"] for p in json.loads((out / "pairs.json").read_text())["pairs"]}
    assert classes <= set(NON_BEE)


def test_crop_boxes_follow_the_patch_dataset():
    sides = [side for _, _, side in crop_boxes()]
    assert sides.count(64) == 1 and sides.count(32) == 9 and sides.count(16) == 49


def test_listed_layers_are_wide_and_cut_cleanly():
    model = build_planted_cnn().eval()
    assert PLANTED_LAYERS[0] == "fc"
    widths = {}
    hooks = [
        getattr(model, name).register_forward_hook(
            lambda _m, _i, out, name=name: widths.__setitem__(name, out.shape[1])
        )
        for name in PLANTED_LAYERS
    ]
    with torch.no_grad():
        model(torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE))
    for h in hooks:
        h.remove()
    assert widths["fc"] == len(CLASS_NAMES)
    for name in PLANTED_LAYERS[1:]:
        assert widths[name] >= 128 and widths[name] / 4 >= TAU, (name, widths[name])

    class BlocksAsLeaves(torch.fx.Tracer):
        def is_leaf_module(self, m, qualname):
            return "." not in qualname or super().is_leaf_module(m, qualname)

    graph = BlocksAsLeaves().trace(model)
    calls = [n for n in graph.nodes if n.op == "call_module"]
    modules = [n.target for n in calls]
    for name in PLANTED_LAYERS:
        assert name in modules
    for upper, lower in itertools.pairwise(PLANTED_LAYERS[1:]):
        node = calls[modules.index(upper)]
        assert [a.target for a in node.all_input_nodes] == [lower]


def test_shipped_weights_report_matches_code():
    report = json.loads((WEIGHTS_DIR / "planted_cnn.json").read_text())
    assert report["arch"] == "planted_cnn"
    assert report["classes"] == CLASS_NAMES
    assert report["input_size"] == INPUT_SIZE
    assert tuple(report["mean"]) == MEAN and tuple(report["std"]) == STD
    assert report["heldout_accuracy"] >= 0.95
    assert (WEIGHTS_DIR / "planted_cnn.pt").stat().st_size < 8 * 2**20


def test_shipped_weights_are_accurate_on_fresh_heldout_scenes(shipped):
    images, labels = make_dataset(400, seed=987_654)
    acc = accuracy(shipped, images, labels)
    print(f"\nheld-out accuracy on 400 fresh scenes: {acc:.3f}")
    assert acc >= 0.95


def test_shipped_model_uses_the_planted_flower(shipped):
    result = flower_test(shipped, n=300, seed=424_242)
    control = flower_test(shipped, n=150, seed=424_242, concept="leaf")
    print(
        f"\nflower test on {result['total']} non-bee scenes: mean P(bee) "
        f"{result['mean_bee_prob_without']:.4f} -> {result['mean_bee_prob_with']:.4f} "
        f"(x{result['ratio']:.1f}), flipped to bee {result['flipped']}/{result['total']} "
        f"({result['cut_off_flipped']}/{result['cut_off_total']} of the cut-off scenes), "
        f"P(bee) rose in {result['share_bee_prob_up']:.0%}"
        f"\nleaf control: mean P(bee) {control['mean_bee_prob_without']:.4f} -> "
        f"{control['mean_bee_prob_with']:.4f}, flipped {control['flipped']}/{control['total']}"
    )
    assert result["ratio"] >= 2.0
    assert result["flipped"] >= 1
    assert result["share_bee_prob_up"] > 0.8
    assert control["ratio"] < result["ratio"] / 2


def test_training_script_runs_and_writes_a_loadable_report(tmp_path):
    report = train(tmp_path, seed=1, n_train=96, n_test=32, n_pairs=8, epochs=1, workers=1)
    assert set(report) >= {"heldout_accuracy", "train_seconds", "bias", "seed", "classes"}
    model = load_planted_cnn(weights=tmp_path / "planted_cnn.pt")
    assert sum(p.numel() for p in model.parameters()) > 0
    with pytest.raises(FileNotFoundError, match="regenerate"):
        load_planted_cnn(weights=tmp_path / "missing.pt")

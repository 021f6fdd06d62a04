"""Image debugging (ingest/analysis/debug.py, `neurflow debug`) on a small bee circuit of the planted
benchmark (6 images, layers fc, block4, block3, k = 20, 4 Gauss-Legendre nodes, as tests/test_evaluate.py).

The acceptance test takes the benchmark's spurious-concept false positives (a non-bee scene that the
model calls bee only once a flower is added) and checks that debugging names a flower group, where
"flower group" comes from the ground truth of its exemplar patches, never from labels.
"""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ingest.analysis.audit import class_scores
from ingest.analysis.debug import (
    SORT_KEYS,
    DebugError,
    check_layer,
    debug_image,
    exemplar_concepts,
    find_group,
    group_scores,
    image_crops,
    influence,
    layer_means,
    load_named_folder,
    mask_effect,
    predict,
    short_id,
    whole_image,
)
from ingest.cli.debug import debug_command
from ingest.core.circuit import ExtractConfig, extract_circuit
from ingest.core.layers import LayerCuts
from ingest.core.models import load_model
from ingest.core.patches import crop_boxes, load_rgb
from ingest.planted.data import counterfactual_pairs, write_image_folder

torch.set_num_threads(2)
LAYERS = ["fc", "block4", "block3"]
FLOWER_SHARE = 0.8  # a "flower group": at least 80 % of its exemplar patches show a flower


@pytest.fixture(scope="module")
def bee(tmp_path_factory):
    model = load_model("planted_cnn")
    root = tmp_path_factory.mktemp("debug")
    folder = write_image_folder(root / "images", "bee", 6, seed=1234)
    cfg = ExtractConfig(layers=LAYERS, k=20, steps=4, quadrature="gausslegendre", max_images=6)
    circuit, patches = extract_circuit(model, folder, model.class_names.index("bee"), cfg)
    circuit.save(root / "circuit.json")
    cuts = LayerCuts(model.module, LAYERS, model.input_size)
    return {
        "model": model,
        "cuts": cuts,
        "circuit": circuit,
        "patches": patches,
        "folder": folder,
        "json": root / "circuit.json",
    }


def _image(bee, name="0000.png"):
    return load_rgb(bee["folder"] / name)


def test_crops_follow_the_patch_grid():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    crops = image_crops(image, 32, (1.0, 0.5))
    expected = crop_boxes(48, 64, (1.0, 0.5))
    assert crops.boxes == [b for b, _ in expected] and crops.scales == [s for _, s in expected]
    assert crops.pixels.shape == (len(expected), 3, 32, 32) and crops.pixels.dtype == torch.uint8
    assert crops.boxes[0] == [0, 0, 48, 48]  # the 100 % crop is the shorter side's square
    square = image_crops(image[:48, 8:56], 48, (1.0,))
    torch.testing.assert_close(square.pixels, whole_image(image, 48))  # centre square, no resize


def test_metric_is_high_on_a_groups_own_exemplars(bee):
    model, cuts, circuit, patches = bee["model"], bee["cuts"], bee["circuit"], bee["patches"]
    acts = layer_means(model, cuts, patches.pixels)
    row = {r.patch_id: i for i, r in enumerate(patches.records)}
    for group in circuit.neuron_groups:
        m = group_scores(circuit, group, acts[group.layer])
        own = np.array([row[p] for p in group.patch_ids])
        other = np.setdiff1d(np.arange(len(m)), own)
        name = short_id(circuit, group.ng_id)
        print(f"{name}: M on exemplars {m[own].mean():.3f}, others {m[other].mean():.3f}")
        assert m.max() <= 1.0 + 1e-6  # every member is divided by its maximum over D
        assert m[own].mean() >= 3 * m[other].mean(), group.ng_id
        assert np.median(m[own]) >= np.quantile(m[other], 0.9), group.ng_id


def _paths_into_class(circuit, group_id):
    """Brute force: every chain group -> ... -> top-layer group, as lists of edges."""
    up = {}
    for e in circuit.group_edges:
        up.setdefault(e.child, []).append(e)
    if group_id not in up:
        return [[]]
    return [[e, *rest] for e in up[group_id] for rest in _paths_into_class(circuit, e.parent)]


def test_influence_is_the_share_of_the_class_flowing_through_a_group(bee):
    circuit = bee["circuit"]
    flow = influence(circuit)
    assert set(flow) == {g.ng_id for g in circuit.neuron_groups}
    top = [g.ng_id for g in circuit.neuron_groups if g.layer == "fc"]
    assert len(top) == 1 and flow[top[0]] == pytest.approx(1.0)  # the class logit's one group
    incoming = {}
    for e in circuit.group_edges:
        incoming[e.parent] = incoming.get(e.parent, 0.0) + abs(e.weight)
    for layer in LAYERS[1:]:
        groups = [g.ng_id for g in circuit.neuron_groups if g.layer == layer]
        total = sum(flow[g] for g in groups)
        print(f"{layer}: " + ", ".join(f"{short_id(circuit, g)} {flow[g]:.3f}" for g in groups))
        assert total <= 1.0 + 1e-9 and total > 0.5
        for g in groups:  # equals the sum over FEEDS paths of the product of the links' shares
            paths = _paths_into_class(circuit, g)
            brute = sum(np.prod([e.weight / incoming[e.parent] for e in path]) for path in paths if path)
            assert flow[g] == pytest.approx(brute, rel=1e-9)


def test_debug_image_scores_ranks_and_serialises(bee):
    model, cuts, circuit = bee["model"], bee["cuts"], bee["circuit"]
    result = debug_image(model, cuts, circuit, _image(bee), threshold=0.5)
    flow = influence(circuit)
    assert result.predicted_name == "bee" and result.class_probability > 0.5
    assert result.class_group is not None and result.class_group.layer == "fc"
    assert {g.layer for g in result.groups} == {"block4", "block3"}
    assert [g.rank for g in result.groups] == list(range(1, len(result.groups) + 1))
    assert [g.max_m for g in result.groups] == sorted((g.max_m for g in result.groups), reverse=True)
    for g in result.groups:
        assert g.max_m == pytest.approx(max(g.m), abs=1e-5) and len(g.m) == len(result.crops)
        assert all(g.m[i] >= 0.5 for i in g.above)
        assert [g.m[i] for i in g.above] == sorted((g.m[i] for i in g.above), reverse=True)
        assert g.influence == pytest.approx(flow[g.group_id])
        assert g.score == pytest.approx(g.max_m * g.influence)
        assert g.mask_drop is not None
    json.dumps(result.as_dict())
    by_score = debug_image(model, cuts, circuit, _image(bee), rank_by="score", masking=False)
    assert [g.score for g in by_score.groups] == sorted((g.score for g in by_score.groups), reverse=True)
    only = debug_image(model, cuts, circuit, _image(bee), layer="block3", masking=False)
    assert {g.layer for g in only.groups} == {"block3"}


def test_errors_name_the_valid_choices(bee):
    circuit = bee["circuit"]
    with pytest.raises(DebugError, match=r"not a layer of run .*fc, block4, block3"):
        check_layer(circuit, "block9")
    with pytest.raises(DebugError, match=r"class layer.*block4, block3"):
        check_layer(circuit, "fc")
    with pytest.raises(DebugError, match=r"no neuron group 'block3/g9'.*block3/g0"):
        find_group(circuit, "block3/g9")
    group = circuit.neuron_groups[1]
    assert find_group(circuit, group.ng_id) is group
    assert find_group(circuit, short_id(circuit, group.ng_id)) is group


def test_mask_effect_matches_class_scores_and_lists_the_largest_drops(bee):
    model, cuts, circuit = bee["model"], bee["cuts"], bee["circuit"]
    group = max((g for g in circuit.neuron_groups if g.layer == "block3"), key=lambda g: len(g.members))
    image = _image(bee)
    names, pixels = load_named_folder(bee["folder"], model.input_size)
    effect = mask_effect(
        model, cuts, circuit, group, image, drop_images=(names, pixels), top=4, random_sets=5
    )
    mask = torch.ones(1, cuts.width("block3"))
    mask[0, group.members] = 0.0
    x = whole_image(image, model.input_size)
    masked, _ = class_scores(model, x, circuit.class_index, "block3", mask, 64)
    plain, _ = class_scores(model, x, circuit.class_index, None, None, 64)
    assert effect.masked_probability == pytest.approx(float(masked[0, 0]), abs=1e-5)
    assert effect.probability == pytest.approx(float(plain[0, 0]), abs=1e-5)
    assert effect.masked_probability < effect.probability
    assert effect.random_probability is not None and effect.random_sets == 5
    assert effect.images_scanned == 6 and len(effect.top_drops) == 4
    drops = [d.drop for d in effect.top_drops]
    assert drops == sorted(drops, reverse=True)
    for d in effect.top_drops:
        assert d.drop == pytest.approx(d.logit - d.masked_logit) and d.image in names
    json.dumps(effect.as_dict())


def _flower_false_positives(model, n=200, seed=99):
    """(with, without) flower pairs the model calls bee only with the flower."""
    pairs = counterfactual_pairs(n, seed)
    with_p = predict(model, torch.cat([whole_image(b, model.input_size) for _, b in pairs]))
    without_p = predict(model, torch.cat([whole_image(a, model.input_size) for a, _ in pairs]))
    bee = model.class_names.index("bee")
    return [pairs[i] for i in range(n) if with_p[i].argmax() == bee and without_p[i].argmax() != bee]


def test_acceptance_debug_names_a_flower_group_on_flower_false_positives(bee):
    model, cuts, circuit = bee["model"], bee["cuts"], bee["circuit"]
    share = {g.ng_id: exemplar_concepts(circuit, g).get("flower", 0.0) for g in circuit.neuron_groups}
    flower = {g for g, s in share.items() if s >= FLOWER_SHARE and not g.endswith("/fc/g0")}
    base = np.mean(["flower" in p.concepts for p in circuit.patches])
    print(f"\nflower base rate over D {base:.2f}; flower groups:")
    for g in sorted(flower):
        print(f"  {short_id(circuit, g)} flower share {share[g]:.2f}")
    assert flower, "the small circuit has no flower group; use a larger one"
    fps = _flower_false_positives(model)
    assert len(fps) >= 5
    top2 = dict.fromkeys(("m", "score", "drop"), 0)
    top1 = dict.fromkeys(("m", "score", "drop"), 0)
    top1_without = 0
    for without, with_ in fps:
        result = debug_image(model, cuts, circuit, with_)
        assert result.predicted_name == "bee"
        for rank_by in top2:
            order = sorted(result.groups, key=SORT_KEYS[rank_by])
            top2[rank_by] += any(g.group_id in flower for g in order[:2])
            top1[rank_by] += order[0].group_id in flower
        control = debug_image(model, cuts, circuit, without, masking=False)
        top1_without += control.groups[0].group_id in flower
    n = len(fps)
    print(f"{n} flower false positives; a flower group in the top two: {top2}; first: {top1}")
    print(f"the same scenes without the flower: a flower group first (max M) {top1_without}/{n}")
    assert top2["m"] >= 0.8 * n  # the default ranking (max M)
    assert top1["m"] - top1_without >= 0.3 * n  # it is the flower that puts the group first


def test_cli_on_a_saved_circuit(bee, tmp_path):
    from PIL import Image

    fp = next(iter(_flower_false_positives(bee["model"], n=40)))[1]
    Image.fromarray(fp).save(tmp_path / "fp.png")
    group = short_id(bee["circuit"], bee["circuit"].neuron_groups[-1].ng_id)
    runner = CliRunner()
    args = [str(tmp_path / "fp.png"), "--circuit", str(bee["json"]), "--device", "cpu"]
    out_dir = str(tmp_path / "o")
    result = runner.invoke(debug_command, [*args, "--mask", group, "--out", out_dir, "--top", "3"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "predicted bee" in out and "max M" in out and "gt: flower" in out
    assert "crops → model" in out  # a progress bar with a total on stderr
    assert f"masking {group}" in out and "largest bee-logit drops" in out and "0000.png" in out
    saved = json.loads((tmp_path / "o" / "fp-debug.json").read_text())
    assert saved["mask"]["group_id"].endswith(group)
    assert len(saved["groups"]) == len(bee["circuit"].neuron_groups) - 1  # all but the class group
    assert (tmp_path / "o" / "fp-debug.png").stat().st_size > 0
    assert (tmp_path / "o" / f"fp-mask-{group.replace('/', '_')}.png").exists()
    bad = runner.invoke(debug_command, [*args, "--mask", "block3/g9"])
    assert bad.exit_code == 2 and "block3/g0" in bad.output
    bad = runner.invoke(debug_command, [*args, "--layer", "block9"])
    assert bad.exit_code == 2 and "fc, block4, block3" in bad.output
    bad = runner.invoke(debug_command, [str(tmp_path / "fp.png")])
    assert bad.exit_code == 2 and "--circuit" in bad.output

"""The circuit builder on a real torchvision model: structure, Eq. 4 weights against Captum, determinism."""

from collections import Counter
from itertools import pairwise

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients
from PIL import Image

from graphmodel.records import Circuit
from ingest.core.circuit import ExtractConfig, extract_circuit
from ingest.core.layers import LayerCuts
from ingest.core.models import load_model
from ingest.core.patches import ImageFolderError, build_patch_set, to_model_input
from ingest.core.tau import TauRule

LAYERS = ["fc", "layer4.1", "layer4.0", "layer3.1"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(5):
        coarse = rng.random((6, 7, 3))
        img = Image.fromarray((coarse * 255).astype(np.uint8)).resize((70, 60), Image.BICUBIC)
        img.save(folder / f"img{i}.png")
    model = load_model("resnet18", None, num_classes=6, input_size=64, seed=3)
    pixels = torch.from_numpy(
        np.stack(
            [np.asarray(Image.open(p).convert("RGB").resize((64, 64))) for p in sorted(folder.glob("*.png"))]
        )
    ).permute(0, 3, 1, 2)
    with torch.no_grad():
        preds = model.module(to_model_input(pixels, model.mean, model.std)).argmax(1)
    cls = Counter(preds.tolist()).most_common(1)[0][0]
    cfg = ExtractConfig(layers=LAYERS, tau=TauRule("count", 4), k=10, steps=8)
    circuit, patches = extract_circuit(model, folder, cls, cfg)
    return model, folder, cls, cfg, circuit, patches


def test_structure(setup):
    _, _, cls, cfg, circuit, patches = setup
    assert circuit.layer_names() == LAYERS
    assert len(patches) == len(circuit.patches) > 0
    by_layer = {name: {n.index: n for n in circuit.neurons_at(name)} for name in LAYERS}
    assert list(by_layer["fc"]) == [cls]
    for upper, lower in pairwise(LAYERS):
        children = set()
        for n in by_layer[upper].values():
            assert len(n.children) == 4 and n.selection_rule == "top-4"
            assert len(n.concept) == cfg.k
            children.update(n.children)
        assert set(by_layer[lower]) == children  # Alg. 3: next targets = union of core neurons
    assert all(n.children == [] and n.selection_rule is None for n in by_layer["layer3.1"].values())
    sgs = {sg.sg_id: sg for sg in circuit.semantic_groups}
    for n in circuit.neurons:
        mine = [sg for sg in circuit.semantic_groups if sg.layer == n.layer and sg.neuron == n.index]
        assert 1 <= len(mine) <= 5
        assert sorted(p for sg in mine for p in sg.patch_ids) == sorted(n.concept)
    # Eq. 4: per semantic group, |w| over the parent's core neurons sums to 1
    per_sg = {}
    for e in circuit.hyperedges:
        per_sg[e.sg_id] = per_sg.get(e.sg_id, 0.0) + abs(e.weight)
    assert per_sg and all(v == pytest.approx(1.0, abs=1e-5) for v in per_sg.values())
    assert {sgs[s].layer for s in per_sg} == set(LAYERS[:-1])
    ng_ids = {g.ng_id: g for g in circuit.neuron_groups}
    for e in circuit.group_edges:
        child, parent = ng_ids[e.child], ng_ids[e.parent]
        assert LAYERS.index(child.layer) == LAYERS.index(parent.layer) + 1
    for layer in LAYERS:
        groups = [g for g in circuit.neuron_groups if g.layer == layer]
        assert sorted(s for g in groups for s in g.sg_ids) == sorted(
            sg.sg_id for sg in circuit.semantic_groups if sg.layer == layer
        )


def test_weights_match_captum(setup):
    """Recompute Eq. 2 and Eq. 4 for the logit's semantic groups with Captum, independently."""
    model, _, cls, cfg, circuit, patches = setup
    cuts = LayerCuts(model.module, LAYERS, 64)
    index = {r.patch_id: i for i, r in enumerate(circuit.patches)}
    x = to_model_input(patches.pixels, model.mean, model.std)
    with torch.no_grad():
        lower = cuts.prefix("layer4.1")(x)
    seg = cuts.segment("fc")
    ig = IntegratedGradients(lambda z: seg(z))
    logit = circuit.neurons_at("fc")[0]
    for sg in [s for s in circuit.semantic_groups if s.layer == "fc"]:
        rows = lower[[index[p] for p in sg.patch_ids]]
        att = ig.attribute(rows, baselines=rows * 0, target=cls, n_steps=cfg.steps, method="riemann_right")
        t = att.flatten(2).sum(2).sum(0)
        denom = t[logit.children].abs().sum()
        for e in [h for h in circuit.hyperedges if h.sg_id == sg.sg_id]:
            assert e.weight == pytest.approx(float(t[e.child] / denom), abs=1e-4)
    # and the core neurons are the top-|T| neurons over the whole concept
    rows = lower[[index[p] for p in logit.concept]]
    att = ig.attribute(rows, baselines=rows * 0, target=cls, n_steps=cfg.steps, method="riemann_right")
    total = att.flatten(2).sum(2).sum(0)
    assert set(logit.children) == set(torch.argsort(total.abs(), descending=True)[:4].tolist())


def test_deterministic_and_json_round_trip(setup, tmp_path):
    model, folder, cls, cfg, circuit, _ = setup
    again, _ = extract_circuit(model, folder, cls, cfg)
    a, b = circuit.to_dict(), again.to_dict()
    a.pop("stats"), b.pop("stats")
    assert a == b
    circuit.save(tmp_path / "c.json")
    assert Circuit.load(tmp_path / "c.json") == circuit


def test_reference_ranking_and_fraction_rule(setup):
    model, folder, cls, _, _, _ = setup
    cfg = ExtractConfig(
        layers=LAYERS[:2], tau=TauRule("fraction", 0.01), k=6, steps=4, ranking="reference", max_images=2
    )
    circuit, _ = extract_circuit(model, folder, cls, cfg)
    top = circuit.neurons_at("fc")[0]
    assert top.selection_rule == "frac-0.01=6/512" and len(top.children) == 6
    assert circuit.params["ranking"] == "reference" and circuit.stats["images_used"] == 2


def test_folder_errors(setup, tmp_path):
    model, _, _, _, _, _ = setup
    with pytest.raises(ImageFolderError, match="no images"):
        build_patch_set(tmp_path, 0, lambda p: torch.zeros(len(p), dtype=torch.long), 64)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ImageFolderError, match=r"broken\.png"):
        build_patch_set(tmp_path, 0, lambda p: torch.zeros(len(p), dtype=torch.long), 64)
    (tmp_path / "broken.png").unlink()
    Image.new("RGB", (32, 32)).save(tmp_path / "ok.png")
    with pytest.raises(ImageFolderError, match="none of the 1 images"):
        build_patch_set(tmp_path, 2, lambda p: torch.zeros(len(p), dtype=torch.long), 64)
    with pytest.raises(ValueError, match="out of range"):
        extract_circuit(model, tmp_path, 99, ExtractConfig(layers=LAYERS))


def test_resume_below_finished_layers_gives_the_same_circuit(setup):
    """A run interrupted after two layers continues below them and ends with the same records."""
    from ingest.core.circuit import iter_circuit, prepare_run

    model, folder, cls, cfg, circuit, _ = setup
    run = prepare_run(model, folder, cls, cfg)
    steps = list(iter_circuit(model, run.cuts, run.patches, cls, cfg, run.circuit.run_id))
    resumed = steps[:2] + list(
        iter_circuit(model, run.cuts, run.patches, cls, cfg, run.circuit.run_id, done=steps[:2])
    )
    assert [s.layer.name for s in resumed] == LAYERS
    for step in resumed:
        run.circuit.add_step(step)
    a, b = run.circuit.to_dict(), circuit.to_dict()
    a.pop("stats"), b.pop("stats")
    assert a == b


@pytest.mark.parametrize(
    ("factory", "layers", "kind"),
    [
        (
            "tests.tiny_transformers:tiny_vit",
            ["heads.head", "encoder.layers.encoder_layer_2", "encoder.layers.encoder_layer_1"],
            "tokens",
        ),
        (
            "tests.tiny_transformers:tiny_swin",
            ["head", "features.3.1", "features.3.0", "features.1.1"],
            "conv",
        ),
    ],
)
def test_a_transformer_circuit_extracts_end_to_end(tmp_path, factory, layers, kind):
    """A user's transformer through `module:factory`: the whole method runs on token and
    channels-last layers, and the circuit's records are consistent."""
    from ingest.core.circuit import ExtractConfig, extract_circuit
    from ingest.core.models import load_model
    from ingest.core.patches import list_images, load_images, to_model_input
    from ingest.core.tau import parse_tau
    from ingest.planted.data import write_image_folder

    model = load_model(factory, device="cpu", input_size=64)
    images = write_image_folder(tmp_path / "bee", "bee", 6, seed=1)
    pixels = load_images(list_images(images), 64)
    with torch.no_grad():
        predicted = model.module(to_model_input(pixels, model.mean, model.std)).argmax(1)
    class_index = int(predicted.mode().values)  # random weights: explain the class it predicts
    cfg = ExtractConfig(layers=layers, tau=parse_tau("4"), k=5, steps=4)
    circuit, _ = extract_circuit(model, images, class_index, cfg)
    assert [layer.kind for layer in circuit.layers[1:]] == [kind] * (len(layers) - 1)
    assert circuit.neuron_groups and circuit.group_edges and circuit.semantic_groups
    widths = {layer.name: layer.width for layer in circuit.layers}
    assert all(0 <= n.index < widths[n.layer] for n in circuit.neurons)

"""The paper's fidelity checks (§4, App. D.7) on the planted-concept benchmark's bee circuit.

Small on purpose (6 images, k = 20, 4 Gauss-Legendre steps, the top three layers), except check (c),
which needs the paper's patch-set size (40 images, k = 50): the numbers are printed so a run shows how
far each claim holds, and the acceptance thresholds of issue 5 are asserted.
"""

import json

import numpy as np
import pytest
import torch

from ingest.analysis.evaluate import (
    KS,
    channel_mask,
    concept_losses,
    core_neurons,
    correlation,
    fidelity,
    k_stability,
    knockout,
    optimality,
)
from ingest.core.circuit import ExtractConfig, extract_circuit
from ingest.core.layers import LayerCuts
from ingest.core.models import load_model
from ingest.planted.data import make_dataset, write_image_folder

torch.set_num_threads(2)
LAYERS = ["fc", "block4", "block3"]
GL = {"steps": 4, "method": "gausslegendre"}


@pytest.fixture(scope="module")
def bee(tmp_path_factory):
    model = load_model("planted_cnn")
    folder = write_image_folder(tmp_path_factory.mktemp("bee") / "images", "bee", 6, seed=1234)
    cfg = ExtractConfig(layers=LAYERS, k=20, steps=4, quadrature="gausslegendre", max_images=6)
    circuit, patches = extract_circuit(model, folder, model.class_names.index("bee"), cfg)
    return model, LayerCuts(model.module, LAYERS, model.input_size), circuit, patches


def _show(title, result):
    print(f"\n{title}: {json.dumps(result, indent=1)}")
    json.dumps(result)  # must be JSON-serialisable


def test_knockout_zeroes_channels_batches_masks_and_leaves_no_hooks(bee):
    model, *_ = bee
    block = model.module.get_submodule("block3")
    hooks_before = len(block._forward_hooks)
    x = torch.randn(3, 3, 64, 64)
    masks = torch.stack([channel_mask(256, [1, 5]), channel_mask(256, [7], keep=True)])
    with torch.no_grad():
        plain = model.module(x)
        with knockout(model.module, {"block3": masks}):
            batched = model.module(x.repeat(2, 1, 1, 1))
        one = []
        for mask in masks:
            with knockout(model.module, {"block3": mask}):
                one.append(model.module(x))
        again = model.module(x)
    assert len(block._forward_hooks) == hooks_before  # knockout removed its own hooks
    with torch.no_grad(), knockout(model.module, {"block3": masks[0]}):
        maps = block(torch.randn(2, 192, 8, 8))
    assert maps[:, [1, 5]].abs().sum() == 0 and maps.abs().sum() > 0
    torch.testing.assert_close(again, plain)
    torch.testing.assert_close(batched, torch.cat(one), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(one[0], plain)
    with pytest.raises(ValueError, match="no such submodule"), knockout(model.module, {"block9": masks[0]}):
        pass


def test_concept_loss_counts_the_kept_patches():
    acts = torch.tensor([[5.0, 4.0, 3.0, 2.0], [1.0, 4.0, 3.0, 9.0], [0.0, 0.0, 3.0, 9.0]])
    assert concept_losses(acts, np.array([0, 1]), 2).tolist() == [1.0, 0.5, 0.0]


def test_core_neurons_are_ranked_by_how_often_they_are_chosen(bee):
    _, cuts, circuit, _ = bee
    core = core_neurons(circuit, "block3", 4)
    parents = circuit.neurons_at("block4")
    counts = [sum(c in n.children for n in parents) for c in core]
    assert counts == sorted(counts, reverse=True) and len(core) == 4
    assert counts[0] == max(sum(c in n.children for n in parents) for c in range(cuts.width("block3")))


def test_optimality_core_sets_beat_random_sets(bee):
    model, cuts, circuit, patches = bee
    result = optimality(model, cuts, patches, circuit, random_sets=30, max_targets=3)
    _show("optimality", result)
    assert set(result) == {"fc", "block4"}
    for layer in result.values():
        assert layer["difference"]["mean"] > 0 and layer["difference"]["ci_low"] > 0
        assert layer["random_better"] < 0.10


def test_k_stability_overlap_with_k50(bee):
    model, cuts, circuit, patches = bee
    result = k_stability(model, cuts, patches, circuit, ks=KS, base_k=50, tau=16, max_targets=3, **GL)
    _show("k-stability", result)
    overlaps = [v for layer in result.values() for v in layer["overlap"].values()]
    assert all(layer["overlap"]["50"] == 16 for layer in result.values())
    assert np.mean(overlaps) >= 13


def test_fidelity_masking_and_retaining_core_neurons(bee):
    model, cuts, circuit, _ = bee
    images, labels = make_dataset(80, seed=99)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    result = fidelity(model, cuts, circuit, x, torch.from_numpy(labels), taus=(4, 8, 16), random_sets=5)
    _show("fidelity", result)
    assert result["layers"] == ["block4", "block3"]
    for name in ("block4", "block3"):  # tau = 16 is at most a quarter of both (256 channels)
        entry = result["by_tau"]["16"][name]
        masked = entry["single/mask/class"]
        core_drop, random_drop = 1 - masked["core"], 1 - masked["random"]
        assert core_drop > 0 and core_drop >= 3 * max(random_drop, 0), (name, masked)
        kept = entry["single/retain/class"]
        assert kept["core"] >= kept["random"], (name, kept)


@pytest.fixture(scope="module")
def bee_paper_size(tmp_path_factory):
    """The paper's patch-set size for check (c): 40 images (2360 patches), k = 50, N = 50 Riemann steps.

    The loss moves in steps of 1/k only when a knockout pushes a patch across the top-k boundary; with
    the small fixture's 354 patches and k = 20 that rarely happens and the correlation measures noise
    (benchmarks/correlation_vs_patch_set.py, docs/evaluation.md). Only the top two layers: below them a
    target costs minutes on 2 cores.
    """
    model = load_model("planted_cnn")
    folder = write_image_folder(tmp_path_factory.mktemp("bee40") / "images", "bee", 40, seed=1234)
    cfg = ExtractConfig(layers=LAYERS, k=50, steps=50, quadrature="riemann_right", max_images=40)
    circuit, patches = extract_circuit(model, folder, model.class_names.index("bee"), cfg)
    return model, LayerCuts(model.module, LAYERS, model.input_size), circuit, patches


def test_correlation_of_loss_and_importance_at_tau_1(bee_paper_size):
    model, cuts, circuit, patches = bee_paper_size
    assert len(patches) >= 2000
    result = correlation(
        model, cuts, patches, circuit, sizes=(1,), max_targets=3, steps=50, method="riemann_right"
    )
    _show("correlation", result)
    assert set(result) == {"fc", "block4"}
    at_one = {name: layer["by_size"]["1"] for name, layer in result.items()}
    assert all(v["targets"] == min(3, len(circuit.neurons_at(n))) for n, v in at_one.items()), at_one
    assert all(v["pearson"] > 0 for v in at_one.values()), at_one
    assert np.mean([v["pearson"] for v in at_one.values()]) >= 0.5, at_one


def test_evaluate_cli_writes_json_plots_and_headlines(bee, tmp_path):
    """`neurflow evaluate --circuit` on the small circuit: every check, tiny sizes, JSON + 4 PNGs."""
    from click.testing import CliRunner
    from PIL import Image

    from ingest.cli import main

    model, _cuts, circuit, _patches = bee
    saved = tmp_path / "circuit.json"
    circuit.save(saved)
    for name in model.class_names:
        write_image_folder(tmp_path / "held" / name, name, 5, seed=5)
    out = tmp_path / "eval"
    args = ["evaluate", "--circuit", str(saved), "--held-out", str(tmp_path / "held"), "--out", str(out)]
    args += ["--random-sets", "5", "--max-targets", "1", "--taus", "16", "--fidelity-random-sets", "2"]
    args += ["--sizes", "1,5", "--sets-per-size", "5", "--max-single", "8", "--ks", "30,50"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "evaluation.json").read_text())
    assert set(data["plots"]) == {"optimality", "fidelity", "correlation", "k_stability"}
    assert set(data["optimality"]) == {"fc", "block4"} and data["run_id"] == circuit.run_id
    for path in data["plots"].values():
        with Image.open(path) as png:
            assert png.format == "PNG" and png.size[0] > 200
    assert {layer["by_size"]["1"]["sets"] for layer in data["correlation"].values()} == {8}  # of 256
    assert {layer["by_size"]["5"]["sets"] for layer in data["correlation"].values()} == {5}
    assert "eval_stability_mean_overlap" in result.output
    bad = CliRunner().invoke(main, ["evaluate", "--circuit", str(saved), "--checks", "fidelity"])
    assert bad.exit_code == 2 and "--held-out" in bad.output
    bad = CliRunner().invoke(main, ["evaluate", "--circuit", str(saved), "--ks", "30,x"])
    assert bad.exit_code == 2 and "'--ks': '30,x' is not a comma-separated list" in bad.output

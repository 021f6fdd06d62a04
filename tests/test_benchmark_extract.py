"""`neurflow extract` on the planted-concept benchmark: the bee circuit with ground-truth purity."""

import csv
from itertools import pairwise

import pytest

from graphmodel.records import Circuit
from ingest.core.layers import LayerCuts
from ingest.core.models import load_model
from ingest.planted.data import write_image_folder
from tests.test_cli import run

IMAGES = 12  # ~700 patches: big enough for k = 50 concepts, small enough for CI on 2 cores
# Gauss-Legendre with 16 nodes is more accurate than the paper's 50-step Riemann sum at a third of the
# cost, with the same top-16 sets (benchmarks/quadrature_accuracy.py); it keeps this test ~3x faster.
QUADRATURE = ("--quadrature", "gausslegendre", "--steps", "16")


@pytest.fixture(scope="module")
def bee_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bee")
    images = write_image_folder(root / "images", "bee", IMAGES, seed=1234)
    code, output = run(
        "extract",
        "--model",
        "planted_cnn",
        "--images",
        images,
        "--class",
        "bee",
        "--out",
        root / "run",
        *QUADRATURE,
    )
    assert code == 0, output
    return root / "run", output, Circuit.load(root / "run" / "circuit.json")


def test_tau_16_is_at_most_a_quarter_of_every_default_layer():
    model = load_model("planted_cnn")
    cuts = LayerCuts(model.module, model.default_layers, model.input_size)
    for name in model.default_layers[1:]:  # every layer whose neurons are selected as children
        assert cuts.width(name) / 4 >= 16, (name, cuts.width(name))


def test_circuit_selects_within_a_quarter(bee_run):
    _, _, circuit = bee_run
    widths = {layer.name: layer.width for layer in circuit.layers}
    names = circuit.layer_names()
    for upper, lower in pairwise(names):
        for neuron in circuit.neurons_at(upper):
            assert neuron.selection_rule == "top-16"
            assert len(neuron.children) == 16 <= widths[lower] / 4
        assert len(circuit.neurons_at(lower)) < widths[lower]


def test_purity_of_every_group_is_printed_and_saved(bee_run):
    out, output, circuit = bee_run
    assert circuit.class_name == "bee" and circuit.stats["images_used"] <= IMAGES
    assert all(p.concepts for p in circuit.patches)  # every patch knows its ground truth
    with (out / "purity.tsv").open() as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    saved = {(r["kind"], r["id"]) for r in rows}
    expected = {("semantic_group", sg.sg_id) for sg in circuit.semantic_groups} | {
        ("neuron_group", g.ng_id) for g in circuit.neuron_groups
    }
    assert saved == expected
    for layer in circuit.layer_names():
        assert f"-- {layer}" in output
    for r in rows:
        who = r["id"].split("/", 2)[-1]
        kind = "NG" if r["kind"] == "neuron_group" else "SG"
        assert f"{kind} {who} " in output
        assert 0.0 < float(r["purity"]) <= 1.0
    print("\n".join(line for line in output.splitlines() if line.startswith(("layer", "fc", "block"))))

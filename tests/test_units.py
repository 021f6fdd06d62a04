"""Unit tests of the core's small pieces: τ rules, clustering, neuron groups, metric, crops, records."""

import json

import numpy as np
import pytest
import torch
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import silhouette_score

from graphmodel.records import (
    Circuit,
    HyperedgeRecord,
    LayerRecord,
    NeuronRecord,
    PatchRecord,
    SemanticGroupRecord,
)
from ingest.core.clustering import ward_silhouette
from ingest.core.metric import group_metric
from ingest.core.neuron_groups import group_edges, neuron_groups
from ingest.core.patches import concepts_in_box, crop_boxes
from ingest.core.selection import select_core
from ingest.core.tau import TauRule, parse_tau


def test_parse_tau_forms():
    assert parse_tau("16") == TauRule("count", 16)
    assert parse_tau(8) == TauRule("count", 8)
    assert parse_tau("0.05") == TauRule("fraction", 0.05)
    assert parse_tau("5%") == TauRule("fraction", 0.05)
    assert parse_tau("cum:0.8") == TauRule("cumulative", 0.8)
    for bad in ("0", "-3", "2.5", "cum:1.5", "abc", "150%"):
        with pytest.raises(ValueError, match="--tau"):
            parse_tau(bad)


def test_select_core_rules_record_themselves():
    scores = torch.tensor([0.1, -5.0, 3.0, 0.0, 2.0, -1.0, 0.5, 0.4])
    idx, rule = select_core(scores, TauRule("count", 3))
    assert idx == [1, 2, 4] and rule == "top-3"
    idx, rule = select_core(scores, TauRule("fraction", 0.25))
    assert idx == [1, 2] and rule == "frac-0.25=2/8"
    # |T| total 12.0; 5 + 3 = 8 < 0.75 * 12 = 9 <= 5 + 3 + 2
    idx, rule = select_core(scores, TauRule("cumulative", 0.75))
    assert idx == [1, 2, 4] and rule == "cum-0.75=3"
    idx, _ = select_core(scores, TauRule("count", 100))
    assert len(idx) == 8


def test_ward_silhouette_matches_sklearn_and_finds_planted_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0]], dtype=float)
    x = np.concatenate([c + rng.normal(0, 0.5, (15, 3)) for c in centres])
    labels, score = ward_silhouette(x, 2, 5)
    assert len(np.unique(labels)) == 3
    ref = AgglomerativeClustering(n_clusters=3, linkage="ward").fit_predict(x)
    # same partition up to renaming
    assert len({(a, b) for a, b in zip(labels, ref)}) == 3
    assert score == pytest.approx(silhouette_score(x, ref))
    # identical points cannot be split
    same, s = ward_silhouette(np.ones((6, 2)), 2, 5)
    assert set(same) == {0} and s == 0.0


def _sg(sg_id, neuron, centroid, patches):
    return SemanticGroupRecord(sg_id, "L", neuron, 0, patches, [1.0] * len(patches), centroid, 0.5)


def test_neuron_groups_and_group_weights_by_hand():
    # Layer L has neurons 1, 2, 3; neuron 2 is polysemantic (one SG near 1's, one near 3's).
    sgs = [
        _sg("r/L/1/0", 1, [0.0, 0.0], ["a", "b"]),
        _sg("r/L/2/0", 2, [0.1, 0.0], ["b", "c"]),
        _sg("r/L/2/1", 2, [9.9, 10.0], ["d"]),
        _sg("r/L/3/0", 3, [10.0, 10.0], ["e"]),
    ]
    groups = neuron_groups("L", sgs, "r", max_groups=3)
    assert [g.members for g in groups] == [[1, 2], [2, 3]]
    assert groups[0].patch_ids == ["a", "b", "c"]
    # Parent layer U: one group holding SGs "r/U/7/0" and "r/U/7/1" of neuron 7.
    parent = neuron_groups("U", [_sg("r/U/7/0", 7, [0.0], ["x"]), _sg("r/U/7/1", 7, [1.0], ["y"])], "r")
    assert len(parent) == 1 and parent[0].members == [7]
    hyper = [
        HyperedgeRecord("L", 1, "r/U/7/0", 0.5, 5.0),
        HyperedgeRecord("L", 2, "r/U/7/0", -0.25, -2.5),
        HyperedgeRecord("L", 3, "r/U/7/1", 0.75, 3.0),
        HyperedgeRecord("L", 2, "r/U/7/1", 0.25, 1.0),
    ]
    edges = {(e.child, e.parent): (e.weight, e.edges) for e in group_edges(groups, parent, hyper)}
    # group 0 = {1, 2}: 0.5 - 0.25 + 0.25; group 1 = {2, 3}: -0.25 + 0.75 + 0.25
    assert edges[("r/L/g0", "r/U/g0")] == (pytest.approx(0.5), 3)
    assert edges[("r/L/g1", "r/U/g0")] == (pytest.approx(0.75), 3)


def test_group_metric_is_geometric_mean_of_normalised_activations():
    acts = np.array([[1.0, 4.0], [2.0, 0.0], [0.5, 2.0]])
    peak = np.array([2.0, 4.0])
    m = group_metric(acts, peak)
    assert m[0] == pytest.approx(np.sqrt(0.5 * 1.0))
    assert m[1] < 1e-2  # one silent neuron sinks the group
    assert m[2] == pytest.approx(np.sqrt(0.25 * 0.5))


def test_crop_boxes_follow_the_paper():
    boxes = crop_boxes(64, 64, (1.0, 0.5, 0.25))
    by_scale = {s: [b for b, sc in boxes if sc == s] for s in (1.0, 0.5, 0.25)}
    assert len(by_scale[1.0]) == 1 and len(by_scale[0.5]) == 9 and len(by_scale[0.25]) == 49
    assert by_scale[0.5][1] == [16, 0, 48, 32]  # 50 % overlap
    wide = crop_boxes(60, 100, (1.0,))  # non-square: slide along the long side, flush at the end
    assert [b for b, _ in wide] == [[0, 0, 60, 60], [30, 0, 90, 60], [40, 0, 100, 60]]


def test_concepts_in_box():
    masks = {"flower": np.zeros((10, 10), bool), "sky": np.ones((10, 10), bool)}
    masks["flower"][0:2, 0:2] = True  # a small whole object in the top-left corner
    assert concepts_in_box(masks, [0, 0, 5, 5]) == ["flower", "sky"]
    assert concepts_in_box(masks, [5, 5, 10, 10]) == ["sky"]


def test_circuit_round_trips_through_json(tmp_path):
    circuit = Circuit(
        run_id="r",
        model_id="m",
        arch="a",
        weights_sha256=None,
        input_size=64,
        num_classes=4,
        class_index=1,
        class_name="bee",
        params={"tau": "16"},
        layers=[LayerRecord("fc", 0, 4, "linear")],
        patches=[PatchRecord("p", "0.png", [0, 0, 8, 8], 1.0, ["flower"])],
        neurons=[NeuronRecord("fc", 1, ["p"], [2.5], 2.5, "top-16", [3])],
        semantic_groups=[_sg("r/fc/1/0", 1, [0.25], ["p"])],
    )
    path = tmp_path / "c.json"
    circuit.save(path)
    assert Circuit.load(path) == circuit
    data = json.loads(path.read_text())
    data["schema_version"] = 99
    with pytest.raises(ValueError, match="schema version 99"):
        Circuit.from_dict(data)


def test_a_pair_shift_inside_the_noise_is_not_measurable():
    """The audit computes "share of the shift removed" only from a shift whose 95 % interval
    excludes zero and whose mean reaches 1 point of probability."""
    import torch

    from ingest.analysis.audit import GroupEffect, pair_shift

    without = torch.linspace(0.1, 0.5, 40)
    clear = pair_shift(
        without, without + 0.2 + 0.01 * torch.randn(40, generator=torch.Generator().manual_seed(0))
    )
    assert clear.measurable and 0.19 < clear.mean < 0.21 and clear.low < clear.mean < clear.high
    assert not pair_shift(without, without).measurable  # no shift at all
    assert not pair_shift(without, without + 0.0001).measurable  # significant but negligible
    noisy = torch.tensor([0.3, -0.3] * 20) + 0.01
    assert not pair_shift(without, without + noisy).measurable  # the interval holds zero
    effect = GroupEffect("r/l/g0", "l", 3, 0.9, {"shift": {"masked": 0.0, "random": 0.0, "unmasked": 1e-4}})
    effect.shift_measurable = False
    assert effect.bias_removed is None  # not 1 - 0/1e-4 = 100 %


def test_groups_with_nearly_the_same_members_are_one_experiment():
    """Two groups of one layer whose member sets overlap with Jaccard ≥ 0.9 are tied in the audit."""
    from ingest.analysis.audit import GroupEffect, same_group

    members = {
        "r/l/g0": set(range(20)),
        "r/l/g1": set(range(19)) | {99},
        "r/l/g2": set(range(10)),
        "r/m/g0": set(range(20)),
    }
    a, b, c = (GroupEffect(g, "l", len(members[g]), 0.9) for g in ("r/l/g0", "r/l/g1", "r/l/g2"))
    other_layer = GroupEffect("r/m/g0", "m", 20, 0.9)
    assert same_group(a, a, members) and same_group(a, b, members)  # 19 / 21 = 0.905
    assert not same_group(a, c, members) and not same_group(a, other_layer, members)


def test_a_tau_of_half_a_layer_or_more_is_flagged_and_random_baselines_shrink():
    from ingest.analysis.audit import random_group_size
    from ingest.core.tau import parse_tau, wide_tau_layers, wide_tau_lines

    widths = {"narrow": 32, "mid": 64, "wide": 256}
    assert wide_tau_layers(parse_tau("16"), widths) == {"narrow": 0.5}
    assert wide_tau_layers(parse_tau("60%"), widths) == dict.fromkeys(widths, 0.6)
    assert wide_tau_layers(parse_tau("cum:0.8"), widths) == {}  # depends on the scores: not known ahead
    [line] = wide_tau_lines(parse_tau("16"), widths)
    assert "keeps 50% of narrow's 32 neurons" in line and "smaller --tau" in line
    assert random_group_size(64, 16) == 16  # a quarter of the layer: random groups of equal size
    assert random_group_size(32, 16) == 8 and random_group_size(32, 32) == 8  # half or more: a quarter


def test_knockout_masks_transformer_neurons_and_one_use_of_a_shared_module():
    """Masks zero the neurons where the cuts see them (the last dim of tokens [B, T, D]) and, for
    `name@k`, only the k-th call of a module that forward calls twice."""
    import torch
    from torch import nn

    from ingest.analysis.evaluate import knockout
    from ingest.core.layers import LayerCuts
    from tests.tiny_transformers import tiny_vit

    vit = tiny_vit().eval()
    block = "encoder.layers.encoder_layer_1"
    cuts = LayerCuts(vit, [block], 64)
    mask = torch.ones(32)
    mask[[0, 5, 31]] = 0.0
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), knockout(vit, {block: mask}):
        masked = cuts.activations(x, [block], means=False)[block]  # [B, D, T]
    assert masked[:, [0, 5, 31]].abs().max() == 0 and masked[:, 1].abs().max() > 0

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.act, self.fc = nn.ReLU(), nn.Linear(4, 4)

        def forward(self, x):
            return self.act(self.fc(self.act(x)))

    model = Shared().eval()
    x = torch.rand(3, 4) + 0.1
    with torch.no_grad():
        plain = model(x)
        with knockout(model, {"act@2": torch.zeros(4)}):
            assert torch.equal(model(x), torch.zeros(3, 4))  # the second call only
            assert torch.equal(model(x), torch.zeros(3, 4))  # and again on the next forward pass
        with knockout(model, {"act@1": torch.zeros(4)}):
            assert torch.allclose(model(x), torch.relu(model.fc(torch.zeros(3, 4))))
        assert torch.equal(model(x), plain)

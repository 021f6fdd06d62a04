"""Layer cuts: prefix/segment consistency on real torchvision architectures, and clear errors."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
import torchvision
from torch import nn

from ingest.core.layers import (
    DEFAULT_LAYERS,
    LayerCuts,
    LayerError,
    available_layers,
    default_layers,
    describe_layers,
)

torch.set_num_threads(2)

# Small images keep the test fast; every architecture here pools adaptively before its head.
SIZES = {"resnet18": 64, "resnet50": 64, "googlenet": 64, "alexnet": 96, "vgg16": 64}


def _build(arch: str) -> nn.Module:
    torch.manual_seed(0)
    kwargs = {"aux_logits": False, "init_weights": True} if arch == "googlenet" else {}
    return torchvision.models.get_model(arch, weights=None, **kwargs).eval()


@pytest.fixture(scope="module", params=list(SIZES))
def arch_cuts(request):
    arch = request.param
    model = _build(arch)
    return arch, model, LayerCuts(model, default_layers(arch), SIZES[arch])


@pytest.fixture(scope="module")
def resnet18():
    return _build("resnet18")


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_segments_compose_to_prefixes_and_logits(arch_cuts):
    arch, model, cuts = arch_cuts
    torch.manual_seed(1)
    x = torch.randn(2, 3, SIZES[arch], SIZES[arch])
    with torch.no_grad():
        prefixes = {name: cuts.prefix(name)(x) for name in cuts.layers}
        assert _close(prefixes[cuts.layers[0]], model(x))
        for upper in cuts.layers[:-1]:
            lower = cuts.below(upper)
            assert _close(cuts.segment(upper)(prefixes[lower]), prefixes[upper]), (upper, lower)
        raw = cuts.activations(x, means=False)
        means = cuts.activations(x)
    assert list(raw) == cuts.layers
    for name, value in prefixes.items():
        assert _close(raw[name], value), name
        expected = value.mean((2, 3)) if value.dim() == 4 else value
        assert _close(means[name], expected), name
        assert means[name].shape == (2, cuts.width(name))


def test_lowest_input_is_what_enters_the_lowest_layer(arch_cuts):
    arch, model, cuts = arch_cuts
    lowest = cuts.layers[-1]
    x = torch.randn(1, 3, SIZES[arch], SIZES[arch])
    with torch.no_grad():
        acts = cuts.activations(x, [lowest], means=False, lowest_input=True)
        entering = acts[f"{lowest}:input"]
        assert _close(model.get_submodule(lowest)(entering), acts[lowest])
        meaned = cuts.activations(x, [lowest], lowest_input=True)[f"{lowest}:input"]
    assert _close(meaned, entering.mean((2, 3)))


def test_segments_support_autograd(resnet18):
    cuts = LayerCuts(resnet18, default_layers("resnet18"), 64)
    with torch.no_grad():
        lower = cuts.prefix("layer3.1")(torch.randn(2, 3, 64, 64))
    lower.requires_grad_(True)
    out = cuts.segment("layer4.0")(lower)
    (grad,) = torch.autograd.grad(out.mean((2, 3))[:, 7].sum(), lower)
    assert grad.shape == lower.shape and grad.abs().sum() > 0
    assert isinstance(cuts.segment("fc").to("cpu"), nn.Module)


def test_inplace_relu_neither_corrupts_outputs_nor_breaks_leaf_inputs():
    model = _build("alexnet")
    cuts = LayerCuts(model, ["features.1", "features.0"], 96)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        acts = cuts.activations(x, means=False)
        conv = model.features[0](x)
    assert _close(acts["features.0"], conv) and (acts["features.0"] < 0).any()
    assert _close(acts["features.1"], conv.clamp(min=0))
    leaf = conv.clone().requires_grad_(True)
    out = cuts.segment("features.1")(leaf)
    out.sum().backward()
    assert torch.equal(leaf.detach(), conv), "the segment changed its input in place"
    assert torch.equal(leaf.grad, (conv > 0).float())


class _WritesInPlace(nn.Module):
    """An in-place write that fx records as an unused node, and an extra defaulted argument."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3)
        self.b = nn.Conv2d(4, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x, return_features: bool = False):
        y = self.b(nn.functional.relu(self.a(x), True))
        y.add_(1.0)
        out = self.fc(y.mean((2, 3)))
        return (out, y) if return_features else out


def test_unused_inplace_writes_are_kept_and_outputs_stay_as_returned():
    torch.manual_seed(0)
    model = _WritesInPlace().eval()
    cuts = LayerCuts(model, ["fc", "b", "a"], 16)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        acts = cuts.activations(x, means=False)
        a = model.a(x)
        b = model.b(a.clamp(min=0))
        assert _close(acts["a"], a) and _close(acts["b"], b) and _close(acts["fc"], model(x))
        assert _close(cuts.segment("fc")(b), model(x))
        assert _close(cuts.segment("b")(a), b)


def test_skipping_a_block_is_a_valid_cut(resnet18):
    cuts = LayerCuts(resnet18, ["fc", "layer4.0"], 64)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert _close(cuts.segment("fc")(cuts.prefix("layer4.0")(x)), resnet18(x))


def test_nested_layers_cut_where_the_inner_one_is_on_every_path(resnet18):
    x = torch.randn(1, 3, 64, 64)
    outer = LayerCuts(resnet18, ["layer4", "layer4.0"], 64)
    inner = LayerCuts(resnet18, ["layer4.1.bn2", "layer4.1.conv1"], 64)
    with torch.no_grad():
        stem = nn.Sequential(*list(resnet18.children())[:7])(x)
        assert _close(outer.prefix("layer4")(x), resnet18.layer4(stem))
        assert _close(outer.segment("layer4")(outer.prefix("layer4.0")(x)), resnet18.layer4(stem))
        mid = inner.prefix("layer4.1.conv1")(x)
        assert _close(inner.segment("layer4.1.bn2")(mid), inner.prefix("layer4.1.bn2")(x))


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        (["layer4.3"], ["unknown layer 'layer4.3'", "layer4.1", "layer4.0"]),
        (["fc", "layer4.l"], ["unknown layer 'layer4.l'", "Did you mean", "layer4.1"]),
    ],
)
def test_unknown_layer_suggests_close_names(resnet18, layers, expected):
    with pytest.raises(LayerError) as err:
        LayerCuts(resnet18, layers, 64)
    for text in expected:
        assert text in str(err.value)


def test_residual_skip_around_the_lower_layer_is_named(resnet18):
    with pytest.raises(LayerError) as err:
        LayerCuts(resnet18, ["layer4.1", "layer4.1.conv2"], 64)
    msg = str(err.value)
    assert "layer4.1 is reachable from the input without passing through layer4.1.conv2" in msg
    assert "layer4.0.relu -> layer4.1 (add) -> layer4.1.relu" in msg


def test_parallel_branches_make_a_branch_an_invalid_cut():
    model = _build("googlenet")
    with pytest.raises(LayerError) as err:
        LayerCuts(model, ["inception4a", "inception3b.branch2"], 64)
    assert "without passing through inception3b.branch2" in str(err.value)
    assert "inception3b.branch" in str(err.value).split(":", 2)[-1]


def test_wrong_order_duplicates_shared_modules_and_empty_lists_fail(resnet18):
    cases = {
        ("layer4.0", "layer4.1"): "from the output down",
        ("fc", "fc"): "more than once",
        ("layer4.1", "layer4.1.relu"): "runs 2 times",
        (): "empty",
    }
    for layers, text in cases.items():
        with pytest.raises(LayerError, match=text):
            LayerCuts(resnet18, list(layers), 64)
    cuts = LayerCuts(resnet18, ["fc", "layer4.1"], 64)
    with pytest.raises(LayerError, match="lowest"):
        cuts.segment("layer4.1")
    with pytest.raises(LayerError, match="not one of the listed layers"):
        cuts.prefix("layer3.0")
    assert cuts.below("fc") == "layer4.1" and cuts.below("layer4.1") is None
    assert cuts.width("fc") == 1000 and cuts.width("layer4.1") == 512


def test_unused_module_and_untraceable_model_fail_clearly():
    googlenet = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False)
    with pytest.raises(LayerError, match="never runs"):
        LayerCuts(googlenet.eval(), ["fc", "aux2.fc2"], 64)

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            x = self.conv(x)
            if x.sum() > 0:
                x = x * 2
            return self.fc(x.mean((2, 3)))

    with pytest.raises(LayerError, match="could not trace"):
        LayerCuts(Branchy(), ["fc", "conv"], 32)


def test_torchscript_is_refused_with_advice():
    scripted = torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
    with pytest.raises(LayerError, match="state_dict"):
        LayerCuts(scripted, ["1", "0"], 32)


@pytest.mark.parametrize("arch", sorted(DEFAULT_LAYERS))
def test_every_shipped_default_list_is_a_valid_cut(arch):
    # RegNet computes its stage widths with tensor values at build time: no meta tensors there.
    device = torch.device("cpu" if arch.startswith("regnet") else "meta")
    with device:
        model = _build(arch) if arch == "googlenet" else torchvision.models.get_model(arch)
    cuts = LayerCuts(model.eval(), default_layers(arch), 224)
    assert cuts.layers == DEFAULT_LAYERS[arch]


def test_default_layers_of_an_unknown_arch_lists_the_known_ones():
    with pytest.raises(LayerError, match="resnet50"):
        default_layers("mobilenet_v2")
    assert default_layers("resnet50")[-1] == "layer2.3"
    assert default_layers("resnet34")[1:4] == ["layer4.2", "layer4.1", "layer4.0"]


def test_describe_and_available_layers_leave_no_hooks(resnet18):
    names = dict(available_layers(resnet18))
    assert names["layer4.1"] == "BasicBlock" and names["fc"] == "Linear"
    rows = {row["name"]: row for row in describe_layers(resnet18, 64)}
    assert rows["layer4.1"]["shape"] == [512, 2, 2] and rows["layer4.1"]["channels"] == 512
    assert rows["fc"]["shape"] == [1000] and rows["layer4.1.relu"]["calls"] == 2
    assert all(not m._forward_hooks for m in resnet18.modules())


def test_planted_cnn_cuts():
    planted = pytest.importorskip(
        "ingest.planted.model", reason="ingest/planted/model.py (another helper's) not there yet"
    )
    model = planted.build_planted_cnn(len(planted.CLASS_NAMES)).eval()
    cuts = LayerCuts(model, default_layers("planted_cnn"), planted.INPUT_SIZE)
    x = torch.randn(2, 3, planted.INPUT_SIZE, planted.INPUT_SIZE)
    with torch.no_grad():
        assert _close(cuts.prefix(cuts.layers[0])(x), model(x))
        for upper in cuts.layers[:-1]:
            lower = cuts.prefix(cuts.below(upper))(x)
            assert _close(cuts.segment(upper)(lower), cuts.prefix(upper)(x)), upper
        acts = cuts.activations(x, lowest_input=True)
    assert set(acts) == {*cuts.layers, f"{cuts.layers[-1]}:input"}


class _FlattensByInputSize(nn.Module):
    """Many user models (EfficientNet-Lite's reference code among them) flatten with the input's
    batch size, and reuse one activation module object in their head."""

    def __init__(self, shape_read: str = "size"):
        super().__init__()
        self.shape_read = shape_read
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4))
        self.act = nn.ReLU()
        self.fc1 = nn.Linear(8 * 16, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, inputs):
        x = self.features(inputs)
        if self.shape_read == "size":
            x = x.view(inputs.size(0), -1)
        elif self.shape_read == "shape":
            x = x.reshape(inputs.shape[0], -1)
        else:  # the input's channel count and side, read through .size() and .dim()
            x = x.reshape(-1, inputs.size(1) * inputs.size()[2] * inputs.dim() * 0 + 128)
        x = self.act(self.fc1(x))
        return self.fc2(self.act(x * 2))


@pytest.mark.parametrize("shape_read", ["size", "shape", "more"])
def test_reading_the_inputs_shape_is_not_a_data_path(shape_read):
    """`x.view(inputs.size(0), -1)` cuts without changing the model: the segment takes the batch
    size from its own input (checked with a batch size other than the trace's)."""
    torch.manual_seed(0)
    model = _FlattensByInputSize(shape_read).eval()
    cuts = LayerCuts(model, ["fc2", "act@2", "act@1", "fc1", "features"], 32)
    x = torch.randn(5, 3, 32, 32)
    acts = cuts.activations(x, means=False)
    assert torch.allclose(acts["fc2"], model(x), atol=1e-6)
    assert torch.allclose(cuts.segment("fc1")(acts["features"]), acts["fc1"], atol=1e-6)
    assert torch.allclose(cuts.segment("act@2")(acts["act@1"]), acts["act@2"], atol=1e-6)
    assert torch.allclose(cuts.segment("fc2")(acts["act@2"]), acts["fc2"], atol=1e-6)


def test_a_shape_read_does_not_hide_a_real_skip_path():
    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(12, 12)
            self.b = nn.Linear(12, 12)

        def forward(self, x):
            flat = x.flatten(1)[:, :12]
            return self.b(self.a(flat) + flat.view(x.size(0), -1))  # the input's values, not only its shape

    with pytest.raises(LayerError, match="reachable from the input without passing through a"):
        LayerCuts(Skips().eval(), ["b", "a"], 2)


def test_a_module_used_twice_names_both_call_sites_and_each_use_can_be_listed():
    model = _FlattensByInputSize().eval()
    with pytest.raises(LayerError) as shared:
        LayerCuts(model, ["fc2", "act", "features"], 32)
    text = str(shared.value)
    assert (
        "runs 2 times" in text and "act@1 at test_layers.py:" in text and "act@2 at test_layers.py:" in text
    )
    assert "`x = self.act(self.fc1(x))`" in text and "`return self.fc2(self.act(x * 2))`" in text
    with pytest.raises(LayerError, match="uses are act@1 to act@2"):
        LayerCuts(model, ["fc2", "act@3", "features"], 32)
    with pytest.raises(LayerError, match="counting from 1"):
        LayerCuts(model, ["fc2", "act@0", "features"], 32)
    cuts = LayerCuts(model, ["act@2", "act@1"], 32)  # the two uses are two layers of their own
    assert cuts.width("act@2") == cuts.width("act@1") == 32


@pytest.mark.parametrize("arch", ["efficientnet_b0", "densenet121", "convnext_tiny"])
def test_modern_families_segments_compose_with_random_weights(arch):
    """The default cuts of EfficientNet (residual MBConv blocks), DenseNet (concatenations, an
    in-place ReLU after norm5) and ConvNeXt (layer-scaled residual blocks): every segment applied
    to the layer below gives the layer, and the top layer is the logits."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(arch, weights=None).eval()
    cuts = LayerCuts(model, default_layers(arch), 64)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        acts = cuts.activations(x, means=False)
        assert torch.allclose(acts[cuts.layers[0]], model(x), atol=1e-4)
        for upper, lower in pairwise(cuts.layers):
            assert torch.allclose(cuts.segment(upper)(acts[lower]), acts[upper], atol=1e-4), upper


def test_a_cut_inside_a_dense_block_fails_naming_the_concatenation():
    with torch.device("meta"):
        model = torchvision.models.densenet121()
    with pytest.raises(LayerError) as refused:
        LayerCuts(
            model.eval(), ["features.denseblock4.denselayer16", "features.denseblock4.denselayer15"], 224
        )
    text = str(refused.value)
    assert (
        "features.transition3" in text and "without passing through features.denseblock4.denselayer15" in text
    )
    assert "cut between blocks" in text


def test_transformer_cuts_see_neurons_channels_first_and_compose():
    """ViT tokens [B, T, D] and Swin maps [B, H, W, C] come out with the neurons on dim 1; every
    segment maps the layer below to the layer, and the top is the logits."""
    from torchvision.models.swin_transformer import SwinTransformer
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(
        image_size=32, patch_size=8, num_layers=3, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5
    ).eval()
    swin = SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=[2, 2], num_classes=5
    ).eval()
    blocks = [f"encoder.layers.encoder_layer_{i}" for i in (2, 1, 0)]
    cases = [
        (vit, ["heads.head", *blocks], {blocks[0]: (16, 17)}),  # 16 dims x (16 patch tokens + class)
        (
            swin,
            ["head", "features.3.1", "features.3.0", "features.2", "features.1.1"],
            {"features.1.1": (16, 8, 8)},
        ),
    ]
    x = torch.randn(3, 3, 32, 32)
    for model, layers, shapes in cases:
        cuts = LayerCuts(model, layers, 32)
        with torch.no_grad():
            acts = cuts.activations(x, means=False, lowest_input=True)
            means = cuts.activations(x)
            assert torch.allclose(acts[layers[0]], model(x), atol=1e-5)
            for upper, lower in pairwise(layers):
                assert torch.allclose(cuts.segment(upper)(acts[lower]), acts[upper], atol=1e-5), upper
        for name, shape in shapes.items():
            assert cuts.shape(name) == shape and cuts.width(name) == shape[0]
            assert torch.allclose(means[name], acts[name].flatten(2).mean(2))


def test_a_cut_at_a_vit_blocks_mlp_fails_naming_the_skip_path():
    from torchvision.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5
    ).eval()
    with pytest.raises(
        LayerError, match=r"without passing through encoder.layers.encoder_layer_1.mlp: .*\(add\)"
    ):
        LayerCuts(vit, ["encoder.layers.encoder_layer_1", "encoder.layers.encoder_layer_1.mlp"], 32)

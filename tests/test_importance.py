"""Batched integrated gradients (paper Eq. 2) against Captum and against hand-computed cases."""

import pytest
import torch
from captum.attr import IntegratedGradients
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from ingest.core.importance import pair_attributions, quadrature, reference_scores


def _segments():
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU())
    residual = BasicBlock(8, 8)
    bottleneck = Bottleneck(8, 2, downsample=nn.Sequential(nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8)))
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    linear = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 6))
    for m in (conv, residual, bottleneck):
        for bn in m.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.uniform_(-0.2, 0.2)
                bn.running_var.uniform_(0.5, 1.5)
                bn.weight.data.uniform_(0.5, 1.5)
                bn.bias.data.uniform_(-0.3, 0.3)
    return {
        "conv": (conv.eval(), (8, 6, 6)),
        "residual": (residual.eval(), (8, 6, 6)),
        "bottleneck": (bottleneck.eval(), (8, 5, 5)),
        "conv-to-linear": (head.eval(), (8, 4, 4)),
        "linear": (linear.eval(), (8,)),
    }


def _captum(segment, x, target, steps, method):
    def forward(inp):
        out = segment(inp)
        return out.flatten(2).mean(2) if out.dim() > 2 else out

    ig = IntegratedGradients(forward)
    att = ig.attribute(x, baselines=torch.zeros_like(x), target=target, n_steps=steps, method=method)
    return att.flatten(2).sum(2) if att.dim() > 2 else att


@pytest.mark.parametrize("name", list(_segments()))
@pytest.mark.parametrize(("method", "steps"), [("riemann_right", 50), ("gausslegendre", 16)])
def test_matches_captum(name, method, steps):
    segment, shape = _segments()[name]
    torch.manual_seed(1)
    lower = torch.relu(torch.randn(7, *shape))  # post-ReLU activations, like real layer outputs
    out_width = segment(lower[:1]).shape[1]
    targets = [0, 3 % out_width, 3 % out_width, 1, 2, 1, 0, 4 % out_width]
    patches = [0, 0, 2, 2, 2, 5, 6, 6]  # targets share patches, a patch serves several targets
    ours = pair_attributions(segment, lower, targets, patches, steps=steps, method=method)
    for m, (t, p) in enumerate(zip(targets, patches)):
        ref = _captum(segment, lower[p : p + 1], t, steps, method)[0]
        scale = ref.abs().max().clamp_min(1e-12)
        assert torch.allclose(ours[m], ref, rtol=0, atol=1e-4 * float(scale)), (name, m)


def test_chunking_does_not_change_results():
    segment, shape = _segments()["residual"]
    torch.manual_seed(2)
    lower = torch.relu(torch.randn(9, *shape))
    targets = torch.randint(0, 8, (40,))
    patches = torch.randint(0, 9, (40,))
    whole = pair_attributions(segment, lower, targets, patches, steps=10)
    tiny = pair_attributions(segment, lower, targets, patches, steps=10, memory_mb=0.001)
    assert torch.allclose(whole, tiny, atol=1e-6)


def test_linear_segment_hand_computed():
    # y = W x: the gradient is constant, so t(a, s, v) = W[a, s] * x[s] exactly, for any quadrature.
    lin = nn.Linear(3, 2, bias=True)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]]))
        lin.bias.fill_(7.0)
    x = torch.tensor([[2.0, 1.0, 4.0]])
    att = pair_attributions(lin, x, [0, 1], [0, 0], steps=3)
    assert torch.allclose(att, torch.tensor([[2.0, -2.0, 2.0], [0.0, 3.0, -4.0]]))


def test_completeness_for_relu_square():
    # y = sum(relu(x)^2) has IG summing to y(x) - y(0) as the number of steps grows.
    seg = nn.Sequential(nn.ReLU())

    class Square(nn.Module):
        def forward(self, z):
            return (seg(z) ** 2).sum(1, keepdim=True)

    x = torch.tensor([[1.0, 2.0, -1.0]])
    att = pair_attributions(Square(), x, [0], [0], steps=32, method="gausslegendre")
    assert torch.allclose(att, torch.tensor([[1.0, 4.0, 0.0]]), atol=1e-5)


def test_quadrature_rules():
    a, w = quadrature(4, "riemann_right")
    assert torch.allclose(a, torch.tensor([0.25, 0.5, 0.75, 1.0], dtype=torch.float64))
    assert torch.allclose(w.sum(), torch.tensor(1.0, dtype=torch.float64))
    a, w = quadrature(5, "gausslegendre")
    assert float(w.sum()) == pytest.approx(1.0) and 0 < float(a.min()) < float(a.max()) < 1
    # integrates t^3 on [0, 1] exactly
    assert float((w * a**3).sum()) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="unknown quadrature"):
        quadrature(4, "trapezoid")


def test_reference_scores_use_per_patch_magnitudes():
    att = torch.tensor([[1.0, -2.0], [-1.0, 2.0]])
    assert torch.equal(reference_scores(att), torch.tensor([1.0, 2.0]))
    assert torch.equal(att.sum(0), torch.tensor([0.0, 0.0]))  # the paper's |sum| cancels here


def _transformer_segments():
    """A ViT encoder block and a Swin block as the cuts give them: neurons on dim 1 ([B, D, T]
    tokens, [B, C, H, W] for Swin's channels-last maps), lower activations from real images."""
    from torchvision.models.swin_transformer import SwinTransformer
    from torchvision.models.vision_transformer import VisionTransformer

    from ingest.core.layers import LayerCuts

    torch.manual_seed(0)
    vit = VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5
    ).eval()
    swin = SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[2], num_heads=[2], window_size=[4, 4], num_classes=5
    ).eval()
    cases = {
        "vit-encoder-block": (vit, ["encoder.layers.encoder_layer_1", "encoder.layers.encoder_layer_0"]),
        "swin-block": (swin, ["features.1.1", "features.1.0"]),
    }
    out = {}
    images = torch.randn(7, 3, 32, 32)
    for name, (model, layers) in cases.items():
        cuts = LayerCuts(model, layers, 32)
        with torch.no_grad():
            lower = cuts.activations(images, [layers[1]], means=False)[layers[1]]
        out[name] = (cuts.segment(layers[0]), lower)
    return out


@pytest.mark.parametrize("name", ["vit-encoder-block", "swin-block"])
def test_matches_captum_on_transformer_blocks(name):
    segment, lower = _transformer_segments()[name]
    assert lower.dim() in (3, 4) and lower.shape[1] == 16  # the residual width is the neuron axis
    targets = [0, 3, 3, 7, 15, 1]
    patches = [0, 0, 2, 2, 5, 6]
    ours = pair_attributions(segment, lower, targets, patches, steps=16, method="gausslegendre")
    for m, (t, p) in enumerate(zip(targets, patches, strict=True)):
        ref = _captum(segment, lower[p : p + 1], t, 16, "gausslegendre")[0]
        scale = ref.abs().max().clamp_min(1e-12)
        assert torch.allclose(ours[m], ref, rtol=0, atol=1e-4 * float(scale)), (name, m)


def test_bf16_autocast_keeps_the_ranking_and_stays_close_to_fp32():
    """`precision="bf16"` runs the segment under autocast: the attributions move by bf16's rounding
    (well under 5 % of the largest), and the top-4 of every target stays the same here."""
    segment, shape = _segments()["residual"]
    torch.manual_seed(1)
    lower = torch.relu(torch.randn(7, *shape))
    targets, patches = [0, 3, 3, 1, 2], [0, 0, 2, 5, 6]
    fp32 = pair_attributions(segment, lower, targets, patches, steps=16, method="gausslegendre")
    bf16 = pair_attributions(
        segment, lower, targets, patches, steps=16, method="gausslegendre", precision="bf16"
    )
    assert bf16.dtype == torch.float32
    assert (bf16 - fp32).abs().max() <= 0.05 * fp32.abs().max()
    for a, b in zip(fp32, bf16, strict=True):
        assert set(a.topk(4).indices.tolist()) == set(b.topk(4).indices.tolist())
    with pytest.raises(ValueError, match="precision must be one of"):
        pair_attributions(segment, lower, targets, patches, precision="int8")

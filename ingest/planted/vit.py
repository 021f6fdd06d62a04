"""The planted benchmark's third model: a small vision transformer trained on the same scenes.

torchvision's `VisionTransformer` with a convolutional stem (three stride-2 3x3 convolutions, then a
1x1 projection: "early convolutions help transformers see better", Xiao et al. 2021), which lets a
transformer this small learn the scenes in CPU minutes. 64-px images become 8 x 8 = 64 patch tokens
plus the class token; 4 encoder blocks of width 64.

The listed layers are the head and the four encoder blocks. A neuron is one of the 64 residual
dimensions at a block's output, averaged over the 65 tokens (docs/method.md, "Transformer
neurons"); NeurFlow's default τ = 16 is a quarter of a layer. Preprocessing is the planted CNN's.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ingest.planted.model import CLASS_NAMES, INPUT_SIZE, MEAN, STD, load_shipped, predict_proba

__all__ = [
    "CLASS_NAMES",
    "INPUT_SIZE",
    "MEAN",
    "STD",
    "VIT_LAYERS",
    "build_planted_vit",
    "load_planted_vit",
    "predict_proba",
]

WIDTH, DEPTH, HEADS, MLP = 64, 4, 4, 128
STEM = (32, 48, 64)
VIT_LAYERS: list[str] = ["heads.head", *[f"encoder.layers.encoder_layer_{i}" for i in reversed(range(DEPTH))]]


def build_planted_vit(num_classes: int = len(CLASS_NAMES)) -> nn.Module:
    """A freshly initialised (untrained) planted ViT; `load_planted_vit` gives the shipped one."""
    from torchvision.models.vision_transformer import ConvStemConfig, VisionTransformer

    stem = [ConvStemConfig(out_channels=c, kernel_size=3, stride=2) for c in STEM]
    return VisionTransformer(
        image_size=INPUT_SIZE,
        patch_size=8,
        num_layers=DEPTH,
        num_heads=HEADS,
        hidden_dim=WIDTH,
        mlp_dim=MLP,
        num_classes=num_classes,
        conv_stem_configs=stem,
    )


def load_planted_vit(device: str | torch.device = "cpu", weights: str | Path | None = None) -> nn.Module:
    """The shipped trained planted ViT (fp32, eval mode) on `device`."""
    return load_shipped(build_planted_vit, "planted_vit", "planted ViT", device, weights)

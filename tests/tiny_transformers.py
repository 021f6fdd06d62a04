"""Small random-weight transformers for tests, loadable as a user's model (`module:factory`)."""

from __future__ import annotations

import torch
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.models.vision_transformer import VisionTransformer


def tiny_vit(num_classes: int = 3) -> VisionTransformer:
    """A 3-block ViT on 64-px images (16 patches of 16 px, plus the class token)."""
    torch.manual_seed(0)
    model = VisionTransformer(
        image_size=64,
        patch_size=16,
        num_layers=3,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        num_classes=num_classes,
    )
    model.neurflow_preprocessing = {"input_size": 64}  # its position embeddings are for 64 px
    return model


def tiny_swin(num_classes: int = 3) -> SwinTransformer:
    """A two-stage Swin on 64-px images (channels-last feature maps)."""
    torch.manual_seed(0)
    return SwinTransformer(
        patch_size=[4, 4],
        embed_dim=16,
        depths=[2, 2],
        num_heads=[2, 2],
        window_size=[4, 4],
        num_classes=num_classes,
    )

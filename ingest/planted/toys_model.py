"""The toys world's CNN: a plain sequential network whose listed layers have *mixed* widths.

block1 48, block2 160, block3 32 (narrow: τ = 16 is half of it), block4 96. Each listed block reads
the input only through the block below (no skip connections), so every cut is clean. Unlike the
insect CNN it starts with a 5×5 stride-2 convolution, pools with max- and average-pooling, and its
top block is a 4×4 convolution over the whole 4×4 map of block3 (output 96 × 1 × 1): every block4
neuron sees the whole image, which is what lets it respond to two context objects *together*.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ingest.planted.model import FiveStageCNN, conv_bn_relu, load_shipped
from ingest.planted.model import predict_proba as shared_predict_proba
from ingest.planted.model import preprocess as shared_preprocess
from ingest.planted.toys import CLASS_NAMES, CONCEPTS, INPUT_SIZE

__all__ = [
    "CLASS_NAMES",
    "CONCEPTS",
    "INPUT_SIZE",
    "LAYER_CHANNELS",
    "MEAN",
    "STD",
    "TOYS_LAYERS",
    "build_planted_toys_cnn",
    "load_planted_toys_cnn",
    "predict_proba",
    "preprocess",
]

# Per-channel statistics of the toys training scenes (2,000 scenes, seed 0), for a [0, 1] image.
MEAN: tuple[float, float, float] = (0.54, 0.54, 0.6)
STD: tuple[float, float, float] = (0.32, 0.26, 0.25)

TOYS_LAYERS: list[str] = ["fc", "block4", "block3", "block2", "block1"]
LAYER_CHANNELS: dict[str, int] = {"block1": 48, "block2": 160, "block3": 32, "block4": 96}


class PlantedToysCNN(FiveStageCNN):
    """64x64 -> stem (24x32x32) -> block1 (48x16x16) -> block2 (160x8x8) -> block3 (32x4x4)
    -> block4 (96x1x1) -> fc."""

    def __init__(self, num_classes: int = len(CLASS_NAMES)) -> None:
        super().__init__()
        ch = LAYER_CHANNELS
        self.stem = nn.Sequential(*conv_bn_relu(3, 24, kernel=5, stride=2, padding=2))
        self.block1 = nn.Sequential(*conv_bn_relu(24, ch["block1"]), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(*conv_bn_relu(ch["block1"], ch["block2"]), nn.MaxPool2d(2))
        self.block3 = nn.Sequential(*conv_bn_relu(ch["block2"], ch["block3"]), nn.AvgPool2d(2))
        self.block4 = nn.Sequential(*conv_bn_relu(ch["block3"], ch["block4"], kernel=4, padding=0))
        self.pool = nn.Flatten()
        self.fc = nn.Linear(ch["block4"], num_classes)


def build_planted_toys_cnn(num_classes: int = len(CLASS_NAMES)) -> nn.Module:
    """A freshly initialised (untrained) toys CNN; `load_planted_toys_cnn` gives the shipped one."""
    return PlantedToysCNN(num_classes)


def preprocess(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] (or one HxWx3 image) -> float [N, 3, H, W] normalised with MEAN/STD."""
    return shared_preprocess(images, MEAN, STD)


def predict_proba(model: nn.Module, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class probabilities [N, num_classes] of uint8 images under `model` (eval mode assumed)."""
    return shared_predict_proba(model, images, batch_size, mean=MEAN, std=STD)


def load_planted_toys_cnn(device: str | torch.device = "cpu", weights: str | Path | None = None) -> nn.Module:
    """The shipped trained toys CNN (fp32, eval mode) on `device`."""
    return load_shipped(build_planted_toys_cnn, "planted_toys_cnn", "planted toys CNN", device, weights)

"""The planted-benchmark CNN: a plain sequential network with stable, readable layer names.

Every listed block is at least 128 channels wide, so NeurFlow's default tau = 16 core neurons
is at most an eighth of a layer, and each block reads the input only through the block below
(no skip connections), so every cut between listed layers is clean.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ingest.planted.scenes import CLASS_NAMES, CONCEPTS, INPUT_SIZE

__all__ = [
    "CLASS_NAMES",
    "CONCEPTS",
    "INPUT_SIZE",
    "LAYER_CHANNELS",
    "MEAN",
    "PLANTED_LAYERS",
    "STD",
    "build_planted_cnn",
    "load_planted_cnn",
    "predict_proba",
    "preprocess",
]

# Per-channel statistics of the training scenes, for normalising a [0, 1] image.
MEAN: tuple[float, float, float] = (0.48, 0.6, 0.46)
STD: tuple[float, float, float] = (0.25, 0.17, 0.28)

PLANTED_LAYERS: list[str] = ["fc", "block4", "block3", "block2", "block1"]
LAYER_CHANNELS: dict[str, int] = {"block1": 128, "block2": 192, "block3": 256, "block4": 256}


def conv_bn_relu(
    c_in: int, c_out: int, kernel: int = 3, stride: int = 1, padding: int = 1
) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class FiveStageCNN(nn.Module):
    """The planted worlds' CNN shape: stem, block1..block4, pool, fc, run in that order. Subclasses
    build the modules; the names are the layer names every planted world's tools use."""

    stem: nn.Module
    block1: nn.Module
    block2: nn.Module
    block3: nn.Module
    block4: nn.Module
    pool: nn.Module
    fc: nn.Module

    def forward(self, x):
        for stage in (self.stem, self.block1, self.block2, self.block3, self.block4):
            x = stage(x)
        return self.fc(self.pool(x))


class PlantedCNN(FiveStageCNN):
    """64x64 input -> stem (32x32) -> block1 (16x16) -> block2 (8x8) -> block3 (4x4) -> block4."""

    def __init__(self, num_classes: int = len(CLASS_NAMES)) -> None:
        super().__init__()
        ch = LAYER_CHANNELS
        self.stem = nn.Sequential(*conv_bn_relu(3, 32, stride=2), *conv_bn_relu(32, 64))
        self.block1 = nn.Sequential(*conv_bn_relu(64, ch["block1"], stride=2))
        self.block2 = nn.Sequential(*conv_bn_relu(ch["block1"], ch["block2"], stride=2))
        self.block3 = nn.Sequential(*conv_bn_relu(ch["block2"], ch["block3"]), nn.MaxPool2d(2))
        self.block4 = nn.Sequential(*conv_bn_relu(ch["block3"], ch["block4"]))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(ch["block4"], num_classes)


def build_planted_cnn(num_classes: int = len(CLASS_NAMES)) -> nn.Module:
    """A freshly initialised (untrained) planted CNN; `load_planted_cnn` gives the shipped one."""
    return PlantedCNN(num_classes)


WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def preprocess(images: np.ndarray, mean: Sequence[float] = MEAN, std: Sequence[float] = STD) -> torch.Tensor:
    """uint8 [N, H, W, 3] (or one HxWx3 image) -> float [N, 3, H, W] normalised with `mean`/`std`
    (the insect world's by default)."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    if x.ndim == 3:
        x = x[None]
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@torch.no_grad()
def predict_proba(
    model: nn.Module,
    images: np.ndarray,
    batch_size: int = 256,
    *,
    mean: Sequence[float] = MEAN,
    std: Sequence[float] = STD,
) -> np.ndarray:
    """Class probabilities [N, num_classes] of uint8 images under `model` (eval mode assumed)."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(images), batch_size):
        logits = model(preprocess(images[i : i + batch_size], mean, std).to(device))
        out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    if out:
        return np.concatenate(out)
    classes = getattr(model, "num_classes", None) or len(CLASS_NAMES)
    return np.zeros((0, classes), np.float32)


def load_shipped(
    build, arch: str, what: str, device: str | torch.device = "cpu", weights: str | Path | None = None
) -> nn.Module:
    """A planted model built by `build` with its fp16 weights (`WEIGHTS_DIR/<arch>.pt`, or `weights`)
    loaded as fp32, in eval mode on `device`."""
    path = Path(weights) if weights is not None else WEIGHTS_DIR / f"{arch}.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} weights not found at {path}; regenerate them with "
            f"`python -m ingest.planted.train{'' if arch == 'planted_cnn' else f' --arch {arch}'}`"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = build()
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.to(device).eval()


def load_planted_cnn(device: str | torch.device = "cpu", weights: str | Path | None = None) -> nn.Module:
    """The shipped trained planted CNN (fp32, eval mode) on `device`."""
    return load_shipped(build_planted_cnn, "planted_cnn", "planted CNN", device, weights)

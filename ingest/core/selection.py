"""Choosing the core concept neurons S_a from importance scores: the τ rule (paper Alg. 1, App. D.6).

τ can be a count (`16`), a fraction of the lower layer's width (`0.05` or `5%`), or a cumulative share
of Σ|T| (`cum:0.8`: the fewest neurons whose |T| add up to 80 % of the total). Every selection records
the rule that produced it, e.g. `top-16`, `frac-0.05=26/512`, `cum-0.8=11`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ingest.core.tau import TauRule


def select_core(scores: Tensor, rule: TauRule) -> tuple[list[int], str]:
    """Indices of the top neurons by |score| under `rule`, best first, and the rule's description."""
    magnitude = scores.abs().double()
    order = torch.argsort(magnitude, descending=True, stable=True)
    width = len(scores)
    if rule.kind == "count":
        n = min(int(rule.value), width)
        label = f"top-{n}"
    elif rule.kind == "fraction":
        n = max(1, math.ceil(rule.value * width))
        label = f"frac-{rule.value:g}={n}/{width}"
    else:
        total = float(magnitude.sum())
        if total == 0:
            n = 1
        else:
            cumulative = torch.cumsum(magnitude[order], 0) / total
            n = int(torch.searchsorted(cumulative, torch.tensor(rule.value - 1e-12).double())) + 1
            n = min(n, width)
        label = f"cum-{rule.value:g}={n}"
    return order[:n].tolist(), label

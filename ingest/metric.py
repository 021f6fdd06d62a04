"""The group metric M (paper §5): how confidently a group of neurons, together, sees its concept.

M(v, S_G, D) = exp(mean_{s in S_G} log(phi_s(v) / max_D phi_s)), activations clipped at eps: high only
when every neuron of the group fires, near zero as soon as one of them is silent.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-6


def group_metric(activations: np.ndarray, max_activations: np.ndarray, eps: float = EPS) -> np.ndarray:
    """activations [P, n] of the group's n neurons on P inputs; max over D per neuron [n] -> [P]."""
    acts = np.asarray(activations, dtype=np.float64)
    peak = np.maximum(np.asarray(max_activations, dtype=np.float64), eps)
    ratio = np.clip(acts / peak, eps, None)
    return np.exp(np.log(ratio).mean(axis=1))

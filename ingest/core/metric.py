"""The group metric M (paper §5): how confidently a group of neurons, together, sees its concept.

M(v, S_G, D) = exp(mean_{s in S_G} log(phi_s(v) / max_D phi_s)), activations clipped at eps: high only
when every neuron of the group fires, near zero as soon as one of them is silent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from graphmodel.records import Circuit, NeuronGroupRecord

EPS = 1e-6


def group_metric(activations: np.ndarray, max_activations: np.ndarray, eps: float = EPS) -> np.ndarray:
    """activations [P, n] of the group's n neurons on P inputs; max over D per neuron [n] -> [P]."""
    acts = np.asarray(activations, dtype=np.float64)
    peak = np.maximum(np.asarray(max_activations, dtype=np.float64), eps)
    ratio = np.clip(acts / peak, eps, None)
    return np.exp(np.log(ratio).mean(axis=1))


def metric_neurons(group: NeuronGroupRecord) -> list[int]:
    """The neurons the metric M of a neuron group uses: its core members (App. F), else every member."""
    return list(group.core_members or group.members)


def circuit_metric(circuit: Circuit, layer: str, neurons: Sequence[int], acts: np.ndarray) -> np.ndarray:
    """M of circuit neurons of `layer` on every row of that layer's channel means `acts` [N, C] -> [N],
    each neuron normalised by its peak activation over the circuit's patch set."""
    peaks = {n.index: n.max_activation for n in circuit.neurons_at(layer)}
    missing = [m for m in neurons if m not in peaks]
    if missing:
        raise ValueError(f"neurons {missing} of {layer} are not circuit neurons of run {circuit.run_id}")
    return group_metric(acts[:, list(neurons)], np.array([peaks[m] for m in neurons]))

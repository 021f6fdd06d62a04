"""Batched integrated-gradient importance of lower-layer channels for upper-layer neurons (paper Eq. 2).

The hot path of NeurFlow. Work is described as *pairs* (target neuron a, patch v); the result for a
pair is the vector over lower channels s of
    t(a, s, v) = sum_{x in channel s at v} x * sum_n w_n * d y_a(alpha_n * x) / d x,
with y_a the spatial mean of channel a of the upper layer and (alpha_n, w_n) a quadrature of [0, 1]
(right Riemann with alpha_n = n/N, w_n = 1/N is the paper's Eq. 2; Gauss-Legendre is an option that
reaches the same accuracy with fewer steps). T(a, s, V) is then the sum of t over the patches of V.

Targets that share a patch share its forward pass: the scaled copies alpha_n * x of each patch are
pushed through the segment once, and the j-th target of every patch (its "slot" j) gets its gradient
from one backward pass over the whole chunk, so a chunk costs one forward and as many backward passes
as its patches have targets. (One backward per slot measured 10-25 % faster on CPU than a vmapped
backward over all slots, `is_grads_batched`, and holds one gradient at a time.) Rows are processed in
chunks whose size follows a memory budget, so wide layers do not run out of memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import torch
from torch import Tensor

QUADRATURES = ("riemann_right", "gausslegendre")


def quadrature(steps: int, method: str = "riemann_right") -> tuple[Tensor, Tensor]:
    """Points alpha in (0, 1] and weights for integrating a path from the zero baseline to the input."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if method == "riemann_right":
        alphas = torch.arange(1, steps + 1, dtype=torch.float64) / steps
        weights = torch.full((steps,), 1.0 / steps, dtype=torch.float64)
    elif method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(steps)
        alphas = torch.from_numpy(0.5 * (x + 1.0))
        weights = torch.from_numpy(0.5 * w)
    else:
        raise ValueError(f"unknown quadrature {method!r}; choose one of {', '.join(QUADRATURES)}")
    return alphas, weights


@dataclass
class _Plan:
    """Pairs regrouped by patch: which targets (slots) each patch serves."""

    patches: Tensor  # [U] unique patch indices, ordered by how many targets use them
    slot_targets: Tensor  # [U, J] target channel per slot (0 where unused)
    slot_pairs: Tensor  # [U, J] index of the pair that slot answers (-1 where unused)


def _plan(targets: Tensor, patches: Tensor) -> _Plan:
    order = torch.argsort(patches * (int(targets.max()) + 1) + targets, stable=True)
    uniq, counts = torch.unique_consecutive(patches[order], return_counts=True)
    # Patches used by the same number of targets sit together, so chunks waste few empty slots.
    by_count = torch.argsort(counts, descending=True, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    width = int(counts.max())
    slot_targets = torch.zeros((len(uniq), width), dtype=torch.long)
    slot_pairs = torch.full((len(uniq), width), -1, dtype=torch.long)
    for row, u in enumerate(by_count.tolist()):
        members = order[starts[u] : starts[u] + counts[u]]
        slot_targets[row, : len(members)] = targets[members]
        slot_pairs[row, : len(members)] = members
    return _Plan(uniq[by_count], slot_targets, slot_pairs)


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _attribute(
    segment: Callable[[Tensor], Tensor],
    x: Tensor,
    tgt: Tensor,
    alphas: Tensor,
    weights: Tensor,
    precision: str = "fp32",
) -> Tensor:
    """sum_n w_n * grad y_t(alpha_n x) * x, summed over space, for every patch u and slot j: [J, u, C].
    With `precision` bf16/fp16 the segment runs under autocast; inputs, gradients and sums stay fp32."""
    u, n = x.shape[0], len(alphas)
    used = tgt.shape[1]
    scaled = (alphas.view(1, -1, *[1] * (x.dim() - 1)) * x.unsqueeze(1)).reshape(u * n, *x.shape[1:])
    scaled.requires_grad_(True)
    dtype = PRECISIONS[precision]
    with torch.autocast(x.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        out = _neuron_values(segment(scaled)).float()  # [u*n, C_out]
    grad_out = torch.zeros((used, u, n, out.shape[1]), device=x.device, dtype=out.dtype)
    j_idx, u_idx = torch.meshgrid(
        torch.arange(used, device=x.device), torch.arange(u, device=x.device), indexing="ij"
    )
    grad_out[j_idx, u_idx, :, tgt.T] = weights.to(out.dtype).view(1, 1, -1)
    grad_out = grad_out.reshape(used, u * n, out.shape[1])
    atts = []
    for j in range(used):  # one backward per slot, each covering every patch and step of the chunk
        (grads,) = torch.autograd.grad(out, scaled, grad_out[j], retain_graph=j < used - 1)
        # Sum the weighted step gradients first, then multiply by the input once.
        prod = grads.reshape(u, n, *x.shape[1:]).sum(1) * x
        atts.append(prod.flatten(2).sum(2) if x.dim() > 2 else prod)
    return torch.stack(atts)


def _neuron_values(out: Tensor) -> Tensor:
    """A neuron's activation: the spatial mean of its map (conv) or the unit itself (linear)."""
    return out.flatten(2).mean(2) if out.dim() > 2 else out


def pair_attributions(
    segment: Callable[[Tensor], Tensor],
    lower: Callable[[Tensor], Tensor] | Tensor,
    targets: Sequence[int] | Tensor,
    patches: Sequence[int] | Tensor,
    *,
    steps: int = 50,
    method: str = "riemann_right",
    memory_mb: float = 2048.0,
    progress: Callable[[int], None] | None = None,
    precision: str = "fp32",
) -> Tensor:
    """Integrated-gradient attribution t(a, s, v) for every pair (targets[m], patches[m]).

    `lower` gives the lower layer's activation maps for a batch of patch indices (a callable, so the
    caller can compute them on demand) or is a tensor [P, C, ...] indexed by patch. Returns a float32
    tensor [M, C] on the CPU. `progress` is called with the number of pairs finished after each chunk.
    `precision` "bf16" or "fp16" runs the segment under autocast (benchmarks/ig_batched_vs_captum.py
    --precision measures how many top-τ sets it keeps); "fp32", the default, does not.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    targets_t = torch.as_tensor(targets, dtype=torch.long).cpu()
    patches_t = torch.as_tensor(patches, dtype=torch.long).cpu()
    if targets_t.shape != patches_t.shape or targets_t.dim() != 1:
        raise ValueError("targets and patches must be 1-d and of equal length")
    fetch = lower.__getitem__ if isinstance(lower, Tensor) else lower
    if len(targets_t) == 0:
        probe = fetch(torch.zeros(1, dtype=torch.long))
        return torch.zeros((0, probe.shape[1]), dtype=torch.float32)

    plan = _plan(targets_t, patches_t)
    alphas, weights = quadrature(steps, method)
    probe = fetch(plan.patches[:1])
    device, dtype = probe.device, probe.dtype
    alphas, weights = alphas.to(device, dtype), weights.to(device, dtype)
    row_bytes = probe[0].numel() * probe.element_size()
    result = torch.zeros((len(targets_t), probe.shape[1]), dtype=torch.float32)

    # Per (patch, step) row a chunk holds the scaled input, its gradient and the segment's saved
    # activations (~8 input-sized tensors for a residual block is a safe estimate). Patches are
    # processed in runs of equal slot count, so no backward is spent on empty slots.
    counts = (plan.slot_pairs >= 0).sum(1)
    run_starts = [0, *(torch.nonzero(counts[1:] != counts[:-1]).flatten() + 1).tolist(), len(counts)]
    for run_start, run_stop in pairwise(run_starts):
        used = int(counts[run_start])
        rows_per_chunk = max(1, int(memory_mb * 2**20 // (row_bytes * 10)))
        step_chunk = min(steps, rows_per_chunk)
        patches_per_chunk = max(1, rows_per_chunk // step_chunk)
        for start in range(run_start, run_stop, patches_per_chunk):
            stop = min(start + patches_per_chunk, run_stop)
            x = fetch(plan.patches[start:stop]).detach()  # [u, C, ...]
            pair_ids = plan.slot_pairs[start:stop, :used].T.reshape(-1)  # slot-major, like att below
            tgt = plan.slot_targets[start:stop, :used].to(device)
            for s0 in range(0, steps, step_chunk):
                att = _attribute(
                    segment, x, tgt, alphas[s0 : s0 + step_chunk], weights[s0 : s0 + step_chunk], precision
                )
                result.index_add_(0, pair_ids, att.reshape(len(pair_ids), -1).float().cpu())
            if progress is not None:
                progress(len(pair_ids))
    return result


def importance_scores(pair_att: Tensor, groups: Sequence[Sequence[int]]) -> Tensor:
    """T(a, s, V) for several patch groups V, given the pair attributions of one target.

    `pair_att` is [k, C] (one row per patch of V_a); each group lists row indices. Returns [G, C].
    """
    return torch.stack([pair_att[list(g)].sum(0) for g in groups])


def reference_scores(pair_att: Tensor) -> Tensor:
    """The reference code's ranking: per patch |channel attribution|, averaged over the patches."""
    return pair_att.abs().mean(0)


def ranking_scores(pair_att: Tensor, ranking: str) -> Tensor:
    """The scores S_a is chosen by (top |score|): "paper", T = Σ_v t (Eq. 2); "reference", the
    reference code's mean_v |t|."""
    return pair_att.sum(0) if ranking == "paper" else reference_scores(pair_att)

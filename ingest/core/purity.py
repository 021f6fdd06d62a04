"""Ground-truth concept purity of semantic groups and neuron groups (planted-concept benchmark).

The purity of a group for a concept is the share of its patches whose ground truth contains that
concept; a group's dominant concept is the one with the highest share. Only meaningful when the image
folder ships ground truth (`NAME.concepts.npz`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from graphmodel.records import Circuit


def concept_shares(patch_ids: list[str], truth: dict[str, list[str]]) -> dict[str, float]:
    counts = Counter(c for p in patch_ids for c in truth.get(p, []))
    n = max(len(patch_ids), 1)
    return {c: round(k / n, 4) for c, k in counts.most_common()}


def base_rates(circuit: Circuit) -> dict[str, float]:
    """Share of all patches of D containing each concept: what a group's purity must beat."""
    return concept_shares(
        [p.patch_id for p in circuit.patches], {p.patch_id: p.concepts for p in circuit.patches}
    )


def purity_rows(circuit: Circuit) -> list[dict[str, Any]]:
    """One row per semantic group and neuron group, top layer first."""
    truth = {p.patch_id: p.concepts for p in circuit.patches}
    rows: list[dict[str, Any]] = []
    for layer in circuit.layer_names():
        for kind, items in (
            ("neuron_group", [g for g in circuit.neuron_groups if g.layer == layer]),
            ("semantic_group", [g for g in circuit.semantic_groups if g.layer == layer]),
        ):
            for item in items:
                shares = concept_shares(item.patch_ids, truth)
                top = next(iter(shares.items()), (None, 0.0))
                rows.append(
                    {
                        "layer": layer,
                        "kind": kind,
                        "id": getattr(item, "ng_id", None) or item.sg_id,
                        "neurons": getattr(item, "members", None) or [item.neuron],
                        "size": len(item.patch_ids),
                        "concept": top[0],
                        "purity": top[1],
                        "shares": shares,
                    }
                )
    return rows

"""Neuron groups of one layer and the weights between groups of adjacent layers (paper §3.5).

A neuron group is a cluster of the layer's semantic groups (Ward on their representative vectors,
number of clusters by silhouette). Its members are the neurons owning those semantic groups, so a
polysemantic neuron can belong to several groups, one per meaning; its concept is the union of the
semantic groups' patches. W(G_i, G_j) sums the hyperedge weights w(s_{G_j,p}, s_{G_i,q}, V_{G_j,p})
over the semantic groups p of the parent group and the member neurons q of the child group.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from graphmodel.records import (
    GroupEdgeRecord,
    HyperedgeRecord,
    NeuronGroupRecord,
    SemanticGroupRecord,
)
from ingest.core.clustering import ward_silhouette

METRIC_NEURONS = 5  # App. F: the metric uses the <= 5 members nearest the group's centre


def neuron_groups(
    layer: str, sgs: list[SemanticGroupRecord], run_id: str, max_groups: int = 8
) -> list[NeuronGroupRecord]:
    if not sgs:
        return []
    vectors = np.array([sg.centroid for sg in sgs], dtype=np.float64)
    if len({sg.neuron for sg in sgs}) == 1:
        labels = np.zeros(len(sgs), dtype=int)  # a single neuron (the logit) is one group
    else:
        labels, _ = ward_silhouette(vectors, 2, max_groups)
    groups = []
    for g in range(int(labels.max()) + 1):
        idx = np.flatnonzero(labels == g)
        members_sgs = [sgs[i] for i in idx]
        centre = vectors[idx].mean(0)
        nearest: dict[int, float] = {}
        for i in idx:
            d = float(np.linalg.norm(vectors[i] - centre))
            n = sgs[i].neuron
            nearest[n] = min(d, nearest.get(n, np.inf))
        core = sorted(nearest, key=lambda n: (nearest[n], n))[:METRIC_NEURONS]
        patch_ids = list(dict.fromkeys(p for sg in members_sgs for p in sg.patch_ids))
        groups.append(
            NeuronGroupRecord(
                ng_id=f"{run_id}/{layer}/g{g}",
                layer=layer,
                members=sorted({sg.neuron for sg in members_sgs}),
                sg_ids=[sg.sg_id for sg in members_sgs],
                patch_ids=patch_ids,
                centroid=[float(v) for v in centre.astype(np.float32)],  # as the graph stores it
                core_members=sorted(core),
            )
        )
    return groups


def group_edges(
    children: list[NeuronGroupRecord],
    parents: list[NeuronGroupRecord],
    hyperedges: list[HyperedgeRecord],
) -> list[GroupEdgeRecord]:
    """W between every child group (layer below) and parent group (layer above) that are connected."""
    if not children or not parents:
        return []
    into_sg: dict[str, list[HyperedgeRecord]] = defaultdict(list)
    for edge in hyperedges:
        into_sg[edge.sg_id].append(edge)
    groups_of_child: dict[int, list[str]] = defaultdict(list)
    for group in children:
        for n in group.members:
            groups_of_child[n].append(group.ng_id)
    weight: dict[tuple[str, str], float] = defaultdict(float)
    count: dict[tuple[str, str], int] = defaultdict(int)
    for parent in parents:
        for sg_id in parent.sg_ids:
            for edge in into_sg.get(sg_id, []):
                for child_id in groups_of_child.get(edge.child, []):
                    weight[(child_id, parent.ng_id)] += edge.weight
                    count[(child_id, parent.ng_id)] += 1
    return [GroupEdgeRecord(c, p, w, count[(c, p)]) for (c, p), w in sorted(weight.items())]

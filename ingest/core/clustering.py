"""Ward clustering with the number of clusters chosen by silhouette (paper Alg. 2 and §3.5).

One Ward linkage is computed and cut at every candidate n, which gives the same partitions as running
agglomerative clustering once per n, at a fraction of the cost.
"""

from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from sklearn.metrics import silhouette_score


def ward_silhouette(
    vectors: np.ndarray, min_clusters: int = 2, max_clusters: int = 5
) -> tuple[np.ndarray, float]:
    """Cluster labels 0..n-1 (largest cluster first) and the silhouette of the chosen n.

    Fewer than three distinct vectors cannot be split meaningfully: everything is one cluster and
    the silhouette is reported as 0.
    """
    x = np.asarray(vectors, dtype=np.float64)
    distinct = len(np.unique(x, axis=0))
    upper = min(max_clusters, distinct - 1, len(x) - 1)
    if upper < min_clusters:
        return np.zeros(len(x), dtype=int), 0.0
    tree = linkage(x, method="ward", metric="euclidean")
    best_labels, best_score = None, -1.0
    for n in range(min_clusters, upper + 1):
        labels = fcluster(tree, t=n, criterion="maxclust")
        if len(np.unique(labels)) < 2:
            continue
        score = float(silhouette_score(x, labels, metric="euclidean"))
        if score > best_score:
            best_labels, best_score = labels, score
    if best_labels is None:
        return np.zeros(len(x), dtype=int), 0.0
    return _canonical(best_labels), best_score


def _canonical(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters by size (largest first), ties by first member, so ids are stable."""
    uniq = np.unique(labels)
    keyed = sorted(uniq, key=lambda c: (-int((labels == c).sum()), int(np.argmax(labels == c))))
    mapping = {c: i for i, c in enumerate(keyed)}
    return np.array([mapping[c] for c in labels], dtype=int)

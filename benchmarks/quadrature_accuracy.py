"""How many integration steps does the importance score need? Riemann (the paper) vs Gauss-Legendre.

On the planted-concept benchmark's bee circuit (the shipped CNN and real concepts V_a), T(a, s, V_a)
is computed with a 128-node Gauss-Legendre rule as the reference integral, then with the cheaper rules.
Prints, per rule and layer pair: the relative error of T against the reference, the overlap of the
top-16 core-neuron sets with the reference's and with the paper's setting (right Riemann, N = 50), and
the time. Cost is proportional to the number of steps.

    python benchmarks/quadrature_accuracy.py [--images 12] [--targets 12]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from itertools import pairwise

import numpy as np
import torch

from ingest.core.importance import pair_attributions
from ingest.core.layers import LayerCuts
from ingest.core.models import load_model
from ingest.core.patches import build_patch_set, to_model_input
from ingest.core.selection import select_core
from ingest.core.tau import TauRule
from ingest.planted.data import write_image_folder

RULES = [
    ("gausslegendre", 128),
    ("riemann_right", 50),
    ("riemann_right", 16),
    ("gausslegendre", 16),
    ("gausslegendre", 8),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--targets", type=int, default=12, help="target neurons per layer pair")
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--tau", type=int, default=16)
    args = ap.parse_args()
    model = load_model("planted_cnn")
    layers = model.default_layers
    cuts = LayerCuts(model.module, layers, model.input_size)
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_image_folder(tmp, "bee", args.images, seed=1234)

        def classify(pixels):
            with torch.no_grad():
                return model.module(to_model_input(pixels, model.mean, model.std)).argmax(1)

        patches = build_patch_set(folder, 0, classify, model.input_size)
    x = to_model_input(patches.pixels, model.mean, model.std)
    print(f"planted_cnn, class bee: {len(patches)} patches, k={args.k}, tau={args.tau}")
    print(
        f"{'segment':<18}{'rule':<20}{'rel.err of T':>14}{'overlap/ref':>13}{'overlap/R50':>13}{'seconds':>9}"
    )
    for upper, lower in pairwise(layers):
        with torch.no_grad():
            acts = cuts.activations(x, [upper], means=True)[upper]
            lower_maps = cuts.prefix(lower)(x)
        order = torch.argsort(acts.mean(0), descending=True)[: args.targets]
        targets = order.numpy()
        concepts = [torch.argsort(acts[:, a], descending=True)[: args.k].numpy() for a in targets]
        pair_t = np.repeat(targets, args.k)
        pair_p = np.concatenate(concepts)
        results = {}
        for method, steps in RULES:
            t0 = time.perf_counter()
            att = pair_attributions(
                cuts.segment(upper), lower_maps, pair_t, pair_p, steps=steps, method=method
            )
            seconds = time.perf_counter() - t0
            results[(method, steps)] = (att.view(len(targets), args.k, -1).sum(1), seconds)
        ref, _ = results[RULES[0]]
        paper, _ = results[("riemann_right", 50)]
        for (method, steps), (scores, seconds) in results.items():
            err = float((scores - ref).abs().max() / ref.abs().max())
            ov_ref = np.mean([_overlap(scores[i], ref[i], args.tau) for i in range(len(targets))])
            ov_paper = np.mean([_overlap(scores[i], paper[i], args.tau) for i in range(len(targets))])
            print(
                f"{upper + ' ← ' + lower:<18}{method + ' ' + str(steps):<20}{err:>14.1e}"
                f"{ov_ref:>10.2f}/{args.tau}{ov_paper:>10.2f}/{args.tau}{seconds:>9.2f}"
            )


def _overlap(a: torch.Tensor, b: torch.Tensor, tau: int) -> int:
    sa, _ = select_core(a, TauRule("count", tau))
    sb, _ = select_core(b, TauRule("count", tau))
    return len(set(sa) & set(sb))


if __name__ == "__main__":
    main()

"""Does check (c), the IG-loss correlation, depend on the size of the patch set?

The loss L(S, a) counts how many of the top-k patches V_a stay in the top k after knocking S out. With
few patches, a single neuron's knockout rarely moves anything across the top-k boundary, so the loss
is nearly constant and the correlation with Σ|T| is weak. The paper's setting is ~2500 patches (50
images × crops of 100 / 50 / 25 %) with k = 50. This extracts the planted benchmark's bee circuit from
growing image folders at a fixed k and measures the correlation at τ = 1 (every single neuron of the
lower layer knocked out) for the same number of targets per layer.

    python benchmarks/correlation_vs_patch_set.py [--images 6,12,24,40] [--targets 6]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from ingest.analysis.evaluate import correlation
from ingest.core.circuit import ExtractConfig, extract_circuit
from ingest.core.layers import LayerCuts
from ingest.core.models import load_model
from ingest.planted.data import write_image_folder


def _num(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", default="6,12,24,40", help="image-folder sizes")
    ap.add_argument("--targets", type=int, default=6, help="target neurons per layer")
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--layers", default="fc,block4,block3", help="circuit layers; the last is not tested")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--quadrature", default="riemann_right")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model("planted_cnn")
    layers = args.layers.split(",")
    cuts = LayerCuts(model.module, layers, model.input_size)
    rows = []
    for n in (int(v) for v in args.images.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            folder = write_image_folder(tmp, "bee", n, seed=1234)
            cfg = ExtractConfig(
                layers=layers, k=args.k, steps=args.steps, quadrature=args.quadrature, max_images=n
            )
            circuit, patches = extract_circuit(model, folder, model.class_names.index("bee"), cfg)
        started = time.perf_counter()
        result = correlation(
            model,
            cuts,
            patches,
            circuit,
            sizes=(1,),
            max_targets=args.targets,
            steps=args.steps,
            method=args.quadrature,
        )
        seconds = time.perf_counter() - started
        for layer, data in result.items():
            at_one = data["by_size"]["1"]
            rows.append((n, len(patches), layer, data["lower_layer"], at_one))
            print(
                f"images {n:>3}  patches {len(patches):>5}  k/|D| {args.k / len(patches):5.3f}  "
                f"{layer:>7} <- {data['lower_layer']:<7} targets {at_one['targets']}  "
                f"pearson {_num(at_one['pearson'])}  spearman {_num(at_one['spearman'])}  "
                f"per target {at_one['per_target']}  ({seconds:.0f} s for the size)",
                flush=True,
            )
    print("\nmean Pearson at tau = 1 over the tested layers:")
    for n in sorted({r[0] for r in rows}):
        means = [r[4]["pearson"] for r in rows if r[0] == n and r[4]["pearson"] is not None]
        print(f"  {n:>3} images: {np.mean(means):.3f}  ({', '.join(f'{m:.3f}' for m in means)})")


if __name__ == "__main__":
    main()

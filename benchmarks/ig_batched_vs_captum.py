"""Batched importance pass vs. a per-target-neuron Captum IntegratedGradients loop.

Same model, patches, targets, steps and quadrature on both sides. The loop is what the reference code
does: for every target neuron, Captum over its top-k patches in batches of 4 patches x N steps. The
batched pass (ingest.core.importance.pair_attributions) shares each patch's forward pass between the
targets whose concepts contain it and runs the backward for all of them at once.

Prints wall times, the speed ratio, and the overlap of the top-tau core-neuron sets.

    python benchmarks/ig_batched_vs_captum.py                   # resnet18, 224 px, CPU
    python benchmarks/ig_batched_vs_captum.py --device cuda     # when a GPU is available
    python benchmarks/ig_batched_vs_captum.py --arch planted_vit --size 64 \
        --upper encoder.layers.encoder_layer_3 --lower encoder.layers.encoder_layer_2   # a ViT block
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torchvision
from captum.attr import IntegratedGradients

from ingest.core.importance import pair_attributions
from ingest.core.layers import LayerCuts
from ingest.core.selection import select_core
from ingest.core.tau import TauRule


def smooth_images(n: int, size: int, seed: int) -> torch.Tensor:
    """Natural-ish images: low-frequency noise upsampled, so activations are structured."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=g)
    fine = torch.rand(n, 3, size // 4, size // 4, generator=g) * 0.3
    img = torch.nn.functional.interpolate(coarse, size=size, mode="bicubic", align_corners=False)
    img = img + torch.nn.functional.interpolate(fine, size=size, mode="bilinear", align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (img.clamp(0, 1) - mean) / std


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def captum_loop(segment, lower, targets, concepts, steps, method, patches_per_call):
    def forward(x):
        out = segment(x)
        return out.flatten(2).mean(2) if out.dim() > 2 else out

    ig = IntegratedGradients(forward)
    scores = []
    for a in targets:
        total = None
        for start in range(0, len(concepts[a]), patches_per_call):
            x = lower[concepts[a][start : start + patches_per_call]]
            att = ig.attribute(x, baselines=torch.zeros_like(x), target=int(a), n_steps=steps, method=method)
            att = att.flatten(2).sum(2) if att.dim() > 2 else att
            part = att.sum(0).detach()
            total = part if total is None else total + part
        scores.append(total.float().cpu())
    return torch.stack(scores)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--upper", default="layer4.1", help="target layer")
    ap.add_argument("--lower", default="layer4.0", help="layer whose channels are scored")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--patches", type=int, default=48, help="size of the patch pool D")
    ap.add_argument("--targets", type=int, default=8, help="target neurons in the upper layer")
    ap.add_argument("--k", type=int, default=16, help="concept size (top-k patches per target)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--method", default="riemann_right")
    ap.add_argument("--tau", type=int, default=16)
    ap.add_argument("--patches-per-call", type=int, default=4, help="Captum loop batch (reference: 4)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--memory-mb", type=float, default=2048.0)
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument(
        "--precision",
        choices=["bf16", "fp16"],
        help="also run the batched pass under this autocast: its time and top-tau overlap with fp32",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    if hasattr(torchvision.models, args.arch):
        model = getattr(torchvision.models, args.arch)(weights=None).eval().to(device)
    else:  # a planted model (shipped weights) or a user's module:factory
        from ingest.core.models import load_model

        model = load_model(args.arch, device=device).module
    cuts = LayerCuts(model, [args.upper, args.lower], args.size)
    images = smooth_images(args.patches, args.size, seed=1).to(device)
    with torch.no_grad():
        lower = cuts.prefix(args.lower)(images)
        upper_means = cuts.activations(images, [args.upper], means=True)[args.upper]
    # Targets: the most active upper neurons; concepts: each target's top-k patches (they overlap,
    # as concepts of related neurons do on a real patch set).
    targets = torch.argsort(upper_means.mean(0), descending=True)[: args.targets].cpu().numpy()
    concepts = {
        int(a): torch.argsort(upper_means[:, a], descending=True)[: args.k].cpu().numpy() for a in targets
    }
    segment = cuts.segment(args.upper)
    pair_t = np.repeat(targets, args.k)
    pair_p = np.concatenate([concepts[int(a)] for a in targets])
    shared = len(pair_p) / len(np.unique(pair_p))

    # Warm-up both paths once on a small problem so one-off costs are not timed.
    pair_attributions(segment, lower, pair_t[:2], pair_p[:2], steps=2)
    captum_loop(
        segment, lower, targets[:1], {int(targets[0]): concepts[int(targets[0])][:1]}, 2, args.method, 1
    )

    synchronize(device)
    t0 = time.perf_counter()
    att = pair_attributions(
        segment, lower, pair_t, pair_p, steps=args.steps, method=args.method, memory_mb=args.memory_mb
    )
    synchronize(device)
    batched_s = time.perf_counter() - t0
    batched = att.view(len(targets), args.k, -1).sum(1)

    t0 = time.perf_counter()
    looped = captum_loop(segment, lower, targets, concepts, args.steps, args.method, args.patches_per_call)
    synchronize(device)
    loop_s = time.perf_counter() - t0

    overlaps = []
    for i in range(len(targets)):
        a, _ = select_core(batched[i], TauRule("count", args.tau))
        b, _ = select_core(looped[i], TauRule("count", args.tau))
        overlaps.append(len(set(a) & set(b)))
    rel_err = float(((batched - looped).abs().max() / looped.abs().max()).item())
    result = {
        "arch": args.arch,
        "segment": f"{args.lower} -> {args.upper}",
        "device": str(device),
        "threads": torch.get_num_threads(),
        "targets": len(targets),
        "k": args.k,
        "steps": args.steps,
        "pairs": len(pair_t),
        "unique_patches": len(np.unique(pair_p)),
        "targets_per_patch": round(shared, 2),
        "batched_seconds": round(batched_s, 3),
        "captum_loop_seconds": round(loop_s, 3),
        "speedup": round(loop_s / batched_s, 2),
        "top_tau_overlap_min": min(overlaps),
        "top_tau_overlap_mean": round(float(np.mean(overlaps)), 2),
        "tau": args.tau,
        "max_relative_difference": rel_err,
    }
    print(
        f"{args.arch} {result['segment']} on {device} ({result['threads']} threads): "
        f"{len(targets)} targets x k={args.k} patches x {args.steps} steps, "
        f"{result['targets_per_patch']} targets per patch"
    )
    print(f"  batched pass       {batched_s:8.2f} s")
    print(f"  Captum loop (4xN)  {loop_s:8.2f} s")
    print(f"  speed ratio        {result['speedup']:8.2f} x")
    print(
        f"  top-{args.tau} overlap     min {min(overlaps)}/{args.tau}, mean {result['top_tau_overlap_mean']}"
        f"   (max relative difference of T: {rel_err:.1e})"
    )
    if args.precision:
        synchronize(device)
        t0 = time.perf_counter()
        mixed_att = pair_attributions(
            segment, lower, pair_t, pair_p, steps=args.steps, method=args.method,
            memory_mb=args.memory_mb, precision=args.precision,
        )  # fmt: skip
        synchronize(device)
        mixed_s = time.perf_counter() - t0
        mixed = mixed_att.view(len(targets), args.k, -1).sum(1)
        kept = []
        for i in range(len(targets)):
            a, _ = select_core(batched[i], TauRule("count", args.tau))
            b, _ = select_core(mixed[i], TauRule("count", args.tau))
            kept.append(len(set(a) & set(b)))
        result.update(
            precision=args.precision,
            mixed_seconds=round(mixed_s, 3),
            mixed_speedup_vs_fp32=round(batched_s / mixed_s, 2),
            mixed_top_tau_overlap_min=min(kept),
            mixed_top_tau_overlap_mean=round(float(np.mean(kept)), 2),
        )
        print(
            f"  {args.precision} batched pass  {mixed_s:6.2f} s ({batched_s / mixed_s:.2f}x fp32); "
            f"top-{args.tau} sets kept: min {min(kept)}/{args.tau}, mean {np.mean(kept):.2f}"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()

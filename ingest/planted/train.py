"""Regenerates a shipped planted model: `python -m ingest.planted.train [--arch NAME] [--out DIR] [--seed 0]`.

Renders a seeded training set (planted bias included), trains on the CPU with 2 threads,
measures held-out accuracy on a separately seeded test set and the flower test on counterfactual
pairs, and writes `<arch>.pt` (fp16 state_dict) and `<arch>.json` (the numbers). `--arch` picks
the architecture: `planted_cnn` (the plain CNN, the default), `planted_resnet` (the small ResNet)
or `planted_vit` (the small vision transformer); all get the same data, seeds, augmentation and
measurements, and each its optimiser (`TRAINING`). `planted_toys_cnn` (mixed layer widths) lives in
the second world, toys (`toys.py`): each architecture names its world (`WORLD_OF_ARCH`), which gives
the data, the normalisation and the bias test (for toys, `conjunction_test`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ingest.planted import toys, toys_data, toys_model
from ingest.planted.data import NON_BEE, counterfactual_scenes, draw_images, make_dataset
from ingest.planted.model import (
    CLASS_NAMES,
    INPUT_SIZE,
    MEAN,
    STD,
    WEIGHTS_DIR,
    build_planted_cnn,
    load_planted_cnn,
    predict_proba,
    preprocess,
)
from ingest.planted.resnet import build_planted_resnet, load_planted_resnet
from ingest.planted.scenes import TRAIN_FLOWER_PROB
from ingest.planted.toys_model import build_planted_toys_cnn, load_planted_toys_cnn
from ingest.planted.vit import build_planted_vit, load_planted_vit

__all__ = [
    "ARCHS",
    "WORLD_OF_ARCH",
    "accuracy",
    "conjunction_test",
    "flower_test",
    "load_planted_cnn",
    "load_planted_resnet",
    "load_planted_toys_cnn",
    "load_planted_vit",
    "main",
    "train",
]

# Architecture name -> (builder of a fresh model, loader of the shipped weights `<name>.pt`).
ARCHS = {
    "planted_cnn": (build_planted_cnn, load_planted_cnn),
    "planted_resnet": (build_planted_resnet, load_planted_resnet),
    "planted_vit": (build_planted_vit, load_planted_vit),
    "planted_toys_cnn": (build_planted_toys_cnn, load_planted_toys_cnn),
}
# The world each architecture is trained and measured in: "insects" (scenes.py) or "toys" (toys.py).
WORLD_OF_ARCH = {
    "planted_cnn": "insects",
    "planted_resnet": "insects",
    "planted_vit": "insects",
    "planted_toys_cnn": "toys",
}
# How each model trains when not told otherwise: the CNNs with SGD (bf16 autocast), the ViT with
# AdamW in fp32 (on these CPUs bf16 was slower for it) and more epochs.
TRAINING = {
    "planted_cnn": {"optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4, "autocast": True, "epochs": 12},
    "planted_resnet": {"optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4, "autocast": True, "epochs": 12},
    "planted_vit": {"optimizer": "adamw", "lr": 2e-3, "weight_decay": 0.05, "autocast": False, "epochs": 15},
    # No crops (flips only): a crop of a kite scene often holds the sun or the cloud alone and
    # teaches "one of them -> kite", which the world is built not to say (docs/planted-benchmark.md).
    "planted_toys_cnn": {
        "optimizer": "sgd",
        "lr": 0.1,
        "weight_decay": 5e-4,
        "autocast": False,
        "epochs": 12,
        "crop_prob": 0.0,
        "crop_min_side": 1.0,
    },
}

BEE = CLASS_NAMES.index("bee")
# Offsets that keep the test set and the flower-test pairs apart from the training stream.
TEST_SEED_OFFSET = 10_000
PAIRS_SEED_OFFSET = 20_000
CROP_PROB = 0.8
CROP_MIN_SIDE = 0.25


def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray, predict=predict_proba) -> float:
    """Share of `images` classified as `labels`; `predict` is the world's `predict_proba`."""
    return float((predict(model, images).argmax(1) == labels).mean())


def flower_test(
    model: nn.Module,
    n: int = 300,
    seed: int = PAIRS_SEED_OFFSET,
    concept: str = "flower",
    workers: int = 1,
) -> dict:
    """Adds `concept` alone to `n` typical non-bee scenes and measures the bee probability.

    Returns mean bee probability without / with, their ratio, and how many predictions flip
    from another class to bee (`flipped` of `total`; `cut_off_flipped` of `cut_off_total` for
    the scenes whose insect is cut off by the border).
    """
    pairs = counterfactual_scenes(n, seed, concept=concept, classes=NON_BEE)
    without = draw_images([a for a, _ in pairs], workers)
    with_ = draw_images([b for _, b in pairs], workers)
    p0, p1 = predict_proba(model, without), predict_proba(model, with_)
    flipped = (p0.argmax(1) != BEE) & (p1.argmax(1) == BEE)
    cut = np.array([a.insect.cut_off for a, _ in pairs])
    b0, b1 = float(p0[:, BEE].mean()), float(p1[:, BEE].mean())
    return {
        "concept": concept,
        "total": n,
        "mean_bee_prob_without": b0,
        "mean_bee_prob_with": b1,
        "ratio": b1 / max(b0, 1e-12),
        "flipped": int(flipped.sum()),
        "cut_off_total": int(cut.sum()),
        "cut_off_flipped": int(flipped[cut].sum()),
        "share_bee_prob_up": float((p1[:, BEE] > p0[:, BEE]).mean()),
        "median_bee_prob_without": float(np.median(p0[:, BEE])),
        "median_bee_prob_with": float(np.median(p1[:, BEE])),
    }


def _pair_shift(model: nn.Module, concepts: Sequence[str], n: int, seed: int, workers: int = 1) -> dict:
    """Switches `concepts` on together in `n` typical non-bias toys scenes (the other bias concept
    held off, see `toys_data.counterfactual_scenes`) and measures P(BIAS_CLASS)."""
    bias = toys.CLASS_NAMES.index(toys.BIAS_CLASS)
    pairs = toys_data.counterfactual_scenes(n, seed, concepts)
    without = toys_data.draw_images([a for a, _ in pairs], workers)
    with_ = toys_data.draw_images([b for _, b in pairs], workers)
    p0, p1 = toys_model.predict_proba(model, without), toys_model.predict_proba(model, with_)
    flipped = (p0.argmax(1) != bias) & (p1.argmax(1) == bias)
    cut = np.array([a.cut_off for a, _ in pairs])
    b0, b1 = float(p0[:, bias].mean()), float(p1[:, bias].mean())
    return {
        "concepts": list(concepts),
        "held_off": [c for c in toys.BIAS_CONCEPTS if c not in concepts],
        "total": n,
        "mean_bias_prob_without": b0,
        "mean_bias_prob_with": b1,
        "shift": b1 - b0,
        "ratio": b1 / max(b0, 1e-12),
        "flipped": int(flipped.sum()),
        "cut_off_total": int(cut.sum()),
        "cut_off_flipped": int(flipped[cut].sum()),
        "share_bias_prob_up": float((p1[:, bias] > p0[:, bias]).mean()),
        "median_bias_prob_without": float(np.median(p0[:, bias])),
        "median_bias_prob_with": float(np.median(p1[:, bias])),
    }


def conjunction_test(model: nn.Module, n: int = 400, seed: int = PAIRS_SEED_OFFSET, workers: int = 1) -> dict:
    """The toys world's bias test on `n` typical non-bias scenes (the same scenes for every arm):
    mean P(BIAS_CLASS) without / with A alone, B alone, A and B together, and the control concept
    alone, each switched on a scene where the other bias concept is off. `interaction` is
    shift(A+B) - shift(A) - shift(B): what the pair does beyond its parts."""
    a, b = toys.BIAS_CONCEPTS
    arms = {
        "a": _pair_shift(model, (a,), n, seed, workers),
        "b": _pair_shift(model, (b,), n, seed, workers),
        "ab": _pair_shift(model, (a, b), n, seed, workers),
        "control": _pair_shift(model, (toys.CONTROL_CONCEPT,), n, seed, workers),
    }
    shifts = {k: v["shift"] for k, v in arms.items()}
    return {
        "bias_class": toys.BIAS_CLASS,
        "concepts": list(toys.BIAS_CONCEPTS),
        "control_concept": toys.CONTROL_CONCEPT,
        "classes": list(toys_data.NON_BIAS),
        "n_pairs": n,
        "seed": seed,
        "shift_a": shifts["a"],
        "shift_b": shifts["b"],
        "shift_ab": shifts["ab"],
        "shift_control": shifts["control"],
        "interaction": shifts["ab"] - shifts["a"] - shifts["b"],
        **arms,
    }


def _per_class_accuracy(
    model: nn.Module, images: np.ndarray, labels: np.ndarray, predict=predict_proba, classes=CLASS_NAMES
) -> dict:
    pred = predict(model, images).argmax(1)
    return {c: float((pred[labels == i] == i).mean()) for i, c in enumerate(classes)}


def _augment(
    x: torch.Tensor, gen: torch.Generator, crop_prob: float = CROP_PROB, crop_min_side: float = CROP_MIN_SIDE
) -> torch.Tensor:
    """Random horizontal flips and, for `CROP_PROB` of the batch, a random square crop of
    `CROP_MIN_SIDE`-100 % of the side resized back to full size (the usual random-resized crop).

    Crops make the patches that NeurFlow cuts at 50 % and 25 % look like inputs the model has
    seen. They also do what crops of real photos do: a crop of a bee-on-flower scene may hold
    only the flower and still carry the label bee, which is what lets flower detectors feed
    the bee neurons (with crops on half the batch only, the flower bias stayed spread thinly
    over the bee neurons themselves)."""
    n = x.shape[0]
    cropped = torch.rand(n, generator=gen) < crop_prob
    side = torch.where(
        cropped, crop_min_side + (1 - crop_min_side) * torch.rand(n, generator=gen), torch.ones(n)
    )
    sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = side * sign
    theta[:, 1, 1] = side
    theta[:, 0, 2] = (torch.rand(n, generator=gen) * 2 - 1) * (1 - side)
    theta[:, 1, 2] = (torch.rand(n, generator=gen) * 2 - 1) * (1 - side)
    grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    return nn.functional.grid_sample(x, grid, padding_mode="border", align_corners=False)


def _fit(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    optimizer: str = "sgd",
    weight_decay: float = 5e-4,
    autocast: bool = True,
    crop_prob: float = CROP_PROB,
    crop_min_side: float = CROP_MIN_SIDE,
    prep=preprocess,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    y = torch.from_numpy(labels)
    steps = epochs * math.ceil(len(images) / batch_size)
    if optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(
            model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay
        )
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(images), generator=gen)
        total, seen = 0.0, 0
        for i in range(0, len(images), batch_size):
            idx = order[i : i + batch_size]
            x = _augment(prep(images[idx.numpy()]), gen, crop_prob, crop_min_side)
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = nn.functional.cross_entropy(model(x), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        print(f"epoch {epoch + 1}/{epochs} loss {total / seen:.4f}", flush=True)


@dataclass(frozen=True)
class _World:
    """What training needs from a planted world: data, normalisation and the bias measurements."""

    classes: list[str]
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    preprocess: Callable
    predict: Callable
    make_dataset: Callable
    # (model, seed, n_test, n_pairs, workers) -> (fields after heldout_per_class, fields at the end)
    evaluate: Callable


def _evaluate_insects(model, seed: int, n_test: int, n_pairs: int, workers: int) -> tuple[dict, dict]:
    x_bal, y_bal = make_dataset(n_test, seed + TEST_SEED_OFFSET + 1, flower_prob=0.5, workers=workers)
    pairs_seed = seed + PAIRS_SEED_OFFSET
    bias = flower_test(model, n=n_pairs, seed=pairs_seed, workers=workers)
    control = flower_test(model, n=n_pairs // 2, seed=pairs_seed, concept="leaf", workers=workers)
    middle = {
        "balanced_flowers_per_class": _per_class_accuracy(model, x_bal, y_bal),
        "train_flower_prob": TRAIN_FLOWER_PROB,
    }
    return middle, {"bias": bias, "control_leaf": control}


def _evaluate_toys(model, seed: int, n_test: int, n_pairs: int, workers: int) -> tuple[dict, dict]:
    x_un, y_un = toys_data.make_dataset(n_test, seed + TEST_SEED_OFFSET + 1, workers=workers, bias=False)
    middle = {
        "unbiased_context_per_class": _per_class_accuracy(
            model, x_un, y_un, toys_model.predict_proba, toys.CLASS_NAMES
        ),
        "train_context_cells": {c: toys.context_cell_probs(c) for c in toys.CLASS_NAMES},
        "train_other_context_prob": toys.OTHER_CONTEXT_PROB,
        "cut_off_prob": toys.CUT_OFF_PROB,
    }
    bias = conjunction_test(model, n=n_pairs, seed=seed + PAIRS_SEED_OFFSET, workers=workers)
    return middle, {"bias": bias}


WORLDS = {
    "insects": _World(
        CLASS_NAMES, INPUT_SIZE, MEAN, STD, preprocess, predict_proba, make_dataset, _evaluate_insects
    ),
    "toys": _World(
        toys.CLASS_NAMES,
        toys.INPUT_SIZE,
        toys_model.MEAN,
        toys_model.STD,
        toys_model.preprocess,
        toys_model.predict_proba,
        toys_data.make_dataset,
        _evaluate_toys,
    ),
}


def train(
    out_dir: str | Path = WEIGHTS_DIR,
    seed: int = 0,
    *,
    n_train: int = 6000,
    n_test: int = 1000,
    n_pairs: int = 600,
    epochs: int | None = None,
    batch_size: int = 128,
    lr: float | None = None,
    workers: int = 2,
    threads: int = 2,
    arch: str = "planted_cnn",
    n_pairs_toys: int = 400,
) -> dict:
    """Trains `arch` (a key of `ARCHS`), evaluates it and writes `<arch>.pt` and its report
    `<arch>.json` (which records the weight file's sha256); returns the report.

    Seeds: training scenes use `seed`, the held-out set `seed + 10000` (and `+ 10001` for the
    variant with flowers in half of every class), the flower-test pairs `seed + 20000`. The toys
    world (`WORLD_OF_ARCH`) uses the same seeds: `+ 10001` is the variant without the planted bias,
    and its bias test (`conjunction_test`) runs on `n_pairs_toys` pairs.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown planted architecture {arch!r}; choose one of {sorted(ARCHS)}")
    build = ARCHS[arch][0]
    world = WORLDS[WORLD_OF_ARCH[arch]]
    toys_world = WORLD_OF_ARCH[arch] == "toys"
    if toys_world:
        n_pairs = n_pairs_toys
    recipe = dict(TRAINING[arch])
    epochs = epochs or recipe.pop("epochs")
    recipe.pop("epochs", None)
    lr = lr or recipe.pop("lr")
    recipe.pop("lr", None)
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    load_at_start = os.getloadavg()[0]
    t0 = time.perf_counter()
    x_train, y_train = world.make_dataset(n_train, seed, workers=workers)
    x_test, y_test = world.make_dataset(n_test, seed + TEST_SEED_OFFSET, workers=workers)
    t_data = time.perf_counter() - t0
    print(f"rendered {n_train} + {n_test} scenes in {t_data:.1f}s", flush=True)

    model = build().to(memory_format=torch.channels_last)
    _fit(
        model,
        x_train,
        y_train,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        prep=world.preprocess,
        **recipe,
    )
    t_fit = time.perf_counter() - t0 - t_data
    # Evaluate exactly what ships: weights rounded to fp16 and loaded back as fp32.
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    model = build()
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    model.eval()

    acc = accuracy(model, x_test, y_test, world.predict)
    middle, end = world.evaluate(model, seed, n_test, n_pairs, workers)
    report = {
        "arch": arch,
        **({} if WORLD_OF_ARCH[arch] == "insects" else {"world": WORLD_OF_ARCH[arch]}),
        "classes": world.classes,
        "input_size": world.input_size,
        "mean": list(world.mean),
        "std": list(world.std),
        "seed": seed,
        "n_train": n_train,
        "n_test": n_test,
        "epochs": epochs,
        "heldout_accuracy": acc,
        "heldout_per_class": _per_class_accuracy(model, x_test, y_test, world.predict, world.classes),
        **middle,
        "render_seconds": round(t_data, 1),
        "fit_seconds": round(t_fit, 1),
        "train_seconds": round(time.perf_counter() - t0, 1),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_avg_at_start": round(load_at_start, 2),
        **(
            {"recipe": {"lr": lr, "batch_size": batch_size, **recipe}}
            if WORLD_OF_ARCH[arch] == "toys"
            else {}
        ),
        **end,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{arch}.pt"
    torch.save(state, weights)
    report["params"] = sum(p.numel() for p in model.parameters())
    report["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    (out / f"{arch}.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="planted_cnn", choices=sorted(ARCHS), help="which model to train")
    parser.add_argument("--out", default=str(WEIGHTS_DIR), help="folder for the weights and report")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="default: the architecture's (TRAINING)")
    parser.add_argument("--n-train", type=int, default=6000)
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch CPU threads (use 1 when other jobs share the cores: 2 threads on 2 busy "
        "cores wait on each other and run several times slower)",
    )
    parser.add_argument("--workers", type=int, default=2, help="processes that render the scenes")
    args = parser.parse_args(argv)
    report = train(
        args.out,
        args.seed,
        epochs=args.epochs,
        n_train=args.n_train,
        threads=args.threads,
        arch=args.arch,
        workers=args.workers,
    )
    print(json.dumps({k: report[k] for k in ("heldout_accuracy", "train_seconds", "bias")}, indent=2))


if __name__ == "__main__":
    main()

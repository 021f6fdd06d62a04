"""Classes per hour: 8 separate `neurflow ingest` commands against one campaign, measured in one run.

Both benchmark models x their 4 classes (8 jobs) on a generated pool, written into a Neo4j that is
emptied before each variant:

  (a) 8 separate `neurflow ingest` processes, one after another;
  (b) `neurflow campaign run --engine local` (one process, one shared pass per model);
  (c) `neurflow campaign run --engine ray --workers W` (a local Ray with W CPUs).

It also times what the shared pass replaces: each class's own classification of its folder (what
every ingest does) against one batched pass per model over the whole pool.

    python benchmarks/campaign_speed.py [--images 6] [--k 20] [--steps 8] [--workers 2]

Uses the configured Neo4j (NEURFLOW_*) when it answers, else starts a temporary one. Run it alone.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from writer_throughput import neo4j_driver  # noqa: E402

MODELS = ("planted_cnn", "planted_resnet")
CLI = [sys.executable, "-c", "from ingest.cli import main; main()"]


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{done.stdout}\n{done.stderr}")
    return time.perf_counter() - started


def classification_seconds(pool: Path, classes: list[str]) -> tuple[float, float]:
    """(each class classifies its own folder, one shared pass per model), in seconds."""
    from ingest.core.circuit import classifier
    from ingest.core.models import load_model
    from ingest.core.patches import list_images, predict_images

    separate = shared = 0.0
    for name in MODELS:
        model = load_model(name)
        classify = classifier(model, 64)
        everything = []
        for cls in classes:
            files = list_images(pool / cls)
            everything += files
            t0 = time.perf_counter()
            predict_images(files, classify, model.input_size)
            separate += time.perf_counter() - t0
        t0 = time.perf_counter()
        predict_images(everything, classify, model.input_size, batch_size=64)
        shared += time.perf_counter() - t0
    return separate, shared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6, help="Images per class in the pool.")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--tau", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--max-images", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="CPUs of the local Ray in (c).")
    args = parser.parse_args()

    from ingest.planted.data import write_image_folder
    from ingest.planted.scenes import CLASS_NAMES

    classes = list(CLASS_NAMES)
    with tempfile.TemporaryDirectory(prefix="neurflow-campaign-bench-") as tmp, neo4j_driver() as driver:
        root = Path(tmp)
        pool = root / "pool"
        for name in classes:
            write_image_folder(pool / name, name, args.images, seed=11)
        extract = [
            "--k", str(args.k), "--tau", str(args.tau), "--steps", str(args.steps), "--quadrature",
            "gausslegendre", "--max-images", str(args.max_images), "--device", "cpu",
        ]  # fmt: skip
        spec = root / "bench.toml"
        spec.write_text(
            f'name = "bench"\n[pool]\nfolder = "{pool}"\n[extract]\ntau = "{args.tau}"\nk = {args.k}\n'
            f'steps = {args.steps}\nquadrature = "gausslegendre"\nmax_images = {args.max_images}\n'
            f'device = "cpu"\nlocal_patches = "{root / "patches"}"\n'
            + "".join(f'[[models]]\nmodel = "{m}"\n' for m in MODELS)
        )

        def clear() -> None:
            driver.execute_query("MATCH (n) DETACH DELETE n")

        clear()
        separate = 0.0
        for model in MODELS:
            for name in classes:
                where = ["--images", str(pool / name), "--local-patches", str(root / "patches")]
                separate += timed([*CLI, "ingest", "--model", model, "--class", name, *where, *extract])
        clear()
        local = timed([*CLI, "campaign", "run", str(spec), "--engine", "local"])
        clear()
        ray = timed([*CLI, "campaign", "run", str(spec), "--engine", "ray", "--workers", str(args.workers)])
        per_class, shared = classification_seconds(pool, classes)

    jobs = len(MODELS) * len(classes)
    print(
        f"{jobs} jobs (2 planted models x {len(classes)} classes, {args.images} images each; k {args.k}, "
        f"tau {args.tau}, {args.steps} Gauss-Legendre steps, max {args.max_images} images)"
    )
    print(f"{'variant':<40}{'seconds':>9}{'classes/hour':>14}{'x (a)':>8}")
    for label, seconds in (
        ("(a) 8 separate `neurflow ingest`", separate),
        ("(b) campaign --engine local", local),
        (f"(c) campaign --engine ray, {args.workers} workers", ray),
    ):
        print(f"{label:<40}{seconds:>9.1f}{jobs / seconds * 3600:>14.0f}{separate / seconds:>8.2f}")
    saved = per_class - shared
    print(
        f"classification: {per_class:.2f} s class by class, {shared:.2f} s in one shared pass per model; "
        f"the shared pass saves {saved:.2f} s = {saved / separate:.1%} of (a)"
    )


if __name__ == "__main__":
    main()

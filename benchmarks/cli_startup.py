"""Start-up time of the command line, next to a bare interpreter, measured in one run.

`neurflow --help`, `neurflow query --list` and a usage error should answer without loading the
method (torch, scipy, sklearn): the commands import them inside their bodies. For scale, the run also
times importing the core the way every command did before the layout change (`import
ingest.core.circuit`, which loads torch and torchvision).

    python benchmarks/cli_startup.py [--repeat 7] [--before DIR]

``--before DIR`` also times `neurflow --help` of another checkout (for example the commit before the
layout change, `git worktree add /tmp/before 2d8d2be`), in the same run.

Prints the median and the best wall time of each, in seconds, and the ratio to `python -c pass`.
Run it alone: two busy cores double every number.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = "from ingest.cli import main; main()"
CASES = [
    ("python -c pass", [sys.executable, "-c", "pass"]),
    ("neurflow --help", [sys.executable, "-c", CLI, "--help"]),
    ("neurflow --version", [sys.executable, "-c", CLI, "--version"]),
    ("neurflow query --list", [sys.executable, "-c", CLI, "query", "--list"]),
    ("usage error (-p limit=abc)", [sys.executable, "-c", CLI, "query", "top_paths", "-p", "limit=abc"]),
    ("import the core (torch)", [sys.executable, "-c", "import ingest.core.circuit"]),
]


def wall(command: list[str], cwd: Path = ROOT) -> float:
    """Seconds until `command` exits; run in `cwd`, whose packages come first on sys.path."""
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="Runs per case (after one warm-up run).")
    parser.add_argument("--before", type=Path, help="Another checkout whose `neurflow --help` to time too.")
    args = parser.parse_args()
    cases = [(name, command, ROOT) for name, command in CASES]
    if args.before:
        cases.append((f"neurflow --help ({args.before})", [sys.executable, "-c", CLI, "--help"], args.before))
    for _, command, cwd in cases:  # warm the file cache
        wall(command, cwd)
    times: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for _ in range(args.repeat):  # interleaved, so a busy moment hits every case alike
        for name, command, cwd in cases:
            times[name].append(wall(command, cwd))
    base = statistics.median(times["python -c pass"])
    print(f"{'case':<30} {'median s':>9} {'best s':>8} {'x python -c pass':>17}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<30} {median:>9.3f} {min(values):>8.3f} {median / base:>17.1f}")


if __name__ == "__main__":
    main()

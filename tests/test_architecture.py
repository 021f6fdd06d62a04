"""The layout is the architecture (docs/architecture.md): every import statement of the product, read
with `ast` (inside functions and TYPE_CHECKING blocks too), must respect the rooms' rules, and the
command line must answer --help, --list and usage errors without loading torch."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ingest", "graphmodel", "queries")
HEAVY = ("torch", "torchvision", "scipy", "sklearn", "matplotlib", "sympy", "captum")
PLANTED_MODELS = (
    "ingest.planted.model",
    "ingest.planted.resnet",
    "ingest.planted.vit",
    "ingest.planted.scenes",
    "ingest.planted.toys_model",
    "ingest.planted.toys",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, imported module) of every import statement; relative imports made absolute, and
    ``from pkg import name`` counted as ``pkg.name`` too (it may be a submodule)."""
    found: list[tuple[int, str]] = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base == "__future__":
                continue
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def _within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def rule_broken(module: str, imported: str) -> str | None:
    """Why `module` may not import `imported`, or None when it may."""
    top = imported.split(".")[0]
    if _within(module, "graphmodel"):
        if top in HEAVY or top in ("ingest", "queries", "click"):
            return "graphmodel imports neither torch nor ingest, queries or click"
        if module == "graphmodel.records" and top not in sys.stdlib_module_names:
            return "graphmodel.records (the Circuit contract) imports only the standard library"
        return None
    if _within(module, "queries"):
        if top in HEAVY or top in ("ingest", "click"):
            return "queries imports neither torch nor ingest or click"
        return None
    if not _within(module, "ingest"):
        return None
    if top == "click" and not _within(module, "ingest.cli"):
        return "only ingest.cli imports click"
    if _within(module, "ingest.core"):
        if _within(imported, "ingest.analysis", "ingest.labelling", "ingest.pipeline", "ingest.cli"):
            return "ingest.core imports nothing above it"
        if imported.startswith("ingest.planted.") and not _within(imported, *PLANTED_MODELS):
            return "ingest.core imports only the planted models (model, resnet, vit, scenes, toys*)"
        if top in ("graphmodel", "queries") and not _within(imported, "graphmodel.records"):
            return "ingest.core has no database code (it may use graphmodel.records, the Circuit contract)"
        return None
    if _within(module, *PLANTED_MODELS):
        if (
            _within(imported, "ingest")
            and imported != "ingest.planted"
            and not _within(imported, *PLANTED_MODELS)
        ):
            return "the planted models import nothing of ingest outside them"
        return None
    if _within(module, "ingest.planted"):
        if _within(imported, "ingest.analysis", "ingest.labelling", "ingest.pipeline", "ingest.cli"):
            return "the planted benchmark imports only the core"
        if top in ("graphmodel", "queries") and not _within(imported, "graphmodel.records"):
            return "the planted benchmark has no database code"
        return None
    if _within(module, "ingest.analysis"):
        if _within(imported, "ingest.labelling", "ingest.pipeline", "ingest.cli"):
            return "ingest.analysis imports only the core (and graphmodel, queries)"
        return None
    if _within(module, "ingest.labelling"):
        if _within(imported, "ingest.analysis", "ingest.pipeline", "ingest.cli"):
            return "ingest.labelling imports only the core (and graphmodel, queries)"
        return None
    if _within(module, "ingest.pipeline"):
        if _within(imported, "ingest.cli"):
            return "ingest.pipeline does not import the command line"
        return None
    return None


def product_modules() -> dict[str, tuple[Path, str]]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = (path, path.read_text())
    return found


def violations(modules: dict[str, tuple[Path, str]]) -> list[str]:
    """One line per import statement that breaks a rule."""
    out: dict[tuple[str, int], str] = {}
    for module, (path, source) in modules.items():
        where = str(path.relative_to(ROOT))
        for line, imported in imports_of(source, module, path.name == "__init__.py"):
            why = rule_broken(module, imported)
            if why and (where, line) not in out:
                out[(where, line)] = f"{where}:{line}: imports {imported}: {why}"
    return [out[key] for key in sorted(out)]


def import_cycles(modules: dict[str, tuple[Path, str]]) -> list[list[str]]:
    """Cycles among the product's modules (a package's own __init__ importing its children is not a
    cycle: Python loads the package first)."""
    graph: dict[str, set[str]] = {}
    for module, (path, source) in modules.items():
        targets = {name for _, name in imports_of(source, module, path.name == "__init__.py")}
        graph[module] = {
            t for t in targets if t in modules and t != module and not module.startswith(t + ".")
        }
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_every_import_follows_the_rooms_rules():
    modules = product_modules()
    assert len(modules) > 60, "the product's modules were not found"
    assert violations(modules) == []


def test_no_module_import_cycles():
    assert import_cycles(product_modules()) == []


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("ingest.core.circuit", "import click", "only ingest.cli imports click"),
        ("ingest.core.circuit", "from graphmodel.writer import write_layer", "no database code"),
        ("ingest.core.circuit", "from ..analysis import audit", "imports nothing above it"),
        ("ingest.core.layers", "from ingest.planted.data import write_image_folder", "planted models"),
        ("ingest.analysis.audit", "def f():\n    from ingest.cli.options import build_run", "only the core"),
        ("ingest.labelling.clip", "from ingest.pipeline.patch_stores import patch_fetcher", "only the core"),
        ("graphmodel.stack.guide_server", "from queries import browser", "neither torch nor ingest"),
        ("graphmodel.writer", "import torch", "neither torch"),
        ("graphmodel.records", "import numpy", "only the standard library"),
        ("queries.runner", "from ingest.core.models import load_model", "neither torch nor ingest"),
        ("ingest.planted.model", "from ingest.core.patches import crop_boxes", "nothing of ingest"),
        ("ingest.pipeline.output", "from ingest.cli.app import main", "does not import the command line"),
    ],
)
def test_a_forbidden_import_is_caught(module, source, expected):
    path = ROOT / (module.replace(".", "/") + ".py")
    found = violations({module: (path, textwrap.dedent(source))})
    assert len(found) == 1 and expected in found[0], found


def test_an_import_cycle_is_caught():
    modules = {
        "ingest.core.a": (ROOT / "ingest/core/a.py", "from ingest.core import b"),
        "ingest.core.b": (ROOT / "ingest/core/b.py", "def f():\n    import ingest.core.a"),
    }
    assert import_cycles(modules) == [["ingest.core.a", "ingest.core.b", "ingest.core.a"]]


# ---------------------------------------------------------------------------------- start-up

_PROBE = """
import sys
from ingest.cli import main
try:
    main(sys.argv[1:], prog_name="neurflow")
except SystemExit as exc:
    code = exc.code
print("HEAVY=" + ",".join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
print(f"EXIT={{code}}", file=sys.stderr)
"""


def run_cli_probe(*args: str, env_extra: dict | None = None) -> tuple[int, str, set[str]]:
    import os

    env = {**os.environ, **(env_extra or {})}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    tail = done.stderr.strip().splitlines()
    heavy = set(filter(None, tail[-2].removeprefix("HEAVY=").split(",")))
    code = tail[-1].removeprefix("EXIT=")
    return (0 if code in ("None", "0") else int(code)), done.stdout + done.stderr, heavy


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["--help"], 0, "neurflow demo"),
        (["--version"], 0, "version"),
        (["query", "--list"], 0, "top_paths"),
        (["extract", "--help"], 0, "--tau"),
        (["query", "top_paths", "-p", "limit=abc"], 2, "limit"),
        (
            ["extract", "--model", "resnet50", "--images", ".", "--class", "1", "--out", "x", "--tau", "abc"],
            2,
            "--tau",
        ),
        (["extract", "--model", "resnet50"], 2, "Missing option"),
        (["debug", "--rank-by", "nope", "x.png"], 2, "rank-by"),
        (["nonsense"], 2, "No such command"),
    ],
)
def test_help_listing_and_usage_errors_do_not_load_torch(args, code, says):
    exit_code, output, heavy = run_cli_probe(*args)
    assert exit_code == code, output
    assert says in output, output
    assert heavy == set(), f"`neurflow {' '.join(args)}` imported {sorted(heavy)}"


def test_stack_status_does_not_load_torch(tmp_path):
    env = {
        "NEURFLOW_STATE_DIR": str(tmp_path / "state"),
        "NEURFLOW_NEO4J_URI": "bolt://127.0.0.1:9",
        "NEURFLOW_S3_ENDPOINT": "http://127.0.0.1:9",
        "NEURFLOW_BROWSER_PORT": "9",
    }
    exit_code, output, heavy = run_cli_probe("stack", "status", env_extra=env)
    assert exit_code == 3, output  # nothing runs there
    assert heavy == set(), f"`neurflow stack status` imported {sorted(heavy)}"

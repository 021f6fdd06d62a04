"""A campaign spec: which models, which image pool, which classes, with which parameters, and what
to run after each class. TOML, read into plain dataclasses; every problem is one CampaignSpecError
naming the key and what to write instead. Paths are relative to the spec file.

    name = "planted"               # optional (default: the file's name)
    classes = "all"                # "all", a list of names or indices, or ranges "0-9,15"
    engine = "local"               # local | ray      (what runs the jobs; overridable on the CLI)
    address = ""                   # ray: an existing cluster (default: start a local one)
    retries = 2                    # attempts after the first, per job

    [pool]
    folder = "images"              # one folder per class, or a flat folder with `labels`
    labels = "labels.csv"          # optional: file,class rows

    [extract]                      # the options of `neurflow ingest`
    tau = "16"
    k = 50
    steps = 50
    quadrature = "riemann_right"
    ranking = "paper"
    max_images = 50
    memory_mb = 2048
    seed = 0
    device = "auto"
    local_patches = ""             # a folder for patch images (default: as `neurflow ingest`)

    [[models]]
    model = "planted_cnn"          # as --model: torchvision name, planted_cnn, pkg.mod:factory
    weights = "..."                # optional
    sidecar = "..."                # optional (default: <weights>.json)
    layers = ["fc", "block4"]      # optional (default: the shipped list)
    classes = [...]                # optional: this model's own selection

    [after.label]                  # optional: concept-bank labels after each class
    concepts = "banks/{class}"     # a bank, or one per class: {class} is each class's name
    top = 3
    min_score = 0.5
    rank_by = "effect"             # or "score", as `neurflow label --rank-by`
    spatial = true                 # IoU labels too, from a bank with masks (as `neurflow label`)

    [after.audit]                  # optional: the bias audit of each class (labels needed without pairs)
    expected = ["stripes", "wings"]
    pairs = "pairs"                # and/or negatives = "other_classes"
    min_score = 0.8
    max_rank = 2
    random_sets = 10
    seed = 0
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ingest.core.tau import parse_tau

ENGINES = ("local", "ray")
TOP_KEYS = ("name", "classes", "engine", "address", "retries", "pool", "extract", "models", "after")
POOL_KEYS = ("folder", "labels")
MODEL_KEYS = ("model", "weights", "sidecar", "layers", "classes")
LABEL_KEYS = ("concepts", "top", "min_score", "rank_by", "spatial")
RANK_BY = ("effect", "score")
AUDIT_KEYS = (
    "expected",
    "pairs",
    "negatives",
    "class_images",
    "min_score",
    "max_rank",
    "random_sets",
    "seed",
)
EXTRACT_KEYS = {
    # key: (type, low, high)
    "tau": (str, None, None),
    "k": (int, 1, None),
    "steps": (int, 1, 10_000),
    "quadrature": (str, None, None),
    "ranking": (str, None, None),
    "max_images": (int, 0, None),
    "memory_mb": (float, 64.0, None),
    "seed": (int, 0, 2**32 - 1),
    "device": (str, None, None),
    "local_patches": (str, None, None),
}
CHOICES = {"quadrature": ("riemann_right", "gausslegendre"), "ranking": ("paper", "reference")}


class CampaignSpecError(ValueError):
    """A spec that cannot be run; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class ModelSpec:
    model: str
    weights: str | None = None
    sidecar: str | None = None
    layers: tuple[str, ...] | None = None
    classes: Any = None

    @property
    def label(self) -> str:
        """How jobs name the model: its --model, and the weights file when there is one."""
        return self.model if not self.weights else f"{self.model}[{Path(self.weights).name}]"


@dataclass(frozen=True)
class LabelStep:
    concepts: str
    top: int = 3
    min_score: float = 0.5
    rank_by: str = "effect"
    spatial: bool = True


@dataclass(frozen=True)
class AuditStep:
    expected: tuple[str, ...] = ()
    pairs: str | None = None
    negatives: str | None = None
    class_images: str | None = None
    min_score: float = 0.8
    max_rank: int = 2
    random_sets: int = 10
    seed: int = 0


@dataclass
class CampaignSpec:
    name: str
    path: Path
    models: list[ModelSpec]
    pool_folder: Path
    pool_labels: Path | None
    classes: Any = "all"
    extract: dict[str, Any] = field(default_factory=dict)
    label: LabelStep | None = None
    audit: AuditStep | None = None
    engine: str = "local"
    address: str | None = None
    retries: int = 2

    def identity(self) -> dict[str, Any]:
        """What the campaign computes (not how): the basis of its id."""
        return {
            "models": [asdict(m) for m in self.models],
            "pool": [str(self.pool_folder), str(self.pool_labels) if self.pool_labels else None],
            "classes": self.classes,
            "extract": self.extract,
            "label": asdict(self.label) if self.label else None,
            "audit": asdict(self.audit) if self.audit else None,
        }

    @property
    def campaign_id(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]


def _unknown(where: str, got: dict, allowed) -> None:
    extra = sorted(set(got) - set(allowed))
    if extra:
        close = difflib.get_close_matches(extra[0], list(allowed), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise CampaignSpecError(f"{where}: unknown key {extra[0]!r}{hint}; the keys are {', '.join(allowed)}")


def _choice(where: str, key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise CampaignSpecError(f"{where}: {key} = {value!r}; choose one of {', '.join(choices)}")
    return value


def _flag(where: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise CampaignSpecError(f"{where}: {key} = {value!r} must be true or false")
    return value


def _number(where: str, key: str, value: Any, kind: type, low, high):
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (kind is int and not isinstance(value, int))
    ):
        raise CampaignSpecError(
            f"{where}: {key} = {value!r} must be {'a whole number' if kind is int else 'a number'}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise CampaignSpecError(f"{where}: {key} = {value!r} must be finite")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        raise CampaignSpecError(f"{where}: {key} = {value!r} is out of range; it must be {bounds}")
    return kind(value)


def _path(base: Path, text: Any, where: str, key: str, *, must_exist: bool = True) -> Path:
    if not isinstance(text, str) or not text:
        raise CampaignSpecError(f"{where}: {key} must be a path (text)")
    path = (base / text).expanduser().resolve()
    if must_exist and not path.exists():
        raise CampaignSpecError(f"{where}: {key} = {text!r}: {path} does not exist")
    return path


CLASS_PLACEHOLDER = "{class}"


def _bank_path(base: Path, text: Any, where: str) -> str:
    """The label step's bank. `{class}` in it stands for each class's name, so every class is labelled
    with its own in-class bank (docs/labelling.md); then the folder above must exist here, and each
    class's bank is checked when the campaign is planned (`bank_for`)."""
    if not isinstance(text, str) or CLASS_PLACEHOLDER not in text:
        return str(_path(base, text, where, "concepts"))
    parent = text.split(CLASS_PLACEHOLDER, 1)[0]
    _path(base, parent or ".", where, f"the folder above {CLASS_PLACEHOLDER} in concepts")
    return str((base / text).expanduser().resolve())


def bank_for(concepts: str, class_name: str | None, class_index: int) -> str:
    """The bank folder of one class: `concepts` with `{class}` replaced by the class's name (its index
    when it has none)."""
    return concepts.replace(CLASS_PLACEHOLDER, class_name or str(class_index))


def _extract(where: str, table: dict) -> dict[str, Any]:
    _unknown(where, table, EXTRACT_KEYS)
    out: dict[str, Any] = {}
    for key, value in table.items():
        kind, low, high = EXTRACT_KEYS[key]
        if kind is str:
            if not isinstance(value, str | int):
                raise CampaignSpecError(f"{where}: {key} = {value!r} must be text")
            value = str(value)
            if key == "tau":
                try:
                    parse_tau(value)
                except ValueError as exc:
                    raise CampaignSpecError(f"{where}: {exc}") from None
            out[key] = _choice(where, key, value, CHOICES[key]) if key in CHOICES else value
        else:
            out[key] = _number(where, key, value, kind, low, high)
    return out


def _audit(base: Path, at: str, table: dict) -> AuditStep:
    _unknown(at, table, AUDIT_KEYS)
    expected = table.get("expected", [])
    if not isinstance(expected, list) or not all(isinstance(e, str) for e in expected):
        raise CampaignSpecError(f"{at}: expected must be a list of concept names")
    paths = {
        k: str(_path(base, table[k], at, k)) for k in ("pairs", "negatives", "class_images") if table.get(k)
    }
    if "pairs" not in paths and "negatives" not in paths:
        raise CampaignSpecError(f"{at}: give pairs and/or negatives: the audit measures bias on them")
    return AuditStep(
        expected=tuple(expected),
        **paths,
        min_score=_number(at, "min_score", table.get("min_score", 0.8), float, 0.0, 1.0),
        max_rank=_number(at, "max_rank", table.get("max_rank", 2), int, 1, None),
        random_sets=_number(at, "random_sets", table.get("random_sets", 10), int, 1, None),
        seed=_number(at, "seed", table.get("seed", 0), int, 0, 2**32 - 1),
    )


def _resolved(extract: dict[str, Any], base: Path) -> dict[str, Any]:
    if extract.get("local_patches"):
        extract["local_patches"] = str((base / extract["local_patches"]).expanduser().resolve())
    return extract


def load_spec(path: str | Path) -> CampaignSpec:
    """Read and check a campaign spec (TOML)."""
    path = Path(path).expanduser().resolve()
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise CampaignSpecError(f"cannot read the campaign spec {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CampaignSpecError(f"{path} is not valid TOML: {exc}") from None
    base, where = path.parent, str(path)
    _unknown(where, data, TOP_KEYS)
    pool = data.get("pool")
    if not isinstance(pool, dict) or "folder" not in pool:
        raise CampaignSpecError(f'{where}: a [pool] table with folder = "..." is needed')
    _unknown(f"{where} [pool]", pool, POOL_KEYS)
    models = data.get("models")
    if not isinstance(models, list) or not models:
        raise CampaignSpecError(f'{where}: at least one [[models]] table with model = "..." is needed')
    parsed: list[ModelSpec] = []
    for number, entry in enumerate(models, start=1):
        at = f"{where} [[models]] #{number}"
        if not isinstance(entry, dict) or not isinstance(entry.get("model"), str):
            raise CampaignSpecError(f'{at}: model = "..." is needed (as `neurflow ingest --model`)')
        _unknown(at, entry, MODEL_KEYS)
        layers = entry.get("layers")
        if layers is not None and (
            not isinstance(layers, list) or not all(isinstance(x, str) for x in layers)
        ):
            raise CampaignSpecError(f"{at}: layers must be a list of layer names")
        parsed.append(
            ModelSpec(
                model=entry["model"],
                weights=str(_path(base, entry["weights"], at, "weights")) if entry.get("weights") else None,
                sidecar=str(_path(base, entry["sidecar"], at, "sidecar")) if entry.get("sidecar") else None,
                layers=tuple(layers) if layers else None,
                classes=entry.get("classes"),
            )
        )
    labels = None
    after = data.get("after") or {}
    _unknown(f"{where} [after]", after, ("label", "audit"))
    if "label" in after:
        table = after["label"]
        at = f"{where} [after.label]"
        _unknown(at, table, LABEL_KEYS)
        labels = LabelStep(
            concepts=_bank_path(base, table.get("concepts"), at),
            top=_number(at, "top", table.get("top", 3), int, 1, None),
            min_score=_number(at, "min_score", table.get("min_score", 0.5), float, 0.0, 1.0),
            rank_by=_choice(at, "rank_by", table.get("rank_by", "effect"), RANK_BY),
            spatial=_flag(at, "spatial", table.get("spatial", True)),
        )
    audit = _audit(base, f"{where} [after.audit]", after["audit"]) if "audit" in after else None
    if audit is not None and labels is None and not audit.pairs:
        raise CampaignSpecError(
            f"{where}: [after.audit] without pairs needs labels: add [after.label] (the label-based audit "
            "ranks labelled groups), or give pairs (the causal audit ranks concepts by their pairs)"
        )
    engine = data.get("engine", "local")
    if engine not in ENGINES:
        raise CampaignSpecError(f"{where}: engine = {engine!r}; choose one of {', '.join(ENGINES)}")
    return CampaignSpec(
        name=str(data.get("name") or path.stem),
        path=path,
        models=parsed,
        pool_folder=_path(base, pool["folder"], f"{where} [pool]", "folder"),
        pool_labels=_path(base, pool["labels"], f"{where} [pool]", "labels") if pool.get("labels") else None,
        classes=data.get("classes", "all"),
        extract=_resolved(_extract(f"{where} [extract]", data.get("extract") or {}), base),
        label=labels,
        audit=audit,
        engine=engine,
        address=data.get("address") or None,
        retries=_number(where, "retries", data.get("retries", 2), int, 0, 20),
    )

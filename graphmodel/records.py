"""The `Circuit`: plain, JSON-serialisable records handed from the compute core to the graph store.

No torch, no database code: the core builds these, the writer stores them, the reader rebuilds them.
Every run-scoped id starts with the run id, so records from different runs never collide.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


class CircuitFileError(ValueError):
    """A saved circuit that cannot be read or written; the message says which file and why."""


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, then rename it over
    ``path``: readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@dataclass
class PatchRecord:
    """One crop of a source image, resized to the model's input size."""

    patch_id: str  # sha256 of the resized patch's RGB bytes (content address)
    source_image: str  # path relative to the image folder
    box: list[int]  # [x0, y0, x1, y1] in source-image pixels
    scale: float  # crop side as a fraction of the image's shorter side (1.0, 0.5, 0.25)
    concepts: list[str] = field(default_factory=list)  # ground truth, when the folder ships it


@dataclass
class LayerRecord:
    name: str
    depth: int  # 0 = the output layer, counting down the listed layers
    width: int  # channels (conv) or units (linear)
    kind: str  # "conv" ([C, H, W] maps), "tokens" (a transformer's [D, T]) or "linear" ([C] units)


@dataclass
class NeuronRecord:
    """A neuron of the circuit at one layer: its concept (top-k patches) and how its children were chosen."""

    layer: str
    index: int
    concept: list[str]  # patch ids of V_a, best first
    activations: list[float]  # activation of each concept patch, same order
    max_activation: float  # max of the neuron's activation over the whole patch set D
    selection_rule: str | None = None  # how its core concept neurons were selected (None: lowest layer)
    children: list[int] = field(default_factory=list)  # core concept neurons S_a at the layer below


@dataclass
class SemanticGroupRecord:
    sg_id: str
    layer: str
    neuron: int
    j: int
    patch_ids: list[str]
    activations: list[float]
    centroid: list[float]  # mean representative vector (layer-below channel means) of its patches
    silhouette: float  # silhouette score of the clustering that produced it


@dataclass
class HyperedgeRecord:
    """Child neuron -> one semantic group of its parent (Eq. 4)."""

    child_layer: str
    child: int
    sg_id: str
    weight: float  # w(a, s_i, V_{a,j})
    score: float  # T(a, s_i, V_{a,j}) before normalisation


@dataclass
class CoreEdgeRecord:
    """Child neuron -> parent neuron in the neuron circuit, scored over the whole concept V_a."""

    child_layer: str
    child: int
    parent_layer: str
    parent: int
    rank: int  # 1 = most important
    weight: float  # T(a, s_i, V_a) / sum over S_a of |T|
    score: float  # T(a, s_i, V_a) (or the reference variant's mean |t|)


@dataclass
class NeuronGroupRecord:
    ng_id: str
    layer: str
    members: list[int]  # neuron indices (a neuron may sit in several groups, one per semantic group)
    sg_ids: list[str]
    patch_ids: list[str]  # union of its semantic groups' patches
    centroid: list[float]
    core_members: list[int]  # the <= 5 members nearest the centre, used by the metric M (App. F)


@dataclass
class GroupEdgeRecord:
    child: str  # ng_id at the lower layer
    parent: str  # ng_id at the upper layer
    weight: float  # W(G_child, G_parent)
    edges: int  # number of hyperedges summed into W


def class_feed_weights(
    top_neurons: list[NeuronRecord], top_groups: list[NeuronGroupRecord]
) -> dict[str, float]:
    """W of each top-layer neuron group into the class (FEEDS -> Class): the share of the top layer's
    concept patches that the group covers. The one definition the writer, the report and debug use."""
    concept_size = sum(len(n.concept) for n in top_neurons) or 1
    return {g.ng_id: len(g.patch_ids) / concept_size for g in top_groups}


@dataclass
class LabelRecord:
    """A concept label of a semantic group or neuron group: LABELED {score, method, rank} -> Concept."""

    group_id: str  # ng_id or sg_id
    concept: str
    score: float  # method-specific: ROC AUC for the concept bank, 1.0 for a manual label
    method: str  # "concept_bank", "manual", "mllm", "clip", "spatial_iou"
    rank: int = 1  # 1 = the group's best label under this method
    details: dict[str, Any] = field(default_factory=dict)  # e.g. positives/negatives counted


@dataclass
class LayerStep:
    """Everything one finished layer adds to a circuit: the unit the core streams and the writer stores."""

    layer: LayerRecord
    neurons: list[NeuronRecord]
    semantic_groups: list[SemanticGroupRecord]
    hyperedges: list[HyperedgeRecord]  # into this layer's semantic groups, from the layer below
    core_edges: list[CoreEdgeRecord]  # from the layer below into this layer's neurons
    neuron_groups: list[NeuronGroupRecord]
    group_edges: list[GroupEdgeRecord]  # from this layer's groups into the groups of the layer above
    seconds: float = 0.0
    pairs: int = 0


@dataclass
class Circuit:
    run_id: str
    model_id: str
    arch: str
    weights_sha256: str | None
    input_size: int
    num_classes: int
    class_index: int
    class_name: str | None
    params: dict[str, Any]  # tau, k, steps, quadrature, ranking, crops, seed, layers, code_version ...
    layers: list[LayerRecord] = field(default_factory=list)
    patches: list[PatchRecord] = field(default_factory=list)
    neurons: list[NeuronRecord] = field(default_factory=list)
    semantic_groups: list[SemanticGroupRecord] = field(default_factory=list)
    hyperedges: list[HyperedgeRecord] = field(default_factory=list)
    core_edges: list[CoreEdgeRecord] = field(default_factory=list)
    neuron_groups: list[NeuronGroupRecord] = field(default_factory=list)
    group_edges: list[GroupEdgeRecord] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)  # timings, purity tables, counts
    # Where the run's inputs came from (model spec, weights and image folder paths): lets later
    # commands (label, audit, evaluate) rebuild the patch set. Not part of the run id.
    source: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Circuit:
        version = data.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise CircuitFileError(
                f"circuit schema version {version} is not supported (expected {SCHEMA_VERSION}); "
                "re-extract the circuit with this version of neurflow"
            )
        nested = {
            "layers": LayerRecord,
            "patches": PatchRecord,
            "neurons": NeuronRecord,
            "semantic_groups": SemanticGroupRecord,
            "hyperedges": HyperedgeRecord,
            "core_edges": CoreEdgeRecord,
            "neuron_groups": NeuronGroupRecord,
            "group_edges": GroupEdgeRecord,
        }
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            if f.name in nested:
                value = [nested[f.name](**item) for item in value]
            kwargs[f.name] = value
        return cls(**kwargs)

    def save(self, path: str | Path) -> None:
        """Write atomically: a full disk or a crash leaves the previous file as it was, never a
        truncated one. NaN or infinity anywhere is refused (it would not be valid JSON)."""
        path = Path(path)
        try:
            text = json.dumps(self.to_dict(), indent=1, allow_nan=False)
        except ValueError as exc:
            raise CircuitFileError(f"the circuit of run {self.run_id} holds NaN or infinity: {exc}") from exc
        write_atomically(path, text.encode())

    @classmethod
    def load(cls, path: str | Path) -> Circuit:
        """Read a saved circuit.json; any problem with the file is one CircuitFileError saying what."""
        path = Path(path)
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
        except OSError as exc:
            raise CircuitFileError(f"cannot read the circuit {path}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError:
            raise CircuitFileError(f"{path} is not a circuit.json: it is not text (binary data?)") from None
        except ValueError as exc:
            empty = "it is empty" if not path.stat().st_size else f"invalid JSON ({exc})"
            raise CircuitFileError(
                f"{path} is not a readable circuit.json: {empty}; was it cut short? Extract it again"
            ) from None
        if not isinstance(data, dict):
            raise CircuitFileError(f"{path} is not a circuit.json: it holds a JSON {type(data).__name__}")
        try:
            return cls.from_dict(data)
        except CircuitFileError as exc:
            raise CircuitFileError(f"{path}: {exc}") from None
        except (TypeError, KeyError, AttributeError) as exc:
            raise CircuitFileError(
                f"{path} is not a complete circuit.json ({type(exc).__name__}: {exc}); extract it again"
            ) from None

    def add_step(self, step: LayerStep) -> None:
        self.layers.append(step.layer)
        self.neurons += step.neurons
        self.semantic_groups += step.semantic_groups
        self.hyperedges += step.hyperedges
        self.core_edges += step.core_edges
        self.neuron_groups += step.neuron_groups
        self.group_edges += step.group_edges

    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def neurons_at(self, layer: str) -> list[NeuronRecord]:
        return [n for n in self.neurons if n.layer == layer]

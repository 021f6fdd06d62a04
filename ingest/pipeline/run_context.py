"""Re-open a stored (or saved) circuit for the commands that work on it after extraction: labelling,
auditing, evaluating, debugging. They need the model and, often, the exact patch set D again.

The Run remembers where its inputs came from (`Circuit.source`: the model argument, the weights
file, the image folder). Any of them can be overridden (files moved, another machine); what is
loaded is then checked against the run: the model must have the run's model id, and the patch set
rebuilt from the images must give the run's id (same images, same parameters), so a number computed
later is always about the circuit it claims to be about.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from graphmodel.records import Circuit
from ingest.core.circuit import ExtractConfig, prepare_run
from ingest.core.layers import LayerCuts
from ingest.core.models import LoadedModel, load_model
from ingest.core.patches import DEFAULT_SCALES, PatchSet
from ingest.core.tau import parse_tau


class RunSourceError(ValueError):
    """The run's model or images cannot be found or do not match the run."""


@dataclass
class OpenedRun:
    circuit: Circuit
    model: LoadedModel
    cuts: LayerCuts
    config: ExtractConfig
    patches: PatchSet | None  # None unless asked for

    @property
    def images(self) -> str:
        return self.circuit.source["images"]


def config_from_params(params: dict) -> ExtractConfig:
    """The extraction settings a run recorded (Run.params_json), as an `ExtractConfig`."""
    return ExtractConfig(
        layers=list(params["layers"]),
        tau=parse_tau(params.get("tau", "16")),
        k=int(params.get("k", 50)),
        steps=int(params.get("steps", 50)),
        quadrature=params.get("quadrature", "riemann_right"),
        ranking=params.get("ranking", "paper"),
        scales=tuple(params.get("crops") or DEFAULT_SCALES),
        max_images=params.get("max_images"),
        max_semantic_groups=int(params.get("max_semantic_groups", 5)),
        max_neuron_groups=int(params.get("max_neuron_groups", 8)),
        seed=int(params.get("seed", 0)),
        precision=params.get("precision", "fp32"),
    )


def open_run(
    circuit: Circuit,
    *,
    model: str | None = None,
    weights: str | None = None,
    images: str | None = None,
    device: str = "cpu",
    with_patches: bool = True,
) -> OpenedRun:
    """Load the run's model (and rebuild its patch set), checking both against the run."""
    source = dict(circuit.source)
    spec = model or source.get("model")
    if not spec:
        raise RunSourceError(
            f"run {circuit.run_id} does not record its model (ingested before sources were stored); "
            "pass --model (and --weights)"
        )
    weights_path = weights or (source.get("weights") if not model else None)
    if weights_path and not Path(weights_path).is_file():
        raise RunSourceError(
            f"the weights file of run {circuit.run_id}, {weights_path}, does not exist; "
            "pass --weights with its new location"
        )
    loaded = load_model(spec, weights_path, device=device, seed=int(circuit.params.get("seed", 0)))
    if loaded.model_id != circuit.model_id:
        raise RunSourceError(
            f"the model loaded from {spec!r}{f' with {weights_path}' if weights_path else ''} is "
            f"{loaded.model_id}, but run {circuit.run_id} explains {circuit.model_id}; pass the run's "
            "model and weights with --model / --weights"
        )
    cfg = config_from_params(circuit.params)
    folder = images or source.get("images")
    source.update(model=spec, weights=weights_path, images=folder)
    circuit.source = source
    if not with_patches:
        return OpenedRun(circuit, loaded, LayerCuts(loaded.module, cfg.layers, loaded.input_size), cfg, None)
    if not folder or not Path(folder).is_dir():
        raise RunSourceError(
            f"the image folder of run {circuit.run_id}, {folder!r}, does not exist; pass --images "
            "with the folder the run was extracted from"
        )
    prepared = prepare_run(loaded, folder, circuit.class_index, cfg)
    rebuilt = [r.patch_id for r in prepared.patches.records]
    if rebuilt != [p.patch_id for p in circuit.patches]:
        raise RunSourceError(
            f"the images in {folder} do not rebuild run {circuit.run_id}'s patch set ({len(rebuilt)} "
            f"patches, {len(set(rebuilt) & {p.patch_id for p in circuit.patches})} of the run's "
            f"{len(circuit.patches)}); pass --images with the folder the run was extracted from"
        )
    return OpenedRun(circuit, loaded, prepared.cuts, cfg, prepared.patches)

"""A run labelled from one concept bank: the image-level labels and, when every bank image carries its
masks, the spatial ones. `neurflow label` and a campaign's label step both call this, so a circuit
labelled in a campaign carries the same labels as one labelled by hand."""

from __future__ import annotations

from graphmodel.records import Circuit, LabelRecord
from ingest.core.circuit import ProgressFactory
from ingest.core.layers import LayerCuts
from ingest.core.models import LoadedModel
from ingest.labelling.concept_bank import METHOD, ConceptBank, bank_activations, label_circuit
from ingest.labelling.spatial import METHOD as SPATIAL
from ingest.labelling.spatial import spatial_labels


def bank_labels(
    model: LoadedModel,
    cuts: LayerCuts,
    circuit: Circuit,
    bank: ConceptBank,
    *,
    top: int = 3,
    min_score: float = 0.5,
    rank_by: str = "effect",
    semantic_groups: bool = True,
    spatial: bool = True,
    progress: ProgressFactory | None = None,
) -> dict[str, list[LabelRecord]]:
    """method -> labels. The bank goes through the model once; `concept_bank` labels every group
    (`label_circuit`), `spatial_iou` is there when `spatial` and the bank has masks on every image.
    `progress(desc, total)` gives a bar per pass."""
    acts = bank_activations(model, cuts, bank, progress=progress)
    out = {
        METHOD: label_circuit(
            circuit,
            acts,
            bank,
            cuts.representative_keys(),
            top=top,
            min_score=min_score,
            semantic_groups=semantic_groups,
            rank_by=rank_by,
        )
    }
    if spatial and bank.coverage is not None:
        out[SPATIAL] = spatial_labels(model, cuts, circuit, bank, acts, top=top, progress=progress)
    return out

"""CLIP-style labels: how similar a group's exemplar patches are to the concepts of a vocabulary.

An optional labeller (SPEC §3 Labelling, method 4). It needs the optional extra ``open_clip_torch``
(``pip install 'neurflow-graph[clip]'``) and CLIP weights the user already has in a local file; it never
downloads anything (no hub names, no pretrained tags, and the Hugging Face hub is put offline before
open_clip is imported).

For each group: embed its exemplar patches (up to N) with the image tower, average the normalised
embeddings and normalise the mean; embed every vocabulary concept with the text tower, averaged over a
few prompt templates ("a photo of {}." ...); the cosine of the two is the group's similarity to the
concept. The stored score is the softmax probability over the vocabulary at the model's own
temperature, ``softmax(logit_scale * cos)``, exactly as CLIP turns similarities into zero-shot class
probabilities; `details` keep the cosine, the vocabulary size and the number of exemplars.
"""

from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

METHOD = "clip"
DEFAULT_TEMPLATES = (
    "a photo of {}.",
    "a close-up photo of {}.",
    "a cropped photo of {}.",
    "a low resolution photo of {}.",
    "a blurry photo of {}.",
)
INSTALL_HINT = "pip install open_clip_torch  (or pip install 'neurflow-graph[clip]')"


class ClipError(RuntimeError):
    """A CLIP labelling problem the user can fix (missing extra, bad weights, empty vocabulary ...)."""


def require_open_clip():
    """The `open_clip` module, imported with the Hugging Face hub offline; ClipError when it is absent."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local weights only: never reach a model hub
    try:
        import open_clip
    except ImportError as exc:
        raise ClipError(
            f"the CLIP labeller needs the optional package open_clip_torch, which is not installed "
            f"({exc}); install it with: {INSTALL_HINT}"
        ) from exc
    return open_clip


# ----------------------------------------------------------------------------------- the model


@dataclass
class ClipModel:
    arch: str
    weights: Path
    model: Any  # an open_clip CLIP / CustomTextCLIP, in eval mode
    preprocess: Callable  # PIL image -> normalised tensor, the model's evaluation transform
    tokenizer: Callable  # list[str] -> token tensor
    device: torch.device

    @property
    def logit_scale(self) -> float:
        """The softmax temperature's inverse, exp(model.logit_scale) (100 for the OpenAI models)."""
        return float(self.model.logit_scale.detach().exp().item())


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ClipError("CUDA is not available on this machine; use --device cpu")
    return torch.device(name)


def load_clip(arch: str, weights: str | Path, device: str | torch.device = "auto") -> ClipModel:
    """An open_clip architecture (`open_clip.list_models()`, e.g. "ViT-B-32") with the weights of a local
    file (a state dict as torch.save wrote it, an open_clip training checkpoint, an OpenAI JIT archive
    or .safetensors). Raises ClipError for a missing extra, a hub name, an unknown architecture, a
    missing file or weights that do not fit the architecture."""
    open_clip = require_open_clip()
    if ":" in arch:
        raise ClipError(
            f"--clip-model {arch!r}: give an open_clip architecture name (e.g. ViT-B-32), not a hub or "
            "directory reference; the weights come from --clip-weights, a local file"
        )
    if arch not in open_clip.list_models():
        raise ClipError(
            f"open_clip has no architecture {arch!r}; known ones include "
            f"{', '.join(m for m in open_clip.list_models() if m.startswith(('ViT-B', 'RN50')))} "
            "(open_clip.list_models() lists them all)"
        )
    path = Path(weights).expanduser().resolve()  # an absolute path is never taken for a pretrained tag
    if not path.is_file():
        raise ClipError(f"CLIP weights file {path} does not exist; give a local weights file")
    dev = resolve_device(device) if isinstance(device, str) else device
    try:
        model, _train, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=str(path), pretrained_image=False, pretrained_text=False, device=dev
        )
        tokenizer = open_clip.get_tokenizer(arch)
    except Exception as exc:  # torch.load, load_state_dict(strict=True), a tokenizer that needs the hub
        raise ClipError(
            f"cannot load CLIP weights {path} into the {arch} architecture: {_first_line(exc)}; are they "
            f"weights of a {arch} model?"
        ) from exc
    model.eval()
    return ClipModel(arch, path, model, preprocess, tokenizer, dev)


def _first_line(exc: BaseException) -> str:
    """One readable line on why loading failed (torch's own messages run over many lines)."""
    text = str(exc).strip() or type(exc).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines[0].startswith("Error(s) in loading state_dict"):
        parts = []
        for line in lines[1:]:
            keys = re.findall(r'"([^"]+)"', line)
            if line.startswith("Missing key(s)"):
                parts.append(f"{len(keys)} keys of the architecture missing from the file (e.g. {keys[0]})")
            elif line.startswith("Unexpected key(s)"):
                parts.append(f"{len(keys)} keys in the file the architecture lacks (e.g. {keys[0]})")
        mismatches = [line for line in lines if line.startswith("size mismatch")]
        if mismatches:
            parts.append(f"{len(mismatches)} tensors of another shape ({mismatches[0].rstrip('.')})")
        return "; ".join(parts) or lines[0]
    if lines[0].startswith("Weights only load failed"):
        at = next((i for i, line in enumerate(lines) if "Unpickler error" in line), len(lines) - 2)
        why = lines[at + 1] if at + 1 < len(lines) else lines[-1]
        return (
            f"torch.load(weights_only=True) cannot read it ({why}); give a state dict, e.g. saved with "
            "torch.save(model.state_dict(), FILE) (whole pickled models are not loaded: unpickling can "
            "run code)"
        )
    return lines[0] + (f" ... ({len(lines) - 1} more lines)" if len(lines) > 1 else "")


# ---------------------------------------------------------------------- vocabulary and prompts


def load_vocabulary(spec: str) -> list[str]:
    """Concept names from a text file (one per line; blank lines and # comments skipped) when `spec` names
    an existing file, else from a comma-separated list. Duplicates (ignoring case) are dropped."""
    from graphmodel.labels import concept_name

    path = Path(spec).expanduser()
    if path.is_file():
        items = [line.split("#", 1)[0] for line in path.read_text(encoding="utf-8").splitlines()]
    else:
        items = spec.split(",")
    out: list[str] = []
    seen: set[str] = set()
    for item in items:
        name = " ".join(item.split())
        if name and concept_name(name) not in seen:
            seen.add(concept_name(name))
            out.append(name)
    if len(out) < 2:
        raise ClipError(
            f"the vocabulary {spec!r} has {len(out)} concept(s); give at least two (a comma list or a "
            "file with one concept per line): the score is a probability over the vocabulary"
        )
    return out


def check_templates(templates: Sequence[str]) -> list[str]:
    out = [t for t in templates if t.strip()]
    if not out:
        raise ClipError("give at least one prompt template")
    bad = [t for t in out if t.count("{}") != 1]
    if bad:
        raise ClipError(f"a prompt template needs exactly one {{}} for the concept name: {bad[0]!r}")
    return out


# -------------------------------------------------------------------------------- embeddings


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def text_embeddings(
    clip: ClipModel, vocabulary: Sequence[str], templates: Sequence[str], batch_size: int = 256
) -> torch.Tensor:
    """[V, D] unit vectors: each concept's normalised prompt embeddings averaged over the templates."""
    prompts = [t.format(concept) for concept in vocabulary for t in templates]
    chunks = []
    for start in range(0, len(prompts), batch_size):
        tokens = clip.tokenizer(prompts[start : start + batch_size]).to(clip.device)
        chunks.append(_normalise(clip.model.encode_text(tokens).float()))
    per_prompt = torch.cat(chunks).reshape(len(vocabulary), len(templates), -1)
    return _normalise(per_prompt.mean(dim=1)).cpu()


@torch.no_grad()
def image_embeddings(
    clip: ClipModel, images: Sequence[Any], batch_size: int = 64, tick: Callable[[int], None] | None = None
) -> torch.Tensor:
    """[N, D] unit vectors of PIL images, through the model's evaluation transform, in chunks;
    `tick(n)` after each chunk of n."""
    chunks = []
    for start in range(0, len(images), batch_size):
        batch = torch.stack([clip.preprocess(im) for im in images[start : start + batch_size]])
        chunks.append(_normalise(clip.model.encode_image(batch.to(clip.device)).float()).cpu())
        if tick:
            tick(len(batch))
    if not chunks:
        return torch.empty(0, 0)
    return torch.cat(chunks)


def similarity(
    group_embeddings: torch.Tensor, text: torch.Tensor, logit_scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cosine [G, V], probability [G, V]) of unit group embeddings against unit concept embeddings:
    probability = softmax over the vocabulary of logit_scale * cosine."""
    cosine = group_embeddings @ text.T
    return cosine, torch.softmax(logit_scale * cosine, dim=-1)


# ---------------------------------------------------------------------------------- labelling


def label_groups(
    clip: ClipModel,
    groups: Sequence[tuple[str, Sequence[str]]],
    images: dict[str, Any],
    vocabulary: Sequence[str],
    *,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    top: int = 3,
    batch_size: int = 64,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> list:
    """LabelRecords (method "clip") for `groups` = [(group_id, exemplar patch ids)], every patch id having
    a PIL image in `images`. All distinct patches are embedded in one chunked pass; a group's embedding is
    the normalised mean of its patches' unit embeddings. The `top` concepts by probability are kept."""
    from graphmodel.records import LabelRecord

    if top < 1:
        raise ValueError("top must be at least 1")
    groups = [(gid, list(pids)) for gid, pids in groups if pids]
    if not groups:
        return []
    templates = check_templates(templates)
    order = list(dict.fromkeys(pid for _, pids in groups for pid in pids))
    row = {pid: i for i, pid in enumerate(order)}
    tick = progress("exemplars → CLIP", len(order)) if progress else None
    patch_emb = image_embeddings(clip, [images[pid] for pid in order], batch_size, tick)
    group_emb = _normalise(torch.stack([patch_emb[[row[p] for p in pids]].mean(dim=0) for _, pids in groups]))
    text = text_embeddings(clip, vocabulary, templates)
    scale = clip.logit_scale
    cosine, prob = similarity(group_emb, text, scale)
    k = min(top, len(vocabulary))
    best = torch.topk(prob, k, dim=-1).indices
    labels = []
    for g, (gid, pids) in enumerate(groups):
        for rank, v in enumerate(best[g].tolist(), start=1):
            details = {
                "cosine": float(cosine[g, v]),
                "vocabulary_size": len(vocabulary),
                "exemplars": len(pids),
                "exemplar_ids": pids,
                "templates": len(templates),
                "logit_scale": scale,
                "model": clip.arch,
                "weights": clip.weights.name,
            }
            labels.append(LabelRecord(gid, vocabulary[v], float(prob[g, v]), METHOD, rank, details))
    return labels


def group_exemplars(
    driver, run_id: str, exemplars: int, *, semantic_groups: bool = False
) -> list[tuple[str, list[tuple[str, str]]]]:
    """[(group_id, [(patch_id, uri)])]: each neuron group's first `exemplars` patches with a stored image,
    picked as the LLM labeller picks them (spread over its semantic groups), then, when asked, each
    semantic group's best `exemplars` patches by EXEMPLAR rank. GraphStoreError for an unknown run."""
    from graphmodel.explanations import labelling_inputs, semantic_group_exemplars
    from ingest.labelling.mllm import _uris

    out = [(g.ng_id, _uris(g, exemplars)) for g in labelling_inputs(driver, run_id)]
    if semantic_groups:
        out += [
            (sg_id, [(pid, uri) for pid, uri in patches if uri][:exemplars])
            for sg_id, patches in semantic_group_exemplars(driver, run_id)
        ]
    return out


@dataclass
class ClipRunResult:
    run_id: str
    labels: int = 0  # LABELED relationships written
    groups: int = 0  # groups labelled
    patches: int = 0  # distinct patches embedded
    skipped: list[str] = field(default_factory=list)  # "group_id: why"
    seconds: float = 0.0


def decode_png(data: bytes):
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def label_run(
    driver,
    run_id: str,
    clip: ClipModel,
    fetch: Callable[[str], bytes],
    vocabulary: Sequence[str],
    *,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    top: int = 3,
    exemplars: int = 8,
    semantic_groups: bool = False,
    batch_size: int = 64,
    echo: Callable[[str], None] = lambda _line: None,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> ClipRunResult:
    """Label the run's neuron groups (and, when asked, semantic groups) and store the labels with
    write_labels(method="clip"), replacing the run's earlier clip labels. `fetch(uri)` returns a patch's
    PNG bytes (ingest.pipeline.patch_stores.patch_fetcher)."""
    from graphmodel.labels import write_labels

    started = time.perf_counter()
    if exemplars < 1:
        raise ValueError("exemplars must be at least 1")
    result = ClipRunResult(run_id)
    found = group_exemplars(driver, run_id, exemplars, semantic_groups=semantic_groups)
    groups = []
    for gid, patches in found:
        if patches:
            groups.append((gid, [pid for pid, _ in patches]))
        else:
            result.skipped.append(f"{gid}: none of its exemplar patches has a stored image")
    uris = {pid: uri for _, patches in found for pid, uri in patches}
    echo(
        f"run {run_id}: {len(groups)} groups, {len(uris)} distinct exemplar patches, {len(vocabulary)} "
        f"concepts x {len(templates)} prompts, {clip.arch} on {clip.device}"
    )
    tick = progress("exemplars ← patch store", len(uris)) if progress else None
    images = {}
    for pid, uri in uris.items():
        images[pid] = decode_png(fetch(uri))
        if tick:
            tick(1)
    labels = label_groups(
        clip,
        groups,
        images,
        vocabulary,
        templates=templates,
        top=top,
        batch_size=batch_size,
        progress=progress,
    )
    result.labels = write_labels(driver, run_id, METHOD, labels)
    result.groups, result.patches = len(groups), len(images)
    result.seconds = time.perf_counter() - started
    return result

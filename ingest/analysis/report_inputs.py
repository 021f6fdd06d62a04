"""What a report shows besides the circuit: exemplar patch images (from the `patches/` folder
`neurflow extract` writes, or cut again from the image folder) and evaluation plots."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from graphmodel.records import Circuit

PLOT_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg", ".gif", ".webp")


def cut_patches(circuit: Circuit, images: str | Path, patch_ids: Iterable[str]) -> tuple[dict, dict, int]:
    """Cut the given patches out of the circuit's image folder again, as `build_patch_set` did:
    crop the record's box, resize to the model's input size.

    Returns (patch id -> PNG bytes, patch id -> why it is missing, number of patches whose pixels
    hash to another id than at extraction: another image folder, or another Pillow's resize).
    """
    from graphmodel.patchstore import encode_png
    from ingest.core.patches import ImageFolderError, load_rgb, patch_id, resize

    root = Path(images)
    records = {p.patch_id: p for p in circuit.patches}
    loaded: dict[str, Any] = {}
    out: dict[str, bytes] = {}
    missing: dict[str, str] = {}
    changed = 0
    for pid in sorted(set(patch_ids)):
        record = records.get(pid)
        if record is None:
            missing[pid] = "not in the circuit's patch list"
            continue
        if record.source_image not in loaded:
            path = root / record.source_image
            try:
                loaded[record.source_image] = load_rgb(path) if path.is_file() else None
            except ImageFolderError:
                loaded[record.source_image] = None
        image = loaded[record.source_image]
        if image is None:
            missing[pid] = f"cannot read {root / record.source_image}"
            continue
        x0, y0, x1, y1 = record.box
        if x1 > image.shape[1] or y1 > image.shape[0] or x0 >= x1 or y0 >= y1:
            missing[pid] = f"box {record.box} lies outside {record.source_image}"
            continue
        pixels = resize(image[y0:y1, x0:x1], circuit.input_size)
        if patch_id(pixels) != pid:
            changed += 1
        out[pid] = encode_png(pixels)
    return out, missing, changed


def source_images(circuit: Circuit, images: str | Path, patch_ids: Iterable[str]) -> dict[str, bytes]:
    """The source images of the given patches, by their path in the patch records, read from the
    image folder as files (the report shows each exemplar on its source with the crop drawn).
    Unreadable or missing files are left out."""
    root = Path(images)
    records = {p.patch_id: p for p in circuit.patches}
    out: dict[str, bytes] = {}
    for name in sorted({records[pid].source_image for pid in patch_ids if pid in records}):
        path = root / name
        try:
            if path.is_file() and path.resolve().is_relative_to(root.resolve()):
                out[name] = path.read_bytes()
        except OSError:
            continue
    return out


def from_patch_dir(folder: Path, patch_ids: Iterable[str]) -> dict[str, bytes]:
    """The exemplar PNGs `neurflow extract` saved as ``patches/<patch_id>.png``."""
    out = {}
    for pid in patch_ids:
        path = folder / f"{pid}.png"
        if path.is_file():
            out[pid] = path.read_bytes()
    return out


def load_plots(folder: Path) -> dict[str, bytes]:
    """Every image file directly in `folder`, by file name."""
    return {
        p.name: p.read_bytes()
        for p in sorted(folder.iterdir())
        if p.is_file() and p.suffix.lower() in PLOT_SUFFIXES
    }


def plots_named_in(evaluation: dict | None, base: Path) -> dict[str, bytes]:
    """Plots an evaluation lists under "plots" ({name: path} or [path, ...]; relative paths from
    `base`), when the files exist."""
    listed = (evaluation or {}).get("plots")
    if isinstance(listed, list):
        listed = {Path(str(p)).name: p for p in listed}
    if not isinstance(listed, dict):
        return {}
    out = {}
    for name, where in listed.items():
        if not isinstance(where, str):
            continue
        path = Path(where) if Path(where).is_absolute() else base / where
        if path.is_file():
            out[str(name)] = path.read_bytes()
    return out

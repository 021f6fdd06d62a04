"""A campaign's image pool: which images belong to which class of a model.

Two layouts, the two in which labelled image sets usually come:

* an ImageFolder tree, one folder per class (ImageNet's validation set is usually laid out this way):
  the folder names are the model's class names, or class indices, or (as torchvision's ImageFolder
  reads them) anything else, taken as the classes in sorted order;
* a flat folder plus a CSV of ``file,class`` rows (a class name or index per file).

A class's images are handed to the ingest as they would be by ``neurflow ingest --images
<its folder>``: the same root, so the same relative names and the same run id.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ingest.core.patches import IMAGE_SUFFIXES


class PoolError(ValueError):
    """An image pool that cannot be read as the spec says; the message says what to fix."""


@dataclass
class ClassImages:
    index: int
    name: str | None
    root: Path  # what `neurflow ingest --images` would be given
    files: list[Path] = field(default_factory=list)


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _class_of(label: str, names: Sequence[str] | None, num_classes: int) -> int | None:
    text = label.strip()
    if names:
        lowered = [n.lower() for n in names]
        if text.lower() in lowered:
            return lowered.index(text.lower())
    if text.isdigit() and int(text) < num_classes:
        return int(text)
    return None


def folder_classes(
    folder: Path, names: Sequence[str] | None, num_classes: int
) -> tuple[dict[int, ClassImages], str]:
    """The classes of an ImageFolder tree and how its folder names were read: "names" (the model's
    class names), "indices", or "sorted" (torchvision's ImageFolder convention: the i-th folder in
    sorted order is class i, so every class needs its folder)."""
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir())
    if not subdirs:
        raise PoolError(f"the image pool {folder} has no class folders; expected one folder per class")
    lowered = [n.lower() for n in names] if names else []
    if lowered and all(sub.name.lower() in lowered for sub in subdirs):
        mapping, how = {lowered.index(sub.name.lower()): sub for sub in subdirs}, "names"
    elif all(sub.name.isdigit() and int(sub.name) < num_classes for sub in subdirs):
        mapping, how = {int(sub.name): sub for sub in subdirs}, "indices"
    elif len(subdirs) == num_classes:
        mapping, how = dict(enumerate(subdirs)), "sorted"
    else:
        raise PoolError(
            f"the {len(subdirs)} class folders of {folder} (e.g. {subdirs[0].name!r}) are neither the "
            f"model's class names nor indices 0..{num_classes - 1}, and not one folder for each of its "
            f"{num_classes} classes; rename them, or give a labels CSV"
        )
    out = {}
    for index, sub in sorted(mapping.items()):
        name = names[index] if names and index < len(names) else None
        out[index] = ClassImages(index, name, sub, _images_under(sub))
    return out, how


def csv_classes(
    folder: Path, labels: Path, names: Sequence[str] | None, num_classes: int
) -> dict[int, ClassImages]:
    """The classes of a flat folder labelled by a CSV of ``file,class`` rows (a header is skipped)."""
    try:
        rows = list(csv.reader(labels.read_text().splitlines()))
    except OSError as exc:
        raise PoolError(f"cannot read the labels CSV {labels}: {exc.strerror or exc}") from None
    out: dict[int, ClassImages] = {}
    for number, row in enumerate(rows, start=1):
        if not row or (number == 1 and row[0].strip().lower() in ("file", "filename", "path")):
            continue
        if len(row) < 2:
            raise PoolError(f"{labels}:{number}: expected `file,class`, got {row!r}")
        index = _class_of(row[1], names, num_classes)
        if index is None:
            raise PoolError(
                f"{labels}:{number}: class {row[1]!r} is neither a class name of the model nor an index "
                f"0..{num_classes - 1}"
            )
        path = folder / row[0].strip()
        if not path.is_file():
            raise PoolError(f"{labels}:{number}: {path} does not exist")
        name = names[index] if names and index < len(names) else None
        out.setdefault(index, ClassImages(index, name, folder)).files.append(path)
    for entry in out.values():
        entry.files.sort()
    return out


def select_classes(available: dict[int, ClassImages], selection, names: Sequence[str] | None) -> list[int]:
    """The classes a spec asks for: "all", a list of names or indices, or ranges text ("0-9,15")."""
    if selection in (None, "all"):
        return sorted(available)
    items: list[str] = []
    if isinstance(selection, str):
        items = [part.strip() for part in selection.split(",") if part.strip()]
    elif isinstance(selection, list):
        items = [str(part).strip() for part in selection]
    else:
        raise PoolError(f'classes = {selection!r}: give "all", a list of names or indices, or "0-9,15"')
    chosen: list[int] = []
    num = max(available, default=-1) + 1
    for item in items:
        if "-" in item and all(p.strip().isdigit() for p in item.split("-", 1)):
            low, high = (int(p) for p in item.split("-", 1))
            chosen += [i for i in range(low, high + 1) if i in available]
            continue
        index = _class_of(item, names, max(num, int(item) + 1 if item.isdigit() else 0))
        if index is None or index not in available:
            raise PoolError(f"class {item!r} is not in the image pool (it has {len(available)} classes)")
        chosen.append(index)
    return sorted(dict.fromkeys(chosen))

"""The patch dataset D (paper §3.3, App. D.8): multi-scale sliding-window crops of the class's images.

Only images the model *predicts* as the class are used. Each image is cut into square crops whose side
is 100 %, 50 % and 25 % of the image's shorter side, slid with 50 % overlap, and every crop is resized
to the model's input size. Each patch keeps its provenance (source image, box, scale) and, when the
folder ships ground truth (`NAME.concepts.npz` beside `NAME.png`), the concepts it contains.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from graphmodel.records import PatchRecord

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
DEFAULT_SCALES = (1.0, 0.5, 0.25)
# A concept counts as present in a crop when it covers this share of the crop, or when the crop
# holds this share of all the concept's pixels in the image (a whole small object).
PRESENCE_OF_CROP = 0.10
PRESENCE_OF_OBJECT = 0.5


class ImageFolderError(ValueError):
    pass


@dataclass
class PatchSet:
    pixels: Tensor  # uint8 [P, 3, S, S]
    records: list[PatchRecord]
    images_used: list[str]
    images_total: int

    def __len__(self) -> int:
        return len(self.records)


def list_images(folder: str | Path) -> list[Path]:
    root = Path(folder)
    if not root.is_dir():
        raise ImageFolderError(f"image folder {str(root)!r} does not exist or is not a directory")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ImageFolderError(
            f"no images in {str(root)!r}: expected files ending in {', '.join(IMAGE_SUFFIXES)}"
        )
    return files


def load_rgb(path: Path) -> np.ndarray:
    """uint8 [H, W, 3]. 16-bit and 32-bit grey images are scaled to 8 bits (Pillow's own conversion
    clips them, so a 16-bit PNG would turn white); an image over Pillow's decompression-bomb limit
    is refused rather than decoded."""
    try:
        with Image.open(path) as img:
            if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
                return _wide_grey_to_rgb(np.asarray(img), img.mode)
            return np.asarray(img.convert("RGB"))
    except Image.DecompressionBombError as exc:
        raise ImageFolderError(
            f"image {str(path)!r} is too large to decode safely ({exc}); resize it or remove it"
        ) from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageFolderError(f"cannot read image {str(path)!r} ({exc}); remove or replace it") from exc


def _wide_grey_to_rgb(values: np.ndarray, mode: str) -> np.ndarray:
    """A 16/32-bit or float grey image as uint8 RGB: 16-bit values (as Pillow reads 16-bit PNGs) by
    their full range (x / 257), other values by their own range."""
    values = values.astype(np.float64)
    sixteen_bit = mode.startswith("I;16") or (
        mode == "I" and values.size and values.min() >= 0 and values.max() <= 65535
    )
    if sixteen_bit:
        grey = values / 257.0
    else:
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        grey = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
    grey = np.clip(np.nan_to_num(grey), 0, 255).round().astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def resize(arr: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(arr).resize((size, size), Image.BILINEAR))


def center_square(arr: np.ndarray) -> np.ndarray:
    h, w = arr.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return arr[top : top + side, left : left + side]


def load_images(paths: Sequence[Path], size: int) -> Tensor:
    """uint8 [N, 3, size, size]: each image centre-squared and resized, as whole images are before
    cropping (the images of a folder given to `label`, `audit`, `debug` and `evaluate`)."""
    arrays = [resize(center_square(load_rgb(Path(p))), size) for p in paths]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def to_model_input(pixels: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 [B, 3, S, S] -> normalised float [B, 3, S, S] on the same device."""
    m = torch.tensor(mean, device=pixels.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=pixels.device).view(1, 3, 1, 1)
    return (pixels.float() / 255.0 - m) / s


def crop_boxes(height: int, width: int, scales: Sequence[float]) -> list[tuple[list[int], float]]:
    """Square windows per scale with 50 % overlap, the last window flush with the far edge."""
    boxes: list[tuple[list[int], float]] = []
    short = min(height, width)
    for scale in scales:
        side = max(1, round(short * scale))
        stride = max(1, side // 2)

        def starts(extent: int, side: int = side, stride: int = stride) -> list[int]:
            pos = list(range(0, extent - side + 1, stride))
            if pos[-1] != extent - side:
                pos.append(extent - side)
            return pos

        for y in starts(height):
            for x in starts(width):
                boxes.append(([x, y, x + side, y + side], scale))
    return boxes


def concepts_in_box(masks: dict[str, np.ndarray], box: Sequence[int]) -> list[str]:
    x0, y0, x1, y1 = box
    area = (x1 - x0) * (y1 - y0)
    present = []
    for name, mask in masks.items():
        inside = int(mask[y0:y1, x0:x1].sum())
        total = int(mask.sum())
        if inside and (inside >= PRESENCE_OF_CROP * area or inside >= PRESENCE_OF_OBJECT * total):
            present.append(name)
    return sorted(present)


def load_ground_truth(image_path: Path, shape: tuple[int, int]) -> dict[str, np.ndarray] | None:
    sidecar = image_path.with_name(image_path.stem + ".concepts.npz")
    if not sidecar.exists():
        return None
    with np.load(sidecar) as data:
        masks = {k: data[k].astype(bool) for k in data.files}
    for name, mask in masks.items():
        if mask.shape != shape:
            raise ImageFolderError(
                f"ground-truth mask {name!r} in {str(sidecar)!r} is {mask.shape}, image is {shape}"
            )
    return masks


def patch_id(pixels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()[:32]


def predict_images(
    files: Sequence[Path], classify: Callable[[Tensor], Tensor], input_size: int, batch_size: int = 32
) -> list[int]:
    """The model's prediction for every image, in batches: the one pass over a folder (or over a
    campaign's whole pool, shared by its classes)."""
    predictions: list[int] = []
    for start in range(0, len(files), batch_size):
        batch = files[start : start + batch_size]
        arr = np.stack([resize(center_square(load_rgb(f)), input_size) for f in batch])
        predictions.extend(classify(torch.from_numpy(arr).permute(0, 3, 1, 2)).tolist())
    return predictions


def predicted_images(
    files: Sequence[Path],
    class_index: int,
    classify: Callable[[Tensor], Tensor],
    input_size: int,
    batch_size: int = 32,
    known: Mapping[str, int] | None = None,
) -> tuple[list[Path], list[int]]:
    """The images the model predicts as `class_index`, and every image's prediction. `known` holds
    predictions already made (by resolved path); only the other images go through the model."""
    known = known or {}
    todo = [f for f in files if str(f.resolve()) not in known]
    fresh = dict(zip(todo, predict_images(todo, classify, input_size, batch_size), strict=True))
    predictions = [known[str(f.resolve())] if f not in fresh else fresh[f] for f in files]
    keep = [f for f, p in zip(files, predictions, strict=True) if p == class_index]
    return keep, predictions


def build_patch_set(
    folder: str | Path,
    class_index: int,
    classify: Callable[[Tensor], Tensor],
    input_size: int,
    *,
    scales: Sequence[float] = DEFAULT_SCALES,
    max_images: int | None = None,
    class_label: str | None = None,
    files: Sequence[Path] | None = None,
    predictions: Mapping[str, int] | None = None,
) -> PatchSet:
    """Crop the images predicted as the class into D, deduplicating identical patches.

    `classify` maps uint8 pixels [B, 3, S, S] to predicted class indices [B]. `files` (under
    `folder`) replaces the folder's listing; `predictions` (resolved path -> class) are used instead of
    classifying those images again (a campaign's shared pass).
    """
    root = Path(folder)
    files = sorted(Path(f) for f in files) if files is not None else list_images(root)
    kept, predictions = predicted_images(files, class_index, classify, input_size, known=predictions)
    if not kept:
        counts = np.bincount(np.asarray(predictions), minlength=class_index + 1)
        top = np.argsort(-counts)[:3]
        seen = ", ".join(f"class {int(c)} x{int(counts[c])}" for c in top if counts[c])
        raise ImageFolderError(
            f"none of the {len(files)} images in {str(root)!r} is predicted as "
            f"{class_label or class_index!s} (index {class_index}); the model predicts {seen}. "
            "Check --class, the weights, or the folder"
        )
    if max_images is not None:
        kept = kept[:max_images]
    pixels: list[np.ndarray] = []
    records: list[PatchRecord] = []
    seen_ids: set[str] = set()
    for path in kept:
        image = load_rgb(path)
        masks = load_ground_truth(path, image.shape[:2])
        rel = str(path.relative_to(root))
        for box, scale in crop_boxes(image.shape[0], image.shape[1], scales):
            x0, y0, x1, y1 = box
            patch = resize(image[y0:y1, x0:x1], input_size)
            pid = patch_id(patch)
            if pid in seen_ids:
                continue
            seen_ids.add(pid)
            concepts = concepts_in_box(masks, box) if masks is not None else []
            pixels.append(patch)
            records.append(PatchRecord(pid, rel, box, scale, concepts))
    stacked = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous()
    return PatchSet(stacked, records, [str(p.relative_to(root)) for p in kept], len(files))

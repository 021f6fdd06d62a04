"""Real photos that ship inside Python packages, and a documented way to grow a class folder from one.

No dataset can be downloaded here, but scikit-image's data module carries a few photographs in its
wheel (`chelsea`: a cat; `coffee`: a cup of espresso; `camera`: a man with a camera on a tripod;
`astronaut`; `rocket`) and scikit-learn ships two (`china.jpg`, `flower.jpg`).

`write_augmented` makes a small class folder from one photo the way training pipelines augment
images: a random crop of 60-100 % of the shorter side (at a random position), a horizontal flip with
probability 1/2, a rotation of up to ±10°, and brightness and contrast within ±15 %, saved at 256 px.
The images are near-duplicates of one photo: enough to run the method on a real model and to see
which of its neurons respond, not a sample of the class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SKIMAGE_PHOTOS = ("chelsea", "coffee", "camera", "astronaut", "rocket")
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")


def photo(name: str) -> np.ndarray:
    """uint8 [H, W, 3] of a photo shipped by scikit-image or scikit-learn."""
    if name in SKLEARN_PHOTOS:
        from sklearn.datasets import load_sample_image

        return np.asarray(load_sample_image(name))
    if name not in SKIMAGE_PHOTOS:
        raise ValueError(f"unknown photo {name!r}; choose one of {SKIMAGE_PHOTOS + SKLEARN_PHOTOS}")
    import skimage.data

    image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return image[..., :3].astype(np.uint8)


def augment(image: np.ndarray, rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """One augmented square view of `image` (see the module docstring)."""
    from PIL import Image, ImageEnhance

    height, width = image.shape[:2]
    side = int(min(height, width) * rng.uniform(0.6, 1.0))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    view = Image.fromarray(image[top : top + side, left : left + side])
    if rng.random() < 0.5:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    view = view.rotate(float(rng.uniform(-10, 10)), resample=Image.BILINEAR)
    view = ImageEnhance.Brightness(view).enhance(float(rng.uniform(0.85, 1.15)))
    view = ImageEnhance.Contrast(view).enhance(float(rng.uniform(0.85, 1.15)))
    return np.asarray(view.resize((size, size), Image.LANCZOS))


def write_augmented(name: str, folder: str | Path, count: int, seed: int = 0) -> Path:
    """`count` augmented views of the photo `name` as PNGs in `folder`; returns the folder."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    source = photo(name)
    for i in range(count):
        Image.fromarray(augment(source, rng)).save(folder / f"{name}-{i:03d}.png")
    return folder

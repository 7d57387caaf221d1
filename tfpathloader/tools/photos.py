"""An ImageNet-like photo set: RGB JPEGs of varied size and aspect with real-looking content."""

from __future__ import annotations

import os

import numpy as np

from ..index import PathIndex, write_index

__all__ = ["make_photo_set"]


def _photo(rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """One image: smooth gradients, a few filled shapes, blur-free noise; and its quality."""
    from PIL import Image, ImageDraw

    short = int(rng.integers(300, 501))
    aspect = float(np.exp(rng.uniform(np.log(3 / 5), np.log(5 / 3))))
    h, w = (short, int(short * aspect)) if aspect >= 1 else (int(short / aspect), short)
    # A smooth background: a random bilinear blend of four corner colours.
    corners = rng.uniform(0, 255, size=(2, 2, 3)).astype(np.float32)
    ys = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    xs = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    top = corners[0, 0] * (1 - xs) + corners[0, 1] * xs
    bottom = corners[1, 0] * (1 - xs) + corners[1, 1] * xs
    img = Image.fromarray(np.clip(top * (1 - ys) + bottom * ys, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 9))):
        x0, x1 = sorted(rng.integers(0, w, size=2).tolist())
        y0, y1 = sorted(rng.integers(0, h, size=2).tolist())
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1 + 1, y1 + 1), fill=colour)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
    arr = np.asarray(img).astype(np.int16)
    noise = rng.normal(0, float(rng.uniform(5, 11)), size=(h, w, 1)).astype(np.int16)
    arr = np.clip(arr + noise, 0, 255).astype(np.uint8)
    return arr, int(rng.integers(85, 96))


def make_photo_set(out: str | os.PathLike[str], n: int = 3000, seed: int = 0) -> PathIndex:
    """Write ``n`` RGB JPEGs to ``out/<label>/<i>.jpg`` and their path index ``out/index.tfrecord``.

    Short side 300-500 px, aspect 3:5 to 5:3, about 73 KiB each
    (smooth gradients, filled shapes and sensor-like noise), 10 labels stored sorted by label.
    Each image comes from its own generator ``default_rng([seed, i])``, so any subset is
    reproducible.

    Args:
        out: Folder to write into (created).
        n: Number of images.
        seed: Seed of every random choice.

    Returns:
        The path index of the set.
    """
    from PIL import Image

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    root = os.path.abspath(os.fspath(out))
    labels_n = 10
    paths, labels = [], []
    for i in range(n):
        label = i * labels_n // n
        rel = f"{label}/{i:06d}.jpg"
        os.makedirs(os.path.join(root, str(label)), exist_ok=True)
        arr, quality = _photo(np.random.default_rng([seed, i]))
        Image.fromarray(arr).save(os.path.join(root, rel), quality=quality)
        paths.append(rel)
        labels.append(label)
    return write_index(os.path.join(root, "index.tfrecord"), paths, labels)

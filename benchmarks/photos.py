"""Benchmark image sets: 224px JPEG crops of two sample photos, and an ImageNet-like photo set.

Imported by the benchmarks beside it (``peers.py``, ``crop.py`` ...) and by the tests (which put
this folder on ``sys.path``).
"""

from __future__ import annotations

import os

import numpy as np

from tfpathloader._utils import optional_import, progress_bar
from tfpathloader.index import PathIndex, write_index

__all__ = ["make_jpeg_set", "make_photo_set"]


def make_jpeg_set(
    out_dir: str | os.PathLike[str],
    *,
    count: int = 4000,
    size: int = 224,
    seed: int = 0,
    quality: int = 90,
    progress: bool | None = None,
) -> PathIndex:
    """``count`` RGB JPEGs of ``size``x``size`` cut from scikit-learn's two sample photos.

    Each is a random crop (random scale and position, random mirror) of ``china.jpg`` (label 0)
    or ``flower.jpg`` (label 1), stored sorted by label, with its path index.
    """
    from PIL import Image

    datasets = optional_import("sklearn.datasets", "demo", "the benchmark JPEG set")
    photos = datasets.load_sample_images()
    names = [os.path.splitext(os.path.basename(f))[0] for f in photos.filenames]
    out = os.path.abspath(os.fspath(out_dir))
    rng = np.random.default_rng([seed, 7])
    paths, labels = [], []
    with progress_bar(progress, desc="making JPEGs", total=count, unit=" images") as bar:
        for i in range(count):
            label = i * len(names) // count
            img = photos.images[label]
            h, w = img.shape[:2]
            side = int(min(h, w) * rng.uniform(0.35, 1.0))
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            crop = Image.fromarray(img[y : y + side, x : x + side]).resize(
                (size, size), Image.Resampling.BILINEAR
            )
            if rng.random() < 0.5:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            rel = f"{names[label]}/{i:06d}.jpg"
            os.makedirs(os.path.join(out, names[label]), exist_ok=True)
            crop.save(os.path.join(out, rel), format="JPEG", quality=quality)
            paths.append(rel)
            labels.append(label)
            bar.update(1)
    return write_index(
        os.path.join(out, "index.tfrecord"), paths, labels, classes=names, progress=progress
    )


# NOTE [photo set]: what makes ImageNet JPEGs cost what they cost is their size (short side
# around 300-500 px, aspect 3:4 to 16:9 either way, 100-150 kpixels) and their entropy: smooth
# regions (sky, walls) compress well, texture and edges do not. Each image here is a sum of a
# few smooth colour gradients, blurred noise at two scales (texture), and a dozen filled
# shapes with hard edges, saved at quality 85-95; that lands near 73 KiB per file on average,
# close to ImageNet's 110 KiB at a fifth fewer pixels. Everything is drawn from
# (seed, image number), so a set is the same on every machine, and any prefix of it too.


def _photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """One real-looking RGB image: gradients + two scales of blurred noise + shapes."""
    from PIL import Image, ImageDraw, ImageFilter

    xx = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    img = np.zeros((h, w, 3), np.float32)
    for _ in range(3):
        angle = rng.uniform(0, 2 * np.pi)
        colour = rng.uniform(-90, 90, 3).astype(np.float32) / 2
        img += (np.cos(angle) * xx + np.sin(angle) * yy + 1) * colour
        img += rng.uniform(20, 80, 3).astype(np.float32)
    for scale, amp in ((8, 40.0), (2, 14.0)):
        small = rng.normal(0, 1, (h // scale + 1, w // scale + 1, 3)).astype(np.float32)
        big = np.asarray(
            Image.fromarray(((small * 40) + 128).clip(0, 255).astype(np.uint8)).resize(
                (w, h), Image.Resampling.BICUBIC
            ),
            np.float32,
        )
        img += (big - 128) / 40 * amp
    pic = Image.fromarray(img.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pic)
    for _ in range(int(rng.integers(6, 14))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1 = x0 + int(rng.integers(10, max(11, w // 3)))
        y1 = y0 + int(rng.integers(10, max(11, h // 3)))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=fill)
    return np.asarray(pic.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0))))


def make_photo_set(
    out_dir: str | os.PathLike[str],
    n: int = 3000,
    seed: int = 0,
    *,
    classes: int = 10,
    progress: bool | None = None,
) -> PathIndex:
    """``n`` ImageNet-like RGB JPEGs in ``out_dir`` with their path index (see NOTE [photo set]).

    Short side 300-500 px, aspect ratio 3:4 to 16:9 in either orientation, stored sorted by
    label (``classes`` labels, ``cls0``...), ~73 KiB each on average.

    Args:
        out_dir: Folder to write ``clsK/NNNNNN.jpg`` and ``index.tfrecord`` into.
        n: Number of images.
        seed: Seed of every random choice (sizes, content, JPEG quality).
        classes: Number of labels.
        progress: Progress bar (``None``: on a terminal).
    """
    from PIL import Image

    out = os.path.abspath(os.fspath(out_dir))
    names = [f"cls{k}" for k in range(classes)]
    paths, labels = [], []
    with progress_bar(progress, desc="making photos", total=n, unit=" images") as bar:
        for i in range(n):
            rng = np.random.default_rng([seed, i, 11])
            short = int(rng.integers(300, 501))
            aspect = float(np.exp(rng.uniform(np.log(4 / 3), np.log(16 / 9))))
            long = round(short * min(aspect, 1.78))
            h, w = (short, long) if rng.random() < 0.7 else (long, short)
            label = i * classes // n
            rel = f"{names[label]}/{i:06d}.jpg"
            os.makedirs(os.path.join(out, names[label]), exist_ok=True)
            Image.fromarray(_photo(rng, h, w)).save(
                os.path.join(out, rel), format="JPEG", quality=int(rng.integers(85, 96))
            )
            paths.append(rel)
            labels.append(label)
            bar.update(1)
    return write_index(
        os.path.join(out, "index.tfrecord"), paths, labels, classes=names, progress=progress
    )

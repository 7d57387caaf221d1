"""How close the two backends' training crops are: the same records through both, pixel by pixel.

Usage::

    python benchmarks/crop_parity.py --photos /tmp/photos --images 200 [--size 224]

Makes the ImageNet-like photo set in ``--photos`` if it is missing, runs the first ``--images``
records through ``RandomResizedCrop(size) + RandomHorizontalFlip()`` in the torch and the tf
backend (same seed, no shuffle), with and without antialiasing, and prints per setting the mean
and largest absolute difference, the share of identical pixels and of identical crops.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np


def _crops(backend: str, index: object, pipe: object, n: int) -> np.ndarray:
    from tfpathloader import make_loader

    loader = make_loader(
        backend=backend, index=index, batch_size=50, transform=pipe, seed=3, shuffle="none"
    )
    out, got = [], 0
    for batch in loader:
        out.append(batch["image"].permute(0, 2, 3, 1).numpy())
        got += len(out[-1])
        if got >= n:
            break
    return np.concatenate(out)[:n]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", required=True, help="folder of the photo set (made if missing)")
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--size", type=int, default=224)
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from photos import make_photo_set

    from tfpathloader import PathIndex
    from tfpathloader import transforms as T

    path = os.path.join(args.photos, "index.tfrecord")
    index = (
        PathIndex.read(path)
        if os.path.exists(path)
        else make_photo_set(args.photos, max(args.images, 200), progress=False)
    )
    for antialias in (True, False):
        crop = T.RandomResizedCrop(args.size, antialias=antialias)
        pipe = T.Compose([crop, T.RandomHorizontalFlip()])
        a = _crops("torch", index, pipe, args.images).astype(np.int16)
        b = _crops("tf", index, pipe, args.images).astype(np.int16)
        d = np.abs(a - b)
        same = int(sum(bool((d[i] == 0).all()) for i in range(len(d))))
        print(
            json.dumps(
                {
                    "antialias": antialias,
                    "crops": len(d),
                    "mean_abs_diff": round(float(d.mean()), 4),
                    "max_abs_diff": int(d.max()),
                    "identical_pixels": round(float((d == 0).mean()), 4),
                    "identical_crops": same,
                }
            )
        )


if __name__ == "__main__":
    main()

"""``jpeg_dct="fast"`` against ``"accurate"`` on real JPEGs: pixel difference and decode cost.

Usage::

    python benchmarks/jpeg_dct.py INDEX [--images 300]

Over the first ``--images`` JPEGs of the index: the mean and largest absolute difference between
libjpeg's fast and accurate integer IDCT (simplejpeg, full decode to RGB, the torch backend's
decoder), the share of identical pixels, whether simplejpeg's fast decode equals TensorFlow's
default ``decode_jpeg`` (when TensorFlow is installed), and the CPU time of each decode (one
process, best of 3). Quoted in README.md and NOTE [jpeg dct] (``tfpathloader/load/_crop.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("index")
    p.add_argument("--images", type=int, default=300)
    args = p.parse_args()
    import numpy as np
    import simplejpeg

    from tfpathloader import PathIndex

    index = PathIndex.read(args.index)
    datas: list[bytes] = []
    for i in range(len(index)):
        if len(datas) == args.images:
            break
        with open(index.path(i), "rb") as f:
            data = f.read()
        if data[:3] == b"\xff\xd8\xff":
            datas.append(data)
    means, peak, same = [], 0, []
    for d in datas:
        a = simplejpeg.decode_jpeg(d, colorspace="RGB").astype(np.int16)
        b = simplejpeg.decode_jpeg(d, colorspace="RGB", fastdct=True).astype(np.int16)
        diff = np.abs(a - b)
        means.append(float(diff.mean()))
        peak = max(peak, int(diff.max()))
        same.append(float((diff == 0).mean()))

    def cpu_ms(fast: bool) -> float:
        best = float("inf")
        for _ in range(3):
            c = time.process_time()
            for d in datas:
                simplejpeg.decode_jpeg(d, colorspace="RGB", fastdct=fast)
            best = min(best, (time.process_time() - c) / len(datas) * 1e3)
        return round(best, 3)

    out: dict[str, object] = {
        "jpegs": len(datas),
        "mean_abs_difference": round(float(np.mean(means)), 3),
        "max_abs_difference": peak,
        "identical_pixels": round(float(np.mean(same)), 3),
        "accurate_ms": cpu_ms(False),
        "fast_ms": cpu_ms(True),
    }
    try:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf
    except ImportError:
        out["equals_tensorflow_default"] = None
    else:
        out["equals_tensorflow_default"] = all(
            np.array_equal(
                simplejpeg.decode_jpeg(d, colorspace="RGB", fastdct=True),
                tf.io.decode_jpeg(d, channels=3).numpy(),
            )
            for d in datas
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()

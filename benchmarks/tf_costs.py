"""What the tf backend pays that hand-written tf.data does not: start-up steps, and the cost of a
``tf.numpy_function`` call (how the tf crop path reaches torch's resize kernel, once per image).

Usage::

    python benchmarks/tf_costs.py INDEX      # e.g. the photo set's index.tfrecord

Prints, in one fresh process: seconds to import TensorFlow, to import torch (for the DLPack
hand-over), to build the loader (``make_loader``: tracing, the spare iterator started) and to its
first batch (``size=(224, 224)``, so any image set works); then the CPU time of one ``tf.numpy_function`` call in a graph of 64 chained calls,
one TensorFlow thread (median of 7), with a small and a photo-sized input and output. Quoted in
README.md (Speed: "First batch and cold start", "Photos resized whole").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("index")
    p.add_argument("--calls", action="store_true", help=argparse.SUPPRESS)  # the second part
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.calls:
        return _calls()
    t0 = time.perf_counter()
    from tfpathloader.load.tf_backend import import_tensorflow

    import_tensorflow()
    t1 = time.perf_counter()
    import torch  # noqa: F401

    t2 = time.perf_counter()
    from tfpathloader import PathIndex, make_loader

    index = PathIndex.read(args.index)
    t3 = time.perf_counter()
    loader = make_loader(  # size=: photos vary in size (the bench's photos -> resize 224 set)
        backend="tf", index=index, batch_size=256, num_workers=2, seed=0, size=(224, 224)
    )
    t4 = time.perf_counter()
    next(iter(loader))
    t5 = time.perf_counter()
    loader.close()  # type: ignore[attr-defined]  # the tf loader
    out: dict[str, float] = {
        "import_tensorflow_s": round(t1 - t0, 2),
        "import_torch_s": round(t2 - t1, 2),
        "make_loader_s": round(t4 - t3, 2),
        "first_batch_s": round(t5 - t4, 2),
    }

    # One TensorFlow thread for the calls: set before TensorFlow starts, so in a process of its own.
    cmd = [sys.executable, __file__, args.index, "--calls"]
    calls = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    out.update(json.loads(calls.strip().splitlines()[-1]))
    print(json.dumps(out))


def _calls() -> None:
    import numpy as np

    from tfpathloader.load.tf_backend import import_tensorflow

    tf = import_tensorflow()
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)

    def per_call_us(shape_in: tuple[int, ...], shape_out: tuple[int, ...], n: int = 64) -> float:
        result = np.zeros(shape_out, np.uint8)
        xs = [tf.constant(np.ones(shape_in, np.uint8)) for _ in range(n)]

        @tf.function
        def chain(*xs: object) -> object:
            prev = None
            for x in xs:  # each call waits for the one before: one at a time
                with tf.control_dependencies([] if prev is None else [prev]):
                    prev = tf.numpy_function(lambda a: result, [x], tf.uint8)
            return prev

        chain(*xs)
        times = []
        for _ in range(7):
            c = time.process_time()
            chain(*xs)
            times.append((time.process_time() - c) / n * 1e6)
        return round(statistics.median(times), 1)

    out = {
        "numpy_function_small_us": per_call_us((4, 4, 3), (4, 4, 3)),
        "numpy_function_photo_in_crop_out_us": per_call_us((400, 500, 3), (224, 224, 3)),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()

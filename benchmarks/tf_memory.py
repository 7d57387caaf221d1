"""Where the tf backend's memory goes: resident memory after each step of making and running it.

Usage::

    python benchmarks/tf_memory.py INDEX [--size H W] [--images 4000]

Prints one JSON line: the process's RSS (MiB) bare, after importing TensorFlow, after importing
torch (the DLPack hand-over needs it), after ``make_loader(backend="tf")`` (the pipeline is
traced there), and its peak while two epochs of ``--images`` run (batch 256, 2 workers).
"""

from __future__ import annotations

import argparse
import json
import os

from procstats import status


def _mib(field: str) -> int:
    return status(os.getpid(), field) // 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("index")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"))
    p.add_argument("--images", type=int, default=4000)
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    out = {"bare": _mib("VmRSS")}
    from tfpathloader.load.tf_backend import import_tensorflow

    import_tensorflow()
    out["tensorflow_imported"] = _mib("VmRSS")
    import torch  # noqa: F401

    out["torch_imported"] = _mib("VmRSS")
    from tfpathloader import PathIndex, make_loader

    index = PathIndex.read(args.index)
    size = tuple(args.size) if args.size else None
    loader = make_loader(
        backend="tf", index=index, batch_size=256, num_workers=2, seed=0, size=size
    )
    out["loader_made"] = _mib("VmRSS")
    for epoch in range(2):
        loader.set_epoch(epoch)
        n = 0
        for batch in loader:
            n += len(batch["index"])
            if n >= args.images:
                break
    out["peak_while_running"] = _mib("VmHWM")
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""Cost of the hostile-input checks on the loaders, measured side by side in one run.

Not a test: run it by hand and quote its numbers.

    python benchmarks/hostile_checks.py INDEX [--before /path/to/old/checkout] [--rounds 5]

Rows, interleaved round by round (images/s of a full pass over up to --images records):

- ``torch`` / ``tf``: the loaders as they are (regular-file check, size limit, root rule on
  resolved paths, PNG checksums; tf reads its files in Python, see NOTE [tf reads]).
- ``torch no-root-rule``: ``allow_outside_root=True``, so the root rule's share shows.
- ``tf tf.io.read_file``: the tf backend reading with ``tf.io.read_file`` (no checks at all):
  the alternative NOTE [tf reads] was decided against.
- with ``--before DIR``: ``torch (before)`` / ``tf (before)``, the same loaders from another
  checkout (e.g. the tag before these checks), each in a subprocess like every row here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_ONE = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
import tfpathloader
print(tfpathloader.__file__)
from tfpathloader import PathIndex
from tfpathloader.load.loader import make_loader
backend, mode, images, batch, workers = sys.argv[1:6]
index = PathIndex.read(sys.argv[6])
kw = dict(backend=backend, index=index, batch_size=int(batch), shuffle="global", seed=0,
          num_workers=int(workers))
if mode == "no-root-rule":
    kw["allow_outside_root"] = True
loader = make_loader(**kw)
if mode == "tf-read-file":
    loader._read_mode = "tf"
    loader._load_batch_fn = __import__("tensorflow").function(loader._load_batch)
n_batches = min(len(loader), max(1, int(images) // int(batch)))
def run(epoch):
    loader.set_epoch(epoch)
    it = iter(loader)
    t = time.perf_counter()
    seen = 0
    for _ in range(n_batches):
        seen += len(next(it)["index"])
    return seen / (time.perf_counter() - t)
run(0)  # warm: workers, tracing
print(json.dumps(run(1)))
"""


def _rate(pythonpath: str, args: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": pythonpath, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_ONE), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=pythonpath,  # not this folder: `python -c` puts the cwd first on sys.path
    )
    if out.returncode:
        raise RuntimeError(f"{args} failed:\n{out.stderr[-3000:]}")
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith(os.path.abspath(pythonpath)), (lines[0], pythonpath)
    return float(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("index")
    ap.add_argument("--before", help="another checkout to compare with (its PYTHONPATH)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    common = [str(args.images), str(args.batch_size), str(args.workers), args.index]
    rows: dict[str, tuple[str, list[str]]] = {
        "torch": (HERE, ["torch", "default", *common]),
        "torch no-root-rule": (HERE, ["torch", "no-root-rule", *common]),
        "tf": (HERE, ["tf", "default", *common]),
        "tf tf.io.read_file": (HERE, ["tf", "tf-read-file", *common]),
    }
    if args.before:
        rows["torch (before)"] = (args.before, ["torch", "default", *common])
        rows["tf (before)"] = (args.before, ["tf", "default", *common])
    rates: dict[str, list[float]] = {k: [] for k in rows}
    for r in range(args.rounds):
        for name, (path, row_args) in rows.items():
            rates[name].append(_rate(path, row_args))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    result = {k: round(statistics.median(v)) for k, v in rates.items()}
    ratios = {
        "torch / torch (before)": ("torch", "torch (before)"),
        "tf / tf (before)": ("tf", "tf (before)"),
        "torch / torch no-root-rule": ("torch", "torch no-root-rule"),
        "tf / tf tf.io.read_file": ("tf", "tf tf.io.read_file"),
    }
    for label, (a, b) in ratios.items():
        if a in result and b in result:
            result[label] = round(result[a] / result[b], 3)
    every = {k: [round(x) for x in v] for k, v in rates.items()}
    print(json.dumps({"images_per_s_median": result, "rounds": every}, indent=2))


if __name__ == "__main__":
    main()

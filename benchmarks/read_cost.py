"""CPU cost per file of the hostile-input checks on the read path, before vs after, in-process.

Not a test: run it by hand and quote its numbers.

    python benchmarks/read_cost.py INDEX OLD_CHECKOUT   # e.g. the demo index, a layout-v2 export

CPU time (time.process_time), medians of 7 interleaved passes over up to 20,000 files: less
disturbed by other processes than throughput on a shared machine.
"""

import importlib
import os
import statistics
import sys
import time
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INDEX, BEFORE = sys.argv[1], os.path.abspath(sys.argv[2])
from tfpathloader import PathIndex  # noqa: E402
from tfpathloader.load import decode as new  # noqa: E402
from tfpathloader.load.files import FileReader  # noqa: E402

# The old decode module imports ..errors relatively: load it as part of a stand-in package.
pkg = types.ModuleType("oldpkg")
pkg.__path__ = [os.path.join(BEFORE, "tfpathloader")]
sys.modules["oldpkg"] = pkg
sub = types.ModuleType("oldpkg.load")
sub.__path__ = [os.path.join(BEFORE, "tfpathloader", "load")]
sys.modules["oldpkg.load"] = sub
old = importlib.import_module("oldpkg.load.decode")
index = PathIndex.read(INDEX)
paths = index.paths(range(min(20000, len(index))))
rule = FileReader(root=index.root)
free = FileReader(root=index.root, allow_outside_root=True)
rows = {
    "read: before": lambda p: old.read_file(p),
    "read: after (root rule)": lambda p: new.read_file(p, -1, rule),
    "read: after (no root rule)": lambda p: new.read_file(p, -1, free),
    "read+decode: before": lambda p: old.load_pixels(p),
    "read+decode: after": lambda p: new.load_pixels(p, reader=rule),
}
res = {k: [] for k in rows}
for _ in range(7):
    for k, f in rows.items():
        t = time.process_time()
        for p in paths:
            f(p)
        res[k].append((time.process_time() - t) / len(paths) * 1e6)
med = {k: round(statistics.median(v), 2) for k, v in res.items()}
print("CPU us per file, median of 7 interleaved passes over 20,000 demo PNGs:", med)
print(
    "read after/before:",
    round(med["read: after (root rule)"] / med["read: before"], 3),
    "root rule share:",
    round(med["read: after (root rule)"] - med["read: after (no root rule)"], 2),
    "us",
    "read+decode after/before:",
    round(med["read+decode: after"] / med["read+decode: before"], 3),
)
datas = [rule.read(p) for p in paths]
res2 = {
    "check_bytes (PNG CRCs)": [],
    "FileReader.read alone": [],
    "decode_pixels before": [],
    "decode_pixels after": [],
}
for _ in range(7):
    t = time.process_time()
    for d in datas:
        new.check_bytes(d)
    res2["check_bytes (PNG CRCs)"].append((time.process_time() - t) / len(datas) * 1e6)
    t = time.process_time()
    for p in paths:
        rule.read(p)
    res2["FileReader.read alone"].append((time.process_time() - t) / len(paths) * 1e6)
    t = time.process_time()
    for d in datas:
        old.decode_pixels(d)
    res2["decode_pixels before"].append((time.process_time() - t) / len(paths) * 1e6)
    t = time.process_time()
    for d in datas:
        new.decode_pixels(d)
    res2["decode_pixels after"].append((time.process_time() - t) / len(paths) * 1e6)
print({k: round(statistics.median(v), 2) for k, v in res2.items()})

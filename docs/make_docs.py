"""Regenerate every measured number of the README and the docs, into its marked block.

    python docs/make_docs.py --check                    # the blocks exist and parse (fast)
    python docs/make_docs.py --list                     # the blocks, and the command behind each
    python docs/make_docs.py --only audit               # rerun one block's command (comma list)
    python docs/make_docs.py                            # rerun them all (trains 5 runs; minutes)

A block is ``<!-- docs:NAME -->`` ... ``<!-- /docs:NAME -->`` in README.md or in a page of
docs/ (each block in exactly one file); everything between the markers is replaced by what the
block's command produced with the current code, followed by a comment naming the command, the
date and the machine. Numbers outside the blocks are not measured (they are arithmetic or design
facts), or name the benchmark script that measured them beside them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DOCS = os.path.join(ROOT, "docs")
BENCHMARKS = os.path.join(ROOT, "benchmarks")  # peers.py: the Speed table's rows
# Markers stand on lines of their own (a marker quoted in a sentence is not one).
_BLOCK = re.compile(
    r"^<!-- docs:(?P<name>[\w-]+) -->\n(?P<body>.*?)^<!-- /docs:(?P=name) -->$", re.S | re.M
)
_MARK = re.compile(r"^<!-- (/?)docs:([\w-]+) -->$", re.M)


@dataclass(frozen=True)
class Block:
    """One marked block: what command makes it, and how its output becomes markdown."""

    name: str
    command: str
    make: Callable[[Context], str]


class Context:
    """Shared by the blocks of one regeneration: the data folder, and results made once."""

    def __init__(self, data: str, work: str):
        self.data = data
        self.work = work
        self.cache: dict[str, Any] = {}

    def run(self, *args: str) -> str:
        """Run a command in the repository root; its stdout (fails loudly on an error)."""
        env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
        print("$", " ".join(args), file=sys.stderr)
        done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
        return done.stdout

    def cli(self, *args: str) -> str:
        return self.run(sys.executable, "-m", "tfpathloader.tools.cli", *args)

    def sweep(self) -> dict[str, Any]:
        """The README's 2x2 sweep (default config otherwise) and its comparison, made once."""
        if "sweep" not in self.cache:
            folder = os.path.join(self.work, "sweep")
            self.run(
                sys.executable,
                "train.py",
                "-m",
                "loader=torch,tf",
                "shuffle=global,buffer",
                f"data.root={self.data}",
                f"hydra.sweep.dir={folder}",
                "trainer.progress=false",
            )
            self.run(sys.executable, "-m", "train_app.compare", folder)
            with open(os.path.join(folder, "comparison.md")) as f:
                table = f.read().strip()
            with open(os.path.join(folder, "comparison.json")) as f:
                runs = json.load(f)["runs"]
            self.cache["sweep"] = {"table": table, "runs": runs, "folder": folder}
            copy_sweep_figures(folder)
        return self.cache["sweep"]


def copy_sweep_figures(folder: str, docs: str = os.path.join(ROOT, "docs")) -> list[str]:
    """Copy the sweep's figures that the README shows into ``docs/``; return the files written.

    ``comparison.png``, and ``training-global.png`` / ``training-buffer.png`` from the torch
    runs (the README links them).
    """
    import shutil

    written = [shutil.copy(os.path.join(folder, "comparison.png"), docs)]
    for run in sorted(os.listdir(folder)):
        for shuffle in ("global", "buffer"):
            if run.endswith(f"-torch-{shuffle}"):
                target = os.path.join(docs, f"training-{shuffle}.png")
                written.append(shutil.copy(os.path.join(folder, run, "training.png"), target))
    return written


def machine() -> str:
    """The machine the numbers were measured on, in words."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {load:.1f} when stamped (speeds on a busy machine are low)"
    )


# --------------------------------------------------------------------------- the blocks


def _accuracy(ctx: Context) -> str:
    # A plain `python train.py` (the default config, as the README's first command runs it);
    # only where it writes differs.
    folder = os.path.join(ctx.work, "train")
    ctx.run(
        sys.executable,
        "train.py",
        f"data.root={ctx.data}",
        f"hydra.run.dir={folder}",
        "trainer.progress=false",
    )
    with open(os.path.join(folder, "metrics.json")) as f:
        metrics = json.load(f)
    return (
        f"A fresh `python train.py` prints test accuracy {metrics['test_accuracy']:.4f} "
        f"({metrics['test_samples']:,} test images, {metrics['steps']:,} steps).\n"
    )


def _sweep(ctx: Context) -> str:
    return ctx.sweep()["table"] + "\n"


def _audit(ctx: Context) -> str:
    out = os.path.join(ctx.work, "audit")
    payload = json.loads(
        ctx.cli(
            "audit",
            os.path.join(ctx.data, "index.tfrecord"),
            "--shuffle",
            "global,buffer",
            "--buffer-size",
            "10000",
            "--draws",
            "50000",
            "--out",
            out,
            "--json",
            "-q",
        )
    )
    import shutil

    shutil.copy(payload["figure"], os.path.join(ROOT, "docs", "audit.png"))
    return audit_table(payload["orders"], draws=50000)


def audit_table(orders: dict[str, dict[str, Any]], *, draws: int) -> str:
    """The README's audit table from ``tfpathloader audit --json``'s ``orders``."""
    lines = [
        f"| order ({draws:,} draws of the demo index) | spearman z | chi2 p | ks p | first `2` "
        "| last label first seen | never drawn |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in orders.items():
        first = r["label_first_draw"]
        two = first.get("2")
        last = (
            "never" if any(v is None for v in first.values()) else f"draw {max(first.values()):,}"
        )
        lines.append(
            f"| {name} | {r['spearman_z']:+.1f} | {r['chi2_p']:.2g} | {r['ks_p']:.2g} | "
            f"{'never' if two is None else f'draw {two:,}'} | {last} | "
            f"{', '.join(r['missing_labels']) or '-'} |"
        )
    return "\n".join(lines) + "\n"


# The four image sets of the Speed table: (file name under docs/bench, column title, arguments of
# benchmarks/peers.py: the index or set options, then rows). BENCH_ARGS is how much of each is
# measured. The JPEG sets also run the rows of equal pixel quality (NOTE [equal pixels] in
# benchmarks/bench.py); on the PNGs they would repeat their defaults' rows.
_EQUAL = (
    "--rows",
    "raw,raw-lean,torch,tf,torch-fast,tf-fast,baseline,stateful,grain,tf-hand,tf-hand-exact,dali",
)
_BENCH_SETS = (
    ("demo-png", "demo PNG 28x28", ("{data}/index.tfrecord",)),
    ("jpeg-224", "224px JPEG", ("--make-jpeg", "{work}/bench-jpeg", *_EQUAL)),
    ("photos", "photos -> resize 224", ("--make-photos", "{work}/bench-photos", *_EQUAL)),
    (
        "photos-crop",
        "photos -> RandomResizedCrop 224 + flip",
        ("--make-photos", "{work}/bench-photos", "--crop", *_EQUAL),
    ),
)
BENCH_ARGS = ("--repeat", "5")


def _benchmarks() -> None:
    """Put benchmarks/ first on sys.path: docs/, this script's folder, has a bench/ folder too."""
    if sys.path[0] != BENCHMARKS:
        sys.path.insert(0, BENCHMARKS)


def _bench(ctx: Context) -> str:
    _benchmarks()
    from bench import format_bench_table

    results = {}
    for name, _, args in _BENCH_SETS:
        argv = [a.format(data=ctx.data, work=ctx.work) for a in args]
        res = json.loads(
            ctx.run(sys.executable, "benchmarks/peers.py", *argv, *BENCH_ARGS, "--json", "-q")
        )
        results[name] = res
        with open(os.path.join(ROOT, "docs", "bench", f"{name}.md"), "w") as f:
            f.write(format_bench_table(res) + "\n")
    return bench_table(results)


def bench_table(results: dict[str, dict[str, Any]]) -> str:
    """The README's Speed table: per set, x raw (median) / CPU ms per image, per row."""
    _benchmarks()
    from peers import CATALOG  # every row, in the bench's order

    sets = [s for s in _BENCH_SETS if s[0] in results]
    any_res = results[sets[0][0]]
    lines = [
        f"Each cell: images/s as a ratio to the raw Pillow rate (median of "
        f"{any_res['repeat']} interleaved rounds after a warm-up) / CPU milliseconds per image "
        f"over all of the row's processes; {any_res['workers']} workers, batch "
        f"{any_res['batch_size']}, {any_res['cpu_count']} cores. Full tables (images/s, "
        "range, first batch, cold start, memory): "
        + ", ".join(f"[{title}](docs/bench/{name}.md)" for name, title, _ in sets)
        + ".",
        "",
        "| row | "
        + " | ".join(f"{title} ({results[n]['images']:,})" for n, title, _ in sets)
        + " |",
        "|---|" + "---|" * len(sets),
    ]
    for key, row in CATALOG.items():
        cells = []
        for name, _, _ in sets:
            r = results[name]["rows"].get(key)
            if r is None:
                cells.append("-")
            elif "skipped" in r:
                cells.append("skipped")
            else:
                cells.append(f"{r['ratio_to_raw']:.2f} / {r['cpu_ms_per_image']:.2f}")
        lines.append(f"| {row.title} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _index10m(ctx: Context) -> str:
    # Kept, so that the worker-memory block reuses it instead of building it again.
    folder = os.path.join(ctx.work, "i10m-kept")
    r = json.loads(ctx.run(sys.executable, "benchmarks/index_10m.py", "--out", folder, "--keep"))
    return (
        f"- {r['records']:,} records in {r['shards']} shards: written in {r['build_s']:.0f} s, "
        f"first open (parses every record, writes the cache) {r['first_open_s']:.0f} s, cached "
        f"open {1000 * r['cached_open_s']:.0f} ms, {r['bytes_per_record_excluding_paths']:.0f} B "
        "per record plus the path bytes (`benchmarks/index_10m.py`).\n"
    )


def _worker_memory(ctx: Context) -> str:
    index = os.path.join(ctx.work, "i10m-kept", "index.tfrecord")  # a sharded name: index-*
    import glob

    if not glob.glob(os.path.join(ctx.work, "i10m-kept", "index*.tfrecord*")):
        ctx.run(
            sys.executable,
            "benchmarks/index_10m.py",
            "--out",
            os.path.dirname(index),
            "--keep",
        )
    r = json.loads(ctx.run(sys.executable, "benchmarks/worker_memory.py", index))

    def private(kind: str) -> float:
        procs = r[kind]["processes"]
        per = [v["private_dirty_mb"] for k, v in procs.items() if k.startswith("worker")]
        return max(per)

    return (
        f"- Worker processes share the cache's pages: {r['workers']} DataLoader workers over "
        f"{r['records']:,} records hold at most {private('pathindex'):.0f} MB private memory "
        f"each, against {private('list'):.0f} MB each for a Python list of paths "
        "(`benchmarks/worker_memory.py`).\n"
    )


def _hostile(ctx: Context) -> str:
    return ctx.run(sys.executable, "tests/hostile_corpus.py").strip() + "\n"


BLOCKS = {
    b.name: b
    for b in (
        Block("accuracy", "python train.py", _accuracy),
        Block(
            "sweep",
            "python train.py -m loader=torch,tf shuffle=global,buffer"
            " && python -m train_app.compare",
            _sweep,
        ),
        Block(
            "audit",
            "tfpathloader audit data/index.tfrecord --shuffle global,buffer --draws 50000",
            _audit,
        ),
        Block(
            "bench",
            "python benchmarks/peers.py data/index.tfrecord, --make-jpeg DIR, --make-photos DIR, "
            "--make-photos DIR --crop, each with --repeat 5, the three JPEG sets with every row",
            _bench,
        ),
        Block("index10m", "python benchmarks/index_10m.py", _index10m),
        Block("worker-memory", "python benchmarks/worker_memory.py", _worker_memory),
        Block("hostile", "python tests/hostile_corpus.py", _hostile),
    )
}


# --------------------------------------------------------------------------- files


def doc_files(root: str = ROOT) -> list[str]:
    """README.md and every Markdown page under docs/ (not the built site)."""
    files = [os.path.join(root, "README.md")]
    for folder, subs, names in os.walk(os.path.join(root, "docs")):
        subs[:] = sorted(d for d in subs if not d.startswith(("_", ".")))
        files += [os.path.join(folder, n) for n in sorted(names) if n.endswith(".md")]
    return files


def parse(text: str) -> dict[str, str]:
    """The blocks of one file's ``text`` (name -> body).

    Raises:
        ValueError: for a marker without its partner, a block named twice, or an unknown name.
    """
    marks = _MARK.findall(text)
    found = {m["name"]: m["body"] for m in _BLOCK.finditer(text)}
    problems = []
    opened = [n for close, n in marks if not close]
    closed = [n for close, n in marks if close]
    for n in sorted(set(opened) | set(closed)):
        if opened.count(n) != 1 or closed.count(n) != 1 or n not in found:
            problems.append(f"block {n!r}: needs exactly one opening and one closing marker")
        elif n not in BLOCKS:
            problems.append(f"block {n!r}: no command makes it (known: {', '.join(BLOCKS)})")
    if problems:
        raise ValueError("; ".join(problems))
    return found


def locate(files: list[str]) -> dict[str, str]:
    """Which file holds each block (name -> path): every block in exactly one of ``files``.

    Raises:
        ValueError: naming the file, for a broken block, a block in two files or in none.
    """
    where: dict[str, str] = {}
    problems = []
    for path in files:
        with open(path) as f:
            try:
                blocks = parse(f.read())
            except ValueError as e:
                problems.append(f"{os.path.relpath(path, ROOT)}: {e}")
                continue
        for name in blocks:
            if name in where:
                problems.append(
                    f"block {name!r}: in both {os.path.relpath(where[name], ROOT)} and "
                    f"{os.path.relpath(path, ROOT)}"
                )
            where[name] = path
    for name in BLOCKS:
        if name not in where:
            problems.append(f"block {name!r}: missing (in none of README.md, docs/**/*.md)")
    if problems:
        raise ValueError("; ".join(problems))
    return where


def replace(text: str, name: str, body: str) -> str:
    """``text`` with block ``name``'s body replaced."""
    stamp = (
        f"<!-- made by `python docs/make_docs.py --only {name}` ({BLOCKS[name].command}) on "
        f"{datetime.date.today().isoformat()}, {machine()} -->\n"
    )
    new = f"<!-- docs:{name} -->\n{body}{stamp}<!-- /docs:{name} -->"
    return _BLOCK.sub(lambda m: new if m["name"] == name else m.group(0), text)


def main(argv: list[str] | None = None) -> int:
    """Check or regenerate the blocks; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only check that the blocks parse")
    ap.add_argument("--list", action="store_true", help="list the blocks and their commands")
    ap.add_argument("--only", help="comma-separated blocks to regenerate (default: all)")
    ap.add_argument("--data", default="data", help="the demo data folder (default ./data)")
    ap.add_argument(
        "--files", nargs="+", help="the files holding the blocks (default: README.md, docs/)"
    )
    args = ap.parse_args(argv)
    files = args.files or doc_files()
    try:
        where = locate(files)
    except ValueError as e:
        print(f"make_docs: {e}", file=sys.stderr)
        return 1
    if args.list or args.check:
        for b in BLOCKS.values():
            print(f"{b.name:14} {os.path.relpath(where[b.name], ROOT):36} {b.command}")
        if args.check:
            print(f"ok: {len(BLOCKS)} blocks in {len(set(where.values()))} files")
        return 0
    names = [n.strip() for n in (args.only or ",".join(BLOCKS)).split(",") if n.strip()]
    unknown = [n for n in names if n not in BLOCKS]
    if unknown:
        print(f"make_docs: unknown block(s) {unknown}; known: {', '.join(BLOCKS)}", file=sys.stderr)
        return 2
    data = os.path.abspath(args.data)
    if not os.path.exists(os.path.join(data, "index.tfrecord")) and set(names) - {
        "index10m",
        "hostile",
    }:
        Context(data, "").cli("demo", data, "-q")
    with tempfile.TemporaryDirectory(prefix="make-docs-") as work:
        ctx = Context(data, work)
        for name in names:
            body = BLOCKS[name].make(ctx)
            with open(where[name]) as f:
                text = f.read()
            with open(where[name], "w") as f:  # each block as soon as it is made
                f.write(replace(text, name, body))
            print(f"updated block {name!r} in {where[name]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

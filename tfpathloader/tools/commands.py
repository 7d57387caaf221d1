"""What each ``tfpathloader`` sub-command does (the parser is in :mod:`tfpathloader.tools.cli`)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any


def _progress(args: argparse.Namespace) -> bool | None:
    """Progress bars on a terminal unless --quiet."""
    return False if getattr(args, "quiet", False) else None


def _report(args: argparse.Namespace, result: Any, lines: list[str], status: int = 0) -> int:
    """Print ``result`` as JSON with ``--json``, else the human-readable ``lines``."""
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print("\n".join(lines))
    return status


def fresh_folder(folder: str, outputs: tuple[str, ...], *, force: bool) -> str:
    """Where a command writes ``outputs`` without silently replacing an earlier run's.

    NOTE [no silent overwrite]: when ``folder`` already holds one of ``outputs`` (and not
    ``--force``), the command writes into ``folder-2``, ``folder-3`` ... instead and says so
    on stderr.
    """
    chosen, k = folder, 1
    while not force and any(os.path.exists(os.path.join(chosen, name)) for name in outputs):
        k += 1
        chosen = f"{folder.rstrip(os.sep)}-{k}"
    if chosen != folder:
        print(
            f"{folder} already holds an earlier {outputs[0]}: writing to {chosen} instead "
            "(--force replaces)",
            file=sys.stderr,
        )
    os.makedirs(chosen, exist_ok=True)
    return chosen


# --------------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import make_demo

    summary = make_demo(
        args.out_dir,
        per_label=args.per_label,
        test_per_label=args.test_per_label,
        mnist=args.mnist,
        seed=args.seed,
        workers=args.workers,
        progress=_progress(args),
    )
    tr, te = summary["splits"]["train"], summary["splits"]["test"]
    return _report(
        args,
        summary,
        [
            f"made {tr['records']:,} training and {te['records']:,} test images in {args.out_dir}",
            f"  source: {summary['source']}",
            f"  train index: {os.path.join(args.out_dir, tr['index'])} (sorted by label)",
            f"  test index:  {os.path.join(args.out_dir, te['index'])}",
            "  image TFRecord (the article's format): "
            + os.path.join(args.out_dir, "images.tfrecord"),
        ],
    )


# --------------------------------------------------------------------------- index


def _open(args: argparse.Namespace):
    from ..index import PathIndex

    return PathIndex.read(
        args.index,
        root=args.root,
        allow_outside_root=args.allow_outside_root,
        progress=_progress(args),
    )


def cmd_index_build(args: argparse.Namespace) -> int:
    from ..index import build_index

    index, report = build_index(
        args.image_root,
        args.out,
        shards=args.shards,
        compression="gzip" if args.gzip else None,
        unlabeled=args.unlabeled,
        progress=_progress(args),
    )
    files, last = index.files, os.path.basename(index.files[-1])
    wrote = files[0] if len(files) == 1 else f"{len(files)} shards, {files[0]} ... {last}"
    name = re.sub(r"-0+-of-\d+", "", files[0])  # a sharded index opens by its plain name
    lines = [
        f"indexed {report['images']:,} images in {report['classes']} classes",
        f"  wrote: {wrote}",
        f"  paths relative to: {index.root}",
        f"  next: tfpathloader index info {name}",
    ]
    for reason, count in report["skipped"].items():
        if count:
            ex = ", ".join(report["skipped_examples"][reason][:3])
            lines.append(f"  left out {count:,} files ({reason}), e.g. {ex}")
    return _report(args, {**report, **index.info()}, lines)


def cmd_index_info(args: argparse.Namespace) -> int:
    index = _open(args)
    info = index.info()
    files = info["files"]
    lines = [
        f"records:   {info['records']:,}",
        f"shards:    {info['shards']}"
        + (f" ({info['compression']})" if info["compression"] else ""),
        *(f"           {f}" for f in files[:4]),
        *([f"           ... {len(files) - 4} more"] if len(files) > 4 else []),
        f"root:      {info['root']}",
        f"size:      {info['size_bytes']:,} bytes on disk, "
        f"{info['memory_bytes']:,} bytes in memory",
        f"labels:    {info['num_classes']} classes"
        + (f", {info['unlabeled']:,} unlabeled" if info["unlabeled"] else ""),
    ]
    counts = info["label_counts"]
    width = max((len(k) for k in counts), default=1)
    top = max(counts.values(), default=1) or 1
    for name, c in counts.items():
        lines.append(f"  {name:>{width}} {c:>10,} {'#' * max(1, round(30 * c / top)) if c else ''}")
    return _report(args, info, lines)


def cmd_index_verify(args: argparse.Namespace) -> int:
    from .verify import verify_index

    index = _open(args)
    limit = {} if args.max_file_bytes is None else {"max_file_bytes": args.max_file_bytes}
    report = verify_index(
        index, decode=args.decode, workers=args.workers, progress=_progress(args), **limit
    )
    lines = [f"record {f.record_id}: {f.path}: {f.problem}" for f in report.failures]
    if report.ok:
        what = "exist and decode" if args.decode else "exist"
        lines.append(f"ok: all {report.records:,} files {what}")
    else:
        print(
            f"FAILED: {len(report.failures):,} of {report.records:,} records are bad",
            file=sys.stderr,
        )
    return _report(args, report.to_dict(), lines, 0 if report.ok else 1)


# --------------------------------------------------------------------------- audit


def cmd_audit(args: argparse.Namespace) -> int:
    from ..order.spec import OrderSpec
    from .audit import audit_figure, audit_ids, delivered_ids, format_audit_table

    index = _open(args)
    shuffles = [s.strip() for s in args.shuffle.split(",") if s.strip()]
    sequences, results = {}, {}
    for shuffle in shuffles:
        buffered = shuffle == "buffer"
        name = f"{shuffle} ({args.buffer_size:,})" if buffered else shuffle
        spec = OrderSpec(
            shuffle=shuffle,
            permutation=args.permutation,
            buffer_size=args.buffer_size if buffered else None,
            seed=args.seed,
            batch_size=args.batch_size,
        )
        ids = delivered_ids(
            index,
            spec,
            backend=args.backend,
            draws=args.draws,
            epoch=args.epoch,
            num_workers=args.num_workers,
        )
        sequences[name] = ids
        results[name] = audit_ids(ids, index.labels, label_names=index.classes)
    out = fresh_folder(args.out, ("audit.json", "audit.png"), force=args.force)
    figure = audit_figure(
        sequences,
        index.labels,
        os.path.join(out, "audit.png"),
        results=results,
        title=f"{len(index):,} records, backend {args.backend}, seed {args.seed}",
        label_names=index.classes,
    )
    payload = {
        "index": list(index.files),
        "backend": args.backend,
        "seed": args.seed,
        "epoch": args.epoch,
        "figure": os.path.abspath(figure),
        "orders": results,
    }
    with open(os.path.join(out, "audit.json"), "w") as f:
        json.dump(payload, f, indent=2)
    table = format_audit_table(results)
    return _report(
        args, payload, [table, f"\nwrote {figure} and {os.path.join(out, 'audit.json')}"]
    )

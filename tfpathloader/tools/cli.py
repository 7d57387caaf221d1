"""The ``tfpathloader`` command line: demo data, index build/info/verify, audit."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .._tf import quiet_tensorflow_logs
from .._version import __version__
from ..errors import TFPathLoaderError
from . import commands

__all__ = ["build_parser", "main"]

_DESCRIPTION = """\
Shuffle millions of training images evenly, then load them fast.

tfpathloader keeps a small TFRecord *path index* of (index, label, path) records that can be
shuffled completely, then reads and decodes the images in that order (PyTorch or tf.data).
Start with:  tfpathloader demo data  &&  tfpathloader index info data/index.tfrecord
"""


def _output_options() -> argparse.ArgumentParser:
    """``--json`` and ``--quiet``, which every command takes."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return p


def _index_options() -> argparse.ArgumentParser:
    """The index to open, and how: the commands that read one take these."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("index", help="index file, glob ('data/index-*.tfrecord') or sharded name")
    p.add_argument(
        "--root", help="folder the stored paths are relative to (default: the index's folder)"
    )
    p.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="accept absolute paths, paths climbing out of the root with '..', and symlinks "
        "leading outside it",
    )
    return p


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="tfpathloader",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    out, index = [_output_options()], [_output_options(), _index_options()]

    p = sub.add_parser(
        "demo",
        parents=out,
        help="make the article's label-sorted digit dataset",
        description="Make 70,000 label-sorted 28x28 digit PNGs (7,000 per label) "
        "from scikit-learn's bundled digits, a held-out test split from other "
        "source digits, their path indexes and the article's image TFRecord.",
    )
    p.add_argument("out_dir", help="folder to write into (created if missing)")
    p.add_argument(
        "--per-label", type=int, help="training images per label (default 7000; with --mnist: all)"
    )
    p.add_argument(
        "--test-per-label", type=int, help="held-out images per label (default 200; --mnist: all)"
    )
    p.add_argument(
        "--mnist",
        metavar="IDX_DIR",
        help="use real MNIST from this folder (train/t10k IDX files, plain or .gz)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split and jitter (default 0)")
    p.add_argument("--workers", type=int, help="processes (default: all cores)")
    p.set_defaults(func=commands.cmd_demo)

    idx = sub.add_parser(
        "index",
        help="build, inspect or verify a path index",
        description="Build, inspect or verify a TFRecord path index.",
    )
    isub = idx.add_subparsers(dest="index_command", metavar="ACTION", required=True)

    p = isub.add_parser(
        "build",
        parents=out,
        help="index an image folder (one sub-folder per class)",
        description="Walk IMAGE_ROOT's class sub-folders in sorted order and write "
        "a path index; labels are the folders' positions in that order.",
    )
    p.add_argument("image_root", help="folder with one sub-folder per class")
    p.add_argument("--out", help="index file (default: IMAGE_ROOT/index.tfrecord)")
    p.add_argument("--shards", type=int, default=1, help="number of TFRecord files (default 1)")
    p.add_argument("--gzip", action="store_true", help="GZIP-compress the shards")
    p.add_argument("--unlabeled", action="store_true", help="index every image with label -1")
    p.set_defaults(func=commands.cmd_index_build)

    p = isub.add_parser(
        "info",
        parents=index,
        help="records, shards, label histogram, root, size",
        description="Summarize a path index.",
    )
    p.set_defaults(func=commands.cmd_index_info)

    p = isub.add_parser(
        "verify",
        parents=index,
        help="check every path exists (--decode: and decodes)",
        description="Check every file the index names; list every failure and "
        "exit with status 1 if there is any.",
    )
    p.add_argument("--decode", action="store_true", help="also decode every image")
    p.add_argument(
        "--max-file-bytes",
        type=int,
        help="refuse files larger than this, as the loaders do (default: 256 MiB)",
    )
    p.add_argument("--workers", type=int, help="decoding processes (default: all cores)")
    p.set_defaults(func=commands.cmd_index_verify)

    p = sub.add_parser(
        "audit",
        parents=index,
        help="how evenly an order (or a real loader) shuffles: statistics and figure",
        description="Audit the shuffle quality of one or more orders side by side: rank "
        "correlation of draw and record id, label shares, first draw of each label, "
        "Kolmogorov-Smirnov uniformity, duplicates; and the article's figures.",
        epilog="example: tfpathloader audit data/index.tfrecord --shuffle global,buffer "
        "--buffer-size 10000 --draws 50000",
    )
    p.add_argument(
        "--shuffle",
        default="global",
        help="comma-separated orders to compare: global, buffer, none (default global)",
    )
    p.add_argument(
        "--buffer-size",
        type=int,
        default=10000,
        help="shuffle buffer size for --shuffle buffer (default 10000)",
    )
    p.add_argument("--draws", type=int, help="draws to audit (default: one epoch)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--epoch", type=int, default=0, help="epoch (default 0)")
    p.add_argument(
        "--permutation",
        default="exact",
        choices=["exact", "stateless"],
        help="how the global shuffle is computed (default exact)",
    )
    p.add_argument(
        "--backend",
        default="order",
        choices=["order", "torch", "tf"],
        help="order: the order alone, no images read; torch/tf: what the real loader "
        "delivered (default order)",
    )
    p.add_argument("--batch-size", type=int, default=256, help="loader batch size (torch/tf)")
    p.add_argument("--num-workers", type=int, default=2, help="loader workers (torch/tf)")
    p.add_argument(
        "--out",
        default="audit",
        help="folder for audit.json and audit.png (default ./audit; when it already holds an "
        "audit, ./audit-2 ...)",
    )
    p.add_argument("--force", action="store_true", help="replace an earlier audit in --out")
    p.set_defaults(func=commands.cmd_audit)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    quiet_tensorflow_logs()  # NOTE [quiet TensorFlow]: unless TF_CPP_MIN_LOG_LEVEL is set
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (TFPathLoaderError, FileNotFoundError, ValueError, ImportError) as e:
        print(f"tfpathloader {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

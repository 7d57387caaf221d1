"""Stage one: the path index, TFRecord shards of (index, label, path) records held columnar."""

from __future__ import annotations

from .build import IMAGE_EXTENSIONS, build_index
from .names import resolve_index_files, shard_names
from .parse import encode_example
from .path_index import PathIndex
from .write import write_index

__all__ = [
    "IMAGE_EXTENSIONS",
    "PathIndex",
    "build_index",
    "encode_example",
    "resolve_index_files",
    "shard_names",
    "write_index",
]

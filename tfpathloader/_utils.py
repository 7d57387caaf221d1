"""Small shared helpers: progress bars and quiet optional imports."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

__all__ = ["optional_import", "progress_bar"]


@contextlib.contextmanager
def progress_bar(enabled: bool | None, **kwargs: Any) -> Iterator[Any]:
    """A tqdm bar on stderr that appears only for work longer than a second.

    Args:
        enabled: ``True`` always, ``False`` never, ``None`` only when stderr is a terminal.
        **kwargs: Passed to ``tqdm`` (``desc``, ``total``, ``unit`` ...).
    """
    from tqdm.auto import tqdm

    disable = None if enabled is None else not enabled
    bar = tqdm(disable=disable, delay=1.0, dynamic_ncols=True, **kwargs)
    try:
        yield bar
    finally:
        bar.close()


def optional_import(name: str, extra: str, purpose: str) -> ModuleType:
    """Import ``name`` or raise an ImportError that says which extra to install."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise ImportError(
            f"{purpose} needs the '{name.split('.')[0]}' package: "
            f"pip install 'tfpathloader[{extra}]'"
        ) from e

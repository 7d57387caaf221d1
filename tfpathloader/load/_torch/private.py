"""Every private PyTorch API the torch backend uses, in one place, with why and where checked.

NOTE [private torch API]: three things the public DataLoader API cannot do without them, each
checked on torch 2.3-2.13 (CPU) and guarded by ``tests/unit/test_torch_private.py``, which fails
loudly if an upgrade renames or removes one:

- ``torch.UntypedStorage._new_shared(nbytes)``: a batch buffer in shared memory that a worker
  fills and the main process maps without a copy (what DataLoader's own collate uses for the
  same purpose, ``torch.utils.data._utils.collate``).
- ``_MultiProcessingDataLoaderIter._shutdown_workers()``: stop and join a loader's workers now,
  from a finalizer, instead of when the garbage collector gets to the iterator (see NOTE
  [worker shutdown]).
- ``DataLoader._iterator``: the persistent-worker iterator DataLoader keeps; dropped on close.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["drop_persistent_iterator", "new_shared_storage", "shutdown_workers"]


def new_shared_storage(nbytes: int) -> torch.UntypedStorage:
    """An untyped storage of ``nbytes`` in shared memory (passed to other processes by fd)."""
    return torch.UntypedStorage._new_shared(nbytes)


def shutdown_workers(iterator: Any) -> None:
    """Stop and join the worker processes of a DataLoader iterator (no-op for in-process ones)."""
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


def drop_persistent_iterator(dataloader: torch.utils.data.DataLoader) -> None:
    """Forget the iterator a ``persistent_workers`` DataLoader keeps between epochs."""
    if getattr(dataloader, "_iterator", None) is not None:
        dataloader._iterator = None

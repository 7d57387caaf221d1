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
- ``torch.ops.aten._upsample_bilinear2d_aa.out`` (and the public ``upsample_bilinear2d.out``):
  the kernel behind ``F.interpolate(mode="bilinear", antialias=True)``, writing into a given
  tensor, so a crop is resized straight into its HWC batch row. ``F.interpolate`` has no
  ``out=``, and its result is NCHW-contiguous even for a channels-last input, so the copy into
  the row was a transposing one: per 224px crop of a photo, 0.14 ms with ``out=`` vs 0.31 ms
  for ``interpolate`` + ``copy_`` (one core, CPU time, best of 5).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["drop_persistent_iterator", "new_shared_storage", "resize_into", "shutdown_workers"]


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


def resize_into(src: torch.Tensor, dst: torch.Tensor, antialias: bool) -> None:
    """Bilinear resize of an HxWxC uint8 tensor into ``dst`` (HxWxC), in place.

    The pixels are ``F.interpolate(mode="bilinear", align_corners=False, antialias=...)``'s.
    """
    d = dst.permute(2, 0, 1)[None]
    ptr = d.data_ptr()
    op = (
        torch.ops.aten._upsample_bilinear2d_aa.out
        if antialias
        else torch.ops.aten.upsample_bilinear2d.out
    )
    op(src.permute(2, 0, 1)[None], list(dst.shape[:2]), False, None, None, out=d)
    assert d.data_ptr() == ptr, "the resize kernel reallocated its out= tensor"

"""A batch as it crosses from a DataLoader worker: its arrays or its slot, skips and errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.utils.data

from .private import new_shared_storage
from .slots import _SHARED_MEMORY_MIN_BYTES, _SlotPool


def _fresh_buffer(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | torch.Tensor:
    """A new batch buffer: numpy when small or in-process, shared memory when large."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if torch.utils.data.get_worker_info() is None or nbytes < _SHARED_MEMORY_MIN_BYTES:
        return np.empty(shape, dtype=dtype)
    torch_dtype = torch.from_numpy(np.empty(0, dtype=dtype)).dtype
    storage = new_shared_storage(nbytes)
    return torch.empty(0, dtype=torch_dtype).set_(storage).view(shape)


class _WireBatch:
    """A batch as it crosses from a worker: its arrays (or its pool slot), skips and errors."""

    __slots__ = (
        "channels_last",
        "error",
        "image",
        "index",
        "label",
        "n",
        "pool_key",
        "remote",
        "skipped",
        "slot",
    )

    def __init__(
        self,
        *,
        image: Any = None,
        label: Any = None,
        index: Any = None,
        skipped: list[tuple[int, str, str]] | None = None,
        error: Exception | None = None,
        channels_last: bool = True,
        slot: int | None = None,
        pool_key: int | None = None,
        n: int = 0,
        remote: dict[str, int] | None = None,
    ):
        self.image = image
        self.label = label
        self.index = index
        self.skipped = skipped or []
        self.error = error
        self.channels_last = channels_last
        self.slot = slot
        self.pool_key = pool_key
        self.n = n
        self.remote = remote  # remote-read counts of this batch (storage/fetch.py)

    def __getstate__(self) -> tuple:
        return tuple(getattr(self, k) for k in self.__slots__)

    def __setstate__(self, state: tuple) -> None:
        for k, v in zip(self.__slots__, state, strict=True):
            setattr(self, k, v)

    def _settle(self) -> None:
        """Turn the slot into the image (or give back a slot the worker did not use)."""
        if self.slot is None or self.pool_key is None:
            return
        pool = _SlotPool.get(self.pool_key)
        if self.image is None and self.error is None:
            self.image = pool.deliver(self.slot, self.n)
        else:
            pool.release(self.slot)
        self.slot = None

    def to_dict(self) -> dict[str, torch.Tensor]:
        self._settle()
        image = _tensor(self.image)
        if self.channels_last:
            image = image.permute(0, 3, 1, 2)  # NxCxHxW view, channels_last memory format
        return {"image": image, "label": _tensor(self.label), "index": _tensor(self.index)}

    def pin_memory(self, device: Any = None) -> _WireBatch:
        """Called by DataLoader's pin-memory thread, off the main thread."""
        self._settle()
        if self.error is None:
            for k in ("image", "label", "index"):
                setattr(self, k, _tensor(getattr(self, k)).pin_memory())
        return self


def _tensor(x: Any) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(x)

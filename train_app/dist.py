"""Rank, world size and collectives of a training run (a no-op stand-in when not distributed)."""

from __future__ import annotations

import os
from typing import Any

import torch

from .errors import RunConfigError

__all__ = ["Dist", "pick_device"]


class Dist:
    """Rank, world size and collectives; a no-op stand-in when not distributed.

    Args:
        enabled: Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``).
    """

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.rank, self.world_size, self.local_rank = 0, 1, 0
        if not enabled:
            return
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            raise RunConfigError(
                "trainer.distributed=true needs the RANK and WORLD_SIZE that torchrun sets: "
                "torchrun --nproc_per_node=2 train.py trainer.distributed=true"
            )
        import torch.distributed as dist

        self.dist = dist
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.enabled:
            self.dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (on every rank)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        self.dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        """Leave the process group."""
        if self.enabled:
            self.dist.destroy_process_group()


def pick_device(name: str, dist: Dist) -> torch.device:
    """``trainer.device``: ``auto`` (this rank's GPU when there is one, else the CPU) or a name.

    Raises:
        RunConfigError: for a name torch does not know, or CUDA asked for where there is none.
    """
    if name == "auto":
        return torch.device(f"cuda:{dist.local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise RunConfigError(f"trainer.device={name}: {e} (use auto, cpu or cuda)") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunConfigError(f"trainer.device={name}: no CUDA device here; use auto or cpu")
    return device

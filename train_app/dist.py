"""Rank, world size and collectives of a training run (a no-op stand-in when not distributed)."""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch

from .errors import RunConfigError

__all__ = ["Dist", "pick_device"]


class Dist:
    """Rank, world size and collectives; a no-op stand-in when not distributed.

    Args:
        enabled: Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``).
        timeout_s: How long a collective waits for the other ranks before it fails.

    NOTE [collective timeout]: when one rank fails (a dead loader worker is a
    LoaderWorkerError, and train.py exits with the resume command), torchrun's agent stops
    the other ranks at once. Launched some other way, a rank would wait for it in the next
    collective (DDP's gradient all-reduce, a barrier) for the process group's timeout: gloo's
    default is 30 minutes, NCCL's 10. ``trainer.collective_timeout_s`` (default 300 s) sets it,
    so the job ends, and resumes exactly once, within minutes; raise it where rank 0 alone
    evaluates a large test set while the others wait at the final barrier.
    """

    def __init__(self, enabled: bool, timeout_s: float = 300.0):
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
        dist.init_process_group(
            "nccl" if torch.cuda.is_available() else "gloo",
            timeout=datetime.timedelta(seconds=timeout_s),
        )
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

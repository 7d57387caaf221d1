"""Checkpoints of a training run: one file per step for any world size (NOTE [elastic checkpoints]).

The loader's ``state_dict()`` is stored unchanged under ``"loader"``, so whatever format the
loader's state has (see ``DESIGN.md`` §9) a checkpoint carries the same state.
"""

from __future__ import annotations

import glob
import os
from typing import Any

import numpy as np
import torch

from .dist import Dist

__all__ = [
    "checkpoint_path",
    "checkpoint_payload",
    "find_checkpoint",
    "load_checkpoint",
    "restore",
    "save_checkpoint",
]


def checkpoint_path(folder: str, step: int) -> str:
    """Where the checkpoint of step ``step`` lives in run folder ``folder``."""
    return os.path.join(folder, "checkpoints", f"step-{step:08d}.pt")


# NOTE [elastic checkpoints]: a checkpoint does not depend on the world size. Model, optimizer
# and schedule are the same on every rank (DDP), the loader's state is a position in the
# epoch's global order that every rank agrees on (tfpathloader.order.agree refuses states of
# ranks at different steps), and the ids trained on are gathered into each epoch's global
# sequence. So rank 0 writes one file, and a run resumes from it on any number of ranks, with
# any batch size or number of workers (NOTE [elastic resume] in tfpathloader/order/state.py).
def save_checkpoint(folder: str, dist: Dist, payload: dict[str, Any]) -> str:
    """Rank 0 writes one file for all ranks; older steps go once the new one is in place.

    Args:
        folder: The run folder.
        dist: Rank and barrier.
        payload: ``step``, ``model``, ``optimizer``, ``loader`` (the agreed loader state),
            ``sequences`` and whatever else the run keeps.

    Returns:
        The file written.
    """
    path = checkpoint_path(folder, payload["step"])
    if dist.rank == 0:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        torch.save(payload, tmp)
        os.replace(tmp, path)  # a kill mid-write leaves the previous checkpoint intact
        for old in glob.glob(os.path.join(folder, "checkpoints", "step-*.pt")):
            if old != path:
                os.unlink(old)
    dist.barrier()
    return path


def find_checkpoint(resume: str, folder: str, dist: Dist) -> str | None:
    """The newest checkpoint (of any world size).

    Args:
        resume: ``"auto"`` (this run folder), another run folder, or a checkpoint file.
        folder: This run's folder.
        dist: Rank and world size (unused: checkpoints are the same for every rank).
    """
    if resume not in ("auto", "true", "True"):
        if os.path.isfile(resume):
            return resume
        folder = resume
    found = sorted(glob.glob(os.path.join(folder, "checkpoints", "step-*.pt")))
    return found[-1] if found else None


def load_checkpoint(path: str, device: torch.device) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint` (tensors mapped onto ``device``)."""
    return torch.load(path, map_location=device, weights_only=False)


def checkpoint_payload(run: Any) -> dict[str, Any] | None:
    """What a checkpoint holds of a run (``train.Run``), gathered from every rank.

    Every rank must call it (it gathers); rank 0 gets the payload, the others ``None``.
    """
    from tfpathloader.order import agree

    from .evaluation import epoch_sequences

    states = run.dist.gather(run.loader.state_dict())
    trained = run.dist.gather(run.trained)
    if run.dist.rank != 0:
        return None
    return {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "schedule": run.schedule.state_dict(),
        "loader": agree(states),
        "step": run.step,
        "losses": run.losses,
        "accs": run.accs,
        "epoch_starts": run.epoch_starts,
        "sequences": epoch_sequences(run.history, trained),
        "tails": run.tails,
        "world_size": run.dist.world_size,
        "runs": run.resume.get("runs", 1),
    }


def restore(run: Any, ckpt: dict[str, Any], path: str) -> None:
    """Put a :func:`checkpoint_payload` back into ``run`` (loader state included)."""
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    if "schedule" in ckpt:
        run.schedule.load_state_dict(ckpt["schedule"])
    run.loader.load_state_dict(ckpt["loader"])
    run.step, run.losses, run.accs = ckpt["step"], ckpt["losses"], ckpt["accs"]
    run.epoch_starts = list(ckpt.get("epoch_starts", []))
    run.history = {int(e): np.asarray(s) for e, s in ckpt["sequences"].items()}
    run.tails = {int(e): dict(t) for e, t in ckpt.get("tails", {}).items()}
    run.trained = {}
    run.resume = {
        "resumed": True,
        "from_step": run.step,
        "checkpoint": path,
        "from_world_size": ckpt.get("world_size"),
        "runs": ckpt.get("runs", 1) + 1,
    }

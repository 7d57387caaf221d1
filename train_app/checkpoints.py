"""Checkpoints of a training run: one file per rank and step, the loader state as it returned it.

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


def checkpoint_path(folder: str, step: int, rank: int) -> str:
    """Where rank ``rank`` keeps its checkpoint of step ``step`` in run folder ``folder``."""
    return os.path.join(folder, "checkpoints", f"step-{step:08d}-rank{rank}.pt")


def save_checkpoint(folder: str, dist: Dist, payload: dict[str, Any]) -> str:
    """Every rank saves its own file; older steps go once all ranks hold the new one.

    Args:
        folder: The run folder.
        dist: Rank and barrier.
        payload: ``step``, ``model``, ``optimizer``, ``loader`` (the loader's ``state_dict()``)
            and whatever else the run keeps.

    Returns:
        The file written.
    """
    path = checkpoint_path(folder, payload["step"], dist.rank)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)  # a kill mid-write leaves the previous checkpoint intact
    dist.barrier()
    for old in glob.glob(os.path.join(folder, "checkpoints", f"step-*-rank{dist.rank}.pt")):
        if old != path:
            os.unlink(old)
    return path


def find_checkpoint(resume: str, folder: str, dist: Dist) -> str | None:
    """The newest step every rank has a checkpoint for.

    Args:
        resume: ``"auto"`` (this run folder), another run folder, or a checkpoint file.
        folder: This run's folder.
        dist: Rank and world size.
    """
    if resume not in ("auto", "true", "True"):
        if os.path.isfile(resume):
            return resume
        folder = resume
    steps: dict[int, set[int]] = {}
    for f in glob.glob(os.path.join(folder, "checkpoints", "step-*-rank*.pt")):
        name = os.path.basename(f)[len("step-") : -len(".pt")]
        step, rank = name.split("-rank")
        steps.setdefault(int(step), set()).add(int(rank))
    complete = [s for s, ranks in steps.items() if ranks == set(range(dist.world_size))]
    if not complete:
        return None
    return checkpoint_path(folder, max(complete), dist.rank)


def load_checkpoint(path: str, device: torch.device) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint` (tensors mapped onto ``device``)."""
    return torch.load(path, map_location=device, weights_only=False)


def checkpoint_payload(run: Any) -> dict[str, Any]:
    """What a checkpoint holds of a run (``train.Run``): model, optimizer, schedule, loader
    state (as the loader returns it), step, curves, the ids trained on per epoch."""
    return {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "schedule": run.schedule.state_dict(),
        "loader": run.loader.state_dict(),
        "step": run.step,
        "losses": run.losses,
        "accs": run.accs,
        "epoch_starts": run.epoch_starts,
        "trained": run.trained,
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
    run.trained = {int(e): [np.asarray(b) for b in bs] for e, bs in ckpt["trained"].items()}
    run.resume = {
        "resumed": True,
        "from_step": run.step,
        "checkpoint": path,
        "runs": ckpt.get("runs", 1) + 1,
    }

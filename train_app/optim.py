"""Learning-rate schedules for ``conf/schedule/`` (plain typed factories, for Hydra's _target_)."""

from __future__ import annotations

import math

import torch

__all__ = ["constant", "warmup_cosine"]


def constant(
    optimizer: torch.optim.Optimizer, *, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The optimizer's learning rate, unchanged (``total_steps`` is accepted and unused)."""
    del total_steps
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def warmup_cosine(
    optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_steps: int = 0
) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up over ``warmup_steps``, then cosine decay to 0 at ``total_steps``.

    Raises:
        ValueError: for ``warmup_steps < 0`` or ``total_steps < 1``.
    """
    if warmup_steps < 0 or total_steps < 1:
        raise ValueError(
            f"warmup_cosine needs warmup_steps >= 0 and total_steps >= 1; got {warmup_steps}, "
            f"{total_steps}"
        )

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        rest = max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup_steps) / rest)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

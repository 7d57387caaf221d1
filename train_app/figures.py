"""The training run's figure: loss and batch accuracy per step, with epoch boundaries."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["ema", "training_figure"]


def ema(values: Sequence[float], k: float = 0.05) -> list[float]:
    """Exponential moving average (weight ``k`` on the newest value)."""
    out: list[float] = []
    m: float | None = None
    for v in values:
        m = v if m is None else (1 - k) * m + k * v
        out.append(m)
    return out


def training_figure(
    path: str,
    losses: Sequence[float],
    accs: Sequence[float],
    title: str,
    *,
    epoch_starts: Sequence[int] = (),
) -> str:
    """Write ``training.png``: raw and smoothed loss and batch accuracy per step.

    Args:
        path: PNG file to write.
        losses: Training loss per step.
        accs: Batch accuracy per step.
        title: Figure title.
        epoch_starts: First step (1-based) of every epoch after the first; drawn as
            dotted vertical lines.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    steps = np.arange(1, len(losses) + 1)
    panels = ((axes[0], losses, "training loss"), (axes[1], accs, "batch accuracy"))
    for ax, values, name in panels:
        ax.plot(steps, values, alpha=0.3, linewidth=0.8, color="tab:blue", label="per step")
        ax.plot(steps, ema(values), linewidth=1.6, color="tab:orange", label="moving average")
        for i, s in enumerate(epoch_starts):
            ax.axvline(
                s - 0.5,
                color="grey",
                linestyle=":",
                linewidth=1,
                label="epoch boundary" if i == 0 else None,
            )
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=8, loc="upper right" if ax is axes[0] else "lower right")
    axes[1].set_ylim(0, 1.02)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

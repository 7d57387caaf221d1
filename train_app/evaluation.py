"""After training: accuracy on the evaluation index, and the audit of the ids trained on."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tfpathloader import PathIndex
from tfpathloader.load.loader import make_loader
from tfpathloader.tools.audit import audit_ids

from .models import to_input

__all__ = ["audit_epochs", "evaluate", "global_order"]


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    index: PathIndex,
    *,
    device: torch.device,
    batch_size: int,
    channels: int,
    size: tuple[int, int] | None,
) -> dict[str, Any]:
    """Accuracy overall and per class on ``index`` (read in stored order).

    Returns:
        ``test_accuracy``, ``per_class_accuracy`` (class name -> accuracy, ``None`` for a
        class without records) and ``test_samples``.
    """
    model.eval()
    loader = make_loader(
        backend="torch",
        index=index,
        batch_size=batch_size,
        shuffle="none",
        channels=channels,
        size=size,
    )
    n_classes = index.num_classes
    correct = np.zeros(n_classes, dtype=np.int64)
    total = np.zeros(n_classes, dtype=np.int64)
    for batch in loader:
        logits = model(to_input(batch["image"].to(device)))
        pred = logits.argmax(1).cpu().numpy()
        y = batch["label"].numpy()
        np.add.at(total, y, 1)
        np.add.at(correct, y, pred == y)
    model.train()
    per_class = {
        index.label_name(k): (float(correct[k] / total[k]) if total[k] else None)
        for k in range(n_classes)
    }
    return {
        "test_accuracy": float(correct.sum() / max(1, total.sum())),
        "per_class_accuracy": per_class,
        "test_samples": int(total.sum()),
    }


def global_order(per_rank: list[list[np.ndarray]]) -> np.ndarray:
    """Interleave the ranks' batches step by step: the epoch's sequence of global batches."""
    steps = max((len(b) for b in per_rank), default=0)
    parts = [
        per_rank[r][s] for s in range(steps) for r in range(len(per_rank)) if s < len(per_rank[r])
    ]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _padding(layout: Any, world_size: int, n: int) -> np.ndarray | None:
    """Which delivered positions (global order) repeat a record as tail padding."""
    if layout.padding == 0:
        return None
    per_rank = [layout.positions(r) for r in range(world_size)]
    parts = []
    for s in range(layout.steps):
        for r in range(world_size):
            lo = s * layout.batch_size
            parts.append(per_rank[r][lo : lo + layout.batch_size_at(s)])
    mask = layout.is_padding(np.concatenate(parts))
    return mask[:n] if len(mask) >= n else None


def audit_epochs(
    trained: list[dict[int, list[np.ndarray]]],
    index: PathIndex,
    layout: Any,
    *,
    drop_last: bool,
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray], bool]:
    """Audit every epoch's global sequence of trained ids (``DESIGN.md`` §7).

    Args:
        trained: Per rank, epoch -> the id batches that rank trained on.
        index: The index trained on.
        layout: The sampler's layout (steps, tail padding).
        drop_last: Whether the incomplete last global batch was dropped.

    Returns:
        (audit per epoch, epoch name -> ids, whether every complete epoch delivered every
        record exactly once).
    """
    world_size = len(trained)
    audits = []
    sequences = {}
    exactly_once = True
    for e in sorted({e for r in trained for e in r}):
        ids = global_order([r.get(e, []) for r in trained])
        complete = len(ids) == layout.total
        pad = _padding(layout, world_size, len(ids))
        a = audit_ids(ids, index.labels, padding=pad, label_names=index.classes)
        a["epoch"] = e
        a["complete_epoch"] = complete
        if complete:
            a["samples_repeated"] = a["duplicates"]
            ok = a["duplicates"] == 0
            if not drop_last:  # every record of the index, once (tail padding apart)
                a["samples_lost"] = int(len(index) - a["unique"])
                ok = ok and a["samples_lost"] == 0
            exactly_once = exactly_once and ok
        audits.append(a)
        sequences[f"epoch {e}"] = ids
    return audits, sequences, exactly_once

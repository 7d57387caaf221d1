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


def epoch_sequences(
    history: dict[int, np.ndarray], trained: list[dict[int, list[np.ndarray]]]
) -> dict[int, np.ndarray]:
    """Every epoch's global sequence: what earlier runs recorded, then this run's ranks.

    Args:
        history: Epoch -> the global sequence trained before this run resumed (from the
            checkpoint; empty for a fresh run). World-size independent.
        trained: Per rank of this run, epoch -> the id batches that rank trained on.
    """
    out = {}
    for e in sorted(set(history) | {e for r in trained for e in r}):
        now = global_order([r.get(e, []) for r in trained])
        before = history.get(e, np.zeros(0, dtype=np.int64))
        out[e] = np.concatenate([before, now]).astype(np.int64)
    return out


def audit_epochs(
    sequences: dict[int, np.ndarray],
    index: PathIndex,
    tails: dict[int, dict[str, int]],
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray], bool]:
    """Audit every epoch's global sequence of trained ids (``DESIGN.md`` §7).

    Args:
        sequences: Epoch -> its global sequence of trained ids (:func:`epoch_sequences`).
        index: The index trained on.
        tails: Epoch -> ``{"padding", "dropped"}`` of the layout that finished it, for the
            epochs that finished (NOTE [tail rule]; after an elastic resume, the new layout's).

    Returns:
        (audit per epoch, epoch name -> ids, whether every complete epoch delivered every
        record exactly once).
    """
    audits = []
    named = {}
    exactly_once = True
    for e, ids in sequences.items():
        tail = tails.get(e)
        pad = None
        if tail and tail["padding"]:
            # Padding positions are the last of the epoch's order: the last draws.
            pad = np.zeros(len(ids), dtype=bool)
            pad[len(ids) - tail["padding"] :] = True
        a = audit_ids(ids, index.labels, padding=pad, label_names=index.classes)
        a["epoch"] = e
        a["complete_epoch"] = tail is not None
        if tail is not None:
            a["samples_repeated"] = a["duplicates"]
            a["samples_lost"] = int(len(index) - tail["dropped"] - a["unique"])
            a["dropped_by_drop_last"] = tail["dropped"]
            ok = a["duplicates"] == 0 and a["samples_lost"] == 0
            exactly_once = exactly_once and ok
        audits.append(a)
        named[f"epoch {e}"] = ids
    return audits, named, exactly_once

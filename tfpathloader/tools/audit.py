"""Shuffle-quality audit: statistics and figures over any sequence of delivered record ids.

Keys (``DESIGN.md`` §7), for D draws from an index of N records:

- ``spearman_rho``, ``spearman_z``: rank correlation of draw position and record id, and
  ``rho * sqrt(D - 1)``, which is ~N(0, 1) for a uniform shuffle. A buffer shuffle of a sorted
  index gives a huge positive z.
- ``label_counts``, ``chi2_p``: labels drawn, and the chi-square p-value against their shares of
  the index.
- ``label_first_draw``: 1-based draw at which each label first appears (``None``: never). For a
  uniform shuffle about ``N / (n_label + 1)``.
- ``ks_max``, ``ks_p``, ``ks_label``: Kolmogorov-Smirnov distance of the draw positions of the
  worst label (smallest p-value) from uniform, its p-value Bonferroni-corrected for the number
  of labels tested, and which label it is. Labels never drawn are listed in ``missing_labels``.
- ``duplicates``: draws of an id already drawn (must be 0 within an epoch); tail padding
  (``padding_repeats``, see NOTE [tail rule] in :mod:`tfpathloader.order`) is counted apart.

Statistics need scipy and figures matplotlib (``pip install 'tfpathloader[audit]'``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .._utils import optional_import

if TYPE_CHECKING:
    from ..index import PathIndex
    from ..order.spec import OrderSpec

__all__ = ["AUDIT_KEYS", "audit_figure", "audit_ids", "format_audit_table"]

AUDIT_KEYS = (
    "spearman_rho",
    "spearman_z",
    "label_counts",
    "chi2_p",
    "label_first_draw",
    "ks_max",
    "ks_p",
    "duplicates",
)


def audit_ids(
    ids: Sequence[int] | np.ndarray,
    labels: np.ndarray,
    *,
    padding: np.ndarray | None = None,
    label_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Audit one epoch's delivered ids (in delivery order).

    Args:
        ids: Record ids as delivered.
        labels: Label of every record of the index (``index.labels``).
        padding: Optional boolean mask over ``ids``: draws that are tail padding (repeats by
            design), counted as ``padding_repeats`` instead of ``duplicates``.
        label_names: Names for the label keys (default: the label numbers as text).

    Returns:
        A JSON-able dict with the keys in :data:`AUDIT_KEYS` and a few more (``draws``,
        ``num_records``, ``unique``, ``coverage``, ``padding_repeats``, ``ks_label``,
        ``missing_labels``).
    """
    stats = optional_import("scipy.stats", "audit", "the shuffle-quality audit")
    ids = np.asarray(ids, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    n, d = len(labels), len(ids)
    if d and (ids.min() < 0 or ids.max() >= n):
        raise ValueError(f"ids must lie in [0, {n}) (the index has {n} records)")
    pad = np.zeros(d, dtype=bool) if padding is None else np.asarray(padding, dtype=bool)
    if pad.shape != ids.shape:
        raise ValueError(f"padding mask has shape {pad.shape}, ids have {ids.shape}")
    unique = int(np.unique(ids[~pad]).size)
    # Labels as compact codes 0..K-1 of the labels present, -1 unlabeled (NOTE [label range] in
    # path_index.py): memory grows with the records, never with the largest label.
    present = np.unique(labels[labels >= 0]).tolist()
    codes = np.where(labels >= 0, np.searchsorted(present, labels), -1)
    names = [
        label_names[c] if label_names is not None and c < len(label_names) else str(c)
        for c in present
    ]
    drawn = codes[ids]
    counts = np.bincount(drawn[drawn >= 0], minlength=len(names))
    shares = np.bincount(codes[codes >= 0], minlength=len(names)) / max(1, int(np.sum(codes >= 0)))
    rho = float(stats.spearmanr(np.arange(d), ids).statistic) if d >= 3 and np.ptp(ids) else None
    first: dict[str, int | None] = {}
    worst: tuple[str | None, float, float] = (None, 0.0, 1.0)  # label, KS distance, p
    tested = 0
    for c, name in enumerate(names):
        pos = np.flatnonzero(drawn == c)
        first[name] = int(pos[0]) + 1 if len(pos) else None
        if len(pos):
            tested += 1
            res = stats.kstest((pos + 0.5) / d, "uniform")
            if worst[0] is None or res.pvalue < worst[2]:
                worst = (name, float(res.statistic), float(res.pvalue))
    return {
        "draws": d,
        "num_records": n,
        "unique": unique,
        "coverage": unique / n if n else 0.0,
        "spearman_rho": rho,
        "spearman_z": None if rho is None else rho * math.sqrt(d - 1),
        "label_counts": {name: int(c) for name, c in zip(names, counts, strict=True)},
        "chi2_p": (
            float(stats.chisquare(counts, shares * counts.sum()).pvalue)
            if len(names) >= 2 and d > 0
            else None
        ),
        "label_first_draw": first,
        "missing_labels": [name for name, c in zip(names, counts, strict=True) if c == 0],
        "ks_label": worst[0],
        "ks_max": worst[1] if worst[0] is not None else None,
        "ks_p": min(1.0, worst[2] * tested) if worst[0] is not None else None,  # Bonferroni
        "duplicates": int(d - int(pad.sum()) - unique),
        "padding_repeats": int(pad.sum()),
    }


def format_audit_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """A markdown table, one row per audited order."""

    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    lines = [
        "| order | draws | spearman_z | chi2_p | ks_max | ks_p | last label first seen "
        "| labels never drawn | duplicates |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        first = list(r["label_first_draw"].values())
        last_first = "never" if None in first else f"draw {max(first):,}"
        row = (
            name,
            f"{r['draws']:,}",
            fmt(r["spearman_z"], "+.1f"),
            fmt(r["chi2_p"], ".3g"),
            fmt(r["ks_max"], ".3f"),
            fmt(r["ks_p"], ".3g"),
            last_first,
            ", ".join(r["missing_labels"]) or "-",
            str(r["duplicates"]),
        )
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def audit_figure(
    sequences: Mapping[str, np.ndarray],
    labels: np.ndarray,
    out_path: str | os.PathLike[str],
    *,
    results: Mapping[str, Mapping[str, Any]] | None = None,
    title: str | None = None,
    label_names: Sequence[str] | None = None,
) -> str:
    """The article's figures, one row per order: draw vs record id, and draw vs label.

    Args:
        sequences: Order name -> delivered ids.
        labels: Label of every record of the index.
        out_path: PNG file to write.
        results: Audit results per order, summarized in the panel titles.
        title: Figure title.
        label_names: Class names by label, for the label axis.

    Each panel's title names the statistic it shows: the rank correlation (spearman z) of
    draw and record id beside the record-id panel; the label uniformity (the worst label's
    Kolmogorov-Smirnov p, the chi-square p of the label counts, labels never drawn) beside
    the label panel.
    """
    mpl = optional_import("matplotlib", "audit", "the audit figure")
    mpl.use("Agg", force=False)
    plt = optional_import("matplotlib.pyplot", "audit", "the audit figure")
    rows = len(sequences)
    fig, axes = plt.subplots(rows, 2, figsize=(12, 3.2 * rows), squeeze=False)
    labels = np.asarray(labels)
    for r, (name, ids) in enumerate(sequences.items()):
        ids = np.asarray(ids)
        x = np.arange(1, len(ids) + 1)
        step = max(1, len(ids) // 60000)  # keep the PNG light; every trend stays visible
        # NOTE [marker size]: a dot per draw must stay visible for a few hundred draws and
        # not blot out a trend for 70,000: the area shrinks with the number of dots drawn.
        dots = max(1, len(x[::step]))
        size = float(np.clip(3000.0 / dots, 0.4, 8.0))
        res = (results or {}).get(name, {})
        for c, (y, ylabel) in enumerate(((ids, "record id"), (labels[ids], "label"))):
            ax = axes[r][c]
            ax.scatter(
                x[::step],
                y[::step],
                s=size if c == 0 else 3 * size,
                alpha=0.6,
                rasterized=True,
                linewidths=0,
            )
            ax.set_xlabel("draw")
            ax.set_ylabel(ylabel)
            ax.set_xlim(0, max(1, len(ids)))
            if c == 1:
                ticks = np.unique(labels[labels >= 0])
                if label_names is not None and len(ticks) <= 20:
                    ax.set_yticks(ticks, [label_names[int(k)] for k in ticks])
                else:
                    ax.set_yticks(ticks)
            ax.set_title(f"{name}: draw vs {ylabel}{_panel_summary(res, c)}", fontsize=10)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = os.fspath(out_path)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _panel_summary(res: Mapping[str, Any], column: int) -> str:
    """The statistic a panel shows, for its title (empty without results)."""
    if not res:
        return ""
    if column == 0:
        z = res.get("spearman_z")
        return "" if z is None else f" — spearman z {z:+.1f}"
    parts = []
    if res.get("ks_p") is not None:
        worst = f" (label {res['ks_label']})" if res.get("ks_label") is not None else ""
        parts.append(f"KS p {res['ks_p']:.2g}{worst}")
    if res.get("chi2_p") is not None:
        parts.append(f"chi2 p {res['chi2_p']:.2g}")
    missing = res.get("missing_labels") or []
    if missing:
        parts.append(f"never drawn: {', '.join(missing)}")
    return (" — " + ", ".join(parts)) if parts else ""


def delivered_ids(
    index: PathIndex,
    spec: OrderSpec,
    *,
    backend: Literal["order", "torch", "tf"] = "order",
    draws: int | None = None,
    epoch: int = 0,
    num_workers: int = 0,
) -> np.ndarray:
    """The first ``draws`` ids one epoch delivers: from the order alone, or a real loader.

    Args:
        index: The :class:`~tfpathloader.PathIndex`.
        spec: The :class:`~tfpathloader.OrderSpec` (its batch size is the loader's).
        backend: ``"order"`` (no images read), ``"torch"`` or ``"tf"`` (what the loader
            delivered, images decoded).
        draws: How many ids (default: the whole epoch).
        epoch: The epoch.
        num_workers: The loader's workers.
    """
    from ..order.sampler import GlobalShuffleSampler

    n = len(index)
    draws = n if draws is None else min(int(draws), n)
    if backend == "order":
        sampler = GlobalShuffleSampler(n, spec=spec)
        sampler.set_epoch(epoch)
        return sampler.ids(0, draws)
    if backend not in ("torch", "tf"):
        raise ValueError(f"unknown backend {backend!r}; valid: order, torch, tf")
    from ..load.loader import make_loader

    loader = make_loader(backend=backend, index=index, order=spec, num_workers=num_workers)
    loader.set_epoch(epoch)
    got: list[np.ndarray] = []
    have = 0
    for batch in loader:
        got.append(np.asarray(batch["index"]))
        have += len(got[-1])
        if have >= draws:
            break
    return np.concatenate(got)[:draws] if got else np.zeros(0, dtype=np.int64)

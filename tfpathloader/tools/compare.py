"""``tfpathloader compare``: one table and one figure from a folder of training runs.

Reads every ``metrics.json`` under a Hydra multirun folder (one per run) and writes
``comparison.md`` (a markdown table: accuracy, per-class extremes, images/s, audit statistics),
``comparison.json`` and ``comparison.png`` (test accuracy per run, and per-class accuracy).
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any

from .._utils import optional_import

__all__ = ["collect_runs", "compare_runs", "comparison_table"]


def collect_runs(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every run's metrics under ``folder``, ordered by run folder name."""
    found = sorted(glob.glob(os.path.join(os.fspath(folder), "**", "metrics.json"), recursive=True))
    if not found:
        raise FileNotFoundError(
            f"no metrics.json under {os.fspath(folder)!r}: point at a folder made by "
            "'python train.py -m ...' (e.g. multirun/2026-01-01/12-00-00)"
        )
    runs = []
    for path in found:
        with open(path) as f:
            m = json.load(f)
        m["run"] = os.path.relpath(os.path.dirname(path), os.fspath(folder)) or "."
        m["name"] = f"{m.get('loader', '?')} / {m.get('shuffle', '?')}"
        if m.get("shuffle") == "buffer" and m.get("buffer_size"):
            m["name"] += f" ({m['buffer_size']:,})"
        runs.append(m)
    return runs


def _extremes(per_class: dict[str, float | None]) -> tuple[str, str]:
    known = {k: v for k, v in per_class.items() if v is not None}
    if not known:
        return "-", "-"
    worst = min(known, key=lambda k: known[k])
    best = max(known, key=lambda k: known[k])
    return f"{worst}: {known[worst]:.3f}", f"{best}: {known[best]:.3f}"


def comparison_table(runs: list[dict[str, Any]]) -> str:
    """The markdown table, one row per run."""
    header = (
        "run",
        "loader / shuffle",
        "test acc",
        "worst class",
        "best class",
        "images/s",
        "spearman z",
        "last label first drawn",
        "labels never drawn",
        "duplicates",
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in runs:
        audit = m.get("audit", {})
        worst, best = _extremes(m.get("per_class_accuracy", {}))
        first = list((audit.get("label_first_draw") or {}).values())
        if not first:
            last_first = "-"
        elif any(v is None for v in first):
            last_first = "never"
        else:
            last_first = f"{max(first):,}"
        z = audit.get("spearman_z")
        lines.append(
            "| "
            + " | ".join(
                [
                    m["run"],
                    m["name"],
                    f"{m.get('test_accuracy', float('nan')):.4f}",
                    worst,
                    best,
                    f"{m.get('images_per_s', 0):,.0f}",
                    "-" if z is None else f"{z:+.1f}",
                    last_first,
                    ", ".join(audit.get("missing_labels", [])) or "-",
                    str(audit.get("duplicates", "-")),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def _figure(runs: list[dict[str, Any]], path: str) -> str:
    mpl = optional_import("matplotlib", "audit", "the comparison figure")
    mpl.use("Agg", force=False)
    plt = optional_import("matplotlib.pyplot", "audit", "the comparison figure")
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [1, 1.6]})
    names = [m["name"] for m in runs]
    accs = [m.get("test_accuracy", 0.0) for m in runs]
    bars = axes[0].barh(
        range(len(runs)),
        accs,
        color=["tab:red" if m.get("shuffle") == "buffer" else "tab:blue" for m in runs],
    )
    axes[0].set_yticks(range(len(runs)), names)
    axes[0].invert_yaxis()
    axes[0].set_xlim(0, 1)
    axes[0].set_xlabel("test accuracy")
    for b, a in zip(bars, accs, strict=True):
        axes[0].text(
            min(a, 0.98),
            b.get_y() + b.get_height() / 2,
            f"{a:.3f} ",
            ha="right",
            va="center",
            color="white",
            fontsize=9,
        )
    for m in runs:
        per_class = m.get("per_class_accuracy", {})
        keys = list(per_class)
        axes[1].plot(
            keys,
            [per_class[k] if per_class[k] is not None else float("nan") for k in keys],
            marker="o",
            label=m["name"],
            linestyle="--" if m.get("shuffle") == "buffer" else "-",
        )
    axes[1].set_ylim(0, 1.02)
    axes[1].set_xlabel("class")
    axes[1].set_ylabel("test accuracy")
    axes[1].legend(fontsize=8, loc="lower left")
    axes[1].set_title("per class: what the biased order forgets", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def compare_runs(
    folder: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Write ``comparison.md``, ``comparison.json`` and ``comparison.png``; return them."""
    runs = collect_runs(folder)
    out = os.fspath(out_dir if out_dir is not None else folder)
    os.makedirs(out, exist_ok=True)
    table = comparison_table(runs)
    with open(os.path.join(out, "comparison.md"), "w") as f:
        f.write(table + "\n")
    keep = (
        "run",
        "name",
        "loader",
        "shuffle",
        "buffer_size",
        "test_accuracy",
        "per_class_accuracy",
        "images_per_s",
        "steps",
        "samples",
        "audit",
    )
    summary = [{k: m.get(k) for k in keep} for m in runs]
    with open(os.path.join(out, "comparison.json"), "w") as f:
        json.dump(summary, f, indent=2)
    figure = _figure(runs, os.path.join(out, "comparison.png"))
    return {"table": table, "figure": figure, "runs": summary}

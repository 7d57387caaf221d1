"""One table and one figure from a sweep of train.py runs: ``python -m train_app.compare DIR``.

Reads every ``metrics.json`` under a Hydra multirun folder (one per run) and writes
``comparison.md`` (a markdown table: accuracy, per-class extremes, images/s, audit statistics),
``comparison.json`` and ``comparison.png`` (test accuracy per run, and per-class accuracy).
Each run is named by its loader and shuffle and by every setting that differs between the
runs compared (epochs, ranks, steps, batch size, workers, seed, permutation, data).

    python train.py -m loader=torch,tf shuffle=global,buffer
    python -m train_app.compare multirun/<date>/<time>
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["collect_runs", "compare_runs", "comparison_table", "main", "run_settings"]

OUTPUTS_EXT = (".md", ".json", ".png")

# (setting, how to read it from metrics.json, how to show it) for the names of the runs.
_SETTINGS: tuple[tuple[str, Any, Any], ...] = (
    (
        "epochs",
        lambda m: _cfg(m, "trainer", "epochs", m.get("epochs")),
        lambda v: _plural(v, "epoch"),
    ),
    ("ranks", lambda m: m.get("world_size", 1), lambda v: _plural(v, "rank")),
    (
        "max steps",
        lambda m: _cfg(m, "trainer", "max_steps", m.get("max_steps")),
        lambda v: "full epochs" if v is None else _plural(v, "step"),
    ),
    ("batch size", lambda m: m.get("batch_size"), lambda v: f"batch {v}"),
    ("workers", lambda m: m.get("num_workers"), lambda v: _plural(v, "worker")),
    ("seed", lambda m: m.get("seed"), lambda v: f"seed {v}"),
    ("permutation", lambda m: m.get("permutation"), lambda v: f"{v} permutation"),
    ("data", lambda m: _cfg(m, "data", "root", None), lambda v: f"data {v}"),
)


def _plural(n: Any, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _cfg(m: dict[str, Any], group: str, key: str, default: Any) -> Any:
    return ((m.get("config") or {}).get(group) or {}).get(key, default)


def run_settings(runs: list[dict[str, Any]]) -> list[str]:
    """The settings (of ``_SETTINGS``) whose values differ between ``runs``."""
    return [
        name
        for name, read, _ in _SETTINGS
        if len({json.dumps(read(m), sort_keys=True) for m in runs}) > 1
    ]


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
    differ = run_settings(runs)
    for m in runs:
        extra = [show(read(m)) for name, read, show in _SETTINGS if name in differ]
        if extra:
            m["name"] += ", " + ", ".join(extra)
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
        "loader / shuffle (and what differs)",
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
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, 2, figsize=(15, 0.8 + 0.45 * max(6, len(runs))), gridspec_kw={"width_ratios": [1, 1.6]}
    )
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
    axes[0].set_title("test accuracy per run (red: buffer shuffle)", fontsize=10)
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
    # NOTE [no hidden points]: runs often agree exactly (the same config in both backends gives
    # the same batches, so the same model): each run's points are shifted sideways by a small
    # offset and drawn with its own marker, runs identical to an earlier one say so in the
    # legend, and the legend sits outside the axes, where it covers nothing.
    markers = "osD^vP*Xh<>"
    width = 0.6 / max(1, len(runs))
    seen: dict[str, str] = {}
    keys: list[str] = []
    for m in runs:
        keys += [k for k in m.get("per_class_accuracy", {}) if k not in keys]
    for i, m in enumerate(runs):
        per_class = m.get("per_class_accuracy", {})
        values = [per_class.get(k) for k in keys]
        y = [v if v is not None else float("nan") for v in values]
        x = np.arange(len(keys)) + (i - (len(runs) - 1) / 2) * width
        same = json.dumps(values)
        label = m["name"] + (f"  (same as {seen[same]})" if same in seen else "")
        seen.setdefault(same, m["run"])
        axes[1].plot(
            x,
            y,
            marker=markers[i % len(markers)],
            markersize=5,
            label=label,
            linestyle="--" if m.get("shuffle") == "buffer" else "-",
            linewidth=1,
        )
    axes[1].set_xticks(range(len(keys)), keys)
    axes[1].set_ylim(0, 1.02)
    axes[1].set_xlabel("class")
    axes[1].set_ylabel("test accuracy")
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    axes[1].set_title("per class: what the biased order forgets", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # the legend sits right of the axes
    plt.close(fig)
    return path


def compare_runs(
    folder: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
) -> dict[str, Any]:
    """Write ``comparison.md``, ``.json`` and ``.png``; return the table and the paths.

    NOTE [no silent overwrite]: a sweep folder must stay where it is, so when ``out_dir``
    already holds a comparison (and not ``force``) the new one is ``comparison-2.md`` ...
    beside it, and stderr says so.

    Args:
        folder: The multirun folder.
        out_dir: Where to write (default: ``folder``).
        force: Replace an earlier comparison.
    """
    runs = collect_runs(folder)
    out = os.fspath(out_dir if out_dir is not None else folder)
    os.makedirs(out, exist_ok=True)
    k = 1
    while True:
        stem = f"-{k}" if k > 1 else ""
        md, js, png = (os.path.join(out, f"comparison{stem}{ext}") for ext in OUTPUTS_EXT)
        if force or not any(os.path.exists(f) for f in (md, js, png)):
            break
        k += 1
    if k > 1:
        print(
            f"{out} already holds comparison.md: writing {md} (--force replaces)", file=sys.stderr
        )
    table = comparison_table(runs)
    with open(md, "w") as f:
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
        "epochs",
        "world_size",
        "batch_size",
        "num_workers",
        "audit",
    )
    summary = [{k: m.get(k) for k in keep} for m in runs]
    with open(js, "w") as f:
        json.dump({"differ": run_settings(runs), "runs": summary}, f, indent=2)
    figure = _figure(runs, png)
    return {"table": table, "figure": figure, "markdown": md, "json": js, "runs": summary}


def main(argv: Sequence[str] | None = None) -> int:
    """The command: ``python -m train_app.compare MULTIRUN_DIR [--out DIR] [--force]``."""
    p = argparse.ArgumentParser(
        prog="python -m train_app.compare",
        description="Read every metrics.json under a Hydra multirun folder and write "
        "comparison.md (accuracy, per-class extremes, images/s, audit statistics), "
        "comparison.json and comparison.png beside them.",
        epilog="example: python train.py -m loader=torch,tf shuffle=global,buffer && "
        "python -m train_app.compare multirun/<date>/<time>",
    )
    p.add_argument("folder", help="the multirun folder (or any folder holding run folders)")
    p.add_argument(
        "--out",
        help="where to write the comparison (default: the folder itself; an earlier "
        "comparison there is kept, the new one is comparison-2.md ...)",
    )
    p.add_argument("--force", action="store_true", help="replace an earlier comparison")
    args = p.parse_args(argv)
    try:
        result = compare_runs(args.folder, args.out, force=args.force)
    except FileNotFoundError as e:
        print(f"compare: error: {e}", file=sys.stderr)
        return 2
    print(result["table"])
    print(f"\nwrote {result['markdown']}, {result['json']} and {result['figure']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The one reader of Linux /proc: memory, CPU time, threads and descriptors of a process tree.

Used by the benchmarks and tests beside the package. Off Linux (no
/proc) the tree readers return ``None``.
"""

from __future__ import annotations

import os

__all__ = [
    "children",
    "cpu_s",
    "descendants",
    "proc_stats",
    "rollup",
    "status",
    "tree_rollup",
]


def children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (sorted; empty if it is gone)."""
    kids: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.extend(int(c) for c in f.read().split())
    except OSError:
        pass
    return sorted(kids)


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (workers, their helpers ...)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children(p))
    return out


def rollup(pid: int) -> dict[str, int]:
    """``/proc/PID/smaps_rollup``: kB by field (``Rss``, ``Pss``, ``Private_Dirty`` ...).

    Reading it walks every mapping of the process: 30-45 ms of CPU in a process that holds
    TensorFlow and torch (NOTE [bench method] in benchmarks/bench.py).
    """
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, value = line.split()[:2]
            if key.endswith(":"):
                out[key[:-1]] = int(value)
    return out


def tree_rollup(pid: int) -> dict[str, int] | None:
    """:func:`rollup` summed over ``pid`` and its descendants (kB); ``None`` without /proc."""
    total: dict[str, int] = {}
    seen = False
    for p in descendants(pid):
        try:
            fields = rollup(p)
        except OSError:  # gone meanwhile, or no /proc
            continue
        seen = True
        for key, value in fields.items():
            total[key] = total.get(key, 0) + value
    return total if seen else None


def status(pid: int, field: str) -> int:
    """A number of ``/proc/PID/status``: ``VmRSS``, ``VmHWM`` (kB), ``Threads`` ..."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(f"no {field} in /proc/{pid}/status")


def cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system, reaped children included) of ``pid`` and its descendants."""
    total, seen = 0, False
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        seen = True
    return total / os.sysconf("SC_CLK_TCK") if seen else None


def proc_stats(pid: int) -> dict[str, float]:
    """One process: RSS, PSS and private dirty memory (MB), open descriptors and threads."""
    mem = rollup(pid)
    return {
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "rss_mb": round(mem["Rss"] / 1024, 1),
        "pss_mb": round(mem["Pss"] / 1024, 1),
        "private_dirty_mb": round(mem["Private_Dirty"] / 1024, 1),
        "threads": status(pid, "Threads"),
    }

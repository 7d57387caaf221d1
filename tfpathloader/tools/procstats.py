"""Per-process memory, threads and file descriptors from Linux /proc (benchmarks and tests)."""

from __future__ import annotations

import os

__all__ = ["children", "proc_stats"]


def proc_stats(pid: int) -> dict[str, float]:
    """RSS and PSS (MB), open file descriptors and threads of process ``pid``."""
    out: dict[str, float] = {"fds": len(os.listdir(f"/proc/{pid}/fd"))}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, value = line.split()[:2]
            if key in ("Rss:", "Pss:"):
                out[key[:-1].lower() + "_mb"] = round(int(value) / 1024, 1)
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                out["threads"] = int(line.split()[1])
    return out


def children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (sorted)."""
    kids = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[1] == str(pid):
                        kids.append(int(p))
            except OSError:
                pass
    return sorted(kids)

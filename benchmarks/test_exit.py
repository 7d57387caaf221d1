"""The README's test command, timed: its run, and how long the process takes to exit after it.

    python benchmarks/test_exit.py --runs 5

Runs ``python -m pytest -q`` (the default tier) ``--runs`` times and prints, per run, the
seconds pytest reported, the wall time, and the seconds from pytest's summary line to the
process's exit (issue 22 asked for under 15 s in each run; a tf.data iterator freed while
the interpreter finalized once stalled it for minutes: NOTE [tf exit]).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    for k in range(args.runs):
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)  # fmt: skip
        assert proc.stdout is not None
        summary_at, summary = None, ""
        for line in proc.stdout:
            if re.search(r"\d+ (passed|failed).* in [\d.]+s", line):
                summary_at, summary = time.monotonic(), line.strip()
        proc.wait()
        end = time.monotonic()
        assert summary_at is not None, "no summary line"
        print(f"run {k + 1}: {summary} | wall {end - t0:.1f} s | exit {end - summary_at:.1f} s "
              f"after the summary | status {proc.returncode}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

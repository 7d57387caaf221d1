"""The remote bench: images/s of both backends over HTTP from 127.0.0.1 with added latency.

    python benchmarks/remote_bench.py data/index.tfrecord [--in-flight 256] [--workers 2]

Serves the index's folder with the test server (``tests/http_server.py``, its own process) and
times each backend on local disk, then over HTTP at 0, 10 and 50 ms added per request.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from typing import Any

from procstats import cpu_s

from tfpathloader import PathIndex, make_loader
from tfpathloader.storage import RemoteOptions

__all__ = ["format_remote_table", "run_remote_bench"]

SERVER = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "http_server.py"
)


def _rate(loader: Any, epoch: int, batches: int) -> float:
    """Images/s over ``batches`` batches, after one warm-up batch."""
    loader.set_epoch(epoch)
    it = iter(loader)
    next(it)
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        n += len(next(it)["index"])
    rate = n / (time.perf_counter() - t0)
    del it
    return rate


def run_remote_bench(
    index_file: str,
    *,
    latencies_ms: tuple[float, ...] = (0, 10, 50),
    backends: tuple[str, ...] = ("torch", "tf"),
    num_workers: int = 2,
    batch_size: int = 256,
    batches: int = 30,
    in_flight: int = 64,
) -> dict[str, Any]:
    """Serve the index's folder over HTTP (a separate process) and time every row in one run.

    Per backend: the local-disk rate, then the same loader's rate over HTTP at each added
    latency (the server changes latency between rows; the loader and its workers stay).
    """
    folder = os.path.dirname(os.path.abspath(index_file))
    name = os.path.basename(index_file)
    srv = subprocess.Popen(
        [sys.executable, SERVER, folder],
        stdout=subprocess.PIPE,
        text=True,
    )
    rows: list[dict[str, Any]] = []
    try:
        assert srv.stdout is not None
        url = srv.stdout.readline().strip()
        local = PathIndex.read(index_file)
        remote = PathIndex.read(f"{url}/{name}")
        opts = RemoteOptions(in_flight=in_flight)
        for backend in backends:
            kw: dict[str, Any] = {
                "backend": backend,
                "batch_size": batch_size,
                "num_workers": num_workers,
            }
            with make_loader(index=local, **kw) as loader:  # type: ignore[attr-defined]
                base = _rate(loader, 0, batches)
            rows.append({"backend": backend, "source": "local disk", "images_per_s": base})
            loader = make_loader(index=remote, remote=opts, **kw)
            zero = None
            for k, ms in enumerate(latencies_ms):
                urllib.request.urlopen(f"{url}/_control/latency/{ms / 1000}").read()
                c0, t0 = (cpu_s(srv.pid) or 0.0), time.perf_counter()
                rate = _rate(loader, k + 1, batches)
                server_cores = ((cpu_s(srv.pid) or 0.0) - c0) / (time.perf_counter() - t0)
                zero = rate if zero is None else zero
                rows.append(
                    {
                        "backend": backend,
                        "source": f"HTTP +{ms:g} ms",
                        "images_per_s": rate,
                        "to_local": rate / base,
                        "to_0ms": rate / zero,
                        "server_cores": server_cores,
                    }
                )
            rows[-1]["retries"] = loader.remote_stats.get("retries", 0)
            loader.close()  # type: ignore[attr-defined]
    finally:
        srv.terminate()
        srv.wait()
    return {
        "rows": rows,
        "settings": {
            "index": index_file,
            "records": len(local),
            "num_workers": num_workers,
            "batch_size": batch_size,
            "batches_timed": batches,
            "in_flight": in_flight,
            "cores": os.cpu_count(),
        },
    }


def format_remote_table(result: dict[str, Any]) -> str:
    """The rows as a Markdown table."""
    s = result["settings"]
    lines = [
        f"{s['records']:,} records, batch {s['batch_size']}, {s['num_workers']} workers, "
        f"{s['in_flight']} reads in flight per worker, {s['batches_timed']} batches per row, "
        f"{s['cores']} cores shared with the server",
        "",
        "| backend | source | images/s | x local disk | x 0 ms | server cores |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        to_local = f"{r['to_local']:.2f}" if "to_local" in r else "1.00"
        to_zero = f"{r['to_0ms']:.2f}" if "to_0ms" in r else ""
        cores = f"{r['server_cores']:.2f}" if "server_cores" in r else ""
        lines.append(
            f"| {r['backend']} | {r['source']} | {r['images_per_s']:,.0f} | {to_local} | "
            f"{to_zero} | {cores} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/remote_bench.py INDEX``: print the remote bench table."""
    import argparse
    import json

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("index")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--batches", type=int, default=30)
    p.add_argument("--in-flight", type=int, default=64)
    p.add_argument("--backends", default="torch,tf")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    result = run_remote_bench(
        a.index,
        backends=tuple(a.backends.split(",")),
        num_workers=a.workers,
        batch_size=a.batch_size,
        batches=a.batches,
        in_flight=a.in_flight,
    )
    print(json.dumps(result, indent=2) if a.json else format_remote_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

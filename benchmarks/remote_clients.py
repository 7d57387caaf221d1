"""Which HTTP/object-store client reads small files fastest per core at high concurrency?

Serves N small PNGs from the tests' FaultyHTTPServer (tests/http_server.py) in a separate process on 127.0.0.1
(with added latency, so that concurrency matters), then fetches them all with each client,
``--in-flight`` requests at a time. Reports wall-clock requests/s and the client's own CPU time
per request (user + sys of this process, all threads): requests per client core-second is the
figure that decides how much of a loader worker's core the reads cost.

    python benchmarks/remote_clients.py [--files 3000] [--latency 0.01] [--in-flight 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

SERVER = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "http_server.py"
)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def urllib3_pool(urls: list[str], k: int) -> list[bytes]:
    import urllib3

    http = urllib3.PoolManager(maxsize=k, block=True, retries=False)
    with ThreadPoolExecutor(k) as ex:
        return list(ex.map(lambda u: http.request("GET", u, preload_content=True).data, urls))


def requests_pool(urls: list[str], k: int) -> list[bytes]:
    import requests
    from requests.adapters import HTTPAdapter

    s = requests.Session()
    s.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=k, pool_block=True))
    with ThreadPoolExecutor(k) as ex:
        return list(ex.map(lambda u: s.get(u).content, urls))


def obstore_threads(urls: list[str], k: int) -> list[bytes]:
    import obstore
    from obstore.store import HTTPStore

    base = urls[0].rsplit("/", 1)[0]
    store = HTTPStore.from_url(base, client_options={"allow_http": True})
    names = [u.rsplit("/", 1)[1] for u in urls]
    with ThreadPoolExecutor(k) as ex:
        return list(ex.map(lambda n: bytes(obstore.get(store, n).bytes()), names))


def obstore_async(urls: list[str], k: int) -> list[bytes]:
    import obstore
    from obstore.store import HTTPStore

    base = urls[0].rsplit("/", 1)[0]
    store = HTTPStore.from_url(base, client_options={"allow_http": True})
    names = [u.rsplit("/", 1)[1] for u in urls]

    async def run() -> list[bytes]:
        sem = asyncio.Semaphore(k)

        async def one(n: str) -> bytes:
            async with sem:
                r = await obstore.get_async(store, n)
                return bytes(await r.bytes_async())

        return await asyncio.gather(*(one(n) for n in names))

    return asyncio.run(run())


def fsspec_http(urls: list[str], k: int) -> list[bytes]:
    import fsspec

    fs = fsspec.filesystem("http", skip_instance_cache=True)
    out = fs.cat(urls, batch_size=k)
    return [out[u] for u in urls]


CLIENTS = {
    "urllib3 + threads": urllib3_pool,
    "requests + threads": requests_pool,
    "obstore (sync get) + threads": obstore_threads,
    "obstore (async)": obstore_async,
    "fsspec HTTPFileSystem (aiohttp)": fsspec_http,
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--files", type=int, default=3000)
    p.add_argument("--latency", type=float, default=0.01)
    p.add_argument("--in-flight", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        rng = np.random.default_rng(0)
        for i in range(a.files):
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(f"{d}/{i}.png")
        srv = subprocess.Popen(
            [sys.executable, SERVER, d, "--latency", str(a.latency)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert srv.stdout is not None
            base = srv.stdout.readline().strip()
            urls = [f"{base}/{i}.png" for i in range(a.files)]
            expect = []
            for i in range(a.files):
                with open(f"{d}/{i}.png", "rb") as f:
                    expect.append(f.read())
            print(
                f"{a.files} files of ~{np.mean([len(e) for e in expect]):.0f} B, "
                f"{a.latency * 1000:.0f} ms added latency, {a.in_flight} in flight, "
                f"{os.cpu_count()} cores (shared with the server process)"
            )
            print(
                f"{'client':34s} {'req/s':>8s} {'client CPU us/req':>18s} {'req per core-s':>15s}"
            )
            for name, fn in CLIENTS.items():
                best = None
                for _ in range(a.repeats):
                    c0, t0 = _cpu(), time.perf_counter()
                    got = fn(urls, a.in_flight)
                    wall, cpu = time.perf_counter() - t0, _cpu() - c0
                    assert got == expect, name
                    if best is None or wall < best[0]:
                        best = (wall, cpu)
                wall, cpu = best
                print(
                    f"{name:34s} {a.files / wall:8.0f} {cpu / a.files * 1e6:18.0f} "
                    f"{a.files / cpu:15.0f}"
                )
        finally:
            srv.terminate()
            srv.wait()


if __name__ == "__main__":
    main()

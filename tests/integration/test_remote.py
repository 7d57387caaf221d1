"""Images and indexes in object storage: a faulty HTTP server and moto's S3 on 127.0.0.1.

Every test starts its own server on 127.0.0.1; none touches the internet. Requests are bounded
by small timeouts and retry counts, so a fault costs at most a few seconds.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings

import numpy as np
import pytest
from http_server import FaultyHTTPServer

from tests.conftest import has_module, make_images
from tfpathloader import ImageLoadError, PathIndex, make_loader, write_index
from tfpathloader.storage import RemoteOptions

pytestmark = pytest.mark.skipif(not has_module("obstore"), reason="needs tfpathloader[remote]")

FAST = RemoteOptions(timeout=0.5, connect_timeout=0.5, retries=6, backoff=0.001, max_backoff=0.01)
# The tf cases trace tf.data pipelines (5-20 s each on 2 cores): the slow tier.
BACKENDS = ["torch", pytest.param("tf", marks=[pytest.mark.tf, pytest.mark.slow])]


@pytest.fixture
def served(tmp_path):
    """30 grey PNGs in 3 class folders with their index, served over HTTP; (server, folder)."""
    paths, labels = make_images(tmp_path, 30)
    write_index(tmp_path / "index.tfrecord", paths, labels, classes=["a", "b", "c"])
    with FaultyHTTPServer(tmp_path, stall_s=5) as srv:
        yield srv, tmp_path


def _epoch(loader):
    out = [(b["index"].tolist(), b["image"].numpy().copy()) for b in loader]
    return [i for ids, _ in out for i in ids], out


def _local_epoch(folder, **kw):
    return _epoch(make_loader(index=PathIndex.read(folder / "index.tfrecord"), **kw))


@pytest.mark.parametrize("backend", BACKENDS)
def test_remote_batches_equal_local(served, backend):
    srv, folder = served
    index = PathIndex.read(srv.url + "/index.tfrecord")
    assert index.root == srv.url and index.path(3) == srv.url + "/" + index.relpath(3)
    kw = {"backend": backend, "batch_size": 8, "seed": 3}
    ids, got = _epoch(make_loader(index=index, remote=FAST, **kw))
    want_ids, want = _local_epoch(folder, **kw)
    assert ids == want_ids
    for (a, x), (b, y) in zip(got, want, strict=True):
        assert a == b
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("backend", BACKENDS)
def test_transient_faults_are_retried_and_counted_exactly_once(served, backend):
    """Random 503s, 5xx bursts, a reset, a stall and a half-sent body: same batches, counted."""
    srv, folder = served
    index = PathIndex.read(srv.url + "/index.tfrecord")
    kw = {"backend": backend, "batch_size": 8, "seed": 5}
    loader = make_loader(index=index, remote=FAST, **kw)  # reads record 0 (channels): counted
    srv.failure_rate = 0.2
    srv.faults.update(
        {
            "/" + index.relpath(0): ["500", "502", "503", "429"],  # a 5xx burst
            "/" + index.relpath(1): ["reset"],
            "/" + index.relpath(2): ["stall"],
            "/" + index.relpath(3): ["slow"],
        }
    )
    t0 = time.monotonic()
    ids, got = _epoch(loader)
    assert time.monotonic() - t0 < 20
    assert sorted(ids) == list(range(30))  # exactly once
    want_ids, want = _local_epoch(folder, **kw)
    assert ids == want_ids
    for (_, x), (_, y) in zip(got, want, strict=True):
        np.testing.assert_array_equal(x, y)
    s = loader.remote_stats
    assert s["retries"] >= 7 and s["timeout"] >= 2 and s["connection"] >= 1
    assert s["server_error"] >= 2 and s["throttled"] >= 2
    assert s["requests"] == 1 + 30 + s["retries"]
    assert not s.get("failed")


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_across_faults_delivers_each_record_once(served, backend):
    srv, _ = served
    srv.failure_rate = 0.25
    index = PathIndex.read(srv.url + "/index.tfrecord")
    kw = {"backend": backend, "batch_size": 4, "seed": 9, "remote": FAST}
    first = make_loader(index=index, **kw)
    first.set_epoch(2)
    seen = []
    for k, b in enumerate(first):
        seen += b["index"].tolist()
        if k == 2:
            break
    state = json.loads(json.dumps(first.state_dict()))
    second = make_loader(index=index, **kw)
    second.load_state_dict(state)
    rest = [i for b in second for i in b["index"].tolist()]
    full = make_loader(index=index, **kw)
    full.set_epoch(2)
    assert seen + rest == [i for b in full for i in b["index"].tolist()]
    assert sorted(seen + rest) == list(range(30))
    assert second.remote_stats["retries"] > 0


def _outcome(backend, index, on_error):
    loader = make_loader(
        backend=backend, index=index, batch_size=8, seed=1, on_error=on_error, remote=FAST
    )
    if on_error == "raise":
        with pytest.raises(ImageLoadError) as e:
            list(loader)
        return e.value.record_id, e.value.path, e.value.cause
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ids = [i for b in loader for i in b["index"].tolist()]
    return ids, loader.skipped


@pytest.mark.parametrize("status", ["404", "403"])
@pytest.mark.parametrize("on_error", ["raise", "skip"])
@pytest.mark.parametrize(
    "compare_tf", [False, pytest.param(True, marks=[pytest.mark.tf, pytest.mark.slow])]
)
def test_permanent_failures_are_the_same_in_both_backends(served, status, on_error, compare_tf):
    srv, _ = served
    index = PathIndex.read(srv.url + "/index.tfrecord")
    bad = 17
    srv.permanent["/" + index.relpath(bad)] = status
    torch_out = _outcome("torch", index, on_error)
    if on_error == "raise":
        rid, path, cause = torch_out
        assert (rid, path) == (bad, index.path(bad))
        assert cause.startswith(f"HTTP {status}")
        assert srv.requests["/" + index.relpath(bad)] <= 2  # not retried (plus the name check)
    else:
        ids, skipped = torch_out
        assert sorted(ids) == [i for i in range(30) if i != bad]
        assert [s["record_id"] for s in skipped] == [bad]
    if compare_tf:
        assert _outcome("tf", index, on_error) == torch_out


def test_a_stalled_connection_cannot_hang_an_epoch(served):
    srv, _ = served
    index = PathIndex.read(srv.url + "/index.tfrecord")
    srv.permanent["/" + index.relpath(4)] = "stall"
    opts = RemoteOptions(timeout=0.3, connect_timeout=0.3, retries=1, backoff=0.01)
    loader = make_loader(index=index, batch_size=8, remote=opts)
    t0 = time.monotonic()
    with pytest.raises(ImageLoadError, match=r"record 4 .*timed out after 0.3 s on all 2"):
        list(loader)
    assert time.monotonic() - t0 < opts.worst_case_s + 2


def test_no_credentials_in_errors_logs_or_state(served, monkeypatch, caplog):
    srv, _ = served
    secret = "S3CR3T-do-not-print"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    caplog.set_level(logging.DEBUG)
    # A secret in the URL's user info: the client refuses it, and the error does not repeat it.
    host = srv.url.split("//")[1]
    index = PathIndex.from_paths(["0/00000.png"], [0], root=f"http://bob:{secret}@{host}")
    texts = [repr(index), json.dumps(index.info())]
    with pytest.raises(ImageLoadError) as e:
        list(make_loader(index=index, batch_size=1, channels=1, remote=FAST))
    texts.append(str(e.value))
    # A secret in a query string (a pre-signed URL) of a missing file.
    from tfpathloader.storage import read_url

    with pytest.raises(ImageLoadError) as e:
        read_url(f"{srv.url}/missing.png?X-Amz-Signature={secret}", 7)
    texts.append(str(e.value))
    # Retries are logged (at debug), and a state holds no URL at all.
    srv.faults["/0/00000.png"] = ["503"]
    ok = PathIndex.from_paths(["0/00000.png"], [0], root=srv.url)
    loader = make_loader(index=ok, batch_size=1, channels=1, remote=FAST)
    list(loader)
    texts += [json.dumps(loader.state_dict()), caplog.text]
    assert loader.remote_stats["retries"] == 1
    for t in texts:
        assert secret not in t


def test_a_changed_remote_index_is_never_read_stale(served):
    srv, folder = served
    first = PathIndex.read(srv.url + "/index.tfrecord")
    assert len(first) == 30
    paths, labels = make_images(folder, 12, seed=1)
    time.sleep(0.01)
    write_index(folder / "index.tfrecord", paths, labels)
    second = PathIndex.read(srv.url + "/index.tfrecord")
    assert len(second) == 12
    again = PathIndex.read(srv.url + "/index.tfrecord")
    assert again.files == second.files  # unchanged: the cached copy, not a new download
    assert srv.requests["/index.tfrecord"] == 2 + 3  # two downloads; one HEAD per read


def test_verify_names_missing_remote_files(served):
    from tfpathloader.tools.verify import verify_index

    srv, _ = served
    index = PathIndex.read(srv.url + "/index.tfrecord")
    srv.permanent["/" + index.relpath(5)] = "404"
    srv.permanent["/" + index.relpath(9)] = "403"
    for decode in (False, True):
        report = verify_index(index, decode=decode, progress=False)
        assert [(f.record_id, f.problem[:8]) for f in report.failures] == [
            (5, "HTTP 404"),
            (9, "HTTP 403"),
        ]


def test_verify_checks_remote_pngs_as_the_loaders_do(served):
    """A fetched PNG goes through the PNG checks in verify too (NOTE [png checks]), not only in
    the loaders: a PNG without IEND is flagged, in the loaders' words."""
    from tfpathloader.tools.verify import verify_index

    srv, folder = served
    index = PathIndex.read(srv.url + "/index.tfrecord")
    local = folder / index.relpath(4)
    data = local.read_bytes()
    local.write_bytes(data[: data.rindex(b"IEND") - 4])
    report = verify_index(index, decode=True, progress=False)
    assert [(f.record_id, f.problem) for f in report.failures] == [
        (4, "image is corrupt or truncated: PNG ends without its IEND chunk: expected IEND last")
    ]


# --------------------------------------------------------------------------- S3 (moto)


@pytest.fixture
def s3(monkeypatch):
    """moto's S3 server on 127.0.0.1 with a bucket; yields the endpoint URL."""
    moto_server = pytest.importorskip("moto.server")
    srv = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for k, v in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing-secret",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }.items():
        monkeypatch.setenv(k, v)
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/bucket", method="PUT")).read()
    yield endpoint
    srv.stop()


@pytest.mark.slow  # moto's server takes ~10 s to start
def test_s3_build_read_and_load(s3, tmp_path):
    from tfpathloader.index import build_index
    from tfpathloader.storage.clients import put

    paths, labels = make_images(tmp_path, 12, classes=2)
    for p in paths:
        put(f"s3://bucket/train/{p}", (tmp_path / p).read_bytes(), RemoteOptions())
    put("s3://bucket/train/README.txt", b"not an image", RemoteOptions())
    index, report = build_index("s3://bucket/train", progress=False)
    assert report["images"] == 12 and report["skipped"]["not in a class folder"] == 1
    index = PathIndex.read("s3://bucket/train/index.tfrecord")
    assert index.root == "s3://bucket/train" and index.classes == ("0", "1")
    assert [index.relpath(i) for i in range(12)] == paths
    local = write_index(tmp_path / "index.tfrecord", paths, labels)
    kw = {"batch_size": 5, "seed": 2}
    ids, got = _epoch(make_loader(index=index, remote=FAST, **kw))
    want_ids, want = _epoch(make_loader(index=local, **kw))
    assert ids == want_ids
    for (_, x), (_, y) in zip(got, want, strict=True):
        np.testing.assert_array_equal(x, y)
    put("s3://bucket/train/0/00000.png", b"", RemoteOptions())  # now broken
    with pytest.raises(ImageLoadError, match=r"s3://bucket/train/0/00000.png"):
        list(make_loader(index=index, remote=FAST, channels=1, **kw))
    missing = PathIndex.from_paths(["0/nope.png"], [0], root="s3://bucket/train")
    with pytest.raises(ImageLoadError, match=r"record 0 .*HTTP 404"):
        make_loader(index=missing, batch_size=1, remote=FAST)
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "testing-secret"


@pytest.mark.slow  # a server process and spawned workers: ~10 s
def test_remote_bench_rows(tmp_path):
    from remote_bench import format_remote_table, run_remote_bench

    paths, labels = make_images(tmp_path, 64)
    write_index(tmp_path / "index.tfrecord", paths, labels)
    result = run_remote_bench(
        str(tmp_path / "index.tfrecord"),
        latencies_ms=(0, 10),
        backends=("torch",),
        num_workers=1,
        batch_size=8,
        batches=3,
    )
    sources = [r["source"] for r in result["rows"]]
    assert sources == ["local disk", "HTTP +0 ms", "HTTP +10 ms"]
    assert all(r["images_per_s"] > 0 for r in result["rows"])
    assert result["rows"][1]["to_0ms"] == 1.0
    assert "| torch | HTTP +10 ms |" in format_remote_table(result)

"""URL helpers of tfpathloader.storage: recognizing, joining and redacting remote paths."""

from __future__ import annotations

import pytest

from tfpathloader.storage import RemoteOptions, is_url, join, parent, redact, redact_text


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("s3://bucket/a.png", True),
        ("gs://b/x", True),
        ("https://host/x.png", True),
        ("http://127.0.0.1:8000/demo", True),
        ("file:///tmp/x.png", False),
        ("/tmp/x.png", False),
        ("relative/x.png", False),
        ("C:/x.png", False),
    ],
)
def test_is_url(path, expected):
    assert is_url(path) is expected


def test_join_and_parent():
    assert join("s3://b/train/", "0/a.png") == "s3://b/train/0/a.png"
    assert parent("s3://b/train/index.tfrecord") == "s3://b/train"
    assert parent("http://h:1/index.tfrecord") == "http://h:1"


@pytest.mark.parametrize(
    "url",
    [
        "https://alice:SECRET@host/a.png",
        "https://host/a.png?X-Amz-Signature=SECRET&X-Amz-Credential=SECRET",
        "s3://bucket/a.png?token=SECRET#SECRET",
    ],
)
def test_redact_removes_every_credential(url):
    out = redact(url)
    assert "SECRET" not in out
    assert out.split("?")[0].endswith("a.png")  # still says which file
    assert "SECRET" not in redact_text(f"failed: {url} (twice: {url})")


def test_local_paths_are_not_redacted():
    assert redact("/data/a?b=c.png") == "/data/a?b=c.png"


@pytest.mark.parametrize(
    "kwargs",
    [{"in_flight": 0}, {"retries": -1}, {"timeout": 0}, {"backoff": -1.0}, {"in_flight": 2.5}],
)
def test_remote_options_are_validated(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        RemoteOptions(**kwargs)


def test_worst_case_is_bounded():
    o = RemoteOptions(timeout=1.0, connect_timeout=1.0, retries=2, backoff=0.5, max_backoff=0.6)
    assert o.worst_case_s == pytest.approx(3 * 2.0 + 0.5 + 0.6)

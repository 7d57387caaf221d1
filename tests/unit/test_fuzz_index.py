"""Fuzzing the index reader: it reads correctly or raises IndexFormatError; nothing else, no hang.

Run with `--hypothesis-show-statistics` to see how many cases each strategy ran.
"""

from __future__ import annotations

import gzip
import os
import struct
import tempfile

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfpathloader import IndexFormatError, PathIndex
from tfpathloader.index import encode_example
from tfpathloader.index._proto import Example
from tfpathloader.index._records import masked_crc

FUZZ = settings(
    max_examples=300, deadline=5000, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


def frame(records: list[bytes]) -> bytes:
    out = bytearray()
    for data in records:
        header = struct.pack("<Q", len(data))
        out += (
            header
            + struct.pack("<I", masked_crc(header))
            + data
            + struct.pack("<I", masked_crc(data))
        )
    return bytes(out)


def valid_shard(n: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    return frame(
        [encode_example(int(i), int(rng.integers(0, 5)), f"c{i % 3}/img {i}-é.png") for i in order]
    )


def read_or_format_error(data: bytes, suffix: str = ".tfrecord") -> PathIndex | None:
    """The property: a clean read (checked), or IndexFormatError; any other exception fails."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "fuzz" + suffix)
        with open(path, "wb") as f:
            f.write(data)
        try:
            index = PathIndex.read(path, cache=False, allow_outside_root=True)
        except IndexFormatError as e:
            assert e.file in (None, path)
            assert str(e)
            return None
        n = len(index)
        assert n >= 1
        assert index.labels.dtype == np.int64 and (index.labels >= -1).all()
        for i in range(min(n, 50)):
            assert isinstance(index.path(i), str)
        return index


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(data):
    read_or_format_error(data)


@FUZZ
@given(
    n=st.integers(1, 30),
    seed=st.integers(0, 2**16),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), min_size=1, max_size=8),
    gz=st.booleans(),
)
def test_bit_flips_of_valid_shards(n, seed, flips, gz):
    data = bytearray(valid_shard(n, seed))
    if gz:
        data = bytearray(gzip.compress(bytes(data), mtime=0))
    for pos, bit in flips:
        data[pos % len(data)] ^= 1 << bit
    read_or_format_error(bytes(data), ".tfrecord.gz" if gz else ".tfrecord")


@FUZZ
@given(n=st.integers(1, 30), seed=st.integers(0, 2**16), cut=st.floats(0, 1), gz=st.booleans())
def test_truncations_of_valid_shards(n, seed, cut, gz):
    data = valid_shard(n, seed)
    if gz:
        data = gzip.compress(data, mtime=0)
    end = int(len(data) * cut)
    index = read_or_format_error(data[:end])
    if end == len(data):
        assert index is not None and len(index) == n  # nothing cut: reads in full


@FUZZ
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=6))
def test_correctly_framed_garbage_records(records):
    read_or_format_error(frame(records))


feature_values = st.one_of(
    st.tuples(st.just("int64_list"), st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3)),
    st.tuples(st.just("float_list"), st.lists(st.floats(width=32, allow_nan=True), max_size=3)),
    st.tuples(st.just("bytes_list"), st.lists(st.binary(max_size=40), max_size=3)),
)
feature_names = st.sampled_from(["index", "label", "path", "path_string", "label_name", "other"])


@FUZZ
@given(st.lists(st.dictionaries(feature_names, feature_values, max_size=6), min_size=1, max_size=8))
def test_examples_with_random_features(examples):
    records = []
    for feats in examples:
        ex = Example()
        for name, (kind, values) in feats.items():
            getattr(ex.features.feature[name], kind).value.extend(values)
        records.append(ex.SerializeToString())
    read_or_format_error(frame(records))


@FUZZ
@given(length=st.integers(0, 2**64 - 1))
def test_absurd_length_fields_do_not_allocate_or_hang(length):
    header = struct.pack("<Q", length)
    data = header + struct.pack("<I", masked_crc(header)) + b"\x00" * 16
    assert read_or_format_error(data) is None


# -- hostile index folders (issue 12): shard sets, labels, the cache ---------------------------

HOSTILE = settings(
    max_examples=40, deadline=10000, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


@HOSTILE
@given(n_shards=st.integers(1, 6), present=st.sets(st.integers(0, 5)), stray=st.booleans())
def test_any_subset_of_a_shard_set_reads_whole_or_names_a_missing_shard(n_shards, present, stray):
    from tfpathloader import write_index

    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "idx.tfrecord")
        write_index(
            out,
            [f"{i}.png" for i in range(12)],
            [i % 4 for i in range(12)],
            shards=n_shards,
            cache=False,
        )
        files = sorted(f for f in os.listdir(d) if f.startswith("idx"))
        keep = {files[k] for k in present if k < len(files)}
        for f in files:
            if f not in keep:
                os.remove(os.path.join(d, f))
        if stray:  # a shard of another write, left behind by a half-synced mirror
            with open(os.path.join(d, f"idx-00000-of-{n_shards + 1:05d}.tfrecord"), "wb"):
                pass
        try:
            index = PathIndex.read(os.path.join(d, "idx*.tfrecord"), cache=False)
        except IndexFormatError as e:
            whole = len(keep) == len(files) and not stray
            assert not whole, e
            assert "incomplete" in str(e) or "mixed" in str(e) or "no files match" in str(e)
            if "incomplete" in str(e):
                assert not os.path.exists(e.file) and e.file.startswith(d)
            return
        assert len(keep) == len(files) and not stray and len(index) == 12


@HOSTILE
@given(labels=st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=12))
def test_any_label_is_refused_or_counted_without_allocating_by_its_size(labels):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "fuzz.tfrecord")
        with open(path, "wb") as f:
            f.write(frame([encode_example(i, lab, f"{i}.png") for i, lab in enumerate(labels)]))
        try:
            index = PathIndex.read(path, cache=False)
        except IndexFormatError as e:
            assert any(lab < -1 or lab > 2**31 - 1 for lab in labels), e
            return
        hist = index.label_histogram()
        assert sum(hist.values()) == sum(1 for lab in labels if lab >= 0)
        info = index.info()
        assert sum(info["label_counts"].values()) == sum(hist.values())


@HOSTILE
@given(
    which=st.sampled_from(["labels", "offsets", "paths", "meta"]),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), min_size=1, max_size=4),
)
def test_a_corrupted_cache_is_never_used(which, flips):
    import warnings

    from tfpathloader import write_index

    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "idx.tfrecord")
        paths = [f"c{i % 3}/{i}-é.png" for i in range(25)]
        write_index(out, paths, [i % 3 for i in range(25)])
        first = PathIndex.read(out)
        want = (first.labels.copy(), [first.path(i) for i in range(25)])
        name = "meta.json" if which == "meta" else f"{which}.npy"
        target = os.path.join(first.cache_folder, name)
        del first
        data = bytearray(open(target, "rb").read())
        for pos, bit in flips:
            data[pos % len(data)] ^= 1 << bit
        st_ = os.stat(target)
        with open(target, "wb") as f:
            f.write(bytes(data))
        os.utime(target, ns=(st_.st_atime_ns, st_.st_mtime_ns))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            index = PathIndex.read(out)
        assert np.array_equal(index.labels, want[0])
        assert [index.path(i) for i in range(25)] == want[1]

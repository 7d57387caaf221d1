"""Bad index input: each case gets one clear IndexFormatError naming file, record and expectation."""

from __future__ import annotations

import gzip

import pytest

from tfpathloader import IndexFormatError, PathIndex
from tfpathloader.index import encode_example
from tfpathloader.index._proto import Example
from tfpathloader.index._records import RecordWriter


def _write(path, records):
    with RecordWriter(str(path)) as w:
        for r in records:
            w.write(r)
    return str(path)


def _example(**features):
    ex = Example()
    for name, (kind, values) in features.items():
        getattr(ex.features.feature[name], kind).value.extend(values)
    return ex.SerializeToString()


def _good(n):
    return [encode_example(i, 0, f"{i}.png") for i in range(n)]


def _read_error(path, **kwargs) -> IndexFormatError:
    with pytest.raises(IndexFormatError) as err:
        PathIndex.read(path, cache=False, **kwargs)
    return err.value


def test_truncated_shard(tmp_path):
    path = _write(tmp_path / "t.tfrecord", _good(5))
    data = open(path, "rb").read()
    open(path, "wb").write(data[:-7])
    e = _read_error(path)
    assert (e.file, e.record) == (path, 4)
    assert "truncated" in str(e) and "expected" in str(e)


def test_truncated_inside_a_header(tmp_path):
    path = _write(tmp_path / "t.tfrecord", _good(3))
    open(path, "ab").write(b"\x05\x00\x00")
    e = _read_error(path)
    assert e.record == 3 and "12-byte record header" in str(e)


def test_crc_mismatch_in_data(tmp_path):
    path = _write(tmp_path / "c.tfrecord", _good(4))
    data = bytearray(open(path, "rb").read())
    rec_len = len(_good(4)[0]) + 16
    data[2 * rec_len + 12 + 3] ^= 0x40  # a byte inside record 2's data
    open(path, "wb").write(bytes(data))
    e = _read_error(path)
    assert (e.file, e.record) == (path, 2) and "CRC mismatch in the record data" in str(e)


def test_crc_mismatch_in_length(tmp_path):
    path = _write(tmp_path / "c.tfrecord", _good(4))
    data = bytearray(open(path, "rb").read())
    rec_len = len(_good(4)[0]) + 16
    data[rec_len + 8] ^= 0x01  # record 1's length CRC
    open(path, "wb").write(bytes(data))
    e = _read_error(path)
    assert e.record == 1 and "CRC mismatch in the record length" in str(e)


def test_file_that_is_not_a_tfrecord(tmp_path):
    path = tmp_path / "notes.tfrecord"
    path.write_text("this is a text file, not a TFRecord of path records\n")
    e = _read_error(str(path))
    assert e.record == 0 and "not a TFRecord" in str(e)


def test_broken_gzip_stream(tmp_path):
    path = tmp_path / "g.tfrecord.gz"
    raw = open(_write(tmp_path / "plain.tfrecord", _good(50)), "rb").read()
    path.write_bytes(gzip.compress(raw)[:-40])
    e = _read_error(str(path))
    assert e.file == str(path) and ("GZIP" in str(e) or "truncated" in str(e))


def test_record_that_is_not_an_example(tmp_path):
    path = _write(tmp_path / "x.tfrecord", [*_good(2), b"\xff\xff\xff\xff"])
    e = _read_error(path)
    assert e.record == 2 and "not a tf.train.Example" in str(e)


def test_missing_feature(tmp_path):
    bad = _example(index=("int64_list", [1]), path=("bytes_list", [b"1.png"]))
    path = _write(tmp_path / "m.tfrecord", [_good(1)[0], bad])
    e = _read_error(path)
    assert e.record == 1 and "missing feature 'label'" in str(e) and "int64" in str(e)


def test_missing_path_feature_lists_what_is_there(tmp_path):
    bad = _example(index=("int64_list", [0]), label=("int64_list", [0]))
    e = _read_error(_write(tmp_path / "m.tfrecord", [bad]))
    assert e.record == 0 and "missing feature 'path'" in str(e) and "'index'" in str(e)


@pytest.mark.parametrize(
    ("feature", "kind", "values", "expected"),
    [
        ("label", "bytes_list", [b"3"], "expected int64_list"),
        ("label", "float_list", [3.0], "expected int64_list"),
        ("index", "int64_list", [1, 2], "exactly one value"),
        ("path", "int64_list", [7], "expected bytes_list"),
    ],
)
def test_wrongly_typed_feature(tmp_path, feature, kind, values, expected):
    feats = {
        "index": ("int64_list", [1]),
        "label": ("int64_list", [0]),
        "path": ("bytes_list", [b"p"]),
    }
    feats[feature] = (kind, values)
    path = _write(tmp_path / "w.tfrecord", [_good(1)[0], _example(**feats)])
    e = _read_error(path)
    assert e.record == 1 and f"'{feature}'" in str(e) and expected in str(e)


def test_duplicate_ids_name_both_records(tmp_path):
    records = [encode_example(i, 0, f"{i}.png") for i in (0, 1, 2, 1)]
    path = _write(tmp_path / "d.tfrecord", records)
    e = _read_error(path)
    assert e.record == 3 and "duplicate id 1" in str(e) and "record 1" in str(e)


def test_duplicate_across_shards(tmp_path):
    a = _write(
        tmp_path / "s-00000-of-00002.tfrecord", [encode_example(i, 0, f"{i}.png") for i in (0, 1)]
    )
    b = _write(
        tmp_path / "s-00001-of-00002.tfrecord", [encode_example(i, 0, f"{i}.png") for i in (1, 2)]
    )
    with pytest.raises(IndexFormatError) as err:
        PathIndex.read([a, b], cache=False)
    assert err.value.file == b and err.value.record == 0 and a in str(err.value)


def test_missing_ids(tmp_path):
    records = [encode_example(i, 0, f"{i}.png") for i in (0, 1, 3)]
    e = _read_error(_write(tmp_path / "g.tfrecord", records))
    assert e.record == 2 and "id 3 is out of range" in str(e) and "[2]" in str(e)


def test_empty_index(tmp_path):
    path = _write(tmp_path / "e.tfrecord", [])
    e = _read_error(path)
    assert "empty" in str(e) and path in str(e)


def test_non_utf8_path(tmp_path):
    bad = _example(
        index=("int64_list", [1]), label=("int64_list", [0]), path=("bytes_list", [b"caf\xe9.png"])
    )
    e = _read_error(_write(tmp_path / "u.tfrecord", [_good(1)[0], bad]))
    assert e.record == 1 and "not valid UTF-8" in str(e) and "caf" in str(e)


@pytest.mark.parametrize("bad_path", ["/etc/passwd", "../outside.png", "a/../../b.png"])
def test_path_escaping_the_root(tmp_path, bad_path):
    records = [*_good(2), encode_example(2, 0, bad_path)]
    path = _write(tmp_path / "r.tfrecord", records)
    e = _read_error(path)
    assert (
        (e.file, e.record) == (path, 2) and bad_path in str(e) and "leaves the index root" in str(e)
    )


def test_negative_label_other_than_unlabeled(tmp_path):
    e = _read_error(_write(tmp_path / "n.tfrecord", [encode_example(0, -5, "a.png")]))
    assert e.record == 0 and "label -5" in str(e)


def test_unlabeled_records_are_fine(tmp_path):
    index = PathIndex.read(_write(tmp_path / "ok.tfrecord", [encode_example(0, -1, "a.png")]))
    assert index.labels.tolist() == [-1] and index.info()["unlabeled"] == 1


def test_conflicting_label_names(tmp_path):
    records = [encode_example(0, 0, "a.png", "cat"), encode_example(1, 0, "b.png", "dog")]
    e = _read_error(_write(tmp_path / "n.tfrecord", records))
    assert e.record == 1 and "'cat'" in str(e) and "'dog'" in str(e)

"""The path index: write, read (file, list, glob, shards, GZIP), columnar layout, cache, root."""

from __future__ import annotations

import glob
import os
import pickle
import stat

import numpy as np
import pytest
from conftest import make_images

from tfpathloader import IndexFormatError, PathIndex, write_index
from tfpathloader.index import build_index, encode_example, shard_names
from tfpathloader.index._records import RecordWriter


def test_round_trip_single_file(image_dir):
    folder, _ = image_dir
    again = PathIndex.read(folder / "index.tfrecord", cache=False)
    assert len(again) == 30
    assert [again.relpath(i) for i in range(30)] == [
        f"{i * 3 // 30}/{i:05d}.png" for i in range(30)
    ]
    np.testing.assert_array_equal(again.labels, [i * 3 // 30 for i in range(30)])
    assert again.path(7) == os.path.join(str(folder), "0", "00007.png")
    assert os.path.isabs(again.path(0)) and os.path.isfile(again.path(29))
    assert again.classes == ("a", "b", "c")
    assert again.root == str(folder)


def test_columnar_layout_holds_no_python_strings(image_dir):
    _, index = image_dir
    assert index.ids.dtype == np.int64 and index.labels.dtype == np.int64
    assert index.path_buffer.dtype == np.uint8 and index.offsets.dtype == np.int64
    assert len(index.offsets) == len(index) + 1
    # 16 bytes per record (labels + offsets) plus the path bytes, plus one offset.
    assert index.nbytes() == 16 * len(index) + 8 + int(index.offsets[-1])
    assert bytes(index.path_buffer[index.offsets[3] : index.offsets[4]]) == b"0/00003.png"


@pytest.mark.parametrize("shards", [1, 2, 7])
@pytest.mark.parametrize("compression", [None, "gzip"])
def test_sharded_and_gzip_round_trip(tmp_path, shards, compression):
    paths, labels = make_images(tmp_path, 23, classes=4)
    out = tmp_path / "idx.tfrecord"
    write_index(out, paths, labels, shards=shards, compression=compression)
    files = shard_names(str(out), shards, compression=compression)
    assert all(os.path.isfile(f) for f in files)
    if shards > 1:
        assert os.path.basename(files[0]) == f"idx-00000-of-{shards:05d}.tfrecord" + (
            ".gz" if compression else ""
        )
    for source in (files, str(tmp_path / "idx*.tfrecord*"), str(out)):
        index = PathIndex.read(source, cache=False)
        assert [index.relpath(i) for i in range(23)] == paths
        np.testing.assert_array_equal(index.labels, labels)
        assert index.info()["compression"] == compression
        assert index.info()["shards"] == shards


def test_records_in_any_order_are_sorted_by_id(tmp_path):
    out = str(tmp_path / "shuffled.tfrecord")
    order = [3, 0, 4, 1, 2]
    with RecordWriter(out) as w:
        for i in order:
            w.write(encode_example(i, i % 2, f"img/{i}.png"))
    index = PathIndex.read(out, cache=False)
    assert [index.relpath(i) for i in range(5)] == [f"img/{i}.png" for i in range(5)]
    np.testing.assert_array_equal(index.labels, [0, 1, 0, 1, 0])


def test_rewriting_with_fewer_shards_removes_stale_ones(tmp_path):
    paths, labels = make_images(tmp_path, 10)
    write_index(tmp_path / "idx.tfrecord", paths, labels, shards=4)
    write_index(tmp_path / "idx.tfrecord", paths[:6], labels[:6], shards=2)
    assert sorted(os.path.basename(f) for f in glob.glob(str(tmp_path / "idx*"))) == [
        "idx-00000-of-00002.tfrecord",
        "idx-00001-of-00002.tfrecord",
    ]
    assert len(PathIndex.read(tmp_path / "idx.tfrecord")) == 6


def test_mixed_shard_sets_are_refused(tmp_path):
    paths, labels = make_images(tmp_path, 10)
    write_index(tmp_path / "idx.tfrecord", paths, labels, shards=2)
    # A leftover shard from another write, copied in by hand.
    with RecordWriter(str(tmp_path / "idx-00000-of-00003.tfrecord")) as w:
        w.write(encode_example(0, 0, "0/00000.png"))
    with pytest.raises(IndexFormatError, match="different writes are mixed"):
        PathIndex.read(str(tmp_path / "idx-*.tfrecord"))


def test_interrupted_write_leaves_previous_index_untouched(tmp_path, monkeypatch):
    import tfpathloader.index.write as index_module

    paths, labels = make_images(tmp_path, 10)
    out = tmp_path / "idx.tfrecord"
    write_index(out, paths, labels)
    before = sorted(os.listdir(tmp_path)), out.read_bytes()
    real_encode = index_module.encode_example
    calls = []

    def ctrl_c_on_the_seventh_record(*args, **kwargs):
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(index_module, "encode_example", ctrl_c_on_the_seventh_record)
    with pytest.raises(KeyboardInterrupt):
        write_index(out, paths, labels, shards=2)  # shard 0 complete, shard 1 half-written
    assert (sorted(os.listdir(tmp_path)), out.read_bytes()) == before
    monkeypatch.undo()
    np.testing.assert_array_equal(PathIndex.read(out).labels, labels)


def test_cache_is_written_reused_and_rebuilt_when_a_shard_changes(tmp_path):
    paths, labels = make_images(tmp_path, 12)
    out = tmp_path / "idx.tfrecord"
    with RecordWriter(str(out)) as w:
        for i, (p, lab) in enumerate(zip(paths, labels, strict=True)):
            w.write(encode_example(i, lab, p))
    first = PathIndex.read(out)
    assert first.cache_folder is not None and os.path.isdir(first.cache_folder)
    assert first.memory_mapped
    second = PathIndex.read(out)
    assert second.cache_folder == first.cache_folder
    # Rewrite the shard with other labels: the cache must not be read stale.
    with RecordWriter(str(out)) as w:
        for i, p in enumerate(paths):
            w.write(encode_example(i, 5, p))
    third = PathIndex.read(out)
    np.testing.assert_array_equal(third.labels, np.full(12, 5))


def test_cache_goes_to_user_folder_when_index_folder_is_read_only(tmp_path, monkeypatch):
    if os.geteuid() == 0:
        # root ignores permission bits; simulate a read-only folder by making the cache path a file.
        data = tmp_path / "data"
        data.mkdir()
        paths, labels = make_images(data, 6)
        write_index(data / "idx.tfrecord", paths, labels, cache=False)
        (data / ".tfpathloader-cache").write_text("not a folder")
    else:
        data = tmp_path / "data"
        data.mkdir()
        paths, labels = make_images(data, 6)
        write_index(data / "idx.tfrecord", paths, labels, cache=False)
        os.chmod(data, stat.S_IRUSR | stat.S_IXUSR)
    user_cache = tmp_path / "usercache"
    monkeypatch.setenv("TFPATHLOADER_CACHE_DIR", str(user_cache))
    try:
        index = PathIndex.read(data / "idx.tfrecord")
        assert index.cache_folder is not None
        assert index.cache_folder.startswith(str(user_cache))
        assert PathIndex.read(data / "idx.tfrecord").cache_folder == index.cache_folder
    finally:
        os.chmod(data, stat.S_IRWXU)


def test_pickled_index_remaps_the_cache_instead_of_copying(image_dir):
    _, index = image_dir
    assert index.cache_folder is not None
    blob = pickle.dumps(index)
    assert len(blob) < 2000  # no arrays inside
    clone = pickle.loads(blob)
    assert [clone.path(i) for i in range(30)] == [index.path(i) for i in range(30)]
    in_memory = PathIndex.from_paths(["a.png", "b.png"], [0, 1], root="/data")
    assert pickle.loads(pickle.dumps(in_memory)).path(1) == "/data/b.png"


def test_paths_outside_the_root_are_refused_unless_allowed(tmp_path):
    out = str(tmp_path / "idx.tfrecord")
    with RecordWriter(out) as w:
        w.write(encode_example(0, 0, "ok.png"))
        w.write(encode_example(1, 0, "sub/../../escape.png"))
    with pytest.raises(IndexFormatError) as err:
        PathIndex.read(out)
    assert err.value.record == 1 and err.value.file == out
    assert "sub/../../escape.png" in str(err.value) and "allow_outside_root" in str(err.value)
    index = PathIndex.read(out, allow_outside_root=True)
    assert os.path.normpath(index.path(1)) == os.path.normpath(
        os.path.join(str(tmp_path), "..", "escape.png")
    )
    with pytest.raises(ValueError, match="outside the index root"):
        write_index(tmp_path / "x.tfrecord", ["/etc/passwd"], [0])


def test_root_override_and_article_path_string_feature(tmp_path):
    out = str(tmp_path / "mnist_path.tfrecord")
    with RecordWriter(out) as w:
        from tfpathloader.index._proto import Example

        for i in range(3):
            ex = Example()
            ex.features.feature["index"].int64_list.value.append(i)
            ex.features.feature["label"].int64_list.value.append(i)
            ex.features.feature["path_string"].bytes_list.value.append(f"images/{i}.png".encode())
            w.write(ex.SerializeToString())
    index = PathIndex.read(out, root=tmp_path / "elsewhere")
    assert index.path(2) == str(tmp_path / "elsewhere" / "images" / "2.png")
    assert index.classes is None and index.label_name(1) == "1"


def test_build_index_walks_class_folders_in_sorted_order(tmp_path):
    root = tmp_path / "imgs"
    for cls in ["zebra", "ant", "moth"]:
        for name in ["b.png", "a.jpg", "c.PNG"]:
            p = root / cls / name
            p.parent.mkdir(parents=True, exist_ok=True)
            from PIL import Image

            Image.new("RGB", (4, 4)).save(p, format="PNG")
    (root / "ant" / "notes.txt").write_text("x")
    (root / "stray.png").write_bytes(b"")
    index, report = build_index(root)
    assert index.classes == ("ant", "moth", "zebra")
    assert [index.relpath(i) for i in range(3)] == ["ant/a.jpg", "ant/b.png", "ant/c.PNG"]
    np.testing.assert_array_equal(index.labels, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    assert report["skipped"] == {"not an image extension": 1, "not in a class folder": 1}
    again, _ = build_index(root, tmp_path / "imgs" / "again.tfrecord")
    assert [again.relpath(i) for i in range(9)] == [index.relpath(i) for i in range(9)]
    with pytest.raises(ValueError, match="does not contain the images"):
        build_index(root, tmp_path / "other" / "idx.tfrecord")


def test_sharded_name_resolves_to_its_shards(tmp_path):
    paths, labels = make_images(tmp_path, 9)
    write_index(tmp_path / "idx.tfrecord", paths, labels, shards=3)
    assert not os.path.exists(tmp_path / "idx.tfrecord")
    assert len(PathIndex.read(tmp_path / "idx.tfrecord").files) == 3
    with pytest.raises(IndexFormatError, match="no path index"):
        PathIndex.read(tmp_path / "nothing.tfrecord")


def _parse_and_sign(file):
    from tfpathloader.index.parse import _Parser

    parser = _Parser()
    parser.parse_file(file, None)
    parser.pid = os.getpid()
    return parser


@pytest.fixture
def parallel_parse(monkeypatch):
    """Shards parse in worker processes even when small; each result says which process."""
    import tfpathloader.index.parse as index_module

    monkeypatch.setattr(index_module, "_PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(index_module.os, "cpu_count", lambda: 3)
    monkeypatch.setattr(index_module, "_parse_shard", _parse_and_sign)
    seen = []
    real_merge = index_module._Parser.merge

    def merge(self, later):
        seen.append(getattr(later, "pid", None))
        return real_merge(self, later)

    monkeypatch.setattr(index_module._Parser, "merge", merge)
    return seen


def _shards_out_of_order(tmp_path, classes=("cat", "dog", "eel")):
    """Four shards whose ids interleave (record k of shard s has id 4k + (3 - s))."""
    files = []
    for s in range(4):
        path = str(tmp_path / f"idx-{s:05d}-of-00004.tfrecord")
        with RecordWriter(path) as w:
            for k in range(25):
                i = 4 * k + (3 - s)
                w.write(encode_example(i, i % 3, f"c{i % 3}/{i:03d}.png", classes[i % 3]))
        files.append(path)
    return files


def test_parallel_parse_equals_the_single_process_parse(tmp_path, parallel_parse):
    files = _shards_out_of_order(tmp_path)
    index = PathIndex.read(files, cache=False)
    assert len(parallel_parse) == 4 and os.getpid() not in parallel_parse
    assert None not in parallel_parse  # every shard came from a worker process
    import tfpathloader.index.parse as index_module

    index_module._PARALLEL_MIN_BYTES = 1 << 60  # restored by monkeypatch afterwards
    single = PathIndex.read(files, cache=False)
    assert [index.relpath(i) for i in range(100)] == [f"c{i % 3}/{i:03d}.png" for i in range(100)]
    for a, b in ((index.labels, single.labels), (index.offsets, single.offsets)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(index.path_buffer, single.path_buffer)
    assert index.classes == single.classes == ("cat", "dog", "eel")
    assert index.info() == single.info()


def test_parallel_parse_reports_errors_as_one_process_would(tmp_path, parallel_parse):
    files = _shards_out_of_order(tmp_path)
    data = bytearray(open(files[2], "rb").read())
    data[-3] ^= 0x10  # the data CRC of shard 2's last record
    open(files[2], "wb").write(bytes(data))
    with pytest.raises(IndexFormatError) as err:
        PathIndex.read(files, cache=False)
    assert (err.value.file, err.value.record) == (files[2], 24)
    assert "CRC mismatch" in err.value.reason
    # A label named differently in two shards: the later place is the error, the earlier named.
    (tmp_path / "names").mkdir()
    files = _shards_out_of_order(tmp_path / "names")
    with RecordWriter(files[3]) as w:  # ids 4k; label 0 named "cow" here, "cat" elsewhere
        for k in range(25):
            i = 4 * k
            w.write(encode_example(i, i % 3, f"{i}.png", ("cow", "dog", "eel")[i % 3]))
    with pytest.raises(IndexFormatError) as err:
        PathIndex.read(files, cache=False)
    assert (err.value.file, err.value.record) == (files[3], 0)
    assert f"named 'cow' here but 'cat' in {files[0]}, record 0" in str(err.value)


def _read_in_daemon(files, out):
    out.put(len(PathIndex.read(files, cache=False)))


def test_parallel_parse_falls_back_inside_a_daemon_process(tmp_path, parallel_parse):
    """A DataLoader worker (a daemon) may not start processes: it parses in one."""
    import multiprocessing as mp

    files = _shards_out_of_order(tmp_path)
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    proc = ctx.Process(target=_read_in_daemon, args=(files, out), daemon=True)
    proc.start()
    assert out.get(timeout=60) == 100
    proc.join()
    assert proc.exitcode == 0


@pytest.fixture
def parallel_write(monkeypatch):
    import tfpathloader.index.write as index_module

    monkeypatch.setattr(index_module, "_PARALLEL_MIN_RECORDS", 0)
    monkeypatch.setattr(index_module.os, "cpu_count", lambda: 3)
    return index_module


def _files(folder):
    return {f: open(os.path.join(folder, f), "rb").read() for f in sorted(os.listdir(folder))}


def test_parallel_write_is_byte_identical_to_the_single_process_write(
    tmp_path, parallel_write, monkeypatch
):
    paths = [f"c{i % 3}/{i:04d}.png" for i in range(500)]
    labels = [i % 3 for i in range(500)]
    moved = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (moved.append(a), real_replace(a, b)))
    for name, parallel in (("one", False), ("many", True)):
        parallel_write._PARALLEL_MIN_RECORDS = 0 if parallel else 1 << 60
        (tmp_path / name).mkdir()
        out = tmp_path / name / "idx.tfrecord"
        write_index(out, paths, labels, shards=5, classes=["a", "b", "c"], cache=False)
    one, many = _files(tmp_path / "one"), _files(tmp_path / "many")
    assert len(many) == 5 and one == many
    writers = {int(tmp.rsplit("-", 1)[1]) for tmp in moved[5:]}  # ".name.tmp-<pid>"
    assert os.getpid() not in writers and len(writers) >= 2  # written by worker processes


def _fail_on_record_333(index, label, path, label_name=None):
    if index == 333:
        raise ValueError("no space left on device (simulated)")
    return encode_example(index, label, path, label_name)


def test_failed_parallel_write_leaves_previous_index_untouched(tmp_path, parallel_write):
    paths = [f"{i:04d}.png" for i in range(500)]
    out = tmp_path / "idx.tfrecord"
    write_index(out, paths, [0] * 500, shards=2, cache=False)
    before = _files(tmp_path)
    parallel_write.encode_example = _fail_on_record_333  # forked workers see it too
    try:
        with pytest.raises(ValueError, match="simulated"):
            write_index(out, paths, [1] * 500, shards=5, cache=False)  # record 333: shard 3
    finally:
        parallel_write.encode_example = encode_example
    assert _files(tmp_path) == before  # no new shard, no temporary file left

"""TensorFlow reads our index files and we read TensorFlow's, with `tfrecord` in the same process.

Import order matters for the protobuf clash, so each order runs in a fresh interpreter.
"""

from __future__ import annotations

import json

import pytest
from conftest import run_python

ROUND_TRIP = """
import json, os, sys
{imports}
import tensorflow as tf
from tfpathloader import PathIndex, write_index

out = sys.argv[1] if len(sys.argv) > 1 else {tmp!r}
# 1. ours -> TensorFlow
write_index(os.path.join(out, "ours.tfrecord"), ["a/0.png", "b/1.png", "b/2.png"], [0, 1, 1],
            classes=["cat", "dog"], shards=2, compression="gzip")
spec = {{"index": tf.io.FixedLenFeature([], tf.int64), "label": tf.io.FixedLenFeature([], tf.int64),
        "path": tf.io.FixedLenFeature([], tf.string), "label_name": tf.io.FixedLenFeature([], tf.string)}}
files = sorted(tf.io.gfile.glob(os.path.join(out, "ours-*")))
ds = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(8)
parsed = tf.io.parse_example(next(iter(ds)), spec)
# 2. TensorFlow -> ours (the article's path_string feature, records out of order)
with tf.io.TFRecordWriter(os.path.join(out, "tfs.tfrecord")) as w:
    for i in (2, 0, 1):
        ex = tf.train.Example(features=tf.train.Features(feature={{
            "index": tf.train.Feature(int64_list=tf.train.Int64List(value=[i])),
            "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 2])),
            "path_string": tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"img/{{i}}.png".encode()])),
        }}))
        w.write(ex.SerializeToString())
idx = PathIndex.read(os.path.join(out, "tfs.tfrecord"))
# 3. the tfrecord package works too, on our file
import tfrecord
from tfrecord.reader import tfrecord_loader
first = next(iter(tfrecord_loader(os.path.join(out, "tfs.tfrecord"), None)))
print(json.dumps({{
    "tf_index": parsed["index"].numpy().tolist(),
    "tf_label": parsed["label"].numpy().tolist(),
    "tf_path": [p.decode() for p in parsed["path"].numpy()],
    "tf_label_name": [p.decode() for p in parsed["label_name"].numpy()],
    "ours_paths": [idx.relpath(i) for i in range(len(idx))],
    "ours_labels": idx.labels.tolist(),
    "tfrecord_first_index": int(first["index"][0]),
}}))
"""

STEP = "import tfpathloader\ntfpathloader.enable_tfrecord_interop()"
ORDERS = {
    "the explicit step, tfrecord, then tensorflow": f"{STEP}\nimport tfrecord",
    "tensorflow first": f"import tensorflow\n{STEP}\nimport tfrecord",
    "the tf backend's import, then tfrecord": (
        "from tfpathloader.load.tf_backend import import_tensorflow\nimport_tensorflow()\n"
        "import tfrecord"
    ),
}


@pytest.mark.tf
@pytest.mark.slow
@pytest.mark.parametrize("order", list(ORDERS))
def test_round_trips_with_tensorflow_and_tfrecord_in_one_process(tmp_path, order):
    result = run_python(ROUND_TRIP.format(imports=ORDERS[order], tmp=str(tmp_path)))
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["tf_index"] == [0, 1, 2]
    assert got["tf_label"] == [0, 1, 1]
    assert got["tf_path"] == ["a/0.png", "b/1.png", "b/2.png"]
    assert got["tf_label_name"] == ["cat", "dog", "dog"]
    assert got["ours_paths"] == ["img/0.png", "img/1.png", "img/2.png"]
    assert got["ours_labels"] == [0, 1, 0]
    assert got["tfrecord_first_index"] == 2


def test_bare_tfrecord_then_tensorflow_is_explained(tmp_path):
    # The one order no library can repair: tfrecord registered its messages globally first.
    result = run_python(
        "import warnings, tfrecord\nwarnings.simplefilter('error')\nimport tfpathloader\n"
        "tfpathloader.enable_tfrecord_interop()"
    )
    assert result.returncode != 0
    assert "Call tfpathloader.enable_tfrecord_interop() before importing tfrecord" in result.stderr


def test_import_installs_no_hook_registers_nothing_and_orders_need_only_numpy():
    code = """
    import sys
    before = list(sys.meta_path)
    import tfpathloader.order
    from google.protobuf import descriptor_pool
    try:
        descriptor_pool.Default().FindMessageTypeByName("tensorflow.Example")
        registered = True
    except KeyError:
        registered = False
    heavy = sorted({m.split(".")[0] for m in sys.modules}
                   & {"torch", "tensorflow", "PIL", "tfrecord", "scipy", "tqdm"})
    print(sys.meta_path == before, registered, heavy,
          "google.protobuf" in sys.modules)
    """
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    # google.protobuf was imported by this check itself, after the order package.
    assert result.stdout.split() == ["True", "False", "[]", "True"]


def test_our_index_files_read_by_tfrecords_own_reader(tmp_path):
    from tfpathloader import write_index
    from tfpathloader.index.tfrecord_interop import tfrecord_records

    idx = write_index(tmp_path / "i.tfrecord", ["a/0.png", "b/1.png"], [0, 1], compression="gzip")
    records = list(tfrecord_records(idx.files[0]))
    assert [int(r["index"][0]) for r in records] == [0, 1]
    assert [int(r["label"][0]) for r in records] == [0, 1]
    assert [bytes(r["path"]).decode() for r in records] == ["a/0.png", "b/1.png"]


def test_import_needs_neither_torch_nor_tensorflow(tmp_path):
    code = f"""
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "tensorflow", "keras", "scipy", "matplotlib"):
                raise ImportError(f"blocked {{name}}")
    sys.meta_path.insert(0, Block())
    import tfpathloader
    from tfpathloader import PathIndex, write_index
    idx = write_index({str(tmp_path / "i.tfrecord")!r}, ["a.png", "b.png"], [0, 1])
    tfpathloader.enable_tfrecord_interop()
    import tfrecord  # the shim keeps it importable, and it imports without torch too
    print(len(PathIndex.read(idx.files[0])), sorted(m for m in sys.modules if m.startswith(("torch", "tensorflow"))))
    """
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "2 []"

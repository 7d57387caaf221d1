"""tf.train.Example messages in a private protobuf pool, so TensorFlow and `tfrecord` coexist.

NOTE [protobuf clash]: TensorFlow registers ``tensorflow/core/example/feature.proto`` and the
``tfrecord`` package registers its own ``example.proto`` in protobuf's *default* descriptor pool.
Both declare ``tensorflow.BytesList`` etc., so whichever is imported second fails with
"duplicate symbol 'tensorflow.BytesList'". The wire format is what both sides actually share, so
tfpathloader builds the same messages in a pool of its own (nothing global is registered).
``import tfpathloader`` changes nothing else in the process. The explicit step
:func:`~tfpathloader.enable_tfrecord_interop` (also taken by the tf backend just before it
imports TensorFlow, and by :func:`~tfpathloader.index.tfrecord_interop.tfrecord_records`)
installs an import hook that serves this module as ``tfrecord.example_pb2``: ``tfrecord`` then
works unchanged and TensorFlow keeps the default pool to itself, in either import order. The
one order no library can repair is ``import tfrecord`` *before* that step, followed by ``import
tensorflow``: the step warns about it, and the tf backend turns TensorFlow's failure into an
error that says what to do.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
import warnings
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

__all__ = [
    "BytesList",
    "Example",
    "Feature",
    "FeatureList",
    "FeatureLists",
    "Features",
    "FloatList",
    "Int64List",
    "SequenceExample",
    "install_tfrecord_shim",
]

# Field numbers and types as in tensorflow/core/example/{feature,example}.proto.
_EXAMPLE_PROTO = """
name: "tfpathloader/example.proto"
package: "tensorflow"
syntax: "proto3"
message_type {
  name: "BytesList"
  field { name: "value" number: 1 label: LABEL_REPEATED type: TYPE_BYTES }
}
message_type {
  name: "FloatList"
  field { name: "value" number: 1 label: LABEL_REPEATED type: TYPE_FLOAT options { packed: true } }
}
message_type {
  name: "Int64List"
  field { name: "value" number: 1 label: LABEL_REPEATED type: TYPE_INT64 options { packed: true } }
}
message_type {
  name: "Feature"
  field { name: "bytes_list" number: 1 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".tensorflow.BytesList" oneof_index: 0 }
  field { name: "float_list" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".tensorflow.FloatList" oneof_index: 0 }
  field { name: "int64_list" number: 3 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".tensorflow.Int64List" oneof_index: 0 }
  oneof_decl { name: "kind" }
}
message_type {
  name: "Features"
  field { name: "feature" number: 1 label: LABEL_REPEATED type: TYPE_MESSAGE
          type_name: ".tensorflow.Features.FeatureEntry" }
  nested_type {
    name: "FeatureEntry"
    field { name: "key" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
    field { name: "value" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE
            type_name: ".tensorflow.Feature" }
    options { map_entry: true }
  }
}
message_type {
  name: "FeatureList"
  field { name: "feature" number: 1 label: LABEL_REPEATED type: TYPE_MESSAGE
          type_name: ".tensorflow.Feature" }
}
message_type {
  name: "FeatureLists"
  field { name: "feature_list" number: 1 label: LABEL_REPEATED type: TYPE_MESSAGE
          type_name: ".tensorflow.FeatureLists.FeatureListEntry" }
  nested_type {
    name: "FeatureListEntry"
    field { name: "key" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
    field { name: "value" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE
            type_name: ".tensorflow.FeatureList" }
    options { map_entry: true }
  }
}
message_type {
  name: "Example"
  field { name: "features" number: 1 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".tensorflow.Features" }
}
message_type {
  name: "SequenceExample"
  field { name: "context" number: 1 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".tensorflow.Features" }
  field { name: "feature_lists" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".tensorflow.FeatureLists" }
}
"""

_POOL = descriptor_pool.DescriptorPool()
DESCRIPTOR = _POOL.Add(text_format.Parse(_EXAMPLE_PROTO, descriptor_pb2.FileDescriptorProto()))


def _message(name: str) -> Any:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"tensorflow.{name}"))


BytesList = _message("BytesList")
FloatList = _message("FloatList")
Int64List = _message("Int64List")
Feature = _message("Feature")
Features = _message("Features")
FeatureList = _message("FeatureList")
FeatureLists = _message("FeatureLists")
Example = _message("Example")
SequenceExample = _message("SequenceExample")

_SHIM_NAME = "tfrecord.example_pb2"
_SHIM_MARK = "__tfpathloader_shim__"


def _shim_module() -> types.ModuleType:
    module = types.ModuleType(_SHIM_NAME, "tf.train.Example messages (tfpathloader private pool).")
    for name in __all__:
        if name[0].isupper():
            setattr(module, name, globals()[name])
    module.DESCRIPTOR = DESCRIPTOR  # type: ignore[attr-defined]
    setattr(module, _SHIM_MARK, True)
    return module


class _TFRecordProtoFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves :func:`_shim_module` when ``tfrecord`` imports its ``example_pb2``."""

    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _SHIM_NAME:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _shim_module()

    def exec_module(self, module: types.ModuleType) -> None:
        return None


def install_tfrecord_shim() -> None:
    """Make ``import tfrecord`` and ``import tensorflow`` work together, in either order.

    Idempotent. Public as :func:`tfpathloader.enable_tfrecord_interop`.
    """
    if not any(isinstance(f, _TFRecordProtoFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _TFRecordProtoFinder())
    loaded = sys.modules.get(_SHIM_NAME)
    if (
        loaded is not None
        and not getattr(loaded, _SHIM_MARK, False)
        and "tensorflow" not in sys.modules
    ):
        warnings.warn(
            "the 'tfrecord' package was imported before tfpathloader, so its protobuf messages "
            "sit in protobuf's global pool and a later 'import tensorflow' will fail with "
            "\"duplicate symbol 'tensorflow.BytesList'\". Call "
            "tfpathloader.enable_tfrecord_interop() before importing tfrecord.",
            RuntimeWarning,
            stacklevel=3,
        )

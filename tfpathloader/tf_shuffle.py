"""The order "tf-buffer": TensorFlow's own ``Dataset.shuffle`` of the stored order, for comparison.

It lives above :mod:`tfpathloader.order` (numpy only) and registers itself there when imported
(NOTE [order registry] in :mod:`tfpathloader.order.orders`); TensorFlow is imported only when an
epoch of this order is asked for.
"""

from __future__ import annotations

import numpy as np

from .order.orders import ArrayOrder, Order, register_order
from .order.spec import OrderSpec, Stream, check_int, epoch_rng

__all__ = ["tf_buffer_order"]


def tf_buffer_order(n: int, buffer_size: int, seed: int, epoch: int) -> np.ndarray:
    """TensorFlow's own ``Dataset.shuffle(buffer_size)`` over the stored order.

    The same bounded-buffer algorithm as :func:`~tfpathloader.order.buffer_order` with
    TensorFlow's generator: offered as a separately named order so that both backends (and the
    audit) can show tf.data's own shuffle, delivering identical ids. Its seed comes from (seed,
    epoch) like every other order; the sequence is TensorFlow's, so it may change between
    TensorFlow versions.
    """
    check_int("n", n)
    check_int("buffer_size", buffer_size, minimum=1)
    from ._tf import import_tensorflow

    tf = import_tensorflow()
    tf_seed = int(epoch_rng(seed, epoch, Stream.TF_BUFFER).integers(0, 2**63 - 1))
    ds = tf.data.Dataset.range(n).shuffle(buffer_size, seed=tf_seed, reshuffle_each_iteration=False)
    parts = [b.numpy() for b in ds.batch(1 << 16)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


def _tf_buffer(spec: OrderSpec, n: int, epoch: int) -> Order:
    assert spec.buffer_size is not None  # OrderSpec checked it
    return ArrayOrder(tf_buffer_order(n, spec.buffer_size, spec.seed, epoch))


register_order("tf-buffer", _tf_buffer)

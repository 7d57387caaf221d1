"""Stage two: which record ids an epoch visits, in which order, on which rank (numpy only)."""

from __future__ import annotations

from .layout import Layout
from .orders import (
    PERMUTATIONS,
    ArrayOrder,
    Order,
    StatelessPermutation,
    buffer_order,
    exact_permutation,
    make_order,
)
from .sampler import GlobalShuffleSampler
from .spec import ORDERS, OrderSpec, Stream, epoch_rng
from .state import StateError, agree

__all__ = [
    "ORDERS",
    "PERMUTATIONS",
    "ArrayOrder",
    "GlobalShuffleSampler",
    "Layout",
    "Order",
    "OrderSpec",
    "StateError",
    "StatelessPermutation",
    "Stream",
    "agree",
    "buffer_order",
    "epoch_rng",
    "exact_permutation",
    "make_order",
]

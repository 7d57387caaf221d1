"""Stage two: which record ids an epoch visits, in which order, on which rank (numpy only)."""

from __future__ import annotations

from .orders import (
    ORDERS,
    PERMUTATIONS,
    ArrayOrder,
    Layout,
    Order,
    StatelessPermutation,
    buffer_order,
    epoch_rng,
    exact_permutation,
    make_order,
)
from .sampler import GlobalShuffleSampler

__all__ = [
    "ORDERS",
    "PERMUTATIONS",
    "ArrayOrder",
    "GlobalShuffleSampler",
    "Layout",
    "Order",
    "StatelessPermutation",
    "buffer_order",
    "epoch_rng",
    "exact_permutation",
    "make_order",
]

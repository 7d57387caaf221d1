"""OrderSpec: the one validated value that decides an epoch's sequence of record ids.

NOTE [one order spec]: the fields that decide which ids an epoch delivers, in which order and on
which step — shuffle, permutation, buffer size, seed, per-rank batch size, drop_last, world size —
are named, checked and documented here and nowhere else. The sampler, both loaders, the audit, the
command line and the Hydra schema take an :class:`OrderSpec` (``make_loader`` builds one from its
keyword arguments). Which of them a resume state must match is :meth:`OrderSpec.identity`; the rest
(batch size, world size, drop_last) is the *layout*, which may change between save and load (see
NOTE [elastic resume] in :mod:`tfpathloader.order.state`).

NOTE [seeding]: every random choice comes from ``np.random.default_rng([seed, epoch, stream])``
(with more words after the stream where a use needs them, e.g. the record id of a transform).
Seeding from both numbers (not ``seed + epoch``) keeps (seed 0, epoch 1) and (seed 1, epoch 0)
apart; :class:`Stream` names every use, so no two uses of one (seed, epoch) share a stream.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "ORDERS",
    "PERMUTATIONS",
    "OrderSpec",
    "Stream",
    "check_bool",
    "check_int",
    "epoch_rng",
]

# The orders by name (what each delivers: tfpathloader.order.orders, DESIGN.md §4).
ORDERS: tuple[str, ...] = ("global", "buffer", "none")
PERMUTATIONS: tuple[str, ...] = ("exact", "stateless")


class Stream(enum.IntEnum):
    """Independent random streams under one (seed, epoch); see NOTE [seeding]."""

    EXACT = 0  # the exact global permutation
    STATELESS = 1  # the keys of the stateless (Feistel) permutation
    BUFFER = 2  # the draws of the buffer order
    TRANSFORM = 3  # per-record augmentation: [seed, epoch, TRANSFORM, record id]
    # 4 was the seed of TensorFlow's own Dataset.shuffle (an order no longer offered)
    TORCH_SEED = 5  # torch's global generator around a user transform: [.., record id, this]
    HOLDOUT = 100  # train_app's held-out evaluation split: [seed, HOLDOUT]


def check_int(name: str, value: Any, *, minimum: int = 0, maximum: int | None = None) -> int:
    """``value`` as an int, or a ``ValueError`` naming ``name`` and the valid range.

    A bool is not an int here (``True`` is refused), nor is a float or a numeric string.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        top = f" and <= {maximum}" if maximum is not None else ""
        raise ValueError(f"{name} must be an integer >= {minimum}{top}, got {value!r}")
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    """``value`` as a bool, or a ``ValueError`` naming ``name`` (``"no"`` or ``1`` are refused)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _check_choice(name: str, value: Any, valid: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
    return value


def epoch_rng(seed: int, epoch: int, stream: int, *extra: int) -> np.random.Generator:
    """The generator of one use (``stream``) of one epoch; see NOTE [seeding]."""
    check_int("seed", seed)
    check_int("epoch", epoch)
    return np.random.default_rng([int(seed), int(epoch), int(stream), *map(int, extra)])


@dataclass(frozen=True, kw_only=True)
class OrderSpec:
    """Which ids every epoch delivers, in which order, in which steps (frozen, validated).

    Args:
        shuffle: ``"global"`` (a uniform permutation per epoch), ``"buffer"`` (the bounded-buffer
            shuffle of the stored order, tf.data ``shuffle`` semantics computed by numpy: the
            biased baseline) or ``"none"`` (stored order).
        permutation: For ``"global"``: ``"exact"`` (numpy, materialized) or ``"stateless"``
            (a keyed bijection, constant memory, for 100M+ records).
        buffer_size: Buffer size, required by (and only allowed with) the buffer order.
        seed: Seed of every random choice (with the epoch); an integer >= 0.
        batch_size: Per-rank batch size. A step consumes ``batch_size * world_size``
            consecutive positions of the epoch's global order.
        drop_last: Drop the incomplete last global batch instead of completing it.
        world_size: Number of ranks sharing each epoch.

    Raises:
        ValueError: naming the field and the valid values, for any bad value or type.
    """

    shuffle: str = "global"
    permutation: str = "exact"
    buffer_size: int | None = None
    seed: int = 0
    batch_size: int = 1
    drop_last: bool = False
    world_size: int = 1

    def __post_init__(self) -> None:
        _check_choice("shuffle", self.shuffle, ORDERS)
        _check_choice("permutation", self.permutation, PERMUTATIONS)
        if self.shuffle == "buffer":
            if self.buffer_size is None:
                raise ValueError(f"shuffle={self.shuffle!r} needs buffer_size >= 1, got None")
            object.__setattr__(
                self, "buffer_size", check_int("buffer_size", self.buffer_size, minimum=1)
            )
        elif self.buffer_size is not None:
            # Silently ignoring it would hide a config mistake (a sweep over buffer sizes that
            # all run the global order).
            raise ValueError(
                f"buffer_size={self.buffer_size!r} is only used by shuffle='buffer', not "
                f"{self.shuffle!r}; leave it unset"
            )
        object.__setattr__(self, "seed", check_int("seed", self.seed))
        object.__setattr__(self, "batch_size", check_int("batch_size", self.batch_size, minimum=1))
        object.__setattr__(self, "world_size", check_int("world_size", self.world_size, minimum=1))
        object.__setattr__(self, "drop_last", check_bool("drop_last", self.drop_last))

    @property
    def global_batch(self) -> int:
        """Positions of the global order one step consumes across all ranks."""
        return self.batch_size * self.world_size

    def identity(self) -> dict[str, Any]:
        """What a resume state must match: the fields that decide the epoch's global order."""
        return {
            "shuffle": self.shuffle,
            "permutation": self.permutation,
            "buffer_size": self.buffer_size,
            "seed": self.seed,
        }

    def layout_fields(self) -> dict[str, Any]:
        """How the global order is cut into steps and ranks (free to change on resume)."""
        return {
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "drop_last": self.drop_last,
        }

    def to_dict(self) -> dict[str, Any]:
        """All fields, JSON-able."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OrderSpec:
        """The spec :meth:`to_dict` wrote (unknown keys are refused, naming them)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(f"unknown order spec field(s) {unknown}; valid: {sorted(fields)}")
        return cls(**d)

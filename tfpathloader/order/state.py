"""The resume state: one JSON-able format for samplers and loaders, checked field by field.

NOTE [resume state]: a state is a *position in the epoch's global order*, not a count of some
component's batches::

    {"format": "tfpathloader.state", "version": 2,
     "order": {"shuffle", "permutation", "buffer_size", "seed"},     # must match
     "layout": {"batch_size", "world_size", "drop_last"},           # as saved; may differ
     "dataset": {"num_records": N, "fingerprint": "..."},           # must match
     "epoch": e, "position": p,                                     # p in [0, N]
     "partial": null | {"rank": r, "samples": j},                   # a sampler mid-step
     "skipped": [...]}                                              # loader: skips so far

``position`` counts the positions of epoch ``e``'s global order that every rank has consumed
(``N``: the epoch is finished, whatever the tail rule dropped or padded). Loading refuses,
naming the field, whatever it cannot resume exactly: another order, another dataset (the
fingerprint of the index content: ids, labels, paths), a malformed or hand-edited value.

NOTE [elastic resume]: world size, per-rank batch size, ``drop_last`` and the number of workers
are not part of what must match. The epoch's global order depends only on (seed, shuffle,
permutation, buffer size, dataset, epoch), so loaders with another layout cut the positions left,
``position .. N-1``, into their own steps (:class:`~tfpathloader.order.layout.Layout` with
``start=position``): across all new ranks every record not yet delivered is delivered once, in
the order's remaining sequence; the new layout's tail rule (padding or dropping) applies to what
is left. Every rank computes the same position after the same number of steps, so any rank's
state resumes any new rank; states saved by ranks at different steps are different positions,
and :func:`agree` refuses to pick one. The one state that is not a position is a sampler stopped
inside a step (``partial``): it resumes only under the same layout and rank, and otherwise is
refused with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import TFPathLoaderError
from .spec import OrderSpec

__all__ = ["STATE_FORMAT", "STATE_VERSION", "ResumeState", "StateError", "agree", "read_state"]

STATE_FORMAT = "tfpathloader.state"
STATE_VERSION = 2


class StateError(TFPathLoaderError, ValueError):
    """A resume state that cannot be resumed exactly; the message names the field and why."""


@dataclass(frozen=True)
class ResumeState:
    """A parsed, checked state (see NOTE [resume state])."""

    spec: OrderSpec
    num_records: int
    fingerprint: str
    epoch: int
    position: int
    partial: dict[str, int] | None = None
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "order": self.spec.identity(),
            "layout": self.spec.layout_fields(),
            "dataset": {"num_records": self.num_records, "fingerprint": self.fingerprint},
            "epoch": self.epoch,
            "position": self.position,
            "partial": None if self.partial is None else dict(self.partial),
            "skipped": [dict(s) for s in self.skipped],
        }


def _field(state: dict[str, Any], key: str, kind: type, what: str) -> Any:
    if key not in state:
        raise StateError(f"{what} state has no {key!r} field; was it saved by tfpathloader?")
    value = state[key]
    if isinstance(value, bool) or not isinstance(value, kind):  # no field is a bool
        raise StateError(f"{what} state field {key!r} must be {kind.__name__}, got {value!r}")
    return value


def _nonneg(state: dict[str, Any], key: str, what: str, maximum: int | None = None) -> int:
    value = _field(state, key, int, what)
    if value < 0 or (maximum is not None and value > maximum):
        top = f", at most {maximum}" if maximum is not None else ""
        raise StateError(f"{what} state field {key!r} must be >= 0{top}, got {value!r}")
    return int(value)


def read_state(
    state: Any,
    *,
    spec: OrderSpec,
    num_records: int,
    fingerprint: str,
    rank: int,
    what: str = "loader",
) -> ResumeState:
    """Check ``state`` against the order, dataset and rank that will resume it.

    Returns:
        The state, with the *current* spec (its layout may differ: NOTE [elastic resume]).

    Raises:
        StateError: naming the field, for anything that cannot be resumed exactly.
    """
    if not isinstance(state, dict):
        raise StateError(f"a {what} state is a dict (state_dict()), got {type(state).__name__}")
    if state.get("format") != STATE_FORMAT:
        if "version" in state and "config" in state:
            raise StateError(
                f"this {what} state was saved by tfpathloader 0.1 (state version "
                f"{state.get('version')!r}), which records no dataset fingerprint and no global "
                "position, so it cannot be resumed exactly; start the epoch again"
            )
        raise StateError(f"not a tfpathloader state (no format {STATE_FORMAT!r}): {state!r:.200}")
    version = _field(state, "version", int, what)
    if version != STATE_VERSION:
        raise StateError(f"{what} state version {version} is not {STATE_VERSION}")
    order = _field(state, "order", dict, what)
    saved = {k: order.get(k, "<missing>") for k in spec.identity()}
    diff = [f"{k}: saved {saved[k]!r}, now {v!r}" for k, v in spec.identity().items()
            if saved[k] != v or type(saved[k]) is not type(v)]  # fmt: skip
    if diff or set(order) != set(spec.identity()):
        extra = sorted(set(order) - set(spec.identity()))
        detail = "; ".join(diff + [f"unknown field {k!r}" for k in extra])
        raise StateError(f"the {what} state was saved with another order ({detail})")
    dataset = _field(state, "dataset", dict, what)
    saved_n = _nonneg(dataset, "num_records", f"{what} dataset")
    saved_fp = _field(dataset, "fingerprint", str, f"{what} dataset")
    if saved_n != num_records or saved_fp != fingerprint:
        raise StateError(
            f"the {what} state was saved for another index: {saved_n} records with fingerprint "
            f"{saved_fp}, this index has {num_records} with fingerprint {fingerprint}"
        )
    epoch = _nonneg(state, "epoch", what)
    position = _nonneg(state, "position", what, maximum=num_records)
    partial = state.get("partial")
    if partial is not None:
        partial = _partial(state, spec, rank, what)
    skipped = _field(state, "skipped", list, what) if "skipped" in state else []
    for s in skipped:
        if not isinstance(s, dict) or not isinstance(s.get("record_id"), int):
            raise StateError(f"{what} state field 'skipped' holds a malformed entry: {s!r:.200}")
    return ResumeState(spec, num_records, fingerprint, epoch, position, partial, list(skipped))


def _partial(state: dict[str, Any], spec: OrderSpec, rank: int, what: str) -> dict[str, int]:
    partial = _field(state, "partial", dict, what)
    r = _nonneg(partial, "rank", f"{what} partial")
    j = _nonneg(partial, "samples", f"{what} partial")
    layout = _field(state, "layout", dict, what)
    if layout != spec.layout_fields() or r != rank:
        raise StateError(
            f"this {what} state was saved by rank {r} inside a step ({j} samples into it, layout "
            f"{layout}); it resumes only the same rank under the same layout (now rank {rank}, "
            f"{spec.layout_fields()}). Save states at batch boundaries (a loader always does) to "
            "resume on another number of ranks or batch size"
        )
    return {"rank": r, "samples": j}


def agree(states: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The one state of a distributed job, from every rank's state (they must be equal).

    Raises:
        StateError: if ranks saved different positions (e.g. at different steps): resuming
            either would deliver some records twice or never, so neither is picked.
    """
    if not states:
        raise StateError("no states to reconcile")
    keys = ("order", "dataset", "epoch", "position", "partial")
    first = {k: states[0].get(k) for k in keys}
    for r, s in enumerate(states[1:], start=1):
        other = {k: s.get(k) for k in keys}
        if other != first:
            raise StateError(
                f"rank {r} saved epoch {other['epoch']} position {other['position']}, rank 0 "
                f"saved epoch {first['epoch']} position {first['position']}: ranks must save "
                "after the same number of steps; resume from a step every rank saved"
            )
    return states[0]

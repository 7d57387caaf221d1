"""The order spec and the resume state: one validated spec, one state format, elastic resume."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfpathloader import GlobalShuffleSampler, OrderSpec, StateError
from tfpathloader.order import Layout, agree

FP = "blake2b:test"


# --------------------------------------------------------------------------- the spec


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"shuffle": "random"}, "unknown shuffle 'random'; valid: global, buffer, none"),
        ({"permutation": "fast"}, "unknown permutation 'fast'; valid: exact, stateless"),
        ({"shuffle": "buffer"}, "needs buffer_size >= 1, got None"),
        ({"shuffle": "buffer", "buffer_size": 0}, "buffer_size must be an integer >= 1"),
        ({"shuffle": "buffer", "buffer_size": 10.0}, "buffer_size must be an integer"),
        ({"buffer_size": 100}, "only used by shuffle='buffer'"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"seed": True}, "seed must be an integer"),
        ({"seed": "3"}, "seed must be an integer"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"batch_size": True}, "batch_size must be an integer"),
        ({"world_size": 2.0}, "world_size must be an integer"),
        ({"drop_last": "no"}, "drop_last must be True or False, got 'no'"),
        ({"drop_last": 1}, "drop_last must be True or False, got 1"),
    ],
)
def test_spec_refuses_bad_values_by_type_naming_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        OrderSpec(**fields)


def test_spec_is_frozen_and_round_trips():
    spec = OrderSpec(shuffle="buffer", buffer_size=7, seed=3, batch_size=4, world_size=2)
    with pytest.raises(AttributeError):
        spec.seed = 4  # type: ignore[misc]
    assert OrderSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(ValueError, match=r"unknown order spec field\(s\) \['sed'\]"):
        OrderSpec.from_dict({"sed": 1})
    assert spec.identity() == {"shuffle": "buffer", "permutation": "exact", "buffer_size": 7,
                               "seed": 3}  # fmt: skip


def test_sampler_takes_a_spec_or_its_fields_not_both():
    spec = OrderSpec(seed=4, batch_size=3)
    a = GlobalShuffleSampler(50, spec=spec)
    b = GlobalShuffleSampler(50, seed=4, batch_size=3)
    assert a.epoch_ids().tolist() == b.epoch_ids().tolist()
    with pytest.raises(ValueError, match="not both"):
        GlobalShuffleSampler(50, spec=spec, seed=4)


# --------------------------------------------------------------------------- the state


def _sampler(n=20, rank=0, fingerprint=FP, **fields):
    return GlobalShuffleSampler(n, spec=OrderSpec(**fields), rank=rank, fingerprint=fingerprint)


def _state_after(sampler, k):
    it = iter(sampler)
    for _ in range(k):
        next(it)
    return json.loads(json.dumps(sampler.state_dict()))


def test_state_is_json_with_version_order_dataset_and_position():
    s = _sampler(seed=3, batch_size=4)
    s.set_epoch(2)
    state = _state_after(s, 8)
    assert state == {
        "format": "tfpathloader.state",
        "version": 2,
        "order": {"shuffle": "global", "permutation": "exact", "buffer_size": None, "seed": 3},
        "layout": {"batch_size": 4, "world_size": 1, "drop_last": False},
        "dataset": {"num_records": 20, "fingerprint": FP},
        "epoch": 2,
        "position": 8,
        "partial": None,
        "skipped": [],
    }


def test_state_of_another_index_with_the_same_size_is_refused_naming_the_fingerprint():
    state = _state_after(_sampler(fingerprint="blake2b:aaaa"), 3)
    with pytest.raises(StateError, match="another index: 20 records with fingerprint blake2b:aaaa"):
        _sampler(fingerprint="blake2b:bbbb").load_state_dict(state)


@pytest.mark.parametrize(
    ("other", "message"),
    [
        ({"seed": 1}, "seed: saved 0, now 1"),
        ({"shuffle": "none"}, "shuffle: saved 'global', now 'none'"),
        ({"permutation": "stateless"}, "permutation: saved 'exact', now 'stateless'"),
        ({"shuffle": "buffer", "buffer_size": 5}, "buffer_size: saved None, now 5"),
    ],
)
def test_state_of_another_order_is_refused_naming_the_field(other, message):
    state = _state_after(_sampler(), 3)
    with pytest.raises(StateError, match=message):
        _sampler(**other).load_state_dict(state)


def _edit(state, path, value):
    state = copy.deepcopy(state)
    *parents, last = path
    target = state
    for p in parents:
        target = target[p]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return state


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("position",), KeyError, "no 'position' field"),
        (("position",), "3", "'position' must be int, got '3'"),
        (("position",), 3.7, "'position' must be int, got 3.7"),
        (("position",), True, "'position' must be int, got True"),
        (("position",), -1, "'position' must be >= 0"),
        (("position",), 21, "at most 20"),
        (("epoch",), None, "'epoch' must be int, got None"),
        (("version",), 3, "version 3 is not 2"),
        (("format",), "x", "not a tfpathloader state"),
        (("order", "seed"), "0", "seed: saved '0', now 0"),
        (("order", "extra"), 1, "unknown field 'extra'"),
        (("dataset",), [], "'dataset' must be dict"),
        (("dataset", "fingerprint"), 7, "'fingerprint' must be str"),
        (("skipped",), [{"path": "x"}], "'skipped' holds a malformed entry"),
        (("partial",), {"rank": 0, "samples": "2"}, "'samples' must be int"),
    ],
)
def test_hand_edited_states_are_refused_naming_the_field(path, value, message):
    state = _state_after(_sampler(batch_size=4), 8)
    with pytest.raises(StateError, match=message):
        _sampler(batch_size=4).load_state_dict(_edit(state, path, value))


def test_a_state_of_version_1_is_refused_with_the_reason():
    old = {"version": 1, "epoch": 0, "batches": 3, "config": {"seed": 0}}
    with pytest.raises(StateError, match=r"tfpathloader 0\.1 .* no dataset fingerprint"):
        _sampler().load_state_dict(old)


def test_a_sampler_stopped_inside_a_step_resumes_only_the_same_rank_and_layout():
    s = _sampler(batch_size=4)
    state = _state_after(s, 6)  # one step and 2 samples into the next
    assert (state["position"], state["partial"]) == (4, {"rank": 0, "samples": 2})
    same = _sampler(batch_size=4)
    same.load_state_dict(state)
    assert list(same) == _rest(s, 6)
    with pytest.raises(StateError, match="inside a step"):
        _sampler(batch_size=5).load_state_dict(state)


def _rest(sampler, k):
    fresh = GlobalShuffleSampler(sampler.num_records, spec=sampler.spec, fingerprint=FP)
    fresh.set_epoch(sampler.epoch)
    return fresh.epoch_ids()[k:].tolist()


def test_states_of_ranks_at_different_steps_are_not_reconciled():
    a = _state_after(_sampler(batch_size=2, world_size=2, rank=0), 4)
    b = _state_after(_sampler(batch_size=2, world_size=2, rank=1), 4)
    assert agree([a, b]) == a  # every rank holds the same state after the same steps
    c = _state_after(_sampler(batch_size=2, world_size=2, rank=1), 2)
    with pytest.raises(StateError, match=r"rank 1 saved epoch 0 position 4, rank 0 .* position 8"):
        agree([a, c])


def test_a_short_last_step_counts_as_a_step():
    s = _sampler(n=10, batch_size=4)  # steps of 4, 4, 2
    for _ in s.batches():
        s.consume_step()
    assert (s.steps_consumed, s.num_steps, s.position()) == (3, 3, 10)


def test_a_finished_epoch_resumes_as_finished():
    s = _sampler(batch_size=3, drop_last=True)  # 20 = 6 steps of 3, 2 dropped
    list(s)
    state = s.state_dict()
    assert state["position"] == 20
    fresh = _sampler(batch_size=7)  # even a layout that could have taken the dropped ones
    fresh.load_state_dict(state)
    assert list(fresh) == []


# --------------------------------------------------------------------------- elastic resume


def _run(n, spec, epoch, world_size, steps=None, state=None):
    """Each rank's ids (list per rank) for ``steps`` steps (None: to the end), and the state."""
    per_rank, states = [], []
    for r in range(world_size):
        s = GlobalShuffleSampler(n, spec=spec, rank=r, fingerprint=FP)
        s.set_epoch(epoch)
        if state is not None:
            s.load_state_dict(state)
        got = []
        for batch in s.batches():
            if steps is not None and s.steps_consumed >= steps:
                break
            got.append(batch)
            s.consume_step()
        per_rank.append(got)
        states.append(s.state_dict())
    return per_rank, agree(states)


def _interleave(per_rank):
    steps = max((len(b) for b in per_rank), default=0)
    parts = [b[s] for s in range(steps) for b in per_rank if s < len(b)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


ORDERS = [("global", "exact", None), ("global", "stateless", None), ("buffer", "exact", 7),
          ("none", "exact", None)]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(1, 120),
    w1=st.integers(1, 5),
    b1=st.integers(1, 9),
    w2=st.integers(1, 5),
    b2=st.integers(1, 9),
    drop1=st.booleans(),
    drop2=st.booleans(),
    order=st.sampled_from(ORDERS),
    epoch=st.integers(0, 3),
    frac=st.floats(0, 1),
)
def test_elastic_resume_delivers_the_rest_once_in_the_orders_sequence(
    n, w1, b1, w2, b2, drop1, drop2, order, epoch, frac
):
    shuffle, permutation, buffer_size = order
    base = {"shuffle": shuffle, "permutation": permutation, "buffer_size": buffer_size, "seed": 9}
    spec1 = OrderSpec(**base, batch_size=b1, world_size=w1, drop_last=drop1)
    spec2 = OrderSpec(**base, batch_size=b2, world_size=w2, drop_last=drop2)
    full_steps = Layout(n, b1, w1, drop1).steps
    k = int(frac * full_steps)
    head, state = _run(n, spec1, epoch, w1, steps=k)
    rest, end = _run(n, spec2, epoch, w2, state=state)
    assert end["position"] == n  # the epoch ended
    head_ids, rest_ids = _interleave(head), _interleave(rest)
    # The order's own sequence: the head is its first positions, the rest continues it.
    reference = GlobalShuffleSampler(n, spec=OrderSpec(**base), fingerprint=FP)
    reference.set_epoch(epoch)
    sequence = reference.epoch_ids()
    p = state["position"]
    if k == full_steps:  # saved at the end of the epoch: nothing is left
        assert p == n and len(rest_ids) == 0
        return
    assert p == k * b1 * w1 and head_ids.tolist() == sequence[:p].tolist()
    left = n - p
    new = Layout(n, b2, w2, drop2, start=p)
    kept = new.total - p - new.padding  # records of the rest actually delivered
    assert rest_ids[:kept].tolist() == sequence[p : p + kept].tolist()
    # Exactly once, apart from the new layout's documented tail rule.
    assert len(rest_ids) == left - new.dropped + new.padding
    counts = np.bincount(np.concatenate([head_ids, rest_ids]), minlength=n)
    assert int((counts == 0).sum()) == new.dropped
    assert int((counts > 1).sum()) <= new.padding

"""Resume through real loaders: across backends, for every order, and onto another layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_images
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tfpathloader import OrderSpec, StateError, make_loader, write_index
from tfpathloader.order import Layout

BACKEND_NAMES = ("torch", "tf")
N = 30

ORDERS = {
    "global-exact": {"shuffle": "global", "permutation": "exact"},
    "global-stateless": {"shuffle": "global", "permutation": "stateless"},
    "buffer": {"shuffle": "buffer", "buffer_size": 8},
    "none": {"shuffle": "none"},
}


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume")
    paths, labels = make_images(folder, N)
    return write_index(folder / "index.tfrecord", paths, labels)


def _ids(loader):
    return [b["index"].tolist() for b in loader]


@pytest.mark.tf
@pytest.mark.parametrize("direction", ["torch->tf", "tf->torch"])
@pytest.mark.parametrize("order", list(ORDERS))
def test_every_order_resumes_across_backends_exactly_once(index, order, direction):
    source, target = direction.split("->")
    spec = OrderSpec(**ORDERS[order], seed=4, batch_size=4)
    src = make_loader(backend=source, index=index, order=spec)
    src.set_epoch(1)
    states, reference = [], []
    for batch in src:
        states.append(json.loads(json.dumps(src.state_dict())))
        reference.append(batch["index"].tolist())
    assert sorted(i for b in reference for i in b) == list(range(N))  # the epoch: each once
    dst = make_loader(backend=target, index=index, order=spec)
    for k in (0, 1, len(reference) // 2, len(reference) - 1):  # killed after k + 1 batches
        dst.load_state_dict(states[k])
        rest = _ids(dst)
        assert reference[: k + 1] + rest == reference, (k, rest)


def test_a_state_of_another_index_with_as_many_records_is_refused(index, tmp_path):
    paths, labels = make_images(tmp_path, N, seed=1)  # other pixels do not matter ...
    labels[0] = 2  # ... another label does
    other = write_index(tmp_path / "index.tfrecord", paths, labels)
    loader = make_loader(backend="torch", index=index, batch_size=4)
    next(iter(loader))
    state = loader.state_dict()
    with pytest.raises(StateError, match=f"fingerprint {index.fingerprint}.*{other.fingerprint}"):
        make_loader(backend="torch", index=other, batch_size=4).load_state_dict(state)


def _run_ranks(index, backend, spec, workers, epoch, steps=None, state=None):
    """Each rank's delivered batches (a list per rank) and the rank-agreed state."""
    per_rank, states = [], []
    for rank in range(spec.world_size):
        loader = make_loader(backend=backend, index=index, order=spec, rank=rank,
                             num_workers=workers)  # fmt: skip
        loader.set_epoch(epoch)
        if state is not None:
            loader.load_state_dict(state)
        got = []
        for batch in loader:
            got.append(batch["index"].numpy())
            if steps is not None and len(got) == steps:
                break
        per_rank.append(got)
        states.append(json.loads(json.dumps(loader.state_dict())))
        if hasattr(loader, "close"):
            loader.close()
    assert all(s["position"] == states[0]["position"] for s in states)  # all ranks agree
    return per_rank, states[0]


def _check_elastic(index, backends, workers, spec1, spec2, frac, epoch=2):
    steps = Layout(N, spec1.batch_size, spec1.world_size, spec1.drop_last).steps
    k = max(1, min(steps - 1, int(frac * steps)))
    head, state = _run_ranks(index, backends[0], spec1, workers[0], epoch, steps=k)
    rest, end = _run_ranks(index, backends[1], spec2, workers[1], epoch, state=state)
    assert end["position"] == N
    p = state["position"]
    assert p == k * spec1.global_batch
    delivered = np.concatenate([b for r in head + rest for b in r])
    new = Layout(N, spec2.batch_size, spec2.world_size, spec2.drop_last, start=p)
    counts = np.bincount(delivered, minlength=N)
    assert int((counts == 0).sum()) == new.dropped  # nothing lost but the new tail's drop
    assert int((counts > 1).sum()) <= new.padding  # nothing repeated but the new tail's pad


@pytest.mark.parametrize(
    ("backends", "workers", "layout1", "layout2"),
    [
        (("torch", "torch"), (2, 0), (2, 4, False), (3, 3, False)),  # 2 ranks -> 3, other batch
        pytest.param(("torch", "tf"), (0, 0), (3, 2, True), (1, 5, False), marks=pytest.mark.tf),
        pytest.param(("tf", "torch"), (0, 1), (1, 7, False), (2, 2, True), marks=pytest.mark.tf),
    ],
)
def test_elastic_resume_onto_another_world_size_batch_size_and_workers(
    index, backends, workers, layout1, layout2
):
    (w1, b1, d1), (w2, b2, d2) = layout1, layout2
    spec1 = OrderSpec(seed=3, world_size=w1, batch_size=b1, drop_last=d1)
    spec2 = OrderSpec(seed=3, world_size=w2, batch_size=b2, drop_last=d2)
    _check_elastic(index, backends, workers, spec1, spec2, frac=0.5)


@pytest.mark.slow
@pytest.mark.tf
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    w1=st.integers(1, 3),
    b1=st.integers(1, 6),
    w2=st.integers(1, 3),
    b2=st.integers(1, 6),
    k1=st.integers(0, 2),
    k2=st.integers(0, 2),
    drop=st.tuples(st.booleans(), st.booleans()),
    order=st.sampled_from(["global-exact", "global-stateless", "buffer", "none"]),
    backends=st.tuples(st.sampled_from(BACKEND_NAMES), st.sampled_from(BACKEND_NAMES)),
    frac=st.floats(0, 1),
)
def test_elastic_resume_property_over_layouts_orders_and_backends(
    index, w1, b1, w2, b2, k1, k2, drop, order, backends, frac
):
    base = ORDERS[order]
    spec1 = OrderSpec(**base, seed=5, world_size=w1, batch_size=b1, drop_last=drop[0])
    spec2 = OrderSpec(**base, seed=5, world_size=w2, batch_size=b2, drop_last=drop[1])
    assume(Layout(N, b1, w1, drop[0]).steps >= 2)  # a mid-epoch point to resume from
    _check_elastic(index, backends, (k1, k2), spec1, spec2, frac)

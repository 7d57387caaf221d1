"""Property test across everything: random (records, ranks, workers, batch size, drop_last,
permutation, order, resume point) combinations through the real loaders, all exactly-once.

Run with `--hypothesis-show-statistics` for the number of combinations tried.
"""

from __future__ import annotations

import pytest
from conftest import make_images
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfpathloader import write_index
from tfpathloader.load.loader import make_loader

MAX_N = 48


@pytest.fixture(scope="module")
def indexes(tmp_path_factory):
    """An index over the first n images, for every n in 1..MAX_N."""
    folder = tmp_path_factory.mktemp("prop")
    paths, labels = make_images(folder, MAX_N, classes=4, size=(4, 4))
    return {
        n: write_index(folder / f"idx{n}.tfrecord", paths[:n], labels[:n], progress=False)
        for n in range(1, MAX_N + 1)
    }


combos = st.fixed_dictionaries(
    {
        "n": st.integers(1, MAX_N),
        "world_size": st.integers(1, 4),
        "batch_size": st.integers(1, 9),
        "drop_last": st.booleans(),
        "permutation": st.sampled_from(["exact", "stateless"]),
        "order": st.sampled_from(["global", "global", "none", "buffer"]),
        "buffer_size": st.integers(1, 20),
        "seed": st.integers(0, 1000),
        "epoch": st.integers(0, 3),
        "resume_at": st.floats(0, 1),
    }
)


def check(indexes, c, *, backend="torch", workers=0):
    index = indexes[c["n"]]
    n, w, b = c["n"], c["world_size"], c["batch_size"]
    kw = {
        "index": index,
        "batch_size": b,
        "seed": c["seed"],
        "world_size": w,
        "drop_last": c["drop_last"],
        "permutation": c["permutation"],
        "shuffle": c["order"],
        "buffer_size": c["buffer_size"] if c["order"] == "buffer" else None,
    }
    delivered, steps = [], set()
    for rank in range(w):
        ref = make_loader(backend=backend, rank=rank, num_workers=workers, **kw)
        ref.set_epoch(c["epoch"])
        full = [x["index"].tolist() for x in ref]
        # Resume after k consumed batches: the rest must be exactly the remaining batches.
        k = int(c["resume_at"] * len(full))
        first = make_loader(backend=backend, rank=rank, num_workers=workers, **kw)
        first.set_epoch(c["epoch"])
        it = iter(first)
        head = [next(it)["index"].tolist() for _ in range(k)]
        state = first.state_dict()
        del it
        fresh = make_loader(backend=backend, rank=rank, num_workers=0, **kw)
        fresh.load_state_dict(state)
        assert head + [x["index"].tolist() for x in fresh] == full
        assert len(full) == len(ref)
        steps.add(len(full))
        delivered += [i for batch in full for i in batch]
    assert len(steps) == 1  # every rank runs the same number of steps
    g = b * w
    if c["drop_last"]:
        assert len(delivered) == n - n % g
        assert len(set(delivered)) == len(delivered)
    else:
        pad = (-n) % w
        assert len(delivered) == n + pad
        assert set(delivered) == set(range(n))  # every record, and only tail repeats
        assert len(delivered) - len(set(delivered)) == pad


SETTINGS = {
    "deadline": None,
    "derandomize": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
}


@settings(max_examples=400, **SETTINGS)
@given(c=combos)
def test_exactly_once_in_process(indexes, c):
    check(indexes, c)


@pytest.mark.slow
@settings(max_examples=50, **SETTINGS)
@given(c=combos, workers=st.integers(1, 2))
def test_exactly_once_with_worker_processes(indexes, c, workers):
    check(indexes, c, workers=workers)


@pytest.mark.slow
@pytest.mark.tf
@settings(max_examples=50, **SETTINGS)
@given(c=combos)
def test_exactly_once_in_tf_data(indexes, c):
    check(indexes, c, backend="tf")


def test_property_grid_reaches_the_edges(indexes):
    # A few hand-picked corners, so they run whatever Hypothesis draws.
    for c in (
        {"n": 1, "world_size": 4, "batch_size": 9, "drop_last": False},
        {"n": 1, "world_size": 4, "batch_size": 1, "drop_last": True},
        {"n": 47, "world_size": 3, "batch_size": 5, "drop_last": False},
        {"n": 48, "world_size": 4, "batch_size": 3, "drop_last": True},
    ):
        for perm in ("exact", "stateless"):
            check(
                indexes,
                {
                    **c,
                    "permutation": perm,
                    "order": "global",
                    "buffer_size": 1,
                    "seed": 0,
                    "epoch": 1,
                    "resume_at": 0.5,
                },
            )
    assert [indexes[5].relpath(i) for i in range(5)] == [f"0/{i:05d}.png" for i in range(5)]

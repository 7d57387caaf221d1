"""Orders: exactly-once, equal steps, determinism, resume, world-size independence, uniformity."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from scipy import stats

from tfpathloader.order import (
    Layout,
    OrderSpec,
    StatelessPermutation,
    buffer_order,
    exact_permutation,
    make_order,
)
from tfpathloader.order.sampler import GlobalShuffleSampler

SIZES = [0, 1, 2, 3, 5, 7, 13, 16, 17, 64, 97, 100, 257]
WORLD_SIZES = list(range(1, 9))
BATCH_SIZES = [1, 3, 8]


def rank_sequences(
    n,
    *,
    world_size,
    batch_size,
    drop_last,
    permutation,
    seed=0,
    epoch=0,
    shuffle="global",
    buffer_size=None,
):
    samplers = [
        GlobalShuffleSampler(
            n,
            seed=seed,
            rank=r,
            world_size=world_size,
            drop_last=drop_last,
            permutation=permutation,
            batch_size=batch_size,
            shuffle=shuffle,
            buffer_size=buffer_size,
        )
        for r in range(world_size)
    ]
    for s in samplers:
        s.set_epoch(epoch)
    return samplers


@pytest.mark.parametrize("permutation", ["exact", "stateless"])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("world_size", WORLD_SIZES)
def test_exactly_once_and_equal_steps(permutation, drop_last, world_size):
    for n, b in itertools.product(SIZES, BATCH_SIZES):
        samplers = rank_sequences(
            n, world_size=world_size, batch_size=b, drop_last=drop_last, permutation=permutation
        )
        batches = [list(s.batches()) for s in samplers]
        steps = {len(bs) for bs in batches}
        assert len(steps) == 1, (n, b, steps)  # every rank runs the same number of steps
        for s, bs in zip(samplers, batches, strict=True):
            assert s.num_steps == len(bs)
            assert len(s) == sum(len(x) for x in bs)
            assert list(s) == [int(i) for x in bs for i in x]
            # all batches full-size except possibly the last, same size on every rank
            assert all(len(x) == b for x in bs[:-1])
        last_sizes = {len(bs[-1]) for bs in batches if bs}
        assert len(last_sizes) <= 1
        delivered = (
            np.concatenate([np.concatenate(bs) for bs in batches if bs])
            if steps != {0}
            else np.zeros(0, int)
        )
        pads = np.concatenate([s.padding_mask() for s in samplers]) if n else np.zeros(0, bool)
        real = delivered[~pads]
        g = b * world_size
        assert len(set(real.tolist())) == len(real)  # nothing twice, bar padding
        if drop_last:
            assert len(real) == n - n % g and not pads.any()
        else:
            assert sorted(real.tolist()) == list(range(n))  # every record exactly once
            assert pads.sum() == ((-n) % world_size if n else 0)
            assert pads.sum() < world_size


@pytest.mark.parametrize("permutation", ["exact", "stateless"])
@pytest.mark.parametrize("drop_last", [False, True])
def test_sequence_does_not_depend_on_world_size(permutation, drop_last):
    for n in (0, 1, 7, 97, 240, 257):
        for global_batch in (8, 24):
            reference = None
            for w in (1, 2, 4, 8):
                if global_batch % w:
                    continue
                samplers = rank_sequences(
                    n,
                    world_size=w,
                    batch_size=global_batch // w,
                    drop_last=drop_last,
                    permutation=permutation,
                    seed=3,
                )
                per_rank = [list(s.batches()) for s in samplers]
                steps = [
                    np.concatenate([per_rank[r][k] for r in range(w)])
                    for k in range(len(per_rank[0]))
                ]
                pads = (
                    np.concatenate([s.padding_mask() for s in samplers]) if n else np.zeros(0, bool)
                )
                # Compare the real (non-padding) records of each global step.
                flat = [set(x.tolist()) for x in steps]
                got = [sorted(x) for x in flat]
                if reference is None:
                    reference = got
                elif not drop_last and pads.any():
                    assert got[:-1] == reference[:-1]
                    assert set(reference[-1]) <= set(got[-1])
                else:
                    assert got == reference, (n, global_batch, w)


@pytest.mark.parametrize("permutation", ["exact", "stateless"])
def test_deterministic_from_seed_and_epochs_differ(permutation):
    def ids(seed, epoch):
        s = GlobalShuffleSampler(500, seed=seed, permutation=permutation)
        s.set_epoch(epoch)
        return list(s)

    assert ids(0, 0) == ids(0, 0)
    assert ids(0, 0) != ids(0, 1)
    assert ids(0, 0) != ids(1, 0)
    assert ids(0, 1) != ids(1, 0)  # seeded from both numbers, not their sum
    assert sorted(ids(7, 3)) == list(range(500))


@pytest.mark.parametrize("permutation", ["exact", "stateless"])
@pytest.mark.parametrize(
    ("n", "world_size", "batch_size", "drop_last"),
    [(1, 1, 1, False), (97, 3, 4, False), (100, 4, 8, True), (257, 8, 3, False)],
)
def test_resume_at_any_point_yields_exactly_the_rest(
    permutation, n, world_size, batch_size, drop_last
):
    for rank in range(world_size):

        def make(rank=rank):
            return GlobalShuffleSampler(
                n,
                seed=5,
                rank=rank,
                world_size=world_size,
                drop_last=drop_last,
                permutation=permutation,
                batch_size=batch_size,
            )

        s = make()
        s.set_epoch(2)
        full = list(s)
        for k in range(len(full) + 1):
            s.set_epoch(2)
            it = iter(s)
            head = [next(it) for _ in range(k)]
            state = json.loads(json.dumps(s.state_dict()))  # JSON-able
            fresh = make()
            fresh.load_state_dict(state)
            assert head + list(fresh) == full


def test_state_from_another_configuration_is_refused():
    s = GlobalShuffleSampler(10, seed=1)
    state = s.state_dict()
    with pytest.raises(ValueError, match="seed: saved 1, now 2"):
        GlobalShuffleSampler(10, seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="another index: 10 records"):
        GlobalShuffleSampler(11, seed=1).load_state_dict(state)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rank": 4, "world_size": 4}, r"Invalid rank 4, rank should be in the interval \[0, 3\]"),
        ({"shuffle": "random"}, "unknown shuffle 'random'; valid: global, buffer, none"),
        ({"permutation": "fast"}, "unknown permutation 'fast'; valid: exact, stateless"),
        ({"shuffle": "buffer"}, "needs buffer_size >= 1"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ],
)
def test_bad_arguments_name_the_valid_range(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GlobalShuffleSampler(10, **kwargs)


def test_iterating_the_same_epoch_twice_warns():
    s = GlobalShuffleSampler(10, seed=0)
    list(s)
    with pytest.warns(UserWarning, match="call set_epoch"):
        list(s)
    s.set_epoch(1)
    list(s)  # no warning: a new epoch


def test_works_as_a_torch_sampler():
    import torch

    data = torch.arange(100) * 10
    s = GlobalShuffleSampler(100, seed=0, batch_size=16)
    loader = torch.utils.data.DataLoader(data, batch_size=16, sampler=s)
    got = torch.cat(list(loader)).tolist()
    assert got == [i * 10 for i in s.epoch_ids().tolist()]


# --------------------------------------------------------------------------- permutations


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 15, 16, 17, 255, 256, 257, 1000, 65537, 1_000_003])
def test_stateless_is_a_bijection_with_random_access(n):
    p = StatelessPermutation(n, seed=11, epoch=4)
    ids = p.take(np.arange(n))
    assert ids.dtype == np.int64
    assert np.array_equal(np.sort(ids), np.arange(n))
    for pos in {0, n // 2, n - 1}:
        assert p[pos] == ids[pos]
    assert (
        not np.array_equal(ids, StatelessPermutation(n, seed=11, epoch=5).take(np.arange(n)))
        or n < 3
    )


def _position_counts(perm_fn, n, seeds):
    counts = np.zeros((n, n))
    for seed in range(seeds):
        ids = perm_fn(seed)
        counts[np.arange(n), ids] += 1
    return counts


@pytest.mark.slow
@pytest.mark.parametrize("permutation", ["exact", "stateless"])
@pytest.mark.parametrize("n", [7, 16, 17, 40])
def test_each_record_lands_uniformly_over_positions(permutation, n):
    seeds = 4000
    if permutation == "exact":
        counts = _position_counts(lambda s: exact_permutation(n, s, 0), n, seeds)
    else:
        counts = _position_counts(
            lambda s: StatelessPermutation(n, s, 0).take(np.arange(n)), n, seeds
        )
    expected = seeds / n
    chi2 = ((counts - expected) ** 2 / expected).sum()
    dof = (n - 1) ** 2
    p = stats.chi2.sf(chi2, dof)
    assert p > 1e-3, (permutation, n, chi2, dof, p)
    # The biased order is caught by the same test: a buffer of 3 keeps early records early.
    if n >= 16 and permutation == "exact":
        biased = _position_counts(lambda s: buffer_order(n, 3, s, 0), n, seeds)
        assert stats.chi2.sf(((biased - expected) ** 2 / expected).sum(), dof) < 1e-12


@pytest.mark.slow
def test_stateless_adjacent_pairs_are_not_correlated():
    # Consecutive positions must not carry consecutive ids more often than chance.
    n, seeds = 64, 3000
    same_block = 0
    for s in range(seeds):
        ids = StatelessPermutation(n, s, 0).take(np.arange(n))
        same_block += int(np.sum(np.abs(np.diff(ids)) == 1))
    # For a uniform permutation, E[#adjacent positions with |id diff| == 1] = 2 (n-1)/n.
    mean = same_block / seeds
    assert abs(mean - 2 * (n - 1) / n) < 0.1


# --------------------------------------------------------------------------- buffer


def test_buffer_order_semantics():
    assert buffer_order(10, 1, 0, 0).tolist() == list(range(10))  # buffer of one: stored order
    for b in (1, 3, 50):
        order = buffer_order(200, b, 4, 0)
        assert sorted(order.tolist()) == list(range(200))
        pos = np.empty(200, dtype=int)
        pos[order] = np.arange(200)
        # record k enters the buffer only after draw k - b + 1: it cannot be drawn earlier.
        assert np.all(pos >= np.arange(200) - b + 1)


def test_buffer_reproduces_the_article():
    n, b, draws = 70_000, 10_000, 50_000
    order = buffer_order(n, b, 0, 0)[:draws]
    labels = order // 7000
    assert 9 not in set(labels.tolist())
    assert np.flatnonzero(labels == 2)[0] + 1 > 4000  # first "2" after draw 4,000
    assert labels[:4000].max() == 1


def test_make_order_by_name():
    assert make_order(OrderSpec(shuffle="none"), 5, 0).take(np.arange(5)).tolist() == [
        0,
        1,
        2,
        3,
        4,
    ]
    with pytest.raises(ValueError, match="valid: global, buffer, none"):
        make_order(OrderSpec(shuffle="nope"), 5, 0)


def test_layout_documented_tail_rule():
    lay = Layout(10, 4, 2, drop_last=False)  # global batch 8: one full step, then 2 records
    assert (lay.steps, lay.padding, lay.total) == (2, 0, 10)
    assert [lay.batch_size_at(s) for s in range(2)] == [4, 1]
    lay = Layout(11, 4, 2, drop_last=False)  # 3 left for 2 ranks: one repeat
    assert (lay.steps, lay.padding, lay.total) == (2, 1, 12)
    lay = Layout(11, 4, 2, drop_last=True)
    assert (lay.steps, lay.dropped, lay.total) == (1, 3, 8)


@pytest.mark.tf
@pytest.mark.slow
def test_buffer_matches_tf_data_shuffle_in_distribution():
    import tensorflow as tf

    n, b, seeds = 600, 60, 300
    tf_pos = np.zeros((seeds, n))
    our_pos = np.zeros((seeds, n))
    for s in range(seeds):
        tf_order = np.fromiter(
            tf.data.Dataset.range(n)
            .shuffle(b, seed=s, reshuffle_each_iteration=False)
            .as_numpy_iterator(),
            dtype=np.int64,
            count=n,
        )
        ours = buffer_order(n, b, s, 0)
        tf_pos[s, tf_order] = np.arange(n)
        our_pos[s, ours] = np.arange(n)
    # 1. mean draw position of every record agrees (within sampling error)
    diff = tf_pos.mean(0) - our_pos.mean(0)
    se = np.sqrt((tf_pos.var(0) + our_pos.var(0)) / seeds) + 1e-9
    assert np.max(np.abs(diff / se)) < 5.5
    # 2. displacement (draw - record id) per seed: same distribution of mean and spread
    disp_tf = tf_pos - np.arange(n)
    disp_ours = our_pos - np.arange(n)
    for stat in (lambda d: d.mean(1), lambda d: np.abs(d).mean(1), lambda d: d.max(1)):
        assert stats.ks_2samp(stat(disp_tf), stat(disp_ours)).pvalue > 1e-3
    # 3. the hard bound holds for TensorFlow too: nothing drawn before it can enter the buffer
    assert np.all(tf_pos >= np.arange(n) - b + 1)
    # 4. displacement histograms agree bin by bin
    bins = np.linspace(-n, n, 41)
    h_tf = np.histogram(disp_tf, bins)[0] / disp_tf.size
    h_ours = np.histogram(disp_ours, bins)[0] / disp_ours.size
    assert np.abs(h_tf - h_ours).max() < 0.01

"""ReplayBuffer: budget, balance, uniformity, recency, herding, determinism, save/restore."""

from __future__ import annotations

import numpy as np
import pytest
from continual_fixtures import events, savez_round_trip, stream
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcl.continual.buffer import POLICIES, ReplayBuffer, water_fill
from fedcl.continual.herding import herding_ranks

N_ITEMS = 12
GROUPS = np.arange(N_ITEMS) % 4  # item -> category
FEATURES = np.random.default_rng(7).normal(size=(N_ITEMS, 5))


def make(policy: str, seed: int = 0, **kw) -> ReplayBuffer:
    return ReplayBuffer(policy, seed=seed, item_groups=GROUPS, **kw)


def feed(buf: ReplayBuffer, windows, budget: int, first: int = 0) -> None:
    for t, new in enumerate(windows, start=first):
        buf.update(new, t, budget, item_features=FEATURES)


def test_water_fill_is_max_min_fair():
    assert water_fill(np.array([2, 2, 10]), 7).tolist() == [2, 2, 3]
    assert water_fill(np.array([3, 3, 3]), 7).tolist() == [2, 2, 3]
    assert water_fill(np.array([5, 1, 9]), 100).tolist() == [5, 1, 9]  # all fit
    assert water_fill(np.array([5, 1, 9]), 0).tolist() == [0, 0, 0]


@settings(max_examples=40, deadline=None)
@given(
    policy=st.sampled_from(POLICIES),
    plan=st.lists(
        st.tuples(st.integers(0, 40), st.integers(0, 30)),  # (window size, budget)
        min_size=1,
        max_size=6,
    ),
    seed=st.integers(0, 2**16),
)
def test_buffer_never_exceeds_its_budget_and_keeps_only_seen_events(policy, plan, seed):
    windows = stream([n for n, _ in plan], n_users=9, n_items=N_ITEMS, seed=seed)
    buf = make(policy, seed=seed)
    for t, (new, (_, budget)) in enumerate(zip(windows, plan, strict=True)):
        available = len(buf) + len(new)
        buf.update(new, t, budget, item_features=FEATURES)
        assert len(buf) == min(budget, available)  # full whenever it can be
        assert np.all(np.diff(buf.times) >= 0)
        assert np.all(buf.windows <= t)
        buf.resize(budget // 2)
        assert len(buf) == min(budget // 2, available)
    seen = np.concatenate([w.times.numpy() for w in windows])
    assert np.isin(buf.times, seen).all() and len(np.unique(buf.times)) == len(buf)
    assert buf.memory_bytes() == 40 * len(buf)  # 4 int64 columns + a float64 key


@pytest.mark.parametrize("policy", ["window", "item", "category"])
def test_balanced_policies_give_every_group_its_quota_within_one(policy):
    # 4 windows of 120 events over 12 items: every group has more than its share.
    windows = stream([120] * 4, n_users=9, n_items=N_ITEMS, seed=3)
    buf = make(policy)
    key = {"window": lambda b: b.windows, "item": lambda b: b.items}.get(
        policy, lambda b: GROUPS[b.items]
    )
    for t, new in enumerate(windows):
        buf.update(new, t, 50, item_features=FEATURES)
        counts = np.unique(key(buf), return_counts=True)[1]
        n_groups = {"window": t + 1, "item": N_ITEMS, "category": 4}[policy]
        assert len(buf) == 50 and len(counts) == n_groups
        assert counts.max() - counts.min() <= 1, counts


def inclusion_counts(policy: str, sizes: list[int], budget: int, reps: int) -> np.ndarray:
    windows = stream(sizes, n_users=50, n_items=N_ITEMS, seed=0)
    counts = np.zeros(sum(sizes), dtype=np.int64)
    for rep in range(reps):
        buf = make(policy, seed=rep)
        feed(buf, windows, budget)
        counts[buf.times] += 1  # times are the event numbers
    return counts


def chi2_pvalue(stat: float, df: int) -> float:
    try:
        from scipy.stats import chi2
    except ImportError:  # Wilson-Hilferty normal approximation of the chi-square tail
        from math import erfc, sqrt

        z = ((stat / df) ** (1 / 3) - (1 - 2 / (9 * df))) / sqrt(2 / (9 * df))
        return 0.5 * erfc(z / sqrt(2))
    return float(chi2.sf(stat, df))


def uniformity(counts: np.ndarray, p: float, reps: int) -> float:
    """p-value of "every event is kept with probability p" (chi-square over events)."""
    stat = ((counts - reps * p) ** 2).sum() / (reps * p * (1 - p))
    return chi2_pvalue(stat, len(counts) - 1)


SIZES = [100, 300, 50, 250, 300]  # 1,000 events in uneven windows


def test_reservoir_keeps_every_event_with_equal_probability():
    reps, budget = 2000, 100
    counts = inclusion_counts("reservoir", SIZES, budget, reps)
    assert counts.sum() == reps * budget
    assert uniformity(counts, 0.1, reps) > 1e-3
    # Per window, the share kept is budget/seen too (normal bound, 4 standard deviations).
    for part in np.split(counts, np.cumsum(SIZES)[:-1]):
        mean, sd = reps * len(part) * 0.1, np.sqrt(reps * len(part) * 0.09)
        assert abs(part.sum() - mean) < 4 * sd


def test_the_uniformity_test_rejects_a_recency_biased_buffer():
    reps = 300
    counts = inclusion_counts("recency", SIZES, 100, reps)
    assert uniformity(counts, 0.1, reps) < 1e-6
    first, last = counts[:100].mean(), counts[-300:].mean()
    assert last > 3 * first  # with a 2-window half-life, the newest events dominate


def test_recency_half_life_controls_the_share_of_old_windows():
    windows = stream([200] * 6, n_users=9, n_items=N_ITEMS, seed=1)
    share = {}
    for h in (0.5, 8.0):
        old = 0
        for rep in range(20):
            buf = make("recency", seed=rep, recency_half_life=h)
            feed(buf, windows, 100)
            old += int((buf.windows < 3).sum())
        share[h] = old / (20 * 100)
    assert share[0.5] < 0.05 < 0.3 < share[8.0]


def test_herding_approximates_the_mean_feature_better_than_random_subsets():
    rng = np.random.default_rng(0)
    items = rng.integers(0, N_ITEMS, 300)
    target = FEATURES[items].mean(0)
    ranks = herding_ranks(items, FEATURES, 10, rng)
    picked = np.flatnonzero(np.isfinite(ranks))
    assert sorted(ranks[picked].tolist()) == list(range(10))
    herd_err = np.linalg.norm(FEATURES[items[picked]].mean(0) - target)
    random_err = [
        np.linalg.norm(FEATURES[rng.choice(items, 10, replace=False)].mean(0) - target)
        for _ in range(200)
    ]
    assert herd_err < np.quantile(random_err, 0.05)


def test_herding_keeps_each_windows_best_ranked_prefix_when_quotas_shrink():
    windows = stream([60, 60, 60], n_users=9, n_items=N_ITEMS, seed=2)
    buf = make("herding")
    feed(buf, windows[:1], 30)
    first = set(buf.times[buf.keys < 15].tolist())  # window 0's 15 best-ranked events
    feed(buf, windows[1:2], 30, first=1)
    assert set(buf.times[buf.windows == 0].tolist()) == first


def test_same_seed_same_buffer_other_seed_other_buffer():
    windows = stream([80, 80, 80], n_users=9, n_items=N_ITEMS)
    a, b, c = make("reservoir", seed=5), make("reservoir", seed=5), make("reservoir", seed=6)
    for buf in (a, b, c):
        feed(buf, windows, 40)
    assert np.array_equal(a.times, b.times) and not np.array_equal(a.times, c.times)


@pytest.mark.parametrize("policy", POLICIES)
def test_state_restores_exactly_through_savez(policy):
    windows = stream([70, 50, 90, 40], n_users=9, n_items=N_ITEMS, seed=4)
    buf = make(policy, seed=11)
    feed(buf, windows[:3], 45)
    restored = make(policy, seed=0)  # the seed comes back with the state
    restored.load_state_dict(savez_round_trip(buf.state_dict()))
    for b in (buf, restored):
        b.update(windows[3], 3, 45, item_features=FEATURES)
    for name in ("users", "items", "times", "windows", "keys"):
        assert np.array_equal(getattr(buf, name), getattr(restored, name)), name
    assert (buf.seen, buf.updates) == (restored.seen, restored.updates)
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    assert np.array_equal(buf.sample(20, rng_a).times, restored.sample(20, rng_b).times)


def test_events_are_sized_as_asked_and_sample_is_a_time_ordered_subset():
    buf = make("reservoir")
    buf.update(events([1, 2, 3], [4, 5, 6], [10, 11, 12], 4, 7), 0, 10)
    assert (buf.events().n_users, buf.events().n_items) == (4, 7)  # largest index + 1
    assert (buf.events(9, 20).n_users, buf.events(9, 20).n_items) == (9, 20)
    s = buf.sample(2, np.random.default_rng(0))
    assert len(s) == 2 and set(s.times.tolist()) <= {10, 11, 12}
    assert s.times.tolist() == sorted(s.times.tolist())


def test_bad_policy_and_missing_groups_fail_clearly():
    with pytest.raises(ValueError, match="one of reservoir"):
        ReplayBuffer("fifo")
    with pytest.raises(ValueError, match="item_groups"):
        ReplayBuffer("category")

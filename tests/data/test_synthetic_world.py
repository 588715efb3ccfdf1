"""The closed-loop synthetic world: same stream as the generator, responses to what is shown."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedcl.data.plan import Plan
from fedcl.data.schema import ITEM, SHOP, TIME, USER
from fedcl.data.sources.synthetic import SyntheticConfig, read, seasonal_phase
from fedcl.data.sources.synthetic_world import Outcome, World

CFG = SyntheticConfig(seed=2, n_shops=3, n_users=600, n_items=150, n_periods=4)
K = 10


def play(world: World, policy: str, rng: np.random.Generator) -> list[Outcome]:
    """All months, showing nothing, random launched items or each user's true top."""
    out = []
    for p in range(world.cfg.n_periods):
        v = world.visits(p)
        n_live = int((world.launch <= p).sum())  # plan items are in launch order
        if policy == "none":
            shown = np.full((len(v), K), -1)
        elif policy == "random":
            shown = rng.permuted(np.tile(np.arange(n_live), (len(v), 1)), axis=1)[:, :K]
        else:
            shown = world.true_top(p, v.user, K)
        out.append(world.respond(p, v, shown, rng))
    return out


def test_same_seed_same_world_other_seed_differs() -> None:
    a, b, c = World(CFG), World(CFG), World(SyntheticConfig(**{**vars(CFG), "seed": 3}))
    for p in range(2):
        (va, oa), (vb, ob) = a.organic(p), b.organic(p)
        np.testing.assert_array_equal(va.time, vb.time)
        np.testing.assert_array_equal(va.user, vb.user)
        np.testing.assert_array_equal(oa.item, ob.item)
        vc, _ = c.organic(p)
        assert len(vc) != len(va) or not np.array_equal(vc.time, va.time)


def test_visits_and_names_are_the_generators() -> None:
    frame = read(CFG).frame
    month = ((frame[TIME].dt.year - 2023) * 12 + frame[TIME].dt.month - 1).to_numpy()
    world = World(CFG)
    for p in range(CFG.n_periods):
        v, o = world.organic(p)
        f = frame[month == p]
        np.testing.assert_array_equal(v.user_id, f[USER].to_numpy())
        np.testing.assert_array_equal(v.shop, f[SHOP].to_numpy())
        np.testing.assert_array_equal(v.time, f[TIME].to_numpy())
        assert o.clicked.shape == (len(v), 0) and not o.from_rec.any()
    plan = world.plan()
    sold = frame.drop_duplicates(ITEM).set_index(ITEM)["category"]
    cat = plan.catalog.set_index(ITEM)["category"]
    pd.testing.assert_series_equal(cat[sold.index], sold, check_names=False)


def test_plan_satisfies_plan_invariants(tmp_path: Path) -> None:
    world = World(CFG)
    plan = world.plan(test_fraction=0.25)
    plan.save(tmp_path)
    loaded = Plan.load(tmp_path)
    assert loaded.shops == world.shops == ["shop_00", "shop_01", "shop_02"]
    assert loaded.n_windows == CFG.n_periods
    w = loaded.windows
    assert w["start"].iloc[0] == pd.Timestamp("2023-01-01")
    np.testing.assert_array_equal(w["end"].to_numpy()[:-1], w["start"].to_numpy()[1:])
    assert w["cut"].iloc[0] == pd.Timestamp("2023-01-24 06:00")  # 3/4 of 31 days
    cat = loaded.catalog
    assert sorted(world.plan_index) == list(range(CFG.n_items))
    np.testing.assert_array_equal(cat["first_window"], world.launch)
    np.testing.assert_array_equal(cat[ITEM], world.item_ids)
    names = np.array([f"i{i:05d}" for i in range(CFG.n_items)], dtype=object)
    np.testing.assert_array_equal(world.item_ids[world.plan_index], names)
    assert (loaded.window_of(cat["first_seen"]) == cat["first_window"]).all()


def test_nothing_bought_before_launch_and_unlaunched_slots_ignored() -> None:
    world = World(CFG)
    rng = np.random.default_rng(0)
    for p in range(CFG.n_periods - 1):
        v = world.visits(p)
        future = np.flatnonzero(world.launch > p)
        shown = rng.choice(future, (len(v), K))
        shown[:, 0] = -1
        o = world.respond(p, v, shown, rng)
        bought = o.item[o.item >= 0]
        assert len(bought) > 0 and (world.launch[bought] <= p).all()
        assert not o.clicked.any() and not o.from_rec.any()


def test_showing_true_top_beats_random_beats_nothing() -> None:
    stats = {}
    for policy in ("none", "random", "top"):
        outs = play(World(CFG), policy, np.random.default_rng(1))
        items = np.concatenate([o.item for o in outs])
        rec = np.concatenate([o.from_rec for o in outs])
        clicks = np.concatenate([o.clicked for o in outs])
        stats[policy] = ((items >= 0).mean(), rec.mean(), clicks.mean())
        # The bought item, when shown, is clicked.
        for o in outs:
            assert o.clicked[o.from_rec].any(axis=1).all()
    assert stats["none"][1] == 0.0 and stats["none"][2] == 0.0
    assert stats["top"][0] > stats["random"][0] + 0.05 > stats["none"][0]
    assert stats["top"][1] > 3 * stats["random"][1] > 0
    assert stats["top"][2] > stats["random"][2]


def test_leave_logit_sets_purchase_probability_without_habit() -> None:
    world = World(CFG, leave_logit=1.0)
    _, o = world.organic(0)  # month 0: no history, nothing shown
    assert abs((o.item >= 0).mean() - 1 / (1 + np.e)) < 0.04


def test_habit_rebuys_and_record() -> None:
    world = World(CFG)
    seen: set[tuple[int, int]] = set()
    rebuys = 0
    for p in range(CFG.n_periods):
        v, o = world.organic(p)
        pairs = {(int(u), int(i)) for u, i in zip(v.user, o.item, strict=True) if i >= 0}
        rebuys += len(pairs & seen)
        seen |= pairs
    assert rebuys > 0
    # Recorded purchases outside respond raise that item's utility (habit).
    world = World(CFG)
    v = world.visits(0)
    user = v.user[:1]
    ranked = world.true_top(0, user, int((world.launch <= 0).sum()))[0]
    category = world.plan().catalog["category"].str[4:].astype(int).to_numpy()
    plain = ranked[seasonal_phase(CFG)[category[ranked]] < 0]  # habit applies all year
    low = plain[len(plain) // 2]
    world.record(np.repeat(user, 10**4), np.full(10**4, low))
    world.record(user, np.array([-1]))  # skipped
    assert world.true_top(0, user, 1)[0, 0] == low


def test_months_out_of_order_raise() -> None:
    world = World(CFG)
    with pytest.raises(ValueError, match="out of order"):
        world.visits(1)
    v = world.visits(0)
    with pytest.raises(ValueError, match="out of order"):
        world.visits(0)
    with pytest.raises(ValueError, match="out of order"):
        world.respond(1, v, np.full((len(v), 2), -1), np.random.default_rng(0))
    with pytest.raises(ValueError, match="month must lie"):
        world.visits(CFG.n_periods)
    with pytest.raises(ValueError, match="shown must be"):
        world.respond(0, v, np.full(len(v), -1), np.random.default_rng(0))
    world.visits(1)
    with pytest.raises(ValueError, match="out of order"):
        world.true_top(0, v.user, 3)

"""Poisson bootstrap: stable per-user weights, replicate sums, coverage, paired intervals."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from fedcl.metrics import bootstrap
from fedcl.metrics.bootstrap import (
    paired_difference,
    paired_difference_seeds,
    percentile_interval,
    poisson_weights,
    replicate_sums,
)
from fedcl.metrics.continual import cell_figures


@pytest.fixture(autouse=True)
def fresh_tables():
    bootstrap._TABLES.clear()
    yield
    bootstrap._TABLES.clear()


def test_weights_are_one_row_major_table_whatever_was_asked_before() -> None:
    small = poisson_weights("shop_a", np.arange(10), 50, seed=3)
    bootstrap._TABLES.clear()
    poisson_weights("shop_a", np.array([7]), 50, seed=3)  # a small table, grown below
    grown = poisson_weights("shop_a", np.arange(5000), 50, seed=3)

    key = int.from_bytes(hashlib.sha256(b"shop_a").digest()[:8], "little")
    direct = np.random.default_rng([3, key]).poisson(1.0, size=(5000, 50))
    assert np.array_equal(grown, direct)
    assert np.array_equal(small, direct[:10])
    assert np.array_equal(poisson_weights("shop_a", np.array([42, 3]), 50, 3), direct[[42, 3]])


def test_weights_differ_by_shop_and_seed_and_look_poisson() -> None:
    a = poisson_weights("shop_a", np.arange(2000), 100, seed=0)
    assert not np.array_equal(a, poisson_weights("shop_b", np.arange(2000), 100, seed=0))
    assert not np.array_equal(a, poisson_weights("shop_a", np.arange(2000), 100, seed=1))
    assert a.shape == (2000, 100) and a.dtype == np.float64
    assert a.mean() == pytest.approx(1.0, abs=0.01) and a.var() == pytest.approx(1.0, abs=0.02)


def test_replicate_sums_equal_a_direct_computation() -> None:
    rng = np.random.default_rng(0)
    values = rng.random(37)
    weights = poisson_weights("s", np.arange(37), 8, seed=0)

    sums, ws = replicate_sums(values, weights)

    assert len(sums) == len(ws) == 8
    for b in range(8):
        assert sums[b] == pytest.approx(sum(weights[u, b] * values[u] for u in range(37)))
        assert ws[b] == pytest.approx(sum(weights[u, b] for u in range(37)))
    with pytest.raises(ValueError):
        replicate_sums(values[:5], weights)


def test_interval_covers_a_known_mean_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(1)
    true_mean = 2 / 7  # Beta(2, 5), skewed and in [0, 1] like a ranking metric
    covered = 0
    for k in range(200):
        values = rng.beta(2, 5, size=100)
        sums, ws = replicate_sums(values, poisson_weights("shop", np.arange(100), 200, seed=k))
        lo, hi = percentile_interval(np.array(sums) / np.array(ws))
        covered += lo <= true_mean <= hi
    assert 0.9 <= covered / 200 <= 0.99


def _doc(acc: float, reps: list[float], seed: int = 0) -> dict:
    return {
        "metric": "ndcg@10",
        "seed": seed,
        "bootstrap_seed": 0,
        "continual": {"acc": acc},
        "final": {"ndcg@10": acc},
        "bootstrap": {"acc": reps, "final": reps},
    }


def test_paired_difference_of_identical_runs_is_exactly_zero() -> None:
    reps = list(np.random.default_rng(2).random(200))
    out = paired_difference(_doc(0.3, reps), _doc(0.3, reps), "acc")
    assert out["difference"] == 0.0
    assert out["interval"] == [0.0, 0.0]
    assert out["shown"] is False and out["text"].endswith("no difference shown")


def test_paired_difference_shows_a_shift_and_pairs_seeds() -> None:
    base = np.random.default_rng(3).random(200)
    a = [_doc(0.5, list(base + 0.1), seed=0), _doc(0.6, list(base + 0.2), seed=1)]
    b = [_doc(0.4, list(base), seed=1), _doc(0.45, list(base), seed=0)]

    one = paired_difference(a[0], b[1], "final")
    both = paired_difference_seeds(a, b, "acc")

    assert one["difference"] == pytest.approx(0.05)
    assert one["interval"] == pytest.approx([0.1, 0.1]) and one["shown"] is True
    # seed 0: 0.5 - 0.45, seed 1: 0.6 - 0.4; replicates: +0.1 and +0.2 -> +0.15
    assert both["difference"] == pytest.approx(0.125)
    assert both["interval"] == pytest.approx([0.15, 0.15])
    assert "no difference" not in both["text"]


def test_paired_difference_without_replicates_has_no_interval() -> None:
    a, b = _doc(0.5, []), _doc(0.4, [])
    a["bootstrap"] = b["bootstrap"] = {"acc": None}
    out = paired_difference(a, b, "acc")
    assert out["difference"] == pytest.approx(0.1) and out["interval"] is None


def _cell(values: np.ndarray, weights: np.ndarray) -> dict:
    sums, ws = replicate_sums(values, weights)
    return {"ndcg@10": float(values.mean()), "n_users": len(values), "boot_sum": sums,
            "boot_w": ws}  # fmt: skip


def test_bwt_interval_from_paired_weights_is_narrower_than_unpaired() -> None:
    rng = np.random.default_rng(4)
    users = np.arange(300)
    before = rng.beta(2, 5, size=300)
    after = np.clip(before - 0.05 + rng.normal(0, 0.02, size=300), 0, 1)  # correlated
    same = poisson_weights("s", users, 300, seed=0)
    other = poisson_weights("s", users, 300, seed=1)

    def bwt_width(w_before: np.ndarray, w_after: np.ndarray) -> float:
        grid = [
            [{"s": _cell(before, w_before)}, {"s": _cell(before, w_before)}],
            [{"s": _cell(after, w_after)}, {"s": _cell(after, w_after)}],
        ]
        figs = cell_figures(grid, [grid[0][1]], ["s"], "ndcg@10")
        lo, hi = percentile_interval(figs["replicates"]["bwt"])
        assert lo <= figs["point"]["bwt"] <= hi
        return hi - lo

    paired, unpaired = bwt_width(same, same), bwt_width(same, other)
    assert paired < unpaired / 3

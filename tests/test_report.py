"""metrics.json from hand-made cells: user-weighted figures, intervals, withheld cells, the
summary table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedcl.metrics.bootstrap import poisson_weights, replicate_sums
from fedcl.report import build_metrics, summary_table

B = 100
METRICS = ("hr@10", "ndcg@10", "recall@20", "mrr")


def cell(shop: str, values: list[float], boot: bool = True) -> dict:
    """A cell whose every metric is ``values``' mean, over shop-local users 0..n-1."""
    if values is WITHHELD_CELL:
        return {"n_users": 0, "withheld": 1}
    v = np.array(values, dtype=float)
    out: dict = {m: (float(v.mean()) if len(v) else None) for m in METRICS}
    out["n_users"] = len(v)
    if boot and len(v):
        out["boot_sum"], out["boot_w"] = replicate_sums(
            v, poisson_weights(shop, np.arange(len(v)), B, seed=0)
        )
    return out


#: A cell the shop withheld (it had users, fewer than federated.min_users).
WITHHELD_CELL: list = []


def grid(boot: bool = True) -> list[list[dict]]:
    """Two windows, two shops; shop b withholds cell (0, 1)."""
    a = {(0, 0): [0.5, 0.3, 0.1], (0, 1): [0.2, 0.4], (1, 0): [0.4, 0.2, 0.0], (1, 1): [0.6, 0.4]}
    b = {(0, 0): [0.9] * 6, (0, 1): WITHHELD_CELL, (1, 0): [0.7] * 6, (1, 1): [0.2] * 4}
    return [
        [{"a": cell("a", a[t, i], boot), "b": cell("b", b[t, i], boot)} for i in range(2)]
        for t in range(2)
    ]


def forward_cells(boot: bool = True) -> list[dict]:
    return [{"a": cell("a", [0.1, 0.2, 0.3, 0.6], boot), "b": cell("b", [0.5] * 2, boot)}]


def metrics(boot: bool = True, forward: bool = True, mode: str = "federated") -> dict:
    cells = grid(boot)
    return build_metrics(
        mode=mode, metric="ndcg@10", seed=0, wall_s=1.0, cells={"new": cells},
        baseline={"new": [{"a": cell("a", [0.0]), "b": cell("b", [0.0])}] * 2},
        shops=["a", "b"], data_sha256="x", config_yaml="",
        forward={"new": forward_cells(boot)} if forward else None, boot_seed=0,
    )  # fmt: skip


def test_figures_are_user_weighted_means_of_cells() -> None:
    doc = metrics()
    c = doc["continual"]
    # last row: a (1, 0) sums 0.6 over 3 users, (1, 1) 1.0 over 2; b 4.2 over 6, 0.8 over 4
    assert c["acc"] == pytest.approx((0.6 + 1.0 + 4.2 + 0.8) / 15)
    # forward cells: a 1.2 over 4 users, b 1.0 over 2
    assert c["forward"] == pytest.approx(2.2 / 6)
    assert doc["forward_n_users"] == [6]
    assert doc["per_shop"]["a"]["forward"] == pytest.approx(0.3)
    assert doc["per_shop"]["a"]["forward_n_users"] == [4]
    # bwt: one term, R[1][0] - R[0][0] = (4.8 / 9) - (0.9 + 5.4) / 9
    assert c["bwt"] == pytest.approx(4.8 / 9 - 6.3 / 9)
    assert doc["final"]["ndcg@10"] == pytest.approx(1.8 / 6)
    assert doc["final"]["n_users"] == 6


def test_intervals_hold_the_point_estimates_overall_and_per_shop() -> None:
    doc = metrics()
    points = {**doc["continual"], "final": doc["final"]["ndcg@10"]}
    for fig in ("acc", "bwt", "forward", "final"):
        lo, hi = doc["intervals"][fig]
        assert lo <= points[fig] <= hi and lo < hi
        assert len(doc["bootstrap"][fig]) == B
    lo, hi = doc["per_shop"]["a"]["intervals"]["acc"]
    assert lo <= doc["per_shop"]["a"]["acc"] <= hi
    assert doc["bootstrap_seed"] == 0


def test_withheld_cells_and_r_matrices_per_metric() -> None:
    doc = metrics()
    assert doc["withheld"] == {"cells": 1, "of": 8, "empty": 0}
    assert set(doc["r_matrices"]) == set(METRICS)
    assert doc["r_matrices"]["ndcg@10"] == doc["r_matrix"]
    assert doc["r_matrix"][0][1] == pytest.approx(0.3)  # shop a alone: b withheld it


def test_summary_table_shows_intervals_users_and_withheld() -> None:
    doc = metrics()
    text = summary_table(doc, Path("run"))
    lo, hi = doc["intervals"]["forward"]
    assert f"forward {doc['continual']['forward']:.4f} [{lo:.4f}, {hi:.4f}]" in text
    assert "6 user-windows" in text and "(6 users)" in text
    assert "1 of 8 cells withheld (fewer than federated.min_users users)" in text
    assert "withheld" not in summary_table(metrics(mode="centralized"), Path("run"))


def test_cells_without_replicates_give_no_interval() -> None:
    doc = metrics(boot=False)
    assert doc["intervals"] == {"acc": None, "bwt": None, "forward": None, "final": None}
    assert doc["bootstrap"]["acc"] is None
    assert doc["continual"]["acc"] == pytest.approx(6.6 / 15)
    assert "forward 0.3667  (" in summary_table(doc, Path("run"))


def test_forward_falls_back_to_the_next_windows_test_part() -> None:
    doc = metrics(forward=False)
    # R[0][1]: only shop a (b withheld it): 0.6 over 2 users
    assert doc["continual"]["forward"] == pytest.approx(0.3)
    assert doc["forward_n_users"] == [2]


def test_bwt_and_fwt_weight_terms_by_users() -> None:
    values = {  # (t, i) -> per-user values of one shop
        (0, 0): [0.5], (0, 1): [0.3, 0.3], (0, 2): [0.1] * 3,
        (1, 0): [0.2] * 4, (1, 1): [0.6] * 2, (1, 2): [0.2] * 6,
        (2, 0): [0.4] * 4, (2, 1): [0.1], (2, 2): [0.7] * 3,
    }  # fmt: skip
    cells = [[{"s": cell("s", values[t, i], boot=False)} for i in range(3)] for t in range(3)]
    base = [{"s": cell("s", [0.1], boot=False)}] * 3

    doc = build_metrics(
        mode="local", metric="ndcg@10", seed=0, wall_s=0.0, cells={"new": cells},
        baseline={"new": base}, shops=["s"], data_sha256="", config_yaml="",
    )  # fmt: skip

    # bwt: (4 users * (0.4 - 0.5) + 1 user * (0.1 - 0.6)) / 5
    assert doc["continual"]["bwt"] == pytest.approx((4 * -0.1 + 1 * -0.5) / 5)
    # fwt: (2 users * (0.3 - 0.1) + 6 users * (0.2 - 0.1)) / 8
    assert doc["continual"]["fwt"] == pytest.approx((2 * 0.2 + 6 * 0.1) / 8)
    # forward (no forward cells): R[0][1] over 2 users, R[1][2] over 6
    assert doc["continual"]["forward"] == pytest.approx((0.6 + 1.2) / 8)
    assert doc["forward_n_users"] == [2, 6]

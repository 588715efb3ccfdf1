"""Continual metrics and R-matrix combination against hand-computed values."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcl.metrics.continual import combine_r, continual_metrics, macro, weighted_mean

R3 = [
    [0.5, 0.2, 0.1],
    [0.4, 0.6, 0.3],
    [0.3, 0.5, 0.7],
]
B3 = [0.05, 0.1, 0.2]


def approx(d: dict[str, float | None]) -> dict[str, object]:
    return {k: None if v is None else pytest.approx(v) for k, v in d.items()}


def test_square_matrix() -> None:
    # acc = (0.3 + 0.5 + 0.7) / 3; bwt = ((0.3 - 0.5) + (0.5 - 0.6)) / 2
    # fwt = ((0.2 - 0.1) + (0.3 - 0.2)) / 2; forward = (0.2 + 0.3) / 2
    assert continual_metrics(R3, B3) == approx(
        {"acc": 0.5, "bwt": -0.15, "fwt": 0.1, "forward": 0.25}
    )


def test_no_baseline_means_no_fwt() -> None:
    assert continual_metrics(R3)["fwt"] is None


def test_none_cells_are_skipped() -> None:
    r = [
        [0.5, None, 0.1],
        [0.4, 0.6, 0.3],
        [None, 0.5, 0.7],
    ]
    # acc = (0.5 + 0.7) / 2; bwt: only i = 1 -> 0.5 - 0.6
    # fwt: only i = 2 -> 0.3 - 0.2; forward: only R[1][2] = 0.3
    assert continual_metrics(r, B3) == approx({"acc": 0.6, "bwt": -0.1, "fwt": 0.1, "forward": 0.3})
    # a None baseline cell drops its FWT term; NaN counts as None
    assert continual_metrics(r, [0.0, 0.1, None])["fwt"] is None
    assert continual_metrics([[0.5, math.nan], [0.4, 0.6]])["forward"] is None


def test_rectangular_matrix() -> None:
    # two training windows so far, four windows in all
    r = [
        [0.5, 0.2, 0.1, None],
        [0.4, 0.6, 0.3, 0.2],
    ]
    # acc = (0.4 + 0.6 + 0.3 + 0.2) / 4; bwt = 0.4 - 0.5
    # fwt = ((0.2 - 0.1) + (0.3 - 0.1)) / 2; forward = (R[0][1] + R[1][2]) / 2
    assert continual_metrics(r, [0.0, 0.1, 0.1, 0.1]) == approx(
        {"acc": 0.375, "bwt": -0.1, "fwt": 0.15, "forward": 0.25}
    )


def test_degenerate_matrices_give_none_never_nan() -> None:
    assert continual_metrics([]) == {"acc": None, "bwt": None, "fwt": None, "forward": None}
    one = continual_metrics([[0.4]], [0.1])
    assert one == approx({"acc": 0.4, "bwt": None, "fwt": None, "forward": None})
    assert continual_metrics([[None, None], [None, None]])["acc"] is None


def test_macro_and_weighted_mean() -> None:
    assert macro([0.5, None, 0.2]) == pytest.approx(0.35)
    assert macro([]) is None and macro([None]) is None
    assert weighted_mean([1.0, None, 3.0], [1, 5, 3]) == pytest.approx(2.5)
    assert weighted_mean([1.0, 2.0], [0, 0]) is None
    with pytest.raises(ValueError):
        weighted_mean([1.0], [1, 2])


def test_combine_r_weights_by_users() -> None:
    ra = [[0.5, None], [0.4, 0.6]]
    na = [[10, 0], [10, 5]]
    rb = [[0.2, 0.3], [None, 0.0]]
    nb = [[30, 10], [0, 15]]
    rc = [[None, None], [None, None]]  # a shop without any test user
    nc = [[0, 0], [0, 0]]

    r, n = combine_r([ra, rb, rc], [na, nb, nc])

    # (0,0): (0.5*10 + 0.2*30) / 40; (1,1): (0.6*5 + 0.0*15) / 20
    assert r == [[pytest.approx(0.275), pytest.approx(0.3)], [0.4, pytest.approx(0.15)]]
    assert n == [[40, 10], [10, 20]]
    empty_r, empty_n = combine_r([rc], [nc])
    assert empty_r == [[None, None], [None, None]] and empty_n == [[0, 0], [0, 0]]


cells = st.one_of(st.none(), st.floats(0, 1))


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 4).flatmap(lambda c: st.lists(st.lists(cells, min_size=c, max_size=c))))
def test_metrics_are_finite_or_none(r) -> None:
    out = continual_metrics(r, [0.0] * len(r[0]) if r else None)
    for v in out.values():
        assert v is None or math.isfinite(v)
    if out["acc"] is not None:
        assert 0 <= out["acc"] <= 1

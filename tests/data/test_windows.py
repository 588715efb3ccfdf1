"""Windows: same boundaries for all shops, one global cut, no test event trains a model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedcl.data.config import WindowsConfig
from fedcl.data.windows import assign_windows, window_bounds
from fedcl.errors import ConfigError


def _events(n: int = 500, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2021-01-03").value
    t = np.sort(rng.integers(start, start + 200 * 86_400 * 10**9, n))
    return pd.DataFrame({"timestamp": pd.to_datetime(t), "shop": rng.choice(["a", "b"], n)})


@pytest.mark.parametrize("period", ["week", "month", "quarter", "count"])
def test_windows_partition_time_and_cut_once(period):
    ev = _events()
    bounds = window_bounds(ev["timestamp"], WindowsConfig(period=period, count=5))

    out = assign_windows(ev, bounds)

    assert (np.diff(bounds["start"].to_numpy()) > np.timedelta64(0)).all()
    for w, part in out.groupby("window"):
        train = part.loc[part["split"] == "train", "timestamp"]
        test = part.loc[part["split"] == "test", "timestamp"]
        cut = bounds.loc[w, "cut"]
        assert (train < cut).all() and (test >= cut).all()
        # No test event of window w precedes any train event of window w (both shops alike).
        if len(train) and len(test):
            assert train.max() < test.min()
        assert (part["timestamp"] >= bounds.loc[w, "start"]).all()
        assert (part["timestamp"] < bounds.loc[w, "end"]).all() or period == "count"


def test_month_windows_have_calendar_starts():
    bounds = window_bounds(_events()["timestamp"], WindowsConfig(period="month"))

    assert bounds["start"].iloc[1] == pd.Timestamp("2021-02-01")
    assert len(bounds) == 7  # Jan .. Jul 2021


def test_test_fraction_sets_the_cut():
    t = pd.Series(pd.date_range("2021-01-01", "2021-01-31", freq="h"))
    bounds = window_bounds(t, WindowsConfig(period="month", test_fraction=0.25))

    span = t.max() + pd.Timedelta(seconds=1) - t.min()
    assert abs(bounds["cut"].iloc[0] - (t.min() + 0.75 * span)) <= pd.Timedelta(seconds=1)


def test_bad_window_settings_are_config_errors():
    t = _events()["timestamp"]
    with pytest.raises(ConfigError, match="period"):
        window_bounds(t, WindowsConfig(period="fortnight"))
    with pytest.raises(ConfigError, match="test_fraction"):
        window_bounds(t, WindowsConfig(test_fraction=1.5))


def _hourly(first: str, last: str) -> pd.Series:
    return pd.Series(pd.date_range(first, last, freq="h"))


def test_a_partial_last_month_joins_the_month_before():
    t = _hourly("2011-10-01", "2011-12-09 12:00")  # like Online Retail: 1-9 December

    bounds = window_bounds(t, WindowsConfig(period="month"))
    out = assign_windows(pd.DataFrame({"timestamp": t}), bounds)

    assert len(bounds) == 2
    assert bounds["start"].iloc[1] == pd.Timestamp("2011-11-01")
    assert bounds["end"].iloc[1] == pd.Timestamp("2012-01-01")
    assert (out.loc[out["timestamp"] >= "2011-12-01", "window"] == 1).all()
    assert bounds["cut"].iloc[1] > pd.Timestamp("2011-11-25")  # cut on the merged span


@pytest.mark.parametrize(
    ("period", "last", "n_windows"),
    [
        ("month", "2011-12-16 23:00", 3),  # 16 of 31 days: more than half, kept
        ("month", "2011-12-15 12:00", 2),  # 15.5 days: under half, merged
        ("week", "2011-10-19 00:00", 2),  # 3 weeks, the last Mon 17 - Wed 19 Oct: merged
        ("quarter", "2012-01-20 00:00", 1),  # 20 days of Q1 2012: merged into Q4 2011
        ("count", "2011-12-09 12:00", 4),  # count windows are never merged
    ],
)
def test_only_a_last_calendar_window_under_half_its_period_is_merged(period, last, n_windows):
    first = "2011-10-01" if period != "week" else "2011-10-03"
    bounds = window_bounds(_hourly(first, last), WindowsConfig(period=period, count=4))

    assert len(bounds) == n_windows


def test_a_single_short_window_stays():
    bounds = window_bounds(_hourly("2011-12-01", "2011-12-03"), WindowsConfig(period="month"))

    assert len(bounds) == 1

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

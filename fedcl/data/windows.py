"""Time windows (the same boundaries for every shop) and their train/test cut.

A window is ``[start, end)``. Its span is clipped to its own data (``[first event, last event
+ 1 s)``) so a partial month still gets a test part; the cut sits at
``first + (1 - test_fraction) * span``: events before it train, events at or after it test.
One global cut per window, so no event of a test period ever trains a model.

Partial last window: with calendar windows (week, month, quarter), a last window whose data
ends before the middle of its period (last event + 1 s - period start < half the period) is
merged into the window before it, so a stream that stops a few days into a month does not
yield a window too small to test on (Online Retail's 1-9 December 2011 joins November).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedcl.data.config import WindowsConfig
from fedcl.data.schema import SPLIT, TIME, WINDOW, DataError
from fedcl.errors import ConfigError

_FREQ = {"week": "W-SUN", "month": "M", "quarter": "Q"}


def window_bounds(times: pd.Series, cfg: WindowsConfig) -> pd.DataFrame:
    """Table of windows: ``window, start, cut, end`` (clipped to the data as above)."""
    if len(times) == 0:
        raise DataError("no events left to split into windows (every row was quarantined?)")
    if not 0.0 < cfg.test_fraction < 1.0:
        raise ConfigError(f"data.windows.test_fraction must be in (0, 1), got {cfg.test_fraction}")
    first, last = times.min(), times.max()
    if cfg.period in _FREQ:
        periods = pd.period_range(first, last, freq=_FREQ[cfg.period])
        starts = periods.start_time.as_unit("ns")
        ends = (periods + 1).start_time.as_unit("ns")
        starts, ends = _merge_partial_last(starts, ends, last)
    elif cfg.period == "count":
        if cfg.count < 1:
            raise ConfigError(f"data.windows.count must be >= 1, got {cfg.count}")
        ordered = np.sort(times.to_numpy())
        edges = ordered[np.linspace(0, len(ordered), cfg.count + 1).astype(int)[1:-1]]
        starts = pd.DatetimeIndex(np.concatenate([[ordered[0]], edges])).as_unit("ns")
        ends = pd.DatetimeIndex(np.concatenate([edges, [ordered[-1]]])).as_unit("ns")
    else:
        raise ConfigError(
            f"data.windows.period must be week, month, quarter or count, got {cfg.period!r}"
        )
    starts, ends = starts.to_numpy(), ends.to_numpy()
    # Clip each window's span to its own first and last event (an empty window keeps its
    # calendar span), so a month whose data stops early still gets a test part.
    t = times.to_numpy()
    w = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, len(starts) - 1)
    span = pd.DataFrame({"w": w, "t": t}).groupby("w")["t"].agg(["min", "max"])
    lo, hi = starts.copy(), ends.copy()
    lo[span.index] = span["min"].to_numpy()
    hi[span.index] = span["max"].to_numpy() + np.timedelta64(1, "s")
    cut = pd.DatetimeIndex(lo + (hi - lo) * (1.0 - cfg.test_fraction))
    return pd.DataFrame(
        {"window": np.arange(len(starts)), "start": starts, "cut": cut.round("s"), "end": ends}
    )


def _merge_partial_last(
    starts: pd.DatetimeIndex, ends: pd.DatetimeIndex, last: pd.Timestamp
) -> tuple[pd.DatetimeIndex, pd.DatetimeIndex]:
    """Calendar windows with a last one covering under half its period merged into the one
    before it (see the module docstring)."""
    if len(starts) < 2:
        return starts, ends
    covered = last + pd.Timedelta(seconds=1) - starts[-1]
    if covered >= (ends[-1] - starts[-1]) / 2:
        return starts, ends
    return starts[:-1], ends[:-2].append(ends[-1:])


def assign_windows(events: pd.DataFrame, bounds: pd.DataFrame) -> pd.DataFrame:
    """Add ``window`` (int) and ``split`` ("train"/"test") columns to ``events``."""
    t = events[TIME].to_numpy()
    # Windows are contiguous: the window of t is the last start <= t.
    w = np.searchsorted(bounds["start"].to_numpy(), t, side="right") - 1
    w = np.clip(w, 0, len(bounds) - 1)
    test = t >= bounds["cut"].to_numpy()[w]
    out = events.copy(deep=False)  # new columns only: the input is left as it is
    out[WINDOW] = w.astype(np.int32)
    out[SPLIT] = pd.Categorical.from_codes(test.astype(np.int8), categories=["train", "test"])
    return out

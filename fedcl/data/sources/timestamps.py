"""Parsing timestamp columns: ISO 8601, strftime formats and epoch numbers (with units)."""

from __future__ import annotations

import logging
import warnings

import pandas as pd

from fedcl.data.schema import DataError
from fedcl.data.sources.interning import clean_strings

log = logging.getLogger(__name__)

#: Accepted epoch units for :func:`parse_timestamps`.
EPOCH_UNITS = ("s", "ms", "us", "ns")


def guess_epoch_unit(numbers: pd.Series) -> str:
    """The epoch unit that puts the median magnitude of ``numbers`` after ~1973."""
    median = float(numbers.abs().median()) if numbers.notna().any() else 0.0
    for unit, limit in (("s", 1e11), ("ms", 1e14), ("us", 1e17)):
        if median < limit:
            return unit
    return "ns"


def _to_ns(times: pd.Series) -> pd.Series:
    """Naive UTC ``datetime64[ns]``; values outside the ns range (years ~1678-2262) → NaT."""
    if isinstance(times.dtype, pd.DatetimeTZDtype):
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    out_of_range = (times < pd.Timestamp.min) | (times > pd.Timestamp.max)
    return times.mask(out_of_range).astype("datetime64[ns]")


def parse_timestamps(
    values: pd.Series, *, unit: str | None = None, format: str | None = None
) -> pd.Series:
    """Parse a column of strings into naive-UTC ``datetime64[ns]``; bad values → NaT.

    ``unit`` ("s" | "ms" | "us" | "ns") reads epoch numbers; ``format`` is a strftime
    format. With neither, ISO 8601 is tried first; if most values fail, pandas' format
    inference is tried, and a column of plain numbers is read as epoch time with the
    unit guessed from its magnitude (:func:`guess_epoch_unit`). Values with a UTC offset
    are converted to UTC. Never raises for bad values (only for a bad ``unit``).
    """
    index = values.index
    if unit is not None:
        if unit not in EPOCH_UNITS:
            raise DataError(f"time unit must be one of {', '.join(EPOCH_UNITS)}, not {unit!r}.")
        numbers = pd.to_numeric(values, errors="coerce", dtype_backend="numpy_nullable")
        return _to_ns(pd.to_datetime(numbers, unit=unit, errors="coerce")).set_axis(index)
    text = clean_strings(values)
    if format is not None:
        parsed = pd.to_datetime(text, format=format, errors="coerce", utc=True)
        return _to_ns(parsed).set_axis(index)
    parsed = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
    n_values = int(text.notna().sum())
    n_bad = n_values - int(parsed.notna().sum())
    if n_bad * 2 > n_values:
        numbers = pd.to_numeric(text, errors="coerce", dtype_backend="numpy_nullable")
        if int(numbers.notna().sum()) * 2 > n_values:
            guessed = guess_epoch_unit(numbers.dropna())
            log.info("reading numeric timestamps as epoch %s (guessed from magnitude)", guessed)
            parsed = pd.to_datetime(numbers, unit=guessed, errors="coerce", utc=True)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                inferred = pd.to_datetime(text, errors="coerce", utc=True)
            if int(inferred.notna().sum()) > int(parsed.notna().sum()):
                parsed = inferred
    return _to_ns(parsed).set_axis(index)

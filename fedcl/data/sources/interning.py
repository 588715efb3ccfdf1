"""Text columns as codes into their distinct values (interning), and the text dtype.

Input columns are read as Arrow-backed text (pandas' ``str`` dtype). Such a column with
few distinct values (countries, stock codes, dates of one shop) is dictionary-encoded
once and costly element-wise work (parsing, regexes, string edits) runs once per
distinct value: :class:`Distinct` / :func:`map_distinct`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
from pandas.arrays import ArrowStringArray


def text_dtype():
    """The dtype ``read_csv(dtype=str)`` gives; the Arrow reader is used only when it is
    pandas' Arrow-backed string dtype (pandas >= 3, or ``future.infer_string``)."""
    dtype = pd.Series([], dtype=str).dtype
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        return dtype
    return None


def constant_text(value: str, n: int) -> pd.Series | str:
    """A column of ``n`` times ``value`` as pandas builds it from the scalar, or the scalar
    itself (to be broadcast) where text is not Arrow-backed."""
    dtype = text_dtype()
    if dtype is None:
        return value
    return pd.Series(
        dtype.__from_arrow__(pa.chunked_array([pa.repeat(pa.scalar(value, pa.large_string()), n)]))
    )


def _same_text(a: pd.Series, b: pd.Series) -> bool:
    """Both Arrow-backed text with exactly the same values (and missing ones) in order."""
    if not (isinstance(a.array, ArrowStringArray) and isinstance(b.array, ArrowStringArray)):
        return False
    if a.dtype != b.dtype or len(a) != len(b):
        return False
    return bool(a.array.__arrow_array__().equals(b.array.__arrow_array__()))


def _factorize(values: pd.Series) -> tuple[np.ndarray, pd.Series] | None:
    """For Arrow-backed text, ``pd.factorize(values, use_na_sentinel=False)`` as (32-bit
    codes, distinct values as a Series of the same dtype); None for other columns."""
    if not isinstance(values.array, ArrowStringArray):
        return None
    encoded = values.array.__arrow_array__().dictionary_encode(null_encoding="encode")
    if not isinstance(encoded, pa.ChunkedArray) or not encoded.num_chunks:
        return None
    # Every chunk carries the whole dictionary: its codes are common to all chunks.
    codes = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in encoded.chunks])
    dictionary = encoded.chunk(encoded.num_chunks - 1).dictionary
    uniques = values.dtype.__from_arrow__(pa.chunked_array([dictionary]))
    return codes, pd.Series(uniques, name=values.name)


class Distinct:
    """A column factorized once, to compute element-wise functions once per distinct value.

    ``Distinct(values).map(func)`` equals ``func(values)`` for an element-wise ``func``:
    ``func`` gets the distinct values (missing ones included) in order of first
    occurrence with a fresh RangeIndex, and the result is spread back to ``values``'
    index. Much faster than ``func(values)`` for costly functions (number or date
    parsing, regexes, string edits) on Arrow-backed text with few distinct values; other
    columns, and columns of mostly distinct values, take the direct call.
    """

    def __init__(self, values: pd.Series) -> None:
        self.values = values
        factorized = _factorize(values)
        self.direct = factorized is None or len(factorized[1]) * 2 > len(values)
        if not self.direct:
            self.codes, self.distinct = factorized

    def map(self, func: Callable[[pd.Series], pd.Series]) -> pd.Series:
        values = self.values
        if self.direct:
            return func(values)
        mapped = func(self.distinct)
        if _same_text(mapped, self.distinct) and mapped.dtype == values.dtype:
            # Nothing changed (e.g. nothing to strip): no need to build the column again.
            return pd.Series(values.array, index=values.index, name=mapped.name)
        if isinstance(mapped.dtype, np.dtype):
            spread = mapped.to_numpy()[self.codes]
        else:
            spread = mapped.array.take(self.codes)
        return pd.Series(spread, index=values.index, name=mapped.name, copy=False)


def map_distinct(values: pd.Series, func: Callable[[pd.Series], pd.Series]) -> pd.Series:
    """``func(values)`` for an element-wise ``func``, computed once per distinct value
    (see :class:`Distinct`)."""
    return Distinct(values).map(func)


def clean_strings(values: pd.Series) -> pd.Series:
    """Strings stripped of surrounding whitespace; empty or missing cells become NA."""
    out = values.astype("str").str.strip()
    return out.mask(out == "")

"""Row validation: every input row is kept or quarantined with exactly one reason.

Invariant: ``len(kept) + len(quarantine) == rows_in`` (nothing lost, nothing duplicated).
A source may pre-fill a reason (e.g. ``cancellation``); the first reason that applies wins,
in the order of :data:`GENERIC_REASONS` after the source's own.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.arrays import ArrowStringArray

from fedcl.data.config import ShopsConfig, ValidationConfig
from fedcl.data.schema import ITEM, OPTIONAL, REASON, REQUIRED, ROW, SHOP, TIME, USER, SourceFrame

#: Generic reasons, checked in this order.
GENERIC_REASONS: tuple[str, ...] = (
    "missing_user",
    "missing_item",
    "unknown_shop",
    "bad_timestamp",
    "implausible_timestamp",
    "bad_quantity",
    "bad_price",
    "duplicate",
)


@dataclass
class Validated:
    kept: pd.DataFrame  # event schema columns + ROW, sorted by (timestamp, row)
    quarantine: pd.DataFrame  # ROW, REASON + the raw input columns
    rows_in: int

    def counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.quarantine[REASON].value_counts().items()}


def _chunks(values: pd.Series) -> list | None:
    """The Arrow chunks behind Arrow-backed text, or None for any other column."""
    if not isinstance(values.array, ArrowStringArray):
        return None
    arrow = values.array.__arrow_array__()
    return arrow.chunks if isinstance(arrow, pa.ChunkedArray) else [arrow]


def take_rows(table: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """``table.take(rows)`` for increasing ``rows``; Arrow-backed text in several chunks is
    taken chunk by chunk (pyarrow's own take first joins all the chunks of a column)."""
    chunked = {}
    for j in range(len(table.columns)):
        chunks = _chunks(table.iloc[:, j])
        if chunks is not None and len(chunks) > 1:
            chunked[j] = chunks
    if not chunked:
        return table.take(rows)
    others = [j for j in range(len(table.columns)) if j not in chunked]
    out = table.iloc[:, others].take(rows)
    for j, chunks in chunked.items():  # in column order: each lands at its place
        starts = np.cumsum([0] + [len(c) for c in chunks])
        cuts = np.searchsorted(rows, starts)
        pieces = [
            chunk.take(pa.array(rows[cuts[k] : cuts[k + 1]] - starts[k]))
            for k, chunk in enumerate(chunks)
            if cuts[k + 1] > cuts[k]
        ]
        taken = pa.chunked_array(pieces, type=chunks[0].type)
        column = table.iloc[:, j].dtype.__from_arrow__(taken)
        out.insert(j, table.columns[j], column, allow_duplicates=True)
    return out


def _blank(s: pd.Series) -> pd.Series | np.ndarray:
    """Missing, empty or only whitespace."""
    values = s.array
    if isinstance(values, ArrowStringArray):
        # What strip() == "" finds (pyarrow trims the code points utf8_is_space tests),
        # without building the stripped strings.
        text = values.__arrow_array__()
        empty = pc.equal(pc.binary_length(text), 0)
        blank = pc.fill_null(pc.or_(empty, pc.utf8_is_space(text)), True)
        if isinstance(blank, pa.ChunkedArray):
            blank = blank.combine_chunks()
        return blank.to_numpy(zero_copy_only=False)
    return s.isna() | (s.astype("string").str.strip() == "")


#: Multipliers of the multiplicative hash in :func:`duplicated` (2**k / golden ratio).
_GOLDEN32 = np.uint32(0x9E3779B9)
_GOLDEN64 = np.uint64(0x9E3779B97F4A7C15)
#: Rows in question from which :func:`duplicated` pre-filters by hash bucket.
_BUCKETS_FROM = 1 << 16


def _dense_codes(col: pd.Series) -> tuple[np.ndarray, int]:
    """(code per value, number of codes): equal values (NA included) <=> equal codes.

    The equality of ``DataFrame.duplicated`` (pandas' factorize), with NA a value of its
    own; Arrow-backed text is dictionary-encoded directly (32-bit codes).
    """
    if isinstance(col.array, ArrowStringArray):
        encoded = col.array.__arrow_array__().dictionary_encode(null_encoding="encode")
        if isinstance(encoded, pa.ChunkedArray) and encoded.num_chunks:
            # Every chunk carries the whole dictionary: its codes are common to all chunks.
            codes = [c.indices.to_numpy(zero_copy_only=False) for c in encoded.chunks]
            return np.concatenate(codes), len(encoded.chunk(encoded.num_chunks - 1).dictionary)
    codes, uniques = pd.factorize(col)
    return codes + 1, len(uniques) + 1  # NA (-1) becomes code 0


def _bucket_filter(combined: np.ndarray) -> np.ndarray:
    """Rows that may share their value with another row: all but those alone in their
    hash bucket (about one bucket per row)."""
    bits = max((len(combined) - 1).bit_length(), 1)
    if combined.dtype == np.int32:
        hashed = combined.view(np.uint32) * _GOLDEN32 >> np.uint32(32 - bits)
    else:
        hashed = combined.astype(np.int64).view(np.uint64) * _GOLDEN64 >> np.uint64(64 - bits)
    bucket = hashed.astype(np.intp)
    return np.bincount(bucket, minlength=1 << bits)[bucket] > 1


def duplicated(table: pd.DataFrame) -> np.ndarray:
    """``table.duplicated(keep="first")`` as a bool array, without hashing every column.

    Rows are compared column by column, in order, with the same notion of equality
    (pandas' factorize: NA equals NA); a row whose prefix of columns is unique cannot be
    a duplicate, so each further column is only compared on the rows still in question
    (for invoice lines: after invoice number and stock code, a few thousand of them).
    """
    n = len(table)
    if n == 0 or len(table.columns) == 0:
        return table.duplicated(keep="first").to_numpy(dtype=bool)
    rows = np.arange(n)  # the rows still in question, in order
    key, n_keys = None, 0  # per row in question: equal rows so far <=> equal key
    for j in range(len(table.columns)):
        col = table.iloc[:, j]
        if len(rows) < n:
            col = take_rows(table.iloc[:, [j]], rows).iloc[:, 0]
        codes, n_codes = _dense_codes(col)
        if key is None:
            key, n_keys = codes, n_codes
        else:
            if n_keys * n_codes < 1 << 31:
                combined = key.astype(np.int32) * np.int32(n_codes) + codes.astype(np.int32)
            else:
                combined = key.astype(np.int64) * n_codes + codes
            if len(rows) > _BUCKETS_FROM:
                # A row alone in its hash bucket is unique: drop those before the exact
                # (and, for many distinct values, much slower) factorization.
                maybe = _bucket_filter(combined)
                rows, combined = rows[maybe], combined[maybe]
            key, uniques = pd.factorize(combined)
            n_keys = len(uniques)
        repeated = np.bincount(key, minlength=n_keys)[key] > 1
        rows, key = rows[repeated], key[repeated]
        if len(rows) == 0:
            return np.zeros(n, dtype=bool)
    out = np.zeros(n, dtype=bool)
    out[rows] = pd.Series(key).duplicated(keep="first").to_numpy(dtype=bool)
    return out


def _reasons(
    frame: pd.DataFrame,
    raw: pd.DataFrame | None,
    shops: ShopsConfig,
    bounds: ValidationConfig,
    pool: ThreadPoolExecutor | None = None,
) -> tuple[pd.Series, np.ndarray]:
    """(reason per row, rows left without a reason): see :func:`generic_reasons`.

    With a ``pool`` the duplicate search (the costliest check) runs there meanwhile.
    """
    # Exact duplicates of the input line (the first occurrence is kept).
    basis = raw if raw is not None and len(raw.columns) else frame.drop(columns=[ROW, REASON])
    duplicates = pool.submit(duplicated, basis) if pool is not None else None
    reason = frame[REASON].astype(object)
    values = reason.to_numpy(dtype=object, copy=True)
    free = np.asarray(values == "", dtype=bool)
    # fillna(""): only the (few) entries that are not "" need the look.
    given = np.flatnonzero(~free)
    missing = given[pd.isna(values[given])]
    values[missing] = ""
    free[missing] = True
    lo = pd.Timestamp(bounds.min_time)
    hi = pd.Timestamp(bounds.max_time) if bounds.max_time else pd.Timestamp.now()
    checks = {
        "missing_user": _blank(frame[USER]),
        "missing_item": _blank(frame[ITEM]),
        "unknown_shop": _blank(frame[SHOP]) | frame[SHOP].isin(shops.unknown),
        "bad_timestamp": frame[TIME].isna(),
        "implausible_timestamp": (frame[TIME] < lo) | (frame[TIME] > hi),
    }
    if "quantity" in frame:
        checks["bad_quantity"] = ~(frame["quantity"] > 0)
    if "price" in frame:
        checks["bad_price"] = ~(frame["price"] > 0)
    checks["duplicate"] = duplicates.result() if duplicates is not None else duplicated(basis)
    for name in GENERIC_REASONS:
        if name not in checks:
            continue
        check = checks[name]
        mask = check.to_numpy() if isinstance(check, pd.Series) else check
        if mask.dtype == bool:
            hit = free & mask
        else:  # e.g. a nullable boolean with NA: combine as pandas does
            hit = (pd.Series(free, index=frame.index) & mask).to_numpy(dtype=bool)
        values[hit] = name
        free &= ~hit
    return pd.Series(values, index=reason.index, name=reason.name, dtype=object), free


def generic_reasons(
    frame: pd.DataFrame, raw: pd.DataFrame | None, shops: ShopsConfig, bounds: ValidationConfig
) -> pd.Series:
    """The source's reasons completed with the generic checks (first reason wins)."""
    return _reasons(frame, raw, shops, bounds)[0]


def _sorted_kept(frame: pd.DataFrame, ok: np.ndarray, columns: list[str]) -> pd.DataFrame:
    """``frame.loc[ok, columns]`` sorted by (time, row) (stable), with a fresh index."""
    rows = np.flatnonzero(ok)
    times = frame[TIME].to_numpy()
    order = frame[ROW].to_numpy()
    if times.dtype.kind == "M" and order.dtype.kind in "iu" and not np.isnat(times[rows]).any():
        t, r = times[rows].view(np.int64), order[rows]
        dt = np.diff(t)
        if ((dt > 0) | ((dt == 0) & (np.diff(r) >= 0))).all():
            # Already in order (a file sorted by time): a plain selection.
            return take_rows(frame[columns], rows).reset_index(drop=True)
        # One take instead of a mask and a sort of every column.
        return frame[columns].take(rows[np.lexsort((r, t))]).reset_index(drop=True)
    kept = frame.loc[ok, columns].sort_values([TIME, ROW], kind="stable")
    return kept.reset_index(drop=True)


def validate(src: SourceFrame, shops: ShopsConfig, bounds: ValidationConfig) -> Validated:
    """Split a source's rows into kept events and quarantined rows with reasons.

    Independent steps run side by side in a second thread (the work is mostly pyarrow,
    numpy and pandas kernels that release the GIL): the duplicate search next to the
    other checks, the quarantined lines next to the kept events.
    """
    frame = src.frame
    detail = src.raw if src.raw is not None and len(src.raw.columns) else frame
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedcl-validate") as pool:
        reason, ok = _reasons(frame, src.raw, shops, bounds, pool)
        bad = ~ok
        lines = pool.submit(take_rows, detail, np.flatnonzero(bad))
        columns = [c for c in (*REQUIRED, *OPTIONAL) if c in frame] + [ROW]
        kept = _sorted_kept(frame, ok, columns)
        kept[USER] = kept[USER].astype(str)
        kept[ITEM] = kept[ITEM].astype(str)
        kept[SHOP] = kept[SHOP].astype(str)
        quarantine = lines.result().astype("string").reset_index(drop=True)
    quarantine.insert(0, REASON, reason.to_numpy()[bad], allow_duplicates=True)
    quarantine.insert(0, ROW, frame[ROW].to_numpy()[bad], allow_duplicates=True)
    quarantine = quarantine.loc[:, ~quarantine.columns.duplicated()]
    return Validated(kept=kept, quarantine=quarantine, rows_in=src.rows_in)

"""Row validation: every input row is kept or quarantined with exactly one reason.

Invariant: ``len(kept) + len(quarantine) == rows_in`` (nothing lost, nothing duplicated).
A source may pre-fill a reason (e.g. ``cancellation``); the first reason that applies wins,
in the order of :data:`GENERIC_REASONS` after the source's own.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

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


def _blank(s: pd.Series) -> pd.Series:
    return s.isna() | (s.astype("string").str.strip() == "")


def generic_reasons(
    frame: pd.DataFrame, raw: pd.DataFrame | None, shops: ShopsConfig, bounds: ValidationConfig
) -> pd.Series:
    """The source's reasons completed with the generic checks (first reason wins)."""
    reason = frame[REASON].astype(object).fillna("").copy()
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
    # Exact duplicates of the input line (the first occurrence is kept).
    basis = raw if raw is not None and len(raw.columns) else frame.drop(columns=[ROW, REASON])
    checks["duplicate"] = basis.duplicated(keep="first")
    for name in GENERIC_REASONS:
        if name in checks:
            reason[(reason == "") & checks[name].to_numpy()] = name
    return reason


def validate(src: SourceFrame, shops: ShopsConfig, bounds: ValidationConfig) -> Validated:
    """Split a source's rows into kept events and quarantined rows with reasons."""
    frame = src.frame
    reason = generic_reasons(frame, src.raw, shops, bounds)
    ok = (reason == "").to_numpy()
    columns = [c for c in (*REQUIRED, *OPTIONAL) if c in frame] + [ROW]
    kept = frame.loc[ok, columns].sort_values([TIME, ROW], kind="stable").reset_index(drop=True)
    kept[USER] = kept[USER].astype(str)
    kept[ITEM] = kept[ITEM].astype(str)
    kept[SHOP] = kept[SHOP].astype(str)
    bad = ~ok
    detail = src.raw.loc[bad] if src.raw is not None and len(src.raw.columns) else frame.loc[bad]
    quarantine = detail.astype("string").reset_index(drop=True)
    quarantine.insert(0, REASON, reason[bad].to_numpy(), allow_duplicates=True)
    quarantine.insert(0, ROW, frame.loc[bad, ROW].to_numpy(), allow_duplicates=True)
    quarantine = quarantine.loc[:, ~quarantine.columns.duplicated()]
    return Validated(kept=kept, quarantine=quarantine, rows_in=src.rows_in)

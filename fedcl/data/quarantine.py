"""The quarantine table on disk, and the error when it took every row.

When nothing is left to prepare, the one useful answer names the reasons that took the
rows (with counts), where their table was written, and the likely fix: e.g. epoch
seconds read with ``data.time_unit=ms`` all land in January 1970, before
``data.validation.min_time``, and are quarantined as ``implausible_timestamp``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from fedcl.data.schema import REASON, DataError

#: Quarantine reason -> the likely fix when it took every row.
FIXES: dict[str, str] = {
    "missing_user": "check that data.user_col names the (filled) user column",
    "missing_item": "check that data.item_col names the (filled) item column",
    "unknown_shop": (
        "check data.shop_col (null puts every row in data.default_shop) and data.shops.unknown"
    ),
    "bad_timestamp": (
        "check data.time_col, data.time_format (strftime) and data.time_unit (epoch s/ms/us/ns)"
    ),
    "implausible_timestamp": (
        "the times parsed but lie outside data.validation.min_time..max_time: check "
        "data.time_unit (epoch seconds are 's', milliseconds 'ms') and data.time_format"
    ),
    "bad_quantity": "check that data.quantity_col names a column of positive numbers",
    "bad_price": "check that data.price_col names a column of positive numbers",
    "small_shop": (
        "every shop is below data.shops.min_users/min_events: lower them or set "
        "data.shops.small=merge"
    ),
    "below_threshold": "lower data.rating_threshold (null keeps every rating)",
    "bad_rating": "check that the rating column holds numbers",
}


def write_quarantine(quarantine: pd.DataFrame, path: Path) -> Path:
    """Write the quarantine table to ``path`` (Parquet) atomically; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    quarantine.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path


def all_quarantined_error(quarantine: pd.DataFrame, rows_in: int, path: Path) -> DataError:
    """The error for a preparation that kept no row, once ``quarantine`` is at ``path``.

    Example: ``every one of the 3 input rows was quarantined (implausible_timestamp: 3);
    quarantine table written to /run/quarantine.parquet. Likely fix: for
    implausible_timestamp, the times parsed but ...``
    """
    if rows_in == 0:
        return DataError("the source gave no rows: nothing to prepare (check data.path).")
    counts = quarantine[REASON].value_counts()
    taken = ", ".join(f"{reason}: {int(n)}" for reason, n in counts.items())
    fixes = [f"for {reason}, {FIXES[reason]}" for reason in counts.index if reason in FIXES]
    fix = " Likely fix: " + "; ".join(fixes) + "." if fixes else ""
    return DataError(
        f"every one of the {rows_in} input rows was quarantined ({taken}); nothing is left "
        f"to split into windows. Quarantine table written to {path}.{fix}"
    )

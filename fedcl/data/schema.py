"""The one event schema every source maps into.

An *event* is one user-item interaction at a shop at a time. Sources return a
:class:`SourceFrame`: the input rows mapped into this schema (``REQUIRED`` columns
plus any of ``OPTIONAL``), with one row per input row (nothing dropped yet) and a
``reason`` column that a source may pre-fill with source-specific quarantine reasons
(e.g. ``cancellation``). :func:`fedcl.data.validate.validate` then assigns the
generic reasons and splits kept rows from quarantined ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from fedcl.errors import FedclError

USER = "user_id"
ITEM = "item_id"
TIME = "timestamp"
SHOP = "shop"
REQUIRED: tuple[str, ...] = (USER, ITEM, TIME, SHOP)
OPTIONAL: tuple[str, ...] = ("event_type", "quantity", "price", "category")

# Column holding the input line number (0-based data row) so quarantine entries
# point back at the file, and a column for the quarantine reason ("" = kept so far).
ROW = "row"
REASON = "reason"

# Added by preparation (fedcl.data.prepare):
WINDOW = "window"  # int, index of the calendar/count window
SPLIT = "split"  # "train" | "test"
USER_IDX = "user_idx"  # int, dense per-shop user index (users are local to a shop)
ITEM_IDX = "item_idx"  # int, dense global item index (the shared catalogue)


class DataError(FedclError, ValueError):
    """A file or table that cannot be read as intended; the message names the fix."""


@dataclass
class SourceFrame:
    """Rows of one input mapped into the event schema, none dropped yet.

    Invariant: ``len(frame) == rows_in`` and ``frame[ROW]`` is unique.
    Columns: ``REQUIRED`` (``user_id``/``item_id``/``shop`` as strings or NA,
    ``timestamp`` as ``datetime64[ns]`` or NaT when unparseable), any ``OPTIONAL``
    columns, ``ROW`` and ``REASON`` (``""`` when the source had nothing to say).
    ``raw`` keeps the original values (as strings) for the quarantine file.
    """

    frame: pd.DataFrame
    raw: pd.DataFrame
    source: str

    @property
    def rows_in(self) -> int:
        return len(self.frame)

"""Any CSV or Parquet table of events, with configurable column names.

Set ``data.path=...`` and map your columns (``data.user_col=customer``, ...). Only
user, item and time are needed; without a shop column (``data.shop_col=null``) every
event belongs to ``default_shop``. Timestamps are ISO 8601 by default, a strftime
``time_format``, or epoch numbers with ``time_unit``; unparseable ones become NaT and
are quarantined by validation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedcl.data.config import DataConfig
from fedcl.data.schema import ITEM, REASON, ROW, SHOP, TIME, USER, DataError, SourceFrame
from fedcl.data.sources.interning import clean_strings
from fedcl.data.sources.table_files import read_table
from fedcl.data.sources.timestamps import EPOCH_UNITS, parse_timestamps

#: Optional schema column -> config field naming its input column.
OPTIONAL_FIELDS = {
    "event_type": "event_type_col",
    "quantity": "quantity_col",
    "price": "price_col",
    "category": "category_col",
}
NUMERIC = ("quantity", "price")


@dataclass
class CsvConfig(DataConfig):
    name: str = "csv"
    _target_: str = "fedcl.data.sources.csv.read"
    user_col: str = "user_id"
    item_col: str = "item_id"
    time_col: str = "timestamp"
    #: ``None``: no shop column, every row belongs to ``default_shop``.
    shop_col: str | None = "shop"
    default_shop: str = "all"
    #: Optional columns; ``None`` means the input has none.
    event_type_col: str | None = None
    quantity_col: str | None = None
    price_col: str | None = None
    category_col: str | None = None
    #: strftime format of the time column; ``None``: ISO 8601 (or auto-detected).
    time_format: str | None = None
    #: "s" | "ms" | "us" | "ns" when the time column holds epoch numbers.
    time_unit: str | None = None
    #: Field delimiter of a CSV (ignored for Parquet); ``"\\t"`` means tab.
    sep: str = ","


#: This source's config schema (conf/data/csv.yaml: ``_target_`` is :func:`read`).
SCHEMA = CsvConfig


def _column_map(cfg: CsvConfig) -> dict[str, str]:
    """Schema column -> input column, for the columns this config reads."""
    mapping = {USER: cfg.user_col, ITEM: cfg.item_col, TIME: cfg.time_col}
    if cfg.shop_col is not None:
        mapping[SHOP] = cfg.shop_col
    for column, field_name in OPTIONAL_FIELDS.items():
        source = getattr(cfg, field_name)
        if source is not None:
            mapping[column] = source
    return mapping


def input_columns(cfg: CsvConfig) -> list[str]:
    """The input columns this config needs, in schema order."""
    return list(dict.fromkeys(_column_map(cfg).values()))


def describe_layout(cfg: CsvConfig) -> str:
    """Human description of the table this config expects (for error messages)."""
    mapping = _column_map(cfg)
    cols = ",".join(mapping.values())
    time = (
        f"epoch {cfg.time_unit}"
        if cfg.time_unit
        else (f"format {cfg.time_format!r}" if cfg.time_format else "ISO 8601")
    )
    return (
        f"CSV (sep={cfg.sep!r}) or Parquet table with columns {cols} (time as {time}); "
        "map other names with data.user_col=..., data.item_col=..., data.time_col=..., "
        "data.shop_col=... (null for no shop column)"
    )


def read(cfg: CsvConfig) -> SourceFrame:
    """Read ``cfg.path`` and map its columns to the event schema (one event per row)."""
    if cfg.path is None:
        raise DataError(
            "The csv source needs an input file: pass data.path=/path/to/events.csv "
            "(CSV, .csv.gz or Parquet) and map its columns with data.user_col=..., "
            "data.item_col=..., data.time_col=..., data.shop_col=...."
        )
    if cfg.time_unit is not None and cfg.time_unit not in EPOCH_UNITS:
        raise DataError(
            f"data.time_unit must be one of {', '.join(EPOCH_UNITS)} (or null), "
            f"not {cfg.time_unit!r}."
        )
    raw = read_table(
        cfg.path,
        required=input_columns(cfg),
        layout=describe_layout(cfg),
        sep=cfg.sep,
    ).reset_index(drop=True)
    return source_frame(raw, cfg)


def source_frame(raw: pd.DataFrame, cfg: CsvConfig) -> SourceFrame:
    """Map a table read as strings (``read_table``; fresh RangeIndex) to the event schema."""
    mapping = _column_map(cfg)
    columns: dict[str, pd.Series] = {
        USER: clean_strings(raw[cfg.user_col]),
        ITEM: clean_strings(raw[cfg.item_col]),
        TIME: parse_timestamps(raw[cfg.time_col], unit=cfg.time_unit, format=cfg.time_format),
    }
    if cfg.shop_col is not None:
        columns[SHOP] = clean_strings(raw[cfg.shop_col])
    else:
        columns[SHOP] = pd.Series(cfg.default_shop, index=raw.index, dtype="str")
    for column in OPTIONAL_FIELDS:
        if column not in mapping:
            continue
        values = raw[mapping[column]]
        if column in NUMERIC:
            columns[column] = pd.to_numeric(values, errors="coerce").astype("float64")
        else:
            columns[column] = clean_strings(values)
    columns[ROW] = pd.Series(np.arange(len(raw), dtype=np.int64), index=raw.index)
    columns[REASON] = pd.Series("", index=raw.index, dtype="str")
    return SourceFrame(frame=pd.DataFrame(columns), raw=raw, source="csv")

"""MovieLens ratings as implicit-feedback events.

The MovieLens data may not be redistributed, so nothing is shipped: download it from
https://grouplens.org/datasets/movielens/ and pass ``data.path=...``. Two layouts:

* ``u.data`` (ML-100K): tab-separated ``user item rating unix_seconds``, no header;
* ``ratings.csv`` (ML-latest, ML-20M/25M/32M): ``userId,movieId,rating,timestamp``.

Ratings below ``rating_threshold`` are quarantined (``below_threshold``) so only
"liked" items count as interactions. MovieLens has no shops: every user goes to
``default_shop`` unless ``shop_map_path`` names a CSV ``user_id,shop`` (e.g. a region or
occupation the user prepared); users missing from it get no shop (→ ``unknown_shop``).
"""

from __future__ import annotations

import lzma
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedcl.data.config import DataConfig
from fedcl.data.schema import ITEM, REASON, ROW, SHOP, TIME, USER, DataError, SourceFrame
from fedcl.data.sources.csv_sniff import read_head
from fedcl.data.sources.interning import clean_strings
from fedcl.data.sources.table_files import PARQUET_SUFFIXES, read_table
from fedcl.data.sources.timestamps import parse_timestamps

LAYOUTS = ("auto", "u.data", "ratings.csv")
UDATA_COLUMNS = ["user_id", "item_id", "rating", "timestamp"]
RATINGS_COLUMNS = ["userId", "movieId", "rating", "timestamp"]
SHOP_MAP_COLUMNS = ["user_id", "shop"]

UDATA_LAYOUT = (
    "MovieLens-100K u.data: tab-separated 'user item rating unix_seconds' lines, no header "
    "(use data.layout=ratings.csv for a comma-separated ratings.csv)"
)
RATINGS_LAYOUT = (
    "MovieLens ratings.csv: comma-separated with header userId,movieId,rating,timestamp "
    "(use data.layout=u.data for the tab-separated ML-100K u.data)"
)
SHOP_MAP_LAYOUT = "shop map CSV with header user_id,shop (one row per user)"


@dataclass
class MovieLensConfig(DataConfig):
    name: str = "movielens"
    _target_: str = "fedcl.data.sources.movielens.read"
    #: "u.data" | "ratings.csv" | "auto" (decided by the file's first line, then its name).
    layout: str = "auto"
    #: Ratings below this are quarantined as ``below_threshold``; ``None`` keeps all.
    rating_threshold: float | None = 4.0
    #: CSV with columns ``user_id,shop``; users not in it get no shop (``unknown_shop``).
    shop_map_path: str | None = None
    #: Shop of every user when no ``shop_map_path`` is given.
    default_shop: str = "all"


#: This source's config schema (conf/data/movielens.yaml: ``_target_`` is :func:`read`).
SCHEMA = MovieLensConfig


def detect_layout(path: str | Path) -> str:
    """``"u.data"`` or ``"ratings.csv"`` from the file's first line, else from its name."""
    path = Path(path).expanduser()
    name = path.name.lower()
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return "ratings.csv"
    by_name = None
    if name.startswith("u.data") or name.endswith(".data"):
        by_name = "u.data"
    elif name.startswith("ratings") and ".csv" in name:
        by_name = "ratings.csv"
    try:
        head = read_head(path, 4096)
    except (OSError, EOFError, zipfile.BadZipFile, lzma.LZMAError, zlib.error):
        # Missing or unreadable: read_table reports that, with the expected layout.
        return by_name or "ratings.csv"
    if not head.strip() or b"\x00" in head or head.startswith((b"PAR1", b"PK")):
        return by_name or "ratings.csv"  # empty or binary: read_table explains
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    if first.replace('"', "").strip().lower().startswith("userid,"):
        return "ratings.csv"
    if first.count("\t") == 3 and "," not in first:
        return "u.data"
    if by_name is not None:
        return by_name
    raise DataError(
        f"Cannot tell the MovieLens layout of '{path}' (first line: {first[:80]!r}). "
        "Set data.layout=u.data (tab-separated 'user item rating unix_seconds', no header) "
        "or data.layout=ratings.csv (comma-separated with header "
        "userId,movieId,rating,timestamp)."
    )


def read_shop_map(path: str | Path) -> pd.Series:
    """The ``user_id → shop`` side file as a Series indexed by stripped user id.

    Repeated identical rows are fine; a user mapped to two different shops is an error.
    """
    table = read_table(path, required=SHOP_MAP_COLUMNS, layout=SHOP_MAP_LAYOUT)
    mapping = pd.DataFrame(
        {"user_id": clean_strings(table["user_id"]), "shop": clean_strings(table["shop"])}
    )
    mapping = mapping.dropna(subset=["user_id"]).drop_duplicates()
    dup = mapping["user_id"].duplicated(keep=False)
    if dup.any():
        users = mapping.loc[dup, "user_id"].unique()
        shown = ", ".join(f"'{u}'" for u in users[:5])
        more = f" and {len(users) - 5} more" if len(users) > 5 else ""
        raise DataError(
            f"Cannot use shop map '{path}': user(s) {shown}{more} are mapped to more than one "
            f"shop. Expected: {SHOP_MAP_LAYOUT}."
        )
    return mapping.set_index("user_id")["shop"]


def read(cfg: MovieLensConfig) -> SourceFrame:
    """Map a MovieLens ratings file to the event schema (one event per rating)."""
    if cfg.path is None:
        raise DataError(
            "MovieLens needs an input file: the data may not be redistributed, so download "
            "it from https://grouplens.org/datasets/movielens/ (e.g. ml-100k/u.data or "
            "ml-latest-small/ratings.csv) and pass data.path=/path/to/u.data."
        )
    if cfg.layout not in LAYOUTS:
        raise DataError(
            f"Unknown MovieLens layout {cfg.layout!r}: use one of {', '.join(LAYOUTS)}."
        )
    layout = detect_layout(cfg.path) if cfg.layout == "auto" else cfg.layout
    if layout == "u.data":
        raw = read_table(
            cfg.path,
            required=UDATA_COLUMNS,
            layout=UDATA_LAYOUT,
            sep="\t",
            header=None,
            names=list(UDATA_COLUMNS),
        )
        user, item, rating, stamp = (raw[c] for c in UDATA_COLUMNS)
    else:
        raw = read_table(cfg.path, required=RATINGS_COLUMNS, layout=RATINGS_LAYOUT)
        user, item, rating, stamp = (raw[c] for c in RATINGS_COLUMNS)
    raw = raw.reset_index(drop=True)

    users = clean_strings(user).reset_index(drop=True)
    if cfg.shop_map_path is not None:
        shops = users.map(read_shop_map(cfg.shop_map_path)).astype("str")
    else:
        shops = pd.Series(cfg.default_shop, index=users.index, dtype="str")

    ratings = pd.to_numeric(rating, errors="coerce").reset_index(drop=True)
    reason = pd.Series("", index=users.index, dtype="str")
    if cfg.rating_threshold is not None:
        reason = reason.mask(ratings < cfg.rating_threshold, "below_threshold")
    reason = reason.mask(ratings.isna(), "bad_rating")

    frame = pd.DataFrame(
        {
            USER: users,
            ITEM: clean_strings(item).reset_index(drop=True),
            TIME: parse_timestamps(stamp.reset_index(drop=True), unit="s"),
            SHOP: shops,
            "event_type": pd.Series("rating", index=users.index, dtype="str"),
            ROW: np.arange(len(users), dtype=np.int64),
            REASON: reason,
        }
    )
    return SourceFrame(frame=frame, raw=raw, source="movielens")

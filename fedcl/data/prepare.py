"""The data pipeline: read a source, validate, partition shops, cut windows, index.

``prepare(cfg)`` returns a :class:`PreparedData` and the quarantine table; nothing is lost:
``rows_kept + sum(quarantined) == rows_in`` is checked before anything is returned.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from hydra.utils import get_method

from fedcl.data.catalog import index_events
from fedcl.data.config import DataConfig
from fedcl.data.dataset import PreparedData
from fedcl.data.quarantine import all_quarantined_error, write_quarantine
from fedcl.data.schema import REASON, ROW, SHOP, SPLIT, USER, WINDOW, SourceFrame
from fedcl.data.shops import partition_shops
from fedcl.data.validate import validate
from fedcl.data.windows import assign_windows, window_bounds
from fedcl.errors import ConfigError

log = logging.getLogger(__name__)
#: Bump when preparation changes its output, so stale caches are not reused.
PIPELINE_VERSION = "2"  # 2: a partial last calendar window joins the one before


def source_reader(cfg: DataConfig) -> Callable[[DataConfig], SourceFrame]:
    """The source's read function, named by ``cfg._target_`` (a dotted path)."""
    try:
        return get_method(cfg._target_)
    except (ImportError, ValueError) as exc:  # not importable / not callable
        detail = " ".join(str(exc).split())
        raise ConfigError(
            f"data._target_ must name a source's read function, e.g. "
            f"'fedcl.data.sources.csv.read'; {cfg._target_!r} cannot be used: {detail}"
        ) from exc


def load_source(cfg: DataConfig) -> SourceFrame:
    """Run the source's reader (``cfg._target_``) on its input."""
    return source_reader(cfg)(cfg)


def input_path(cfg: DataConfig) -> Path | None:
    """The file a source reads: ``cfg.path`` or the source module's ``default_path()``."""
    if cfg.path:
        return Path(cfg.path)
    module = sys.modules[source_reader(cfg).__module__]
    default = getattr(module, "default_path", None)
    return Path(default()) if default else None


def data_digest(cfg: DataConfig) -> str:
    """sha256 of the input file, or of the config for generated data."""
    path = input_path(cfg)
    h = hashlib.sha256()
    if path is not None and path.is_file():
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    else:
        h.update(json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=str).encode())
    return h.hexdigest()


class _Steps:
    """Progress of the long steps, one readable log line each."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def done(self, what: str) -> None:
        log.info("%-28s %6.2f s", what, time.perf_counter() - self.t0)


def prepare(
    cfg: DataConfig, *, quarantine_dir: str | Path | None = None
) -> tuple[PreparedData, pd.DataFrame]:
    """Prepare a dataset from a source config; returns (prepared data, quarantine table).

    Raises:
        DataError: every row was quarantined; the quarantine table is first written to
            ``quarantine_dir/quarantine.parquet`` (default: the cache directory's
            ``quarantine/<source>.parquet``) and the message names it, the reasons that
            took the rows and the likely fix.
    """
    steps = _Steps()
    src = load_source(cfg)
    steps.done(f"read {src.source} ({src.rows_in} rows)")
    checked = validate(src, cfg.shops, cfg.validation)
    steps.done(f"validated ({len(checked.kept)} kept)")
    parts = partition_shops(checked.kept, cfg.shops)
    quarantine = checked.quarantine
    if len(parts.dropped):
        dropped = parts.dropped
        if len(src.raw.columns):  # keep the input line as read, like every quarantine entry
            dropped = src.raw.iloc[dropped[ROW].to_numpy()].astype("string")
            dropped.insert(0, REASON, parts.dropped[REASON].to_numpy())
            dropped.insert(0, ROW, parts.dropped[ROW].to_numpy())
        quarantine = pd.concat([quarantine, dropped.astype({ROW: "int64"})], ignore_index=True)
    if len(parts.kept) == 0:
        if quarantine_dir is not None:
            where = Path(quarantine_dir) / "quarantine.parquet"
        else:
            where = cache_dir() / "quarantine" / f"{cfg.name}.parquet"
        raise all_quarantined_error(quarantine, src.rows_in, write_quarantine(quarantine, where))
    kept = parts.kept.sort_values(["timestamp", ROW], kind="stable").reset_index(drop=True)
    bounds = window_bounds(kept["timestamp"], cfg.windows)
    kept = assign_windows(kept, bounds)
    events, catalog = index_events(kept)
    steps.done(f"shops, windows, index ({len(bounds)} windows)")

    counts = {str(k): int(v) for k, v in quarantine[REASON].value_counts().items()}
    if len(events) + sum(counts.values()) != src.rows_in:
        raise AssertionError(
            f"row accounting broken: kept {len(events)} + quarantined {sum(counts.values())}"
            f" != rows_in {src.rows_in}"
        )
    report = build_report(src.rows_in, events, catalog, bounds, counts, parts, cfg)
    return PreparedData(events, catalog, bounds, report), quarantine


def build_report(rows_in, events, catalog, bounds, counts, parts, cfg) -> dict:
    """``report.json`` as ARCHITECTURE.md defines it, plus details for humans."""
    per_shop = (
        events.groupby(SHOP, observed=True)
        .agg(events=(USER, "size"), users=(USER, "nunique"))
        .sort_values(["events"], ascending=False)
    )
    table = events.pivot_table(
        index=SHOP, columns=WINDOW, values=USER, aggfunc="size", fill_value=0, observed=True
    ).reindex(per_shop.index)
    split = events.groupby([WINDOW, SPLIT], observed=False).size().unstack(fill_value=0)
    return {
        "source": cfg.name,
        "rows_in": int(rows_in),
        "rows_kept": int(len(events)),
        "quarantined": dict(sorted(counts.items())),
        "shops": int(len(per_shop)),
        "windows": int(len(bounds)),
        "users": int(events["guser_idx"].nunique()),
        "items": int(len(catalog)),
        "per_shop": {
            str(s): {"events": int(r.events), "users": int(r.users)} for s, r in per_shop.iterrows()
        },
        "merged_into_other": parts.merged,
        "dropped_shops": parts.dropped_shops,
        "per_window": [
            {
                "window": int(b.window),
                "start": str(b.start),
                "cut": str(b.cut),
                "end": str(b.end),
                "train_events": int(split.loc[b.window, "train"]) if b.window in split.index else 0,
                "test_events": int(split.loc[b.window, "test"]) if b.window in split.index else 0,
            }
            for b in bounds.itertuples()
        ],
        "shop_window_events": {str(s): [int(x) for x in row] for s, row in table.iterrows()},
        "config": dataclasses.asdict(cfg),
        "pipeline_version": PIPELINE_VERSION,
    }


def cache_dir() -> Path:
    return Path(os.environ.get("FEDCL_CACHE", Path.home() / ".cache" / "fedcl"))


def prepare_cached(cfg: DataConfig) -> tuple[PreparedData, str]:
    """``prepare`` with an on-disk cache keyed by input digest + config; returns (data, digest)."""
    digest = data_digest(cfg)
    settings = dataclasses.asdict(cfg)
    settings.pop("cache", None)
    key_src = json.dumps([PIPELINE_VERSION, digest, settings], sort_keys=True, default=str)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:20]
    where = cache_dir() / f"{cfg.name}-{key}"
    if cfg.cache and (where / "report.json").is_file():
        log.info("using prepared data cached in %s", where)
        return PreparedData.load(where), digest
    data, quarantine = prepare(cfg)
    if cfg.cache:
        tmp = where.with_name(where.name + f".tmp{os.getpid()}")
        data.save(tmp)
        quarantine.to_parquet(tmp / "quarantine.parquet", index=False)
        # Another process may have won the race: its copy is just as good.
        with contextlib.suppress(OSError):
            tmp.rename(where)
    return data, digest

"""The public plan of a federation: window bounds and the product catalogue.

Products are public, customers' events are not. The operator publishes a plan directory::

    windows.parquet   window, start, cut, end     (the same windows for every shop)
    catalog.parquet   item_idx, item_id, first_seen, first_window[, category]
    plan.json         format, member shops, counts

so that a shop can turn its own event log into windows and catalogue indices
(:mod:`fedcl.shop.ingest`) and the server can size the model and schedule the windows
(``federated.plan_dir``) without reading anyone's events. ``python -m fedcl.plan`` writes
one from a prepared dataset.

Invariant (as in a prepared dataset): items are indexed in order of first sight, so
``first_seen`` never decreases with ``item_idx`` and the catalogue known after window t is
the prefix ``item_idx < n_items_known(t)``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fedcl.data.catalog import items_known
from fedcl.data.dataset import PreparedData
from fedcl.data.schema import ITEM, ITEM_IDX, WINDOW, DataError

WINDOWS_FILE, CATALOG_FILE, META_FILE = "windows.parquet", "catalog.parquet", "plan.json"
FORMAT = "fedcl-plan/1"
CATALOG_COLUMNS = (ITEM_IDX, ITEM, "first_seen", "first_window")
WINDOW_COLUMNS = (WINDOW, "start", "cut", "end")
_FIX = "write the plan again with `python -m fedcl.plan --out DIR <data overrides>`"


@dataclass
class Plan:
    windows: pd.DataFrame  # window, start, cut, end
    catalog: pd.DataFrame  # item_idx, item_id, first_seen, first_window[, category]
    #: Member shops in the order of the operator's data (seeds and report order follow it).
    shops: list[str] = field(default_factory=list)
    #: sha256 of the plan's files (the report's ``data_sha256`` when the server reads a plan).
    digest: str = ""

    @property
    def n_windows(self) -> int:
        return len(self.windows)

    def n_items_known(self, t: int) -> int:
        """Catalogue size after window t's train part (as :meth:`PreparedData.n_items_known`)."""
        return items_known(self.catalog, self.windows, t)

    def window_of(self, timestamps) -> np.ndarray:
        """Window of each timestamp: -1 before the first window, ``n_windows`` after the last
        one's end (the last event of equal-count windows sits on that end: it belongs in)."""
        t = np.asarray(timestamps, dtype="datetime64[ns]")
        starts = self.windows["start"].to_numpy(dtype="datetime64[ns]")
        w = np.searchsorted(starts, t, side="right") - 1
        end = self.windows["end"].to_numpy(dtype="datetime64[ns]")[-1]
        w[t > end] = self.n_windows
        return w.astype(np.int64)

    def item_indices(self, item_ids) -> np.ndarray:
        """Catalogue index of each item id; -1 for ids the catalogue does not list."""
        index = pd.Index(self.catalog[ITEM].astype(str))
        return index.get_indexer(pd.Index(item_ids, dtype=object).astype(str)).astype(np.int64)

    # --- files -------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.windows[list(WINDOW_COLUMNS)].to_parquet(d / WINDOWS_FILE, index=False)
        self.catalog.to_parquet(d / CATALOG_FILE, index=False)
        meta = {
            "format": FORMAT,
            "shops": list(self.shops),
            "windows": self.n_windows,
            "items": len(self.catalog),
        }
        (d / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        self.digest = _digest(d)
        return d

    @classmethod
    def load(cls, directory: str | Path) -> Plan:
        """Read a plan directory; a clear :class:`DataError` names a missing or bad file."""
        d = Path(directory).expanduser()
        if not d.is_dir():
            raise DataError(f"plan directory '{d}' does not exist: {_FIX}, or fix the path")
        for name in (WINDOWS_FILE, CATALOG_FILE, META_FILE):
            if not (d / name).is_file():
                raise DataError(f"plan directory '{d}' has no {name}: {_FIX}")
        try:
            windows = pd.read_parquet(d / WINDOWS_FILE)
            catalog = pd.read_parquet(d / CATALOG_FILE)
            meta = json.loads((d / META_FILE).read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"plan directory '{d}' cannot be read ({e}): {_FIX}") from e
        if meta.get("format") != FORMAT:
            raise DataError(f"'{d / META_FILE}' is not a {FORMAT} plan: {_FIX}")
        _check(d, windows, catalog)
        for col in ("start", "cut", "end"):
            windows[col] = windows[col].astype("datetime64[ns]")
        catalog["first_seen"] = catalog["first_seen"].astype("datetime64[ns]")
        catalog[ITEM] = catalog[ITEM].astype(str)
        shops = [str(s) for s in meta.get("shops", [])]
        return cls(windows, catalog, shops, _digest(d))


def export_plan(data: PreparedData, directory: str | Path) -> Plan:
    """Write the public part of ``data`` (windows, catalogue without counts) as a plan."""
    keep = [*CATALOG_COLUMNS, *(["category"] if "category" in data.catalog else [])]
    plan = Plan(
        windows=data.windows[list(WINDOW_COLUMNS)].reset_index(drop=True),
        catalog=data.catalog[keep].reset_index(drop=True),
        shops=list(data.shops),
    )
    plan.save(directory)
    return plan


def _check(d: Path, windows: pd.DataFrame, catalog: pd.DataFrame) -> None:
    """The invariants the shops and the server rely on."""
    for name, frame, cols in (
        (WINDOWS_FILE, windows, WINDOW_COLUMNS),
        (CATALOG_FILE, catalog, CATALOG_COLUMNS),
    ):
        missing = [c for c in cols if c not in frame]
        if missing:
            raise DataError(f"'{d / name}' lacks column(s) {', '.join(missing)}: {_FIX}")
    problems = []
    if len(windows) == 0:
        problems.append(f"{WINDOWS_FILE} has no window")
    elif not np.array_equal(windows[WINDOW].to_numpy(), np.arange(len(windows))):
        problems.append(f"{WINDOWS_FILE}: windows must be numbered 0, 1, 2, ... in order")
    elif not windows["start"].is_monotonic_increasing:
        problems.append(f"{WINDOWS_FILE}: window starts must increase")
    if not np.array_equal(catalog[ITEM_IDX].to_numpy(), np.arange(len(catalog))):
        problems.append(f"{CATALOG_FILE}: item_idx must be 0, 1, 2, ... in order")
    elif not catalog["first_seen"].is_monotonic_increasing:
        problems.append(f"{CATALOG_FILE}: items must be indexed in order of first_seen")
    elif catalog[ITEM].duplicated().any():
        problems.append(f"{CATALOG_FILE}: an item_id appears twice")
    if problems:
        raise DataError(f"plan '{d}' is inconsistent ({'; '.join(problems)}): {_FIX}")


def _digest(d: Path) -> str:
    h = hashlib.sha256()
    for name in (WINDOWS_FILE, CATALOG_FILE, META_FILE):
        h.update((d / name).read_bytes())
    return h.hexdigest()

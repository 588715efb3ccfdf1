"""A shop's own event log, read incrementally into its private events table.

In a deployment a shop reads only its own log (CSV or Parquet in the layout of the ``csv``
data source: ``user_id, item_id, timestamp[, shop]`` by default; without a shop column every
row is the shop's own) and the operator's public :class:`~fedcl.data.plan.Plan` (window
bounds, product catalogue). Everything written here stays in the shop's state directory;
nothing of it is ever sent.

**Watermark.** The log is append-only. The ingest state records how much of it was
consumed: the number of data rows and, for a CSV, the number of bytes (complete lines only:
a last line without its newline may still be being written and waits for the next call),
plus the sha256 of that consumed prefix (for Parquet, which is rewritten whole, a sha256 of
the consumed rows' values). Each :meth:`ShopIngest.ingest` first checks the prefix against
that hash: a truncated or rewritten log stops with :class:`LogRewritten` instead of learning
rows twice, then reads only what lies after the watermark.

**Validation.** New rows go through the data layer's own validation
(:func:`fedcl.data.validate.validate`: same reasons, same order), then three checks only a
shop can make: ``other_shop`` (the log's shop column names another shop), ``unknown_item``
(the plan's catalogue does not list the item, or lists it as first seen after the event) and
``duplicate`` against rows kept by earlier calls (a hash of each kept input line is kept).
Bad rows go to the local quarantine table with their reason and input line.

**Window assignment.** ``open_window`` is the first window the shop's learner has not
entered yet (its window watermark + 1). A row belongs to the window of its timestamp per the
plan, split into train/test by that window's cut, unless that window was already entered
(or the row predates the plan): such a *late* row goes to ``open_window``, train split. So
no row lands in a window the learner has observed: each is trained exactly once, none is
skipped, and the test part of an entered window never changes. A row after the plan's last
window (or a late row when every window was entered) is *held* and assigned by a later call
whose plan covers it.

**Atomicity.** The watermark, the user map (user id -> private index, in order of first
sight), the events table, the kept-line hashes and the quarantine form one generation of a
:class:`~fedcl.shop.store.GenerationStore`, committed before any learning. A crash
before the commit re-reads the same rows; a crash after it loses nothing, because the
learner's own window watermark still says which windows it has observed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from fedcl.data.config import ShopsConfig, ValidationConfig
from fedcl.data.dataset import GLOBAL_USER, PreparedData
from fedcl.data.plan import Plan
from fedcl.data.schema import (
    ITEM,
    ITEM_IDX,
    REASON,
    ROW,
    SHOP,
    SPLIT,
    TIME,
    USER,
    USER_IDX,
    WINDOW,
    DataError,
)
from fedcl.data.sources.csv import CsvConfig, describe_layout, input_columns, source_frame
from fedcl.data.sources.table_files import PARQUET_SUFFIXES, read_table
from fedcl.data.validate import validate
from fedcl.shop.store import GenerationStore

log = logging.getLogger("fedcl.shop")

HELD = -1  # window of a row no window of the plan can take yet
QUARANTINE_VIEW = "quarantine.csv"  # a readable copy of the quarantine, next to the state
_EMPTY_SHA = hashlib.sha256(b"").hexdigest()
_EVENT_COLUMNS = {"row": np.int64, "user": np.int64, "item": np.int64, "time": np.int64}


class LogRewritten(DataError):
    """The log no longer starts with what was already ingested (truncated or rewritten)."""


@dataclass
class EventLog:
    """Where a shop's own events are, and how to read them."""

    path: str | Path
    plan_dir: str | Path
    #: Column mapping of the ``csv`` data source (``data.user_col=...`` etc.).
    layout: CsvConfig = field(default_factory=CsvConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    shops: ShopsConfig = field(default_factory=ShopsConfig)


@dataclass
class IngestResult:
    """What one :meth:`ShopIngest.ingest` call did."""

    rows: int = 0  # rows read from the log
    kept: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    late: int = 0  # rows placed in the open window because theirs was already entered
    held: int = 0  # rows waiting for a plan that covers them (all of them, not only new)


class ShopIngest:
    """The ingest state of one shop in ``directory`` (a store of its own)."""

    def __init__(self, shop: str, source: EventLog, directory: str | Path) -> None:
        self.shop, self.source = shop, source
        self.path = Path(source.path).expanduser()
        self.plan = Plan.load(source.plan_dir)
        self.dir = Path(directory)
        self.store = GenerationStore(self.dir)
        self.state = self.store.load() or _empty_state()

    @property
    def watermark(self) -> tuple[int, int]:
        """(data rows, bytes) of the log already consumed (bytes: 0 for Parquet)."""
        return int(self.state["log"]["rows"]), int(self.state["log"]["bytes"])

    @property
    def users(self) -> np.ndarray:
        """User ids in order of their private index."""
        return self.state["users"]

    # --- one call ----------------------------------------------------------------------
    def ingest(self, open_window: int) -> IngestResult:
        """Read the rows appended since the watermark, place them, commit; idempotent."""
        result = IngestResult()
        raw, log_state = self._read_new()
        if raw is not None:
            self._take(raw, result)
            self.state["log"] = log_state
        placed, result.late = self._assign(max(int(open_window), 0))
        result.held = int((self.state["events"]["window"] == HELD).sum())
        if raw is not None or placed:
            self.store.save(self.state)
            if sum(result.quarantined.values()):
                self._write_quarantine_view()
        if raw is not None:
            log.info(
                "shop %s: %d new row(s) from %s, %d kept, quarantined %s, %d late, %d held",
                self.shop, result.rows, self.path, result.kept, result.quarantined,
                result.late, result.held,
            )  # fmt: skip
        return result

    # --- reading after the watermark ---------------------------------------------------
    def _read_new(self) -> tuple[pd.DataFrame | None, dict]:
        if not self.path.is_file():
            raise DataError(
                f"shop {self.shop}: its event log '{self.path}' does not exist: pass the "
                "log's path (start_shop.sh --events FILE; node config events=...)"
            )
        if self.path.suffix.lower() in PARQUET_SUFFIXES:
            return self._read_parquet()
        if self.path.suffix.lower() in (".gz", ".bz2", ".xz", ".zip"):
            raise DataError(
                f"shop {self.shop}: '{self.path}' is compressed; an event log is appended to, "
                "so it must be a plain CSV (or a Parquet file rewritten whole)"
            )
        return self._read_csv()

    def _read_csv(self) -> tuple[pd.DataFrame | None, dict]:
        rows, done = self.watermark
        with self.path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < done:
                raise self._rewritten(f"it has {size} bytes, {done} were already ingested")
            h, left = hashlib.sha256(), done
            while left > 0 and (chunk := f.read(min(left, 1 << 20))):
                h.update(chunk)
                left -= len(chunk)
            if h.hexdigest() != self.state["log"]["sha256"]:
                raise self._rewritten(f"its first {done} bytes differ from those ingested")
            tail = f.read()
            f.seek(0)
            header = f.readline() if done else b""
        fresh = tail[: tail.rfind(b"\n") + 1]  # complete lines only
        body = header + fresh
        if not fresh or not body.split(b"\n", 1)[-1].strip():
            return None, self.state["log"]
        tmp = self.dir / f".incoming-{os.getpid()}.csv"
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            tmp.write_bytes(body)
            raw = self._read_table(tmp, where=f"{self.path} after byte {done}")
        finally:
            tmp.unlink(missing_ok=True)
        h.update(fresh)
        return raw, {"rows": rows + len(raw), "bytes": done + len(fresh), "sha256": h.hexdigest()}

    def _read_parquet(self) -> tuple[pd.DataFrame | None, dict]:
        rows, _ = self.watermark
        try:
            n = pq.ParquetFile(self.path).metadata.num_rows
        except Exception as e:  # noqa: BLE001 - any unreadable file: one clear message
            raise DataError(f"shop {self.shop}: cannot read '{self.path}' as Parquet ({e})") from e
        if n < rows:
            raise self._rewritten(f"it has {n} rows, {rows} were already ingested")
        if n == rows == 0:
            return None, self.state["log"]
        raw = self._read_table(self.path, where=str(self.path))
        if rows and _rows_digest(raw.iloc[:rows]) != self.state["log"]["sha256"]:
            raise self._rewritten(f"its first {rows} rows differ from those ingested")
        if n == rows:
            return None, self.state["log"]
        fresh = raw.iloc[rows:].reset_index(drop=True)
        return fresh, {"rows": n, "bytes": 0, "sha256": _rows_digest(raw)}

    def _read_table(self, path: Path, where: str) -> pd.DataFrame:
        layout = self.source.layout
        optional = {layout.shop_col}  # a shop's own log need not name the shop
        try:
            raw = read_table(
                path,
                required=[c for c in input_columns(layout) if c not in optional],
                layout=describe_layout(layout),
                sep=layout.sep,
            )
        except DataError as e:
            raise DataError(str(e).replace(str(path), where)) from e
        return raw.reset_index(drop=True)

    def _layout(self, raw: pd.DataFrame) -> CsvConfig:
        """The log's layout; without its shop column every row is this shop's."""
        layout = self.source.layout
        if layout.shop_col is None or layout.shop_col in raw.columns:
            return layout
        return dataclasses.replace(layout, shop_col=None, default_shop=self.shop)

    def _rewritten(self, what: str) -> LogRewritten:
        rows, _ = self.watermark
        return LogRewritten(
            f"shop {self.shop}: the event log '{self.path}' was truncated or rewritten ({what};"
            f" {rows} rows ingested so far). The log must only be appended to: restore it, or"
            f" to learn it from scratch start the shop with a new --state-dir (the state in"
            f" '{self.dir.parent}' has learned the old rows)"
        )

    # --- validation, indices -----------------------------------------------------------
    def _take(self, raw: pd.DataFrame, result: IngestResult) -> None:
        """Validate new input rows; append kept ones (held) and quarantined ones."""
        first_row, _ = self.watermark
        layout = self._layout(raw)
        src = source_frame(raw, layout)
        checked = validate(src, self.source.shops, self.source.validation)
        kept = checked.kept
        pos = kept[ROW].to_numpy()  # position in ``raw``
        line_hash = _line_hashes(raw)
        items = self.plan.item_indices(kept[ITEM].to_numpy())
        first_seen = self.plan.catalog["first_seen"].to_numpy()
        times = kept[TIME].to_numpy(dtype="datetime64[ns]")
        reason = np.full(len(kept), "", dtype=object)
        if layout.shop_col is not None:
            reason[(kept[SHOP] != self.shop).to_numpy()] = "other_shop"
        unlisted = (items < 0) | (first_seen[np.maximum(items, 0)] > times)
        reason[(reason == "") & unlisted] = "unknown_item"
        seen = np.isin(line_hash[pos], self.state["seen"])
        reason[(reason == "") & seen] = "duplicate"
        bad = reason != ""

        q_rows = np.concatenate([checked.quarantine[ROW].to_numpy(np.int64), pos[bad]])
        q_reasons = np.concatenate([checked.quarantine[REASON].to_numpy(object), reason[bad]])
        q = self.state["quarantine"]
        q["row"] = np.concatenate([q["row"], q_rows + first_row])
        q["reason"] = np.concatenate([q["reason"], q_reasons.astype(str)])
        q["line"] = np.concatenate([q["line"], _json_lines(raw.iloc[q_rows]).astype(str)])

        ok = ~bad
        users = self._user_indices(kept[USER].astype(str).to_numpy()[ok])
        ev = self.state["events"]
        new = {
            "row": pos[ok] + first_row,
            "user": users,
            "item": items[ok],
            "time": times[ok].view(np.int64),
        }
        for key, values in new.items():
            ev[key] = np.concatenate([ev[key], values.astype(np.int64)])
        ev["window"] = np.concatenate([ev["window"], np.full(int(ok.sum()), HELD, np.int64)])
        ev["split"] = np.concatenate([ev["split"], np.zeros(int(ok.sum()), np.int64)])
        self.state["seen"] = np.concatenate([self.state["seen"], line_hash[pos[ok]]])
        result.rows = len(raw)
        result.kept = int(ok.sum())
        counts = pd.Series(q_reasons, dtype=object).value_counts()
        result.quarantined = {str(k): int(v) for k, v in counts.items()}

    def _user_indices(self, ids: np.ndarray) -> np.ndarray:
        """Private indices of user ids, new users numbered in order of first sight."""
        known = pd.Index(self.state["users"])
        codes = known.get_indexer(ids)
        fresh = pd.unique(ids[codes < 0])
        if len(fresh):
            self.state["users"] = np.concatenate([self.state["users"], fresh.astype(str)])
            codes = pd.Index(self.state["users"]).get_indexer(ids)
        return codes.astype(np.int64)

    def _assign(self, open_window: int) -> tuple[int, int]:
        """Give held rows a window (see the module docstring); returns (placed, late)."""
        ev = self.state["events"]
        held = np.flatnonzero(ev["window"] == HELD)
        if not len(held):
            return 0, 0
        plan = self.plan
        t = ev["time"][held].view("datetime64[ns]")
        w = plan.window_of(t)
        late = w < open_window
        target = np.where(late, open_window, w)
        covered = target < plan.n_windows
        cut = plan.windows["cut"].to_numpy(dtype="datetime64[ns]")
        test = ~late & covered & (t >= cut[np.clip(target, 0, plan.n_windows - 1)])
        ev["window"][held] = np.where(covered, target, HELD)
        ev["split"][held] = test.astype(np.int64)
        return int(covered.sum()), int((late & covered).sum())

    # --- what the learner and the shop's staff see -------------------------------------
    def prepared(self) -> PreparedData:
        """The shop's ingested events as one-shop prepared data (catalogue, windows: plan)."""
        ev = self.state["events"]
        placed = ev["window"] != HELD
        if not placed.any():
            rows, _ = self.watermark
            raise DataError(
                f"shop {self.shop}: no usable event in '{self.path}' yet ({rows} rows read, "
                f"{len(self.state['quarantine']['row'])} quarantined: see "
                f"{self.dir / QUARANTINE_VIEW}; {int((~placed).sum())} after the plan's last "
                "window)"
            )
        users = ev["user"][placed]
        events = pd.DataFrame(
            {
                SHOP: pd.Series(self.shop, index=range(int(placed.sum())), dtype=str),
                TIME: ev["time"][placed].view("datetime64[ns]"),
                ITEM_IDX: ev["item"][placed],
                USER_IDX: users,
                GLOBAL_USER: users,
                WINDOW: ev["window"][placed].astype(np.int32),
                SPLIT: pd.Categorical.from_codes(ev["split"][placed], ["train", "test"]),
                ROW: ev["row"][placed],
            }
        )
        events = events.sort_values([TIME, ROW], kind="stable").reset_index(drop=True)
        quarantined = pd.Series(self.state["quarantine"]["reason"]).value_counts()
        number = (
            self.plan.shops.index(self.shop)
            if self.shop in self.plan.shops
            else int(hashlib.sha256(self.shop.encode()).hexdigest()[:8], 16) % 1000
        )
        report = {
            "source": f"log:{self.path.name}",
            "rows_in": self.watermark[0],
            "rows_kept": int(len(ev["row"])),
            "quarantined": {str(k): int(v) for k, v in sorted(quarantined.items())},
            "held": int((~placed).sum()),
            "shops": 1,
            "windows": self.plan.n_windows,
            "items": len(self.plan.catalog),
            "per_shop": {self.shop: {"events": len(events), "users": int(np.unique(users).size)}},
            "shop_number": number,
            "plan_sha256": self.plan.digest,
        }
        return PreparedData(events, self.plan.catalog.copy(), self.plan.windows.copy(), report)

    def quarantine(self) -> pd.DataFrame:
        """The local quarantine: log row, reason and the input line's fields."""
        q = self.state["quarantine"]
        fields = pd.DataFrame([json.loads(line) for line in q["line"]], index=range(len(q["row"])))
        out = pd.DataFrame({ROW: q["row"], REASON: q["reason"]})
        return pd.concat([out, fields], axis=1)

    def _write_quarantine_view(self) -> None:
        tmp = self.dir / f".{QUARANTINE_VIEW}.tmp{os.getpid()}"
        self.quarantine().to_csv(tmp, index=False)
        os.replace(tmp, self.dir / QUARANTINE_VIEW)


def ingest_log(shop: str, source: EventLog, directory: str | Path, open_window: int):
    """Ingest what is new in ``shop``'s log and return its one-shop prepared data."""
    ingest = ShopIngest(shop, source, directory)
    ingest.ingest(open_window)
    if ingest.plan.shops and shop not in ingest.plan.shops:
        log.warning("shop %r is not among the plan's shops %s", shop, ingest.plan.shops)
    return ingest.prepared()


def _empty_state() -> dict:
    return {
        "format": 1,
        "log": {"rows": 0, "bytes": 0, "sha256": _EMPTY_SHA},
        "users": np.zeros(0, dtype="U1"),
        "events": {
            **{k: np.zeros(0, dtype=t) for k, t in _EVENT_COLUMNS.items()},
            "window": np.zeros(0, np.int64),
            "split": np.zeros(0, np.int64),  # 0 train, 1 test
        },
        "seen": np.zeros(0, np.uint64),  # hashes of the input lines kept so far
        "quarantine": {
            "row": np.zeros(0, np.int64),
            "reason": np.zeros(0, dtype="U1"),
            "line": np.zeros(0, dtype="U1"),  # the input line's fields as JSON
        },
    }


def _as_text(raw: pd.DataFrame) -> pd.DataFrame:
    return raw.astype(object).where(raw.notna(), None)


def _line_hashes(raw: pd.DataFrame) -> np.ndarray:
    """A 64-bit hash of each input line (its fields as text)."""
    return pd.util.hash_pandas_object(_as_text(raw), index=False).to_numpy(np.uint64)


def _rows_digest(raw: pd.DataFrame) -> str:
    """sha256 of a table's column names and rows (the Parquet watermark)."""
    h = hashlib.sha256(json.dumps([str(c) for c in raw.columns]).encode())
    h.update(_line_hashes(raw).tobytes())
    return h.hexdigest()


def _json_lines(raw: pd.DataFrame) -> np.ndarray:
    """Each input line's fields as one JSON object (text)."""
    if not len(raw):
        return np.zeros(0, dtype=object)
    text = _as_text(raw).to_json(orient="records", lines=True, force_ascii=True)
    return np.asarray(text.rstrip("\n").split("\n"), dtype=object)

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
rows twice, then reads only what lies after the watermark (:mod:`fedcl.shop.log_reader`).

**Malformed lines.** A CSV log is cut into records at the byte level first
(:mod:`fedcl.shop.log_lines`): a line with the wrong field count, an unbalanced quote, a NUL
byte, bytes that are not UTF-8, or over ``EventLog.max_line_bytes`` is quarantined alone (by
offset, length and sha256; the bytes of a line over the limit are never copied), and its
neighbours are read as usual. Only the good records go to the CSV parser, in bulk. An
unterminated line over the limit is not searched again from its start at each call (the
state records how far it was scanned).

**Validation.** New rows go through the data layer's own validation
(:func:`fedcl.data.validate.validate`: same reasons, same order), then three checks only a
shop can make: ``other_shop`` (the log's shop column names another shop), ``unknown_item``
(the plan's catalogue does not list the item, or lists it as first seen after the event) and
``duplicate`` against rows kept by earlier calls (a hash of each kept input line is kept).
Bad rows go to the local quarantine (:mod:`fedcl.shop.quarantine_file`: an append-only
file beside the state, fsynced before the commit; the state holds only its committed length
and counts per reason, so a generation's size follows the kept rows, not the bad bytes).
Every row read is kept or quarantined with a reason before the watermark passes it.

**Window assignment.** ``open_window`` is the first window the shop's learner has not
entered yet (its window watermark + 1). A row belongs to the window of its timestamp per the
plan, split into train/test by that window's cut, unless that window was already entered
(or the row predates the plan): such a *late* row goes to ``open_window``, train split. So
no row lands in a window the learner has observed: each is trained exactly once, none is
skipped, and the test part of an entered window never changes. A row after the plan's last
window (or a late row when every window was entered) is *held* and assigned by a later call
whose plan covers it.

**Atomicity.** The watermark, the user map (user id -> private index, in order of first
sight), the events table, the kept-line hashes and the quarantine's committed length form one
generation of a :class:`~fedcl.shop.store.GenerationStore`, committed before any learning.
Temporary files a killed process left in the state directory are removed at start. A crash
before the commit re-reads the same rows; a crash after it loses nothing, because the
learner's own window watermark still says which windows it has observed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

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
from fedcl.data.sources.csv import CsvConfig, source_frame
from fedcl.data.validate import validate
from fedcl.shop.log_reader import (  # noqa: F401 - LogRewritten: raised from here
    EMPTY_SHA,
    LogReader,
    LogRewritten,
    NewRows,
    as_text,
    line_hashes,
)
from fedcl.shop.quarantine_file import PRIVATE, QuarantineFile, entry, legacy_entries
from fedcl.shop.store import GenerationStore

log = logging.getLogger("fedcl.shop")

HELD = -1  # window of a row no window of the plan can take yet
QUARANTINE_VIEW = "quarantine.csv"  # a readable copy of the quarantine, next to the state
_EVENT_COLUMNS = {"row": np.int64, "user": np.int64, "item": np.int64, "time": np.int64}
#: Temporary files of an interrupted write (the store's and this module's), with their pid.
_TEMP = re.compile(r"^\..+\.tmp(\d+)$|^\.incoming-(\d+)\.csv$")


@dataclass
class EventLog:
    """Where a shop's own events are, and how to read them."""

    path: str | Path
    plan_dir: str | Path
    #: Column mapping of the ``csv`` data source (``data.user_col=...`` etc.).
    layout: CsvConfig = field(default_factory=CsvConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    shops: ShopsConfig = field(default_factory=ShopsConfig)
    #: A CSV line longer than this is quarantined by reference (offset, length, sha256),
    #: never copied into the state or the quarantine.
    max_line_bytes: int = 65536


@dataclass
class IngestResult:
    """What one :meth:`ShopIngest.ingest` call did."""

    rows: int = 0  # rows read from the log (malformed ones included)
    kept: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    late: int = 0  # rows placed in the open window because theirs was already entered
    held: int = 0  # rows waiting for a plan that covers them (all of them, not only new)


#: How a shop starts its ingest state over (read the whole log again into a fresh state).
INGEST_RESET_HINT = (
    "node config reset-corrupt-state=true (the log is then read again from its start; reset "
    "the shop's learner state too, or rows already learned are learned twice)"
)


class ShopIngest:
    """The ingest state of one shop in ``directory`` (a store of its own). ``reset_corrupt``:
    when no generation of it verifies, move them aside and read the log from its start
    (otherwise that is a :class:`~fedcl.shop.store.CorruptState` error)."""

    def __init__(
        self, shop: str, source: EventLog, directory: str | Path, reset_corrupt: bool = False
    ) -> None:
        self.shop, self.source = shop, source
        self.path = Path(source.path).expanduser()
        self.plan = Plan.load(source.plan_dir)
        self.dir = Path(directory)
        self.store = GenerationStore(
            self.dir,
            what=f"ingest state (log watermark) of shop {shop}",
            reset_hint=INGEST_RESET_HINT,
            reset_corrupt=reset_corrupt,
        )
        self.state = self.store.load() or _empty_state()
        self.state["log"].setdefault("scan", 0)
        _remove_temp_files(self.dir)
        legacy = legacy_entries(self.state)
        self.quarantined = QuarantineFile(self.dir, self.state["quarantine"])
        self.quarantined.recover()
        self.reader = LogReader(shop, source, self.dir)
        if legacy:  # a state of format 1 held its quarantine: move it to the file
            self.quarantined.append(*legacy)
            self.store.save(self.state)

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
        new = self.reader.read(self.state["log"])
        moved = new is not None and new.log != self.state["log"]
        if new is not None:
            lines, reasons = self._take(new, result)
            self.quarantined.append(lines, reasons)  # durable before the watermark moves
            self.state["log"] = new.log
        placed, result.late = self._assign(max(int(open_window), 0))
        result.held = int((self.state["events"]["window"] == HELD).sum())
        if moved or placed:
            self.store.save(self.state)
            if sum(result.quarantined.values()):
                self._write_quarantine_view()
        if new is not None and new.n_rows:
            log.info(
                "shop %s: %d new row(s) from %s, %d kept, quarantined %s, %d late, %d held",
                self.shop, result.rows, self.path, result.kept, result.quarantined,
                result.late, result.held,
            )  # fmt: skip
        return result

    def _layout(self, raw: pd.DataFrame) -> CsvConfig:
        """The log's layout; without its shop column every row is this shop's."""
        layout = self.source.layout
        if layout.shop_col is None or layout.shop_col in raw.columns:
            return layout
        return dataclasses.replace(layout, shop_col=None, default_shop=self.shop)

    # --- validation, indices -----------------------------------------------------------
    def _take(self, new: NewRows, result: IngestResult) -> tuple[list[str], list[str]]:
        """Validate new rows; append kept ones (held) to the events; return the quarantine
        entries (malformed lines and rows failing validation) and their reasons."""
        entries = [
            (b.row, entry(b.row, b.reason, b.offset, b.length, b.sha256, b.raw), b.reason)
            for b in new.bad
        ]
        result.rows, result.kept = new.n_rows, 0
        if new.raw is not None:
            result.kept = self._validate(new, entries)
        entries.sort(key=lambda e: e[0])
        reasons = [reason for _, _, reason in entries]
        counts = pd.Series(reasons, dtype=object).value_counts()
        result.quarantined = {str(k): int(v) for k, v in counts.items()}
        return [line for _, line, _ in entries], reasons

    def _validate(self, new: NewRows, entries: list) -> int:
        """Validate the parsed rows: kept ones to the events table, others to ``entries``
        as (row, quarantine line, reason); returns how many were kept."""
        raw = new.raw
        layout = self._layout(raw)
        src = source_frame(raw, layout)
        checked = validate(src, self.source.shops, self.source.validation)
        kept = checked.kept
        pos = kept[ROW].to_numpy()  # position in ``raw``
        line_hash = line_hashes(raw)
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

        q_pos = np.concatenate([checked.quarantine[ROW].to_numpy(np.int64), pos[bad]])
        q_reasons = np.concatenate([checked.quarantine[REASON].to_numpy(object), reason[bad]])
        fields = _json_lines(raw.iloc[q_pos])
        for p, why, text in zip(q_pos.tolist(), q_reasons.tolist(), fields, strict=True):
            row, line = int(new.rows[p]), new.line(p)
            if line is None:  # Parquet: no bytes to point at; the fields are the row
                digest, offset, length = hashlib.sha256(text.encode()).hexdigest(), None, None
            else:
                digest, offset, length = hashlib.sha256(line).hexdigest(), new.offsets[p], len(line)
                offset = int(offset)
            entries.append((row, entry(row, str(why), offset, length, digest, line, text), why))

        ok = ~bad
        users = self._user_indices(kept[USER].astype(str).to_numpy()[ok])
        ev = self.state["events"]
        added = {
            "row": new.rows[pos[ok]],
            "user": users,
            "item": items[ok],
            "time": times[ok].view(np.int64),
        }
        for key, values in added.items():
            ev[key] = np.concatenate([ev[key], values.astype(np.int64)])
        ev["window"] = np.concatenate([ev["window"], np.full(int(ok.sum()), HELD, np.int64)])
        ev["split"] = np.concatenate([ev["split"], np.zeros(int(ok.sum()), np.int64)])
        self.state["seen"] = np.concatenate([self.state["seen"], line_hash[pos[ok]]])
        return int(ok.sum())

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
                f"{int(self.state['quarantine']['count'])} quarantined: see "
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
        number = (
            self.plan.shops.index(self.shop)
            if self.shop in self.plan.shops
            else int(hashlib.sha256(self.shop.encode()).hexdigest()[:8], 16) % 1000
        )
        report = {
            "source": f"log:{self.path.name}",
            "rows_in": self.watermark[0],
            "rows_kept": int(len(ev["row"])),
            "quarantined": self.quarantined.counts(),
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
        """The local quarantine: log row, reason, where its bytes are (offset, length,
        sha256), the raw line (under the size limit) and the input line's fields."""
        entries = self.quarantined.entries()
        columns = [ROW, REASON, "offset", "length", "sha256", "raw"]
        out = pd.DataFrame([{c: e.get(c) for c in columns} for e in entries], columns=columns)
        fields = pd.DataFrame([e.get("fields") or {} for e in entries], index=out.index)
        return pd.concat([out, fields.drop(columns=columns, errors="ignore")], axis=1)

    def _write_quarantine_view(self) -> None:
        tmp = self.dir / f".{QUARANTINE_VIEW}.tmp{os.getpid()}"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE), "w") as f:
            self.quarantine().to_csv(f, index=False)  # it names customers: owner only
        os.replace(tmp, self.dir / QUARANTINE_VIEW)


def _empty_state() -> dict:
    return {
        "format": 2,
        "log": {"rows": 0, "bytes": 0, "sha256": EMPTY_SHA, "scan": 0},
        "users": np.zeros(0, dtype="U1"),
        "events": {
            **{k: np.zeros(0, dtype=t) for k, t in _EVENT_COLUMNS.items()},
            "window": np.zeros(0, np.int64),
            "split": np.zeros(0, np.int64),  # 0 train, 1 test
        },
        "seen": np.zeros(0, np.uint64),  # hashes of the input lines kept so far
        "quarantine": QuarantineFile.empty_state(),  # the file's committed length, counts
    }


def _remove_temp_files(directory: Path) -> None:
    """Remove what an interrupted write left (its process is gone) in ``directory``."""
    if not directory.is_dir():
        return
    for path in directory.iterdir():
        m = _TEMP.match(path.name)
        if m is None:
            continue
        pid = int(m.group(1) or m.group(2))
        if pid != os.getpid() and _alive(pid):
            continue  # another process is writing it now
        log.info("removing %s, left by an interrupted write", path)
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid < 1 << 22 and not isinstance(pid, bool)
    return True


def _json_lines(raw: pd.DataFrame) -> np.ndarray:
    """Each input line's fields as one JSON object (text)."""
    if not len(raw):
        return np.zeros(0, dtype=object)
    text = as_text(raw).to_json(orient="records", lines=True, force_ascii=True)
    return np.asarray(text.rstrip("\n").split("\n"), dtype=object)

"""What a shop's site reports (``POST /events``): checked like the event log, then appended.

An event is a view, click, add-to-basket or purchase of one item by one customer, optionally
tied to the recommendation request it came from (``request_id``, from ``GET
/recommendations``) and named by the site (``event_id``: a retry with the same id is the same
event). Checks, all before anything is written (a batch is taken whole or not at all):

* the shape (pydantic): known type, non-empty ids without control characters, sizes;
* the event log's own rules, by the same code the agent's ingest runs
  (:func:`fedcl.data.validate.generic_reasons`: ``missing_user``, ``missing_item``,
  ``bad_timestamp``, ``implausible_timestamp`` (before ``data.validation.min_time`` or after
  now), ``duplicate`` within the batch) and the shop's own: ``unknown_item`` (the plan's
  catalogue does not list it, or lists it as first seen after the event).

A rejected batch gets a 422 whose ``problems`` name each event, its field, the reason and
the fix. An accepted one is appended durably (one ``write`` per file, then ``fsync``):

* **purchases** to the shop's event log (the CSV the agent ingests at its next message, into
  the window of their timestamp: learned exactly once, its watermark and duplicate check
  see to that), in the log's own column order;
* **every event** to ``feedback.jsonl`` beside the service's impressions, for the online
  metrics (:mod:`fedcl.serve.online`). Views, clicks and baskets are not learned from: the
  models learn purchases.
"""

from __future__ import annotations

import csv
import io
import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from fedcl.data.config import ShopsConfig, ValidationConfig
from fedcl.data.plan import Plan
from fedcl.data.schema import ITEM, REASON, ROW, SHOP, TIME, USER
from fedcl.data.sources.csv import CsvConfig
from fedcl.data.sources.timestamps import parse_timestamps
from fedcl.data.validate import generic_reasons

EVENT_TYPES = ("view", "click", "add_to_basket", "purchase")
MAX_BATCH = 1000
_ID = r"^[^\x00-\x1f\x7f]+$"  # no control characters (a newline would split a log line)
_TOKEN = r"^[A-Za-z0-9._:-]+$"
FEEDBACK_FILE = "feedback.jsonl"

#: What to do about each problem, by field or reason.
FIXES = {
    "type": f"use one of {', '.join(EVENT_TYPES)}",
    "user": "send the customer's id as a non-empty string without control characters",
    "item": "send the product id as in the plan's catalogue (plan/catalog.parquet)",
    "time": "send ISO 8601 (e.g. 2024-03-01T09:14:00Z), or leave it out to mean now",
    "request_id": "send the request_id a /recommendations answer gave, or leave it out",
    "event_id": "send letters, digits and . _ : - only (at most 128), or leave it out",
    "quantity": "send a whole number from 1 to 10000",
    "events": f'send a JSON object {{"events": [...]}} with 1 to {MAX_BATCH} events',
    "missing_user": "send the customer's id",
    "missing_item": "send the product id",
    "bad_timestamp": "send ISO 8601 (e.g. 2024-03-01T09:14:00Z)",
    "implausible_timestamp": "send the time the event happened (not in the future, not before "
    "data.validation.min_time)",
    "duplicate": "send each event once (the same event twice in one batch)",
    "unknown_item": "send a product of the plan's catalogue, on or after its first_seen; a new "
    "product reaches the catalogue with the operator's next plan",
}


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    type: Literal["view", "click", "add_to_basket", "purchase"]
    user: str = Field(min_length=1, max_length=256, pattern=_ID)
    item: str = Field(min_length=1, max_length=256, pattern=_ID)
    time: str | None = Field(default=None, max_length=64)
    request_id: str | None = Field(default=None, max_length=64, pattern=_TOKEN)
    event_id: str | None = Field(default=None, max_length=128, pattern=_TOKEN)
    quantity: int = Field(default=1, ge=1, le=10_000)


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[Event] = Field(min_length=1, max_length=MAX_BATCH)


@dataclass
class Problem:
    event: int | None
    field: str
    reason: str
    fix: str

    def as_dict(self) -> dict:
        return {"event": self.event, "field": self.field, "reason": self.reason, "fix": self.fix}


class EventChecker:
    """The log's rules for posted events (see the module docstring)."""

    def __init__(self, plan: Plan, shop: str, validation: ValidationConfig) -> None:
        self.plan, self.shop, self.validation = plan, shop, validation
        self.first_seen = plan.catalog["first_seen"].to_numpy("datetime64[ns]")

    def check(self, events: list[Event], now: datetime) -> tuple[pd.Series, list[Problem]]:
        """(event times, problems); no problem means every event may be written."""
        stamp = now.astimezone(UTC).replace(tzinfo=None).isoformat()
        text = pd.Series([e.time or stamp for e in events], dtype=object)
        times = parse_timestamps(text)
        frame = pd.DataFrame(
            {
                USER: pd.Series([e.user for e in events], dtype=object),
                ITEM: pd.Series([e.item for e in events], dtype=object),
                TIME: times,
                SHOP: self.shop,
                ROW: np.arange(len(events)),
                REASON: "",
            }
        )
        raw = pd.DataFrame([e.model_dump() for e in events]).astype(str)
        bounds = ValidationConfig(self.validation.min_time, self.validation.max_time)
        reasons = generic_reasons(frame, raw, ShopsConfig(), bounds).to_numpy(object, copy=True)
        items = self.plan.item_indices(frame[ITEM].to_numpy(object))
        listed = items >= 0
        later = np.zeros(len(events), dtype=bool)
        ok_time = listed & times.notna().to_numpy()
        later[ok_time] = self.first_seen[items[ok_time]] > times.to_numpy("datetime64[ns]")[ok_time]
        reasons[(reasons == "") & (~listed | later)] = "unknown_item"
        field_of = {"missing_user": "user", "missing_item": "item", "unknown_item": "item"}
        problems = [
            Problem(i, field_of.get(r, "time" if "timestamp" in r else "event"), r, FIXES[r])
            for i, r in enumerate(reasons.tolist())
            if r
        ]
        return times, problems


class EventSink:
    """Appends accepted events: purchases to the shop's log, all to ``feedback.jsonl``."""

    def __init__(
        self,
        log_path: str | Path,
        layout: CsvConfig,
        shop: str,
        folder: Path,
        log_purchases: bool = True,
    ) -> None:
        self.log_path, self.layout, self.shop = Path(log_path), layout, shop
        #: False: the shop's own pipeline appends purchases to the log; the service only
        #: records them for the online metrics (else they would be learned twice).
        self.log_purchases = log_purchases
        self.feedback = folder / FEEDBACK_FILE
        self.header = self._header()
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, None] = OrderedDict()  # recent event ids (retries)
        self._recall()

    def _recall(self) -> None:
        """Remember the event ids already written (a retry after a restart is a duplicate
        too: it must not reach the log again, e.g. with a new time, and be learned twice)."""
        if self.log_purchases and "event_id" in self.header:
            # The log too: a crash between the log's write and the feedback file's must not
            # let a retried purchase reach the log twice.
            ids = pd.read_csv(
                self.log_path, usecols=["event_id"], dtype=str, sep=self.layout.sep,
                on_bad_lines="skip", engine="python" if len(self.layout.sep) > 1 else "c",
            )["event_id"].dropna()  # fmt: skip
            for event_id in ids.tolist():
                self._remember(event_id)
        if not self.feedback.exists():
            return
        with open(self.feedback, encoding="utf-8") as f:
            for line in f:
                if not line.endswith("\n"):
                    break  # a last line cut by a crash: not written
                try:
                    event_id = json.loads(line).get("event_id")
                except (json.JSONDecodeError, AttributeError):
                    continue
                if isinstance(event_id, str) and event_id:
                    self._remember(event_id)

    def _header(self) -> list[str]:
        """The log's columns (the log is created with the layout's when it is missing)."""
        lay = self.layout
        if lay.time_format is not None or lay.time_unit is not None:
            raise ValueError(
                "the service writes ISO 8601 timestamps: serve a log whose layout reads them "
                "(no data.time_format / data.time_unit)"
            )
        if not self.log_path.exists() or self.log_path.stat().st_size == 0:
            cols = ["event_id", lay.user_col, lay.item_col, lay.time_col]
            cols += [lay.shop_col] if lay.shop_col else []
            _append(self.log_path, _csv_line(cols, lay.sep))
            return cols
        with open(self.log_path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f, delimiter=lay.sep), [])
        need = [lay.user_col, lay.item_col, lay.time_col]
        missing = [c for c in need if c not in header]
        if missing:
            raise ValueError(
                f"event log {self.log_path} has no column(s) {', '.join(missing)} (header: "
                f"{header}): serve the log the agent reads, with its layout (--user-col ...)"
            )
        return header

    def write(self, events: list[Event], times: pd.Series) -> tuple[int, int, int]:
        """Append ``events`` (checked); returns (accepted, purchases logged, duplicates)."""
        stamps = times.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ").tolist()
        log_lines, feedback, duplicates = [], [], 0
        ids: dict[str, None] = {}  # this batch's event ids, remembered once the log has them
        with self._lock:
            for e, when in zip(events, stamps, strict=True):
                if e.event_id is not None and (e.event_id in self._seen or e.event_id in ids):
                    duplicates += 1
                    continue
                if e.event_id is not None:
                    ids[e.event_id] = None
                record = {**e.model_dump(), "time": when}
                feedback.append(json.dumps(record, sort_keys=True) + "\n")
                if e.type == "purchase" and self.log_purchases:
                    log_lines.append(self._log_line(e, when))
            if log_lines:
                # A last line still waiting for its newline would swallow ours: end it.
                lead = "" if _ends_with_newline(self.log_path) else "\n"
                _append(self.log_path, lead + "".join(log_lines))
            for event_id in ids:  # a failed write is not a duplicate when the site retries
                self._remember(event_id)
            if feedback:
                _append(self.feedback, "".join(feedback))
        return len(feedback), len(log_lines), duplicates

    def _log_line(self, e: Event, when: str) -> str:
        lay = self.layout
        values = {
            lay.user_col: e.user,
            lay.item_col: e.item,
            lay.time_col: when,
            "event_id": e.event_id or "",
            "request_id": e.request_id or "",
            "quantity": str(e.quantity),
        }
        if lay.shop_col:
            values[lay.shop_col] = self.shop
        if lay.quantity_col:
            values[lay.quantity_col] = str(e.quantity)
        return _csv_line([values.get(c, "") for c in self.header], lay.sep)

    def _remember(self, event_id: str, limit: int = 200_000) -> None:
        self._seen[event_id] = None
        if len(self._seen) > limit:
            self._seen.popitem(last=False)


def _csv_line(values: list[str], sep: str) -> str:
    buf = io.StringIO()
    csv.writer(buf, delimiter=sep, lineterminator="\n").writerow(values)
    return buf.getvalue()


def _ends_with_newline(path: Path) -> bool:
    """Whether ``path`` is empty, missing or ends with a newline."""
    try:
        with open(path, "rb") as f:
            if f.seek(0, os.SEEK_END) == 0:
                return True
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"
    except FileNotFoundError:
        return True


def _append(path: Path, text: str) -> None:
    """One write at the end of ``path`` (created 0600), then fsync: whole lines or none."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        data = text.encode("utf-8")
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(f"short write to {path}: {written} of {len(data)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)

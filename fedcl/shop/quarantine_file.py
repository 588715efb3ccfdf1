"""A shop's local quarantine: an append-only JSON-lines file beside its ingest state.

One line per quarantined row, in log order::

    {"row": 57, "offset": 4410, "length": 49, "sha256": "9f2c...", "reason": "field_count",
     "raw": "57,c-1,85123A,2024-03-01T09:14:00,shop_01,extra\\n", "fields": null}

``row``: the data row of the log (0-based, malformed rows counted); ``offset``/``length``:
where its bytes are in the log (null for a Parquet log); ``sha256``: of those bytes (of the
row's fields for Parquet); ``raw``: the line as text (bytes that are not UTF-8 escaped as
``\\xNN``), null for a line over ``max_line_bytes``, which is known by reference only;
``fields``: the parsed fields of a row that was read but failed validation, else null.

**Invariant.** The state commits the file's length with the watermark. Entries are appended
and fsynced *before* the state that advances the watermark is committed, and at start the file
is cut back to the committed length: a crash in between re-reads those rows and writes their
entries once more, never twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger("fedcl.shop")

NAME = "quarantine.jsonl"
#: Mode of the files that hold rows of the log (customer ids): readable by the owner only.
PRIVATE = 0o600


class QuarantineFile:
    """The quarantine of one ingest state directory; ``state``: its part of the state."""

    def __init__(self, directory: Path, state: dict) -> None:
        self.path = Path(directory) / NAME
        self.state = state

    @staticmethod
    def empty_state() -> dict:
        return {
            "bytes": 0,  # committed length of the file
            "count": 0,
            "reasons": np.zeros(0, dtype="U1"),
            "counts": np.zeros(0, np.int64),
        }

    def recover(self) -> None:
        """Cut off entries written after the last committed state (a crash before commit)."""
        committed = int(self.state["bytes"])
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size > committed:
            log.info("%s: dropping %d uncommitted byte(s)", self.path, size - committed)
            with self.path.open("r+b") as f:
                f.truncate(committed)
                os.fsync(f.fileno())
        elif size < committed:
            log.warning(
                "%s has %d bytes, the state committed %d: entries were lost outside fedcl",
                self.path, size, committed,
            )  # fmt: skip
            self.state["bytes"] = size

    def append(self, lines: list[str], reasons: list[str]) -> None:
        """Append entries (JSON text, one per line) durably; the state follows in memory."""
        if not lines:
            return
        payload = "".join(line + "\n" for line in lines).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE)
        with open(fd, "ab") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        counts = dict(
            zip(self.state["reasons"].tolist(), self.state["counts"].tolist(), strict=True)
        )
        for reason, n in pd.Series(reasons, dtype=object).value_counts().items():
            counts[str(reason)] = counts.get(str(reason), 0) + int(n)
        self.state["bytes"] = int(self.state["bytes"]) + len(payload)
        self.state["count"] = int(self.state["count"]) + len(lines)
        self.state["reasons"] = np.asarray(list(counts), dtype=str)
        self.state["counts"] = np.asarray(list(counts.values()), dtype=np.int64)

    def counts(self) -> dict[str, int]:
        """Quarantined rows per reason (committed ones)."""
        pairs = zip(self.state["reasons"].tolist(), self.state["counts"].tolist(), strict=True)
        return {str(r): int(n) for r, n in sorted(pairs)}

    def entries(self) -> list[dict]:
        """The committed entries, in log order."""
        if not self.path.is_file():
            return []
        with self.path.open("rb") as f:
            text = f.read(int(self.state["bytes"]))
        return [json.loads(line) for line in text.splitlines() if line]


def entry(
    row: int,
    reason: str,
    offset: int | None,
    length: int | None,
    sha256: str,
    raw: bytes | None,
    fields: str = "null",
) -> str:
    """One quarantine line; ``fields``: the row's fields as JSON text, or ``"null"``."""
    text = None if raw is None else raw.decode("utf-8", errors="backslashreplace")
    head = json.dumps(
        {"row": row, "offset": offset, "length": length, "sha256": sha256, "reason": reason}
    )
    return f'{head[:-1]}, "raw": {json.dumps(text)}, "fields": {fields}}}'


def legacy_entries(state: dict) -> tuple[list[str], list[str]] | None:
    """A format-1 ingest state's quarantine (rows, reasons and fields held in the state) as
    entries of the file; the state's part becomes that of the file, empty until they are
    appended. None for a state of the current format."""
    q = state["quarantine"]
    if "line" not in q:
        return None
    state["format"] = 2
    state["quarantine"] = QuarantineFile.empty_state()
    rows, reasons = q["row"].tolist(), [str(r) for r in q["reason"].tolist()]
    lines = [
        entry(row, reason, None, None, hashlib.sha256(str(text).encode()).hexdigest(), None, text)
        for row, reason, text in zip(rows, reasons, q["line"].tolist(), strict=True)
    ]
    return lines, reasons

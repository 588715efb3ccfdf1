"""What a shop's event log holds after its watermark, read and checked against it.

A CSV log is append-only: the watermark is (data rows, bytes, sha256 of those bytes), and
what follows is cut into records at the byte level first (:mod:`fedcl.shop.log_lines`), so a
malformed line is set apart alone and only good records reach the CSV parser, in bulk. A
Parquet log is rewritten whole: its watermark is (rows, sha256 of those rows' values).
A log whose consumed part changed stops with :class:`LogRewritten`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from fedcl.data.schema import DataError
from fedcl.data.sources.csv import describe_layout, input_columns
from fedcl.data.sources.csv_sniff import normalise_sep
from fedcl.data.sources.table_files import PARQUET_SUFFIXES, read_table
from fedcl.shop.log_lines import BadLine, read_appended

if TYPE_CHECKING:
    from fedcl.shop.ingest import EventLog

log = logging.getLogger("fedcl.shop")

EMPTY_SHA = hashlib.sha256(b"").hexdigest()


class LogRewritten(DataError):
    """The log no longer starts with what was already ingested (truncated or rewritten)."""


@dataclass
class NewRows:
    """What lies after the watermark, read: parsed rows and malformed ones."""

    raw: pd.DataFrame | None  # the parsed rows (text columns), or None
    rows: np.ndarray  # (len(raw),) data row of the log of each parsed row
    text: bytes | None  # the parsed rows' bytes, concatenated (None: Parquet)
    cuts: np.ndarray  # (len(raw) + 1,) where each row's bytes start and end in ``text``
    offsets: np.ndarray | None  # (len(raw),) byte offset of each in the log (None: Parquet)
    bad: list[BadLine]  # malformed lines, rows of the log
    n_rows: int  # data rows read: parsed + malformed
    log: dict  # the watermark after them

    def line(self, i: int) -> bytes | None:
        """The bytes of parsed row ``i`` (None for Parquet)."""
        return None if self.text is None else self.text[self.cuts[i] : self.cuts[i + 1]]


class LogReader:
    """Reads ``shop``'s log (``source``) after a watermark; ``directory``: its state's."""

    def __init__(self, shop: str, source: EventLog, directory: Path) -> None:
        self.shop, self.source, self.dir = shop, source, directory
        self.path = Path(source.path).expanduser()

    def read(self, watermark: dict) -> NewRows | None:
        """What follows ``watermark`` (None: nothing new), and the watermark after it."""
        self.watermark = watermark
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

    def _read_csv(self) -> NewRows | None:
        rows, done = int(self.watermark["rows"]), int(self.watermark["bytes"])
        limit = int(self.source.max_line_bytes)
        with self.path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < done:
                raise self._rewritten(f"it has {size} bytes, {done} were already ingested")
            header = f.readline(limit + 1)
            if not header.endswith(b"\n"):
                if len(header) > limit:
                    raise DataError(
                        f"shop {self.shop}: the first line of '{self.path}' is over "
                        f"{limit} bytes: it must be the header "
                        f"({describe_layout(self.source.layout)})"
                    )
                return None  # the header is still being written
            f.seek(0)
            h, left = hashlib.sha256(), done
            while left > 0 and (chunk := f.read(min(left, 1 << 20))):
                h.update(chunk)
                left -= len(chunk)
            if h.hexdigest() != self.watermark["sha256"]:
                raise self._rewritten(f"its first {done} bytes differ from those ingested")
            if not done:
                h.update(header)
            start = max(done, len(header))
            sep = normalise_sep(self.source.layout.sep) or ","
            scanned = int(self.watermark.get("scan", 0))
            batch = read_appended(f, start, h, header_fields(header, sep), sep, limit, scanned)
        if batch.end == start and batch.scan == scanned:
            return None  # no complete line yet, nothing new scanned
        state = {"rows": rows + batch.rows, "bytes": batch.end, "sha256": batch.sha256}
        state["scan"] = batch.scan
        for bad in batch.bad:
            bad.row += rows
        raw = None
        if len(batch.good_rows):
            layout = self.source.layout
            required = [c for c in input_columns(layout) if c != layout.shop_col]
            where = f"{self.path} after byte {done}"
            tmp = self.dir / f".incoming-{os.getpid()}.csv"
            n = len(batch.good_rows)
            read = lambda path: self.read_table(path, where)  # noqa: E731
            raw = parse_records(header, batch.good, n, sep, tmp, read, required, where)
        cuts = np.concatenate([[0], np.cumsum(batch.good_lengths)])
        rows_of = batch.good_rows + rows
        return NewRows(
            raw, rows_of, batch.good, cuts, batch.good_offsets, batch.bad, batch.rows, state
        )

    def _read_parquet(self) -> NewRows | None:
        rows = int(self.watermark["rows"])
        try:
            n = pq.ParquetFile(self.path).metadata.num_rows
        except Exception as e:  # noqa: BLE001 - any unreadable file: one clear message
            raise DataError(f"shop {self.shop}: cannot read '{self.path}' as Parquet ({e})") from e
        if n < rows:
            raise self._rewritten(f"it has {n} rows, {rows} were already ingested")
        if n == rows == 0:
            return None
        raw = self.read_table(self.path, where=str(self.path))
        if rows and rows_digest(raw.iloc[:rows]) != self.watermark["sha256"]:
            raise self._rewritten(f"its first {rows} rows differ from those ingested")
        if n == rows:
            return None
        fresh = raw.iloc[rows:].reset_index(drop=True)
        state = {"rows": n, "bytes": 0, "sha256": rows_digest(raw), "scan": 0}
        positions = np.arange(rows, n, dtype=np.int64)
        return NewRows(fresh, positions, None, np.zeros(0), None, [], len(fresh), state)

    def read_table(self, path: Path, where: str) -> pd.DataFrame:
        """``path`` read as a table of text; errors name ``where`` instead of ``path``."""
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

    def _rewritten(self, what: str) -> LogRewritten:
        rows = int(self.watermark["rows"])
        return LogRewritten(
            f"shop {self.shop}: the event log '{self.path}' was truncated or rewritten ({what};"
            f" {rows} rows ingested so far). The log must only be appended to: restore it, or"
            f" to learn it from scratch start the shop with a new --state-dir (the state in"
            f" '{self.dir.parent}' has learned the old rows)"
        )


def header_fields(header: bytes, sep: str) -> int | None:
    """Fields of the header line (None: a separator of several characters, not counted)."""
    if len(sep) != 1:
        return None
    text = header.decode("utf-8", errors="replace")
    return len(next(csv.reader([text], delimiter=sep), []))


def parse_records(
    header: bytes,
    good: bytes,
    n: int,
    sep: str,
    tmp: Path,
    read: Callable[[Path], pd.DataFrame],
    required: list[str],
    where: str,
) -> pd.DataFrame:
    """The ``n`` good records as a table of text: by ``read`` (the bulk CSV reader) from the
    file ``tmp``, or by Python's ``csv`` module where the bulk reader fails or finds another
    number of rows (it may read a quote differently); ``required``: columns the table needs."""
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.write(header)
            f.write(good)
        raw = read(tmp)
        if len(raw) == n:
            return raw
        problem = DataError(f"the CSV reader found {len(raw)} rows in {where}, not {n}")
    except DataError as e:
        problem = e
    finally:
        tmp.unlink(missing_ok=True)
    text = (header + good).decode("utf-8", errors="replace")
    table = list(csv.reader(io.StringIO(text, newline=""), delimiter=sep))
    names = [c.strip() for c in table[0]]
    if len(table) - 1 != n or not set(required) <= set(names):
        raise problem
    log.warning("%s; read with Python's csv module instead", problem)
    raw = pd.DataFrame(table[1:], columns=names, dtype=object).replace("", None)
    return raw.astype("str").where(raw.notna(), None).reset_index(drop=True)


def as_text(raw: pd.DataFrame) -> pd.DataFrame:
    return raw.astype(object).where(raw.notna(), None)


def line_hashes(raw: pd.DataFrame) -> np.ndarray:
    """A 64-bit hash of each input line (its fields as text)."""
    return pd.util.hash_pandas_object(as_text(raw), index=False).to_numpy(np.uint64)


def rows_digest(raw: pd.DataFrame) -> str:
    """sha256 of a table's column names and rows (the Parquet watermark)."""
    h = hashlib.sha256(json.dumps([str(c) for c in raw.columns]).encode())
    h.update(line_hashes(raw).tobytes())
    return h.hexdigest()

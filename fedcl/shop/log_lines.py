"""The bytes appended to a CSV event log, cut into records at the byte level.

What :class:`~fedcl.shop.log_reader.LogReader` reads after the watermark, before any CSV
parser sees it, so that one bad line costs one row and never its neighbours:

* The appended bytes are split on ``b"\\n"`` (a ``\\r`` before it is part of the line
  ending). A line without its newline at the end of the file is not read: it may still be
  being written and waits for the next call.
* A **record** is one line, or several when a quoted field holds a newline (legal CSV): a
  line with an odd number of ``"`` that does not parse alone is joined with the lines up to
  the next line with an odd number of ``"`` when the joined text parses as one record of the
  header's field count, stays under the size limit, and no line in between is a record of
  its own. Otherwise the line alone is malformed (``unbalanced_quote``) and reading resumes
  at the next line, so an unbalanced quote costs one row, never the rows after it. A record
  is judged once its lines are complete: a writer appends whole records (a quote still open
  at the end of the appended lines is an unbalanced quote, not a record to wait for).
* A record is **malformed** when it has another field count than the header
  (``field_count``), a NUL byte (``nul_byte``), bytes that are not UTF-8 (``bad_encoding``),
  an unbalanced quote, or is longer than ``max_line_bytes`` (``line_too_long``; such a line is
  never held in memory whole: it is streamed and known by offset, length and sha256).
* Blank lines carry no event: they are consumed and are not rows.

The per-line work is vectorised (numpy over the bytes); only lines holding quotes or errors
go through Python's ``csv`` module.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

#: Bytes read at a time: a line over the limit is streamed, never held whole.
BLOCK = 1 << 24

#: Reasons of malformed lines, by code (0: a good record).
MALFORMED = ("", "field_count", "unbalanced_quote", "nul_byte", "bad_encoding", "line_too_long")
_FIELDS, _QUOTE, _NUL, _ENCODING, _TOO_LONG = 1, 2, 3, 4, 5


@dataclass
class BadLine:
    """A malformed record: where it is in the log, what it is, why it was not read."""

    row: int  # 0-based among this batch's records
    offset: int  # byte offset in the log
    length: int  # bytes, line ending included
    sha256: str  # of those bytes
    reason: str
    raw: bytes | None  # the bytes, or None when over the limit (known by reference only)


@dataclass
class Batch:
    """The complete records after the watermark."""

    good: bytes  # the good records, concatenated in log order (each ends with its newline)
    good_rows: np.ndarray  # (G,) row of each good record, 0-based among all records here
    good_offsets: np.ndarray  # (G,) byte offset of each in the log
    good_lengths: np.ndarray  # (G,)
    bad: list[BadLine] = field(default_factory=list)
    rows: int = 0  # records: good + malformed
    end: int = 0  # byte offset after the last complete line
    sha256: str = ""  # of the log's bytes [0, end)
    scan: int = 0  # > end: [end, scan) holds no newline and is over the limit (a long tail)


@dataclass
class _Long:
    offset: int
    length: int
    sha256: str


def read_appended(
    f: BinaryIO,
    start: int,
    prefix: hashlib._Hash,
    n_fields: int | None,
    sep: str,
    limit: int,
    scanned: int = 0,
) -> Batch:
    """Records of ``f`` after byte ``start`` (``prefix``: sha256 of the bytes before it).

    ``n_fields``: the header's field count (None: not checked); ``scanned`` > ``start``: the
    bytes ``[start, scanned)`` are known to hold no newline (a long line still being written,
    see :attr:`Batch.scan`), so they are not searched again.
    """
    pieces, end, digest, scan = _scan(f, start, prefix, limit, scanned)
    starts, lengths, codes = [], [], []
    runs: list[tuple[int, bytes]] = []
    for piece in pieces:
        if isinstance(piece, _Long):
            starts.append(np.array([piece.offset]))
            lengths.append(np.array([piece.length]))
            codes.append(np.array([_TOO_LONG], np.int8))
            continue
        offset, buf = piece
        s, n, c = _records(buf, n_fields, sep, limit)
        starts.append(s + offset)
        lengths.append(n)
        codes.append(c)
        runs.append((offset, buf))
    if not starts:
        return Batch(b"", *(np.zeros(0, np.int64),) * 3, end=end, sha256=digest, scan=scan)
    off, length, code = (np.concatenate(a) for a in (starts, lengths, codes))
    longs = {p.offset: p.sha256 for p in pieces if isinstance(p, _Long)}
    bad_rows = np.flatnonzero(code != 0)
    bad = [
        _bad_line(int(r), int(off[r]), int(length[r]), int(code[r]), runs, longs) for r in bad_rows
    ]
    good = code == 0
    return Batch(
        good=_cut(runs, off[good], length[good]),
        good_rows=np.flatnonzero(good).astype(np.int64),
        good_offsets=off[good].astype(np.int64),
        good_lengths=length[good].astype(np.int64),
        bad=bad,
        rows=len(code),
        end=end,
        sha256=digest,
        scan=scan,
    )


# --- pass 1: complete lines, lines over the limit streamed ------------------------------
def _scan(f: BinaryIO, start: int, h: hashlib._Hash, limit: int, scanned: int):
    """(pieces, end, sha256 of [0, end), scan): runs of complete lines ``(offset, bytes)``
    and lines over the limit (:class:`_Long`), in log order."""
    pieces: list = []
    done, h_done = start, h.copy()  # the complete lines so far, and their digest
    pend = b""  # an unterminated line under the limit, from ``done``
    long = None  # sha256 of an unterminated line over the limit, from ``done``
    deferred = scanned > start  # a known long line from ``done``: hashed once it ends
    read_to = scanned if deferred else start
    f.seek(read_to)
    while block := f.read(BLOCK):
        at, read_to = read_to, read_to + len(block)
        if deferred or long is not None:
            i = block.find(b"\n")
            if i < 0:
                if long is not None:
                    long.update(block)
                    h.update(block)
                continue
            if deferred:  # read the long line's start once more, only to hash it
                long = hashlib.sha256()
                _hash_range(f, done, at, (long, h))
                f.seek(read_to)
                deferred = False
            long.update(block[: i + 1])
            h.update(block[: i + 1])
            pieces.append(_Long(done, at + i + 1 - done, long.hexdigest()))
            done, h_done, long = at + i + 1, h.copy(), None
            block = block[i + 1 :]
        data = pend + block if pend else block
        last = data.rfind(b"\n")
        if last >= 0:
            complete = memoryview(data)[: last + 1]
            pieces.extend(_cut_long(complete, done, limit))
            h.update(complete)
            done, h_done = done + last + 1, h.copy()
        rest = data[last + 1 :]
        if len(rest) > limit:
            long, pend = hashlib.sha256(rest), b""
            h.update(rest)
        else:
            pend = bytes(rest)
    return pieces, done, h_done.hexdigest(), (read_to if deferred or long is not None else 0)


def _hash_range(f: BinaryIO, lo: int, hi: int, hashes) -> None:
    f.seek(lo)
    left = hi - lo
    while left > 0 and (chunk := f.read(min(left, BLOCK))):
        for h in hashes:
            h.update(chunk)
        left -= len(chunk)


def _cut_long(complete: memoryview, offset: int, limit: int) -> list:
    """Complete lines as runs ``(offset, bytes)``, lines over the limit as :class:`_Long`."""
    if len(complete) <= limit:
        return [(offset, bytes(complete))]
    ends = np.flatnonzero(np.frombuffer(complete, np.uint8) == 10) + 1
    starts = np.concatenate([[0], ends[:-1]])
    out: list = []
    at = 0
    for i in np.flatnonzero(ends - starts - 1 > limit):
        s, e = int(starts[i]), int(ends[i])
        if s > at:
            out.append((offset + at, bytes(complete[at:s])))
        out.append(_Long(offset + s, e - s, hashlib.sha256(complete[s:e]).hexdigest()))
        at = e
    if at < len(complete):
        out.append((offset + at, bytes(complete[at:])))
    return out


# --- pass 2: records of a run of complete lines -----------------------------------------
def _records(buf: bytes, n_fields: int | None, sep: str, limit: int):
    """(starts, lengths, codes) of the records in ``buf`` (complete lines; blank lines left
    out), offsets relative to ``buf``; code 0 is a good record."""
    a = np.frombuffer(buf, np.uint8)
    ends = np.flatnonzero(a == 10) + 1
    starts = np.concatenate([[0], ends[:-1]])
    cr = (ends - 2 >= starts) & (a[np.maximum(ends - 2, 0)] == 13)
    blank = ends - starts - 1 - cr == 0
    codes = np.zeros(len(ends), np.int8)
    codes[_per_line(a, 0, ends) > 0] = _NUL
    last = ends.copy()  # end of the record starting at each line
    cont = np.zeros(len(ends), bool)  # a line inside a record begun on an earlier line
    if n_fields is not None:  # a one-character separator: fields and quotes are checked
        _join_quoted(buf, a, starts, ends, codes, last, cont, n_fields, sep, limit)
    try:
        buf.decode("utf-8")
    except UnicodeDecodeError:
        for i in np.flatnonzero((codes == 0) & ~cont):
            try:
                buf[starts[i] : last[i]].decode("utf-8")
            except UnicodeDecodeError:
                codes[i] = _ENCODING
    keep = ~cont & ~blank
    return starts[keep], (last - starts)[keep], codes[keep]


def _join_quoted(buf, a, starts, ends, codes, last, cont, n_fields, sep, limit) -> None:
    """Mark lines with the wrong field count or an unbalanced quote (``codes``), and join a
    line that opens a quoted field with the lines up to the next line with an odd number of
    quotes into one record (``last``, ``cont``) where that reads as one record of
    ``n_fields`` fields, no longer than ``limit``, and no line in between is a record of
    its own."""
    quotes = _per_line(a, ord('"'), ends)
    fields = _per_line(a, ord(sep), ends) + 1  # right for lines without quotes
    for i in np.flatnonzero((quotes > 0) & (codes == 0)):
        fields[i] = _fields(buf[starts[i] : ends[i]], sep)
    alone = fields == n_fields  # a record of its own
    odd = np.flatnonzero(quotes % 2 == 1)
    joined = np.zeros(len(ends), bool)
    for i in odd[~alone[odd] & (codes[odd] == 0)]:
        if cont[i]:
            continue
        k = np.searchsorted(odd, i, side="right")
        j = odd[k] if k < len(odd) else -1
        if (
            j > i
            and ends[j] - starts[i] <= limit
            and not codes[i : j + 1].any()
            and not alone[i + 1 : j].any()
            and _fields(buf[starts[i] : ends[j]], sep) == n_fields
        ):
            last[i], cont[i + 1 : j + 1], joined[i] = ends[j], True, True
        else:
            codes[i] = _QUOTE
    codes[(codes == 0) & ~cont & ~alone & ~joined] = _FIELDS


def _per_line(a: np.ndarray, byte: int, ends: np.ndarray) -> np.ndarray:
    """How often ``byte`` occurs in each line (lines end at ``ends`` and cover ``a``)."""
    return np.diff(np.searchsorted(np.flatnonzero(a == byte), ends), prepend=0)


def _fields(record: bytes, sep: str) -> int:
    """Fields of ``record`` when it parses as exactly one CSV record, else -1."""
    text = record.decode("utf-8", errors="replace")
    try:
        rows = list(csv.reader(text.splitlines(keepends=True), delimiter=sep, strict=True))
    except csv.Error:
        return -1
    return len(rows[0]) if len(rows) == 1 else -1


def _bad_line(row: int, offset: int, length: int, code: int, runs, longs) -> BadLine:
    if code == _TOO_LONG:
        return BadLine(row, offset, length, longs[offset], MALFORMED[code], None)
    raw = _slice(runs, offset, length)
    return BadLine(row, offset, length, hashlib.sha256(raw).hexdigest(), MALFORMED[code], raw)


def _slice(runs: list[tuple[int, bytes]], offset: int, length: int) -> bytes:
    for start, buf in runs:
        if start <= offset < start + len(buf):
            return buf[offset - start : offset - start + length]
    raise AssertionError(f"no run holds byte {offset}")


def _cut(runs: list[tuple[int, bytes]], offsets: np.ndarray, lengths: np.ndarray) -> bytes:
    """The records at ``offsets`` (increasing) concatenated: whole runs where every record
    of the run is taken (the normal case: no copy but the join)."""
    parts: list[bytes] = []
    for start, buf in runs:
        lo, hi = np.searchsorted(offsets, [start, start + len(buf)])
        if hi == lo:
            continue
        s, e = offsets[lo:hi] - start, offsets[lo:hi] - start + lengths[lo:hi]
        # Contiguous spans of taken records: a gap means a record left out between them.
        breaks = np.flatnonzero(s[1:] != e[:-1]) + 1
        for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(s)], strict=True):
            lo_b, hi_b = int(s[a]), int(e[b - 1])
            parts.append(buf if (lo_b, hi_b) == (0, len(buf)) else buf[lo_b:hi_b])
    return parts[0] if len(parts) == 1 else b"".join(parts)

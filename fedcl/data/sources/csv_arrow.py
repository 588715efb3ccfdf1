"""The fast path for CSV: an all-text read with pyarrow's CSV reader.

:func:`read_csv_arrow` gives exactly the table the pandas reader
(:func:`fedcl.data.sources.table_files.read_csv_pandas`) gives for the common case, in a
fraction of the time and memory, or None whenever it cannot promise that.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import lzma
import zlib
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from pandas.io.common import infer_compression

from fedcl.data.sources.interning import text_dtype

#: pandas' compression (as inferred from the file name) -> opener of the decompressed
#: content, for the codecs the Arrow reader takes; other files take the pandas reader.
_OPENERS = {None: open, "gzip": gzip.open, "bz2": bz2.open}
#: Bytes of text the Arrow reader parses at a time (and the size of its table chunks):
#: small blocks keep its working memory small, which on a cold start costs more than
#: the parsing itself.
ARROW_BLOCK_SIZE = 4 << 20
#: Bytes kept from the end of the content for the unterminated-quote check.
_TAIL_BYTES = 1 << 16


class _Watched:
    """The (decompressed) content as pyarrow reads it, block by block, noting on the way
    what the checks after parsing need: carriage returns and the last bytes."""

    closed = False

    def __init__(self, fh=None) -> None:
        self._fh = fh
        self.n_cr = 0  # carriage returns
        self.n_crlf = 0  # ... of which followed by a line feed
        self._ends_cr = False
        self.tail = b""  # the last _TAIL_BYTES bytes (or all of them)
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        chunk = self._fh.read(n)
        self.note(chunk)
        return chunk

    def note(self, chunk: bytes) -> None:
        """Account for the next ``chunk`` of the content."""
        if not chunk:
            return
        if b"\r" in chunk:
            self.n_cr += chunk.count(b"\r")
            self.n_crlf += chunk.count(b"\r\n")
        if self._ends_cr and chunk.startswith(b"\n"):
            self.n_crlf += 1
        self._ends_cr = chunk.endswith(b"\r")
        self.size += len(chunk)
        if len(chunk) >= _TAIL_BYTES:
            self.tail = chunk[-_TAIL_BYTES:]
        else:
            self.tail = (self.tail + chunk)[-_TAIL_BYTES:]

    def unterminated_quote(self, last: str | None) -> bool:
        """Whether the content may end inside a quoted field (pandas: "EOF inside string").

        pyarrow ends such a field at the end of the data instead of failing; the field is
        the last one read (``last``: the last column of the last row), and the content then
        ends with a quote followed by ``last`` with each quote doubled. True for every such
        file (and, harmlessly, for some well-formed ones: pandas reads those).
        """
        needle = b'"' + ("" if last is None else last).replace('"', '""').encode("utf-8")
        if len(needle) >= len(self.tail) and self.size > len(self.tail):
            return True  # the field is longer than what was kept: cannot tell
        return self.tail.endswith(needle)


def read_csv_arrow(path: Path, *, sep: str, head: bytes) -> pd.DataFrame | None:
    """All-text read with pyarrow's CSV reader, or None.

    The result is exactly what :func:`~fedcl.data.sources.table_files.read_csv_pandas`
    gives for ``sep`` (one character), ``header=0``, ``names=None`` and ``dtype=str`` on a
    UTF-8 file: every column text, NA only for empty cells (quoted or not). Whenever
    pyarrow cannot promise that it returns None and the caller reads the file with
    pandas, which also words the error for a bad file: rows with a different number of
    fields, invalid UTF-8 (latin-1 files), empty or repeated column names (pandas renames
    those), a single column, bare carriage-return line ends, a quote left open at the
    end, compression pyarrow is not given here, any error while reading.
    """
    dtype = text_dtype()
    if dtype is None or sep in ('"', "\n", "\r"):
        return None
    try:
        opener = _OPENERS[infer_compression(str(path), "infer")]
    except (KeyError, ValueError):
        return None
    # Ask for text columns by name; a column missing here would be type-inferred and is
    # caught by the string check in _reads_as_pandas.
    first = head.decode("utf-8", errors="replace").lstrip("\ufeff").splitlines()
    header = next(csv.reader(first[:1], delimiter=sep), []) if first else []
    try:
        read = _read_watched(path, opener, sep=sep, header=header, head=head)
    except (pa.ArrowException, OSError, EOFError, ValueError, zlib.error, lzma.LZMAError):
        return None
    if read is None or not _reads_as_pandas(*read):
        return None
    mapper = {pa.string(): dtype, pa.large_string(): dtype}.get
    return read[0].to_pandas(types_mapper=mapper)


def _parse(source, *, sep: str, header: list[str], block_size: int) -> pa.Table:
    """The content parsed as text columns, NA only for empty cells."""
    return pacsv.read_csv(
        source,
        # One thread: the same work for a fraction of the CPU time of the thread pool
        # (which also loses wall time on a busy machine).
        read_options=pacsv.ReadOptions(encoding="utf8", use_threads=False, block_size=block_size),
        parse_options=pacsv.ParseOptions(
            delimiter=sep,
            quote_char='"',
            double_quote=True,
            escape_char=False,
            # Quoted line breaks: blocks must not be cut inside a quoted value.
            newlines_in_values=True,
            ignore_empty_lines=True,
        ),
        convert_options=pacsv.ConvertOptions(
            check_utf8=True,
            column_types={name: pa.large_string() for name in header},
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        ),
    )


def _read_watched(
    path: Path, opener, *, sep: str, header: list[str], head: bytes
) -> tuple[pa.Table, _Watched] | None:
    """The parsed table and what was noted on the way; None if too big for one block.

    Raises whatever reading or parsing raises (the caller then leaves the file to pandas).
    """
    content = None
    if b"\r" not in head:
        with opener(path, "rb") as fh:
            content = _Watched(fh)
            source = pa.PythonFile(content, mode="r")
            table = _parse(source, sep=sep, header=header, block_size=ARROW_BLOCK_SIZE)
    if content is None or content.n_cr:
        # Carriage returns: where a block ends inside a quoted value pyarrow can drop
        # the LF of a CR LF, so such content is parsed as one block.
        with opener(path, "rb") as fh:
            data = fh.read()
        if len(data) >= (1 << 31) - 1:  # pyarrow takes a 32-bit block size
            return None
        content = _Watched()
        content.note(data)
        table = _parse(pa.py_buffer(data), sep=sep, header=header, block_size=len(data) + 1)
        del data
    return table, content


def _reads_as_pandas(table: pa.Table, content: _Watched) -> bool:
    """Whether pandas would read the same content into the same table."""
    if content.n_cr != content.n_crlf:
        # Old Mac line ends: pandas' tokenizer drops the leading empty field of a line
        # that follows a blank one there; keep its reading.
        return False
    names = table.column_names
    if len(names) < 2 or "" in names or len(set(names)) != len(names):
        return False
    if not all(pa.types.is_string(t) or pa.types.is_large_string(t) for t in table.schema.types):
        return False
    return not (table.num_rows and content.unterminated_quote(table.column(-1)[-1].as_py()))

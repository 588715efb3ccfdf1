"""Robust reading of input tables (CSV or Parquet) with one clear error per problem.

Every failure to read a file as intended becomes a :class:`~fedcl.data.schema.DataError`
whose message names the file, the problem, how to fix it when we can tell, and the
expected layout, e.g.::

    Cannot read '/data/retail.csv': missing required column(s) 'InvoiceNo' (did you
    mean 'Invoice' for 'InvoiceNo'?); found columns: 'Invoice', 'StockCode'.
    Expected: UCI Online Retail CSV with columns InvoiceNo,StockCode,...
"""

from __future__ import annotations

import bz2
import csv
import difflib
import gzip
import hashlib
import logging
import lzma
import warnings
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from pandas.arrays import ArrowStringArray
from pandas.io.common import infer_compression

from fedcl.data.schema import DataError

log = logging.getLogger(__name__)

PARQUET_SUFFIXES = (".parquet", ".pq")
EXCEL_SUFFIXES = (".xlsx", ".xls", ".xlsm", ".ods")
#: Delimiters we look for when a file does not contain the one it was read with.
CANDIDATE_SEPS = (",", ";", "\t", "|")
#: Bytes of (decompressed) text inspected before parsing.
SNIFF_BYTES = 64 * 1024

_SEP_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
_COMPRESSION_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def _fail(path: Path, problem: str, layout: str, hint: str = "") -> DataError:
    """The one message shape: file, problem, optional fix, expected layout."""
    msg = f"Cannot read '{path}': {problem}."
    if hint:
        msg += f" {hint}"
    return DataError(f"{msg} Expected: {layout}.")


def _sep_label(sep: str) -> str:
    name = _SEP_NAMES.get(sep)
    shown = "\\t" if sep == "\t" else sep
    return f"'{shown}'" + (f" ({name})" if name else "")


def _sep_arg(sep: str) -> str:
    return "'\\t'" if sep == "\t" else f"'{sep}'"


def _normalise_sep(sep: str | None) -> str | None:
    """Accept the two characters ``\\t`` (as typed in YAML or on a command line) for a tab."""
    return "\t" if sep in ("\\t", "tab") else sep


def read_head(path: str | Path, n_bytes: int = SNIFF_BYTES) -> bytes:
    """First ``n_bytes`` of the file's content, decompressed for .gz/.bz2/.xz/.zip files.

    Raises ``OSError``/``EOFError``/``zipfile.BadZipFile``/``lzma.LZMAError`` when the
    file is not what its extension says; :func:`read_table` turns those into messages.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in _COMPRESSION_OPENERS:
        with _COMPRESSION_OPENERS[suffix](path, "rb") as fh:
            return fh.read(n_bytes)
    if suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
            if not names:
                return b""
            with zf.open(names[0]) as fh:
                return fh.read(n_bytes)
    with path.open("rb") as fh:
        return fh.read(n_bytes)


def _binary_problem(head: bytes) -> tuple[str, str] | None:
    """(problem, hint) when the leading bytes are clearly not a text CSV."""
    if head.startswith(b"PAR1"):
        return "it is a Parquet file, not a CSV", "Give it a .parquet extension."
    if head.startswith(b"\x1f\x8b"):
        return "it is gzip-compressed", "Give it a .gz extension (e.g. data.csv.gz)."
    if head.startswith(b"PK\x03\x04"):
        return (
            "it is a ZIP archive (an Excel .xlsx workbook?), not a CSV",
            "Export the sheet as CSV, or give a zipped CSV a .zip extension.",
        )
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "it is UTF-16 encoded", "Re-save it as UTF-8 (or latin-1) CSV."
    if b"\x00" in head:
        return "it looks like a binary file, not a text CSV (it contains NUL bytes)", ""
    return None


def _first_line(head: bytes) -> str:
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    for line in text.splitlines():
        if line.strip():
            return line
    return ""


def _delimiter_problem(line: str, sep: str, *, sep_absent: bool = True) -> str | None:
    """A hint when ``line`` lacks ``sep`` but contains another common delimiter.

    With ``sep_absent=False`` (a header parsed as one column) ``sep`` may occur, quoted.
    """
    if sep_absent and sep in line:
        return None
    counts = {c: line.count(c) for c in CANDIDATE_SEPS if c != sep}
    best = max(counts, key=lambda c: counts[c])
    if counts[best] == 0:
        return None
    name = _SEP_NAMES.get(best, "other")
    return (
        f"the first line contains {'no' if sep not in line else 'only quoted'} "
        f"{_sep_label(sep)} but {counts[best]} {_sep_label(best)}, so the file looks "
        f"{name}-separated: use sep={_sep_arg(best)} (e.g. data.sep={_sep_arg(best)}) "
        "or convert the file"
    )


def _read_csv(
    path: Path,
    *,
    layout: str,
    sep: str | None,
    header: int | None,
    names: list[str] | None,
    dtype: dict | type | None,
) -> pd.DataFrame:
    kwargs: dict = {
        "sep": sep,
        "header": header,
        "names": names,
        "dtype": dtype,
        "keep_default_na": False,
        "na_values": [""],
        "skip_blank_lines": True,
    }
    if isinstance(dtype, dict):
        kwargs["dtype"] = defaultdict(lambda: str, dtype)
    if names is not None:
        kwargs["index_col"] = False
    if sep is None or len(sep) > 1:
        kwargs["engine"] = "python"  # sniffs the delimiter / handles regex separators
    try:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", pd.errors.ParserWarning)
                return pd.read_csv(path, encoding="utf-8", **kwargs)
        except UnicodeDecodeError:
            log.info("%s is not valid UTF-8; reading it as latin-1", path)
            with warnings.catch_warnings():
                warnings.simplefilter("error", pd.errors.ParserWarning)
                return pd.read_csv(path, encoding="latin-1", **kwargs)
    except pd.errors.EmptyDataError as exc:
        raise _fail(path, "it contains no data (no header, no rows)", layout) from exc
    except pd.errors.ParserError as exc:
        detail = str(exc).strip().replace("\n", " ")
        raise _fail(
            path,
            f"it could not be parsed as CSV ({detail})",
            layout,
            "Check the delimiter, the quoting and that every line has the same fields.",
        ) from exc
    except pd.errors.ParserWarning as exc:
        raise _fail(
            path,
            f"some lines have more fields than expected ({exc})",
            layout,
            "Check the delimiter and the number of columns.",
        ) from exc
    except (OSError, EOFError, zipfile.BadZipFile, lzma.LZMAError, zlib.error) as exc:
        raise _fail(
            path,
            f"it could not be decompressed or read ({type(exc).__name__}: {exc})",
            layout,
            "Check that the extension matches the compression (.gz, .bz2, .zip, .xz).",
        ) from exc
    except (ValueError, UnicodeError) as exc:
        raise _fail(path, f"it could not be read as CSV ({exc})", layout) from exc


#: pandas' compression (as inferred from the file name) -> opener of the decompressed
#: content, for the codecs the Arrow reader takes; other files take the pandas reader.
_OPENERS = {None: open, "gzip": gzip.open, "bz2": bz2.open}
#: Bytes of text the Arrow reader parses at a time (and the size of its table chunks):
#: small blocks keep its working memory small, which on a cold start costs more than
#: the parsing itself.
ARROW_BLOCK_SIZE = 4 << 20
#: Bytes kept from the end of the content for the unterminated-quote check.
_TAIL_BYTES = 1 << 16


def _text_dtype():
    """The dtype ``read_csv(dtype=str)`` gives; the Arrow reader is used only when it is
    pandas' Arrow-backed string dtype (pandas >= 3, or ``future.infer_string``)."""
    dtype = pd.Series([], dtype=str).dtype
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        return dtype
    return None


def constant_text(value: str, n: int) -> pd.Series | str:
    """A column of ``n`` times ``value`` as pandas builds it from the scalar, or the scalar
    itself (to be broadcast) where text is not Arrow-backed."""
    dtype = _text_dtype()
    if dtype is None:
        return value
    return pd.Series(
        dtype.__from_arrow__(pa.chunked_array([pa.repeat(pa.scalar(value, pa.large_string()), n)]))
    )


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


def _read_csv_arrow(path: Path, *, sep: str, head: bytes) -> pd.DataFrame | None:
    """All-text read with pyarrow's CSV reader, or None.

    The result is exactly what :func:`_read_csv` gives for ``sep`` (one character),
    ``header=0``, ``names=None`` and ``dtype=str`` on a UTF-8 file: every column text,
    NA only for empty cells (quoted or not). Whenever pyarrow cannot promise that it
    returns None and the caller reads the file with pandas, which also words the error
    for a bad file: rows with a different number of fields, invalid UTF-8 (latin-1
    files), empty or repeated column names (pandas renames those), a single column, bare
    carriage-return line ends, a quote left open at the end, compression pyarrow is not
    given here, any error while reading.
    """
    text_dtype = _text_dtype()
    if text_dtype is None or sep in ('"', "\n", "\r"):
        return None
    try:
        opener = _OPENERS[infer_compression(str(path), "infer")]
    except (KeyError, ValueError):
        return None
    # Ask for text columns by name; a column missing here would be type-inferred and is
    # caught by the string check below.
    first = head.decode("utf-8", errors="replace").lstrip("\ufeff").splitlines()
    header = next(csv.reader(first[:1], delimiter=sep), []) if first else []

    def parse(source, block_size: int):
        return pacsv.read_csv(
            source,
            # One thread: the same work for a fraction of the CPU time of the thread pool
            # (which also loses wall time on a busy machine).
            read_options=pacsv.ReadOptions(
                encoding="utf8", use_threads=False, block_size=block_size
            ),
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

    try:
        content = None
        if b"\r" not in head:
            with opener(path, "rb") as fh:
                content = _Watched(fh)
                table = parse(pa.PythonFile(content, mode="r"), ARROW_BLOCK_SIZE)
        if content is None or content.n_cr:
            # Carriage returns: where a block ends inside a quoted value pyarrow can drop
            # the LF of a CR LF, so such content is parsed as one block.
            with opener(path, "rb") as fh:
                data = fh.read()
            if len(data) >= (1 << 31) - 1:  # pyarrow takes a 32-bit block size
                return None
            content = _Watched()
            content.note(data)
            table = parse(pa.py_buffer(data), len(data) + 1)
            del data
    except (pa.ArrowException, OSError, EOFError, ValueError, zlib.error, lzma.LZMAError):
        return None
    if content.n_cr != content.n_crlf:
        # Old Mac line ends: pandas' tokenizer drops the leading empty field of a line
        # that follows a blank one there; keep its reading.
        return None
    names = table.column_names
    if len(names) < 2 or "" in names or len(set(names)) != len(names):
        return None
    if not all(pa.types.is_string(t) or pa.types.is_large_string(t) for t in table.schema.types):
        return None
    if table.num_rows and content.unterminated_quote(table.column(-1)[-1].as_py()):
        return None
    mapper = {pa.string(): text_dtype, pa.large_string(): text_dtype}.get
    return table.to_pandas(types_mapper=mapper)


def _read_parquet(path: Path, *, layout: str, dtype: dict | type | None) -> pd.DataFrame:
    try:
        import pyarrow as pa

        arrow_errors: tuple[type[BaseException], ...] = (pa.ArrowException,)
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        arrow_errors = ()
    try:
        # Nullable dtypes so integer ids with gaps stay "17", not "17.0", as strings.
        df = pd.read_parquet(path, dtype_backend="numpy_nullable")
    except (*arrow_errors, OSError, ValueError) as exc:
        detail = str(exc).strip().replace("\n", " ")
        raise _fail(path, f"it is not a readable Parquet file ({detail})", layout) from exc
    df.columns = [str(c) for c in df.columns]
    if dtype is str:
        return df.astype(str)
    if isinstance(dtype, dict):
        return df.astype({c: dtype.get(c, str) for c in df.columns})
    if dtype is not None:
        return df.astype(dtype)
    return df


def _missing_columns_message(missing: list[str], found: list[str]) -> str:
    lower = {c.lower(): c for c in found}
    suggestions = []
    for col in missing:
        close = difflib.get_close_matches(col.lower(), list(lower), n=2, cutoff=0.6)
        if close:
            alts = " or ".join(f"'{lower[c]}'" for c in close)
            suggestions.append(f"{alts} for '{col}'")
    msg = "missing required column(s) " + ", ".join(f"'{c}'" for c in missing)
    if suggestions:
        msg += " (did you mean " + "; ".join(suggestions) + "?)"
    shown = ", ".join(f"'{c}'" for c in found[:30])
    if len(found) > 30:
        shown += f", ... ({len(found)} in all)"
    return msg + f"; found columns: {shown or '(none)'}"


def read_table(
    path: str | Path,
    *,
    required: Sequence[str],
    layout: str,
    sep: str | None = ",",
    header: int | None = 0,
    names: list[str] | None = None,
    dtype: dict | type | None = str,
) -> pd.DataFrame:
    """Read a CSV (plain, .gz/.bz2/.zip/.xz) or Parquet (.parquet/.pq) file.

    With the default ``dtype=str`` every column holds strings, with NA only for empty
    cells (text such as ``"NA"`` or ``"null"`` is kept as is); a dict ``dtype`` sets the
    named columns and leaves the others strings; ``dtype=None`` lets pandas infer.
    Column names are stripped of surrounding whitespace. ``required`` columns must all
    be present and at least one data row must exist. ``layout`` describes the expected
    file for error messages.

    Encoding: the file is read as UTF-8; only if that fails is it re-read as latin-1,
    which never fails (every byte is a latin-1 character), so latin-1 is the fallback,
    not a check. ``sep=None`` lets pandas sniff the delimiter; ``"\\t"`` typed as two
    characters means a tab.

    Raises:
        DataError: the file is missing, a directory, empty, binary, not parseable, has
            the wrong delimiter or lacks required columns; the message says which.
    """
    path = Path(path).expanduser()
    sep = _normalise_sep(sep)
    if not path.exists():
        hint = ""
        if path.parent.is_dir():
            siblings = [p.name for p in path.parent.iterdir()]
            close = difflib.get_close_matches(path.name, siblings, n=3, cutoff=0.6)
            if close:
                hint = "Did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
        elif not path.parent.exists():
            hint = f"The directory '{path.parent}' does not exist either."
        raise _fail(path, "file not found", layout, hint)
    if path.is_dir():
        raise _fail(path, "it is a directory, not a file", layout, "Point to the file inside.")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise _fail(path, f"it cannot be accessed ({exc.strerror or exc})", layout) from exc
    if size == 0:
        raise _fail(path, "the file is empty (0 bytes)", layout)

    suffix = path.suffix.lower()
    if suffix in EXCEL_SUFFIXES:
        raise _fail(
            path,
            "Excel/OpenDocument workbooks are not supported",
            layout,
            "Export the sheet as CSV (UTF-8) or Parquet.",
        )
    if suffix in PARQUET_SUFFIXES:
        df = _read_parquet(path, layout=layout, dtype=dtype)
    else:
        try:
            head = read_head(path)
        except (OSError, EOFError, zipfile.BadZipFile, lzma.LZMAError, zlib.error) as exc:
            raise _fail(
                path,
                f"it could not be decompressed ({type(exc).__name__}: {exc})",
                layout,
                "Check that the extension matches the compression (.gz, .bz2, .zip, .xz).",
            ) from exc
        if not head.strip():
            raise _fail(path, "it contains no data (only blank space)", layout)
        binary = _binary_problem(head)
        if binary is not None:
            raise _fail(path, binary[0], layout, binary[1])
        line = _first_line(head)
        n_expected = len(names) if names is not None else len(required)
        if sep is not None and len(sep) == 1 and n_expected > 1:
            problem = _delimiter_problem(line, sep)
            if problem is not None:
                raise _fail(path, problem, layout)
            if header is None and names is not None:
                n_fields = len(next(csv.reader([line], delimiter=sep), []))
                if n_fields != len(names):
                    raise _fail(
                        path,
                        f"the first line has {n_fields} {_sep_label(sep)}-separated "
                        f"field(s), expected {len(names)} ({', '.join(names)})",
                        layout,
                    )
        df = None
        if dtype is str and header == 0 and names is None and sep is not None and len(sep) == 1:
            df = _read_csv_arrow(path, sep=sep, head=head)
        if df is None:
            df = _read_csv(path, layout=layout, sep=sep, header=header, names=names, dtype=dtype)
        df.columns = [str(c).strip() for c in df.columns]
        if sep is not None and len(df.columns) == 1 and n_expected > 1:
            # Header-based fallback, e.g. when the first line was quoted.
            only = str(df.columns[0])
            problem = _delimiter_problem(only, sep, sep_absent=False)
            if problem is not None:
                raise _fail(path, problem, layout)

    found = [str(c) for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise _fail(path, _missing_columns_message(missing, found), layout)
    if len(df) == 0:
        raise _fail(path, "it has a header but no data rows", layout)
    return df


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of the file's bytes, read in chunks (constant memory)."""
    path = Path(path).expanduser()
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(chunk_size):
                digest.update(chunk)
    except FileNotFoundError as exc:
        raise DataError(f"Cannot hash '{path}': file not found.") from exc
    except IsADirectoryError as exc:
        raise DataError(f"Cannot hash '{path}': it is a directory, not a file.") from exc
    except OSError as exc:
        raise DataError(f"Cannot hash '{path}': {exc.strerror or exc}.") from exc
    return digest.hexdigest()


# --- column parsing helpers shared by the sources -------------------------------------

#: Accepted epoch units for :func:`parse_timestamps`.
EPOCH_UNITS = ("s", "ms", "us", "ns")


def _same_text(a: pd.Series, b: pd.Series) -> bool:
    """Both Arrow-backed text with exactly the same values (and missing ones) in order."""
    if not (isinstance(a.array, ArrowStringArray) and isinstance(b.array, ArrowStringArray)):
        return False
    if a.dtype != b.dtype or len(a) != len(b):
        return False
    return bool(a.array.__arrow_array__().equals(b.array.__arrow_array__()))


def _factorize(values: pd.Series) -> tuple[np.ndarray, pd.Series] | None:
    """For Arrow-backed text, ``pd.factorize(values, use_na_sentinel=False)`` as (32-bit
    codes, distinct values as a Series of the same dtype); None for other columns."""
    if not isinstance(values.array, ArrowStringArray):
        return None
    encoded = values.array.__arrow_array__().dictionary_encode(null_encoding="encode")
    if not isinstance(encoded, pa.ChunkedArray) or not encoded.num_chunks:
        return None
    # Every chunk carries the whole dictionary: its codes are common to all chunks.
    codes = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in encoded.chunks])
    dictionary = encoded.chunk(encoded.num_chunks - 1).dictionary
    uniques = values.dtype.__from_arrow__(pa.chunked_array([dictionary]))
    return codes, pd.Series(uniques, name=values.name)


class Distinct:
    """A column factorized once, to compute element-wise functions once per distinct value.

    ``Distinct(values).map(func)`` equals ``func(values)`` for an element-wise ``func``:
    ``func`` gets the distinct values (missing ones included) in order of first
    occurrence with a fresh RangeIndex, and the result is spread back to ``values``'
    index. Much faster than ``func(values)`` for costly functions (number or date
    parsing, regexes, string edits) on Arrow-backed text with few distinct values; other
    columns, and columns of mostly distinct values, take the direct call.
    """

    def __init__(self, values: pd.Series) -> None:
        self.values = values
        factorized = _factorize(values)
        self.direct = factorized is None or len(factorized[1]) * 2 > len(values)
        if not self.direct:
            self.codes, self.distinct = factorized

    def map(self, func: Callable[[pd.Series], pd.Series]) -> pd.Series:
        values = self.values
        if self.direct:
            return func(values)
        mapped = func(self.distinct)
        if _same_text(mapped, self.distinct) and mapped.dtype == values.dtype:
            # Nothing changed (e.g. nothing to strip): no need to build the column again.
            return pd.Series(values.array, index=values.index, name=mapped.name)
        if isinstance(mapped.dtype, np.dtype):
            spread = mapped.to_numpy()[self.codes]
        else:
            spread = mapped.array.take(self.codes)
        return pd.Series(spread, index=values.index, name=mapped.name, copy=False)


def map_distinct(values: pd.Series, func: Callable[[pd.Series], pd.Series]) -> pd.Series:
    """``func(values)`` for an element-wise ``func``, computed once per distinct value
    (see :class:`Distinct`)."""
    return Distinct(values).map(func)


def clean_strings(values: pd.Series) -> pd.Series:
    """Strings stripped of surrounding whitespace; empty or missing cells become NA."""
    out = values.astype("str").str.strip()
    return out.mask(out == "")


def guess_epoch_unit(numbers: pd.Series) -> str:
    """The epoch unit that puts the median magnitude of ``numbers`` after ~1973."""
    median = float(numbers.abs().median()) if numbers.notna().any() else 0.0
    for unit, limit in (("s", 1e11), ("ms", 1e14), ("us", 1e17)):
        if median < limit:
            return unit
    return "ns"


def _to_ns(times: pd.Series) -> pd.Series:
    """Naive UTC ``datetime64[ns]``; values outside the ns range (years ~1678-2262) → NaT."""
    if isinstance(times.dtype, pd.DatetimeTZDtype):
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    out_of_range = (times < pd.Timestamp.min) | (times > pd.Timestamp.max)
    return times.mask(out_of_range).astype("datetime64[ns]")


def parse_timestamps(
    values: pd.Series, *, unit: str | None = None, format: str | None = None
) -> pd.Series:
    """Parse a column of strings into naive-UTC ``datetime64[ns]``; bad values → NaT.

    ``unit`` ("s" | "ms" | "us" | "ns") reads epoch numbers; ``format`` is a strftime
    format. With neither, ISO 8601 is tried first; if most values fail, pandas' format
    inference is tried, and a column of plain numbers is read as epoch time with the
    unit guessed from its magnitude (:func:`guess_epoch_unit`). Values with a UTC offset
    are converted to UTC. Never raises for bad values (only for a bad ``unit``).
    """
    index = values.index
    if unit is not None:
        if unit not in EPOCH_UNITS:
            raise DataError(f"time unit must be one of {', '.join(EPOCH_UNITS)}, not {unit!r}.")
        numbers = pd.to_numeric(values, errors="coerce", dtype_backend="numpy_nullable")
        return _to_ns(pd.to_datetime(numbers, unit=unit, errors="coerce")).set_axis(index)
    text = clean_strings(values)
    if format is not None:
        parsed = pd.to_datetime(text, format=format, errors="coerce", utc=True)
        return _to_ns(parsed).set_axis(index)
    parsed = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
    n_values = int(text.notna().sum())
    n_bad = n_values - int(parsed.notna().sum())
    if n_bad * 2 > n_values:
        numbers = pd.to_numeric(text, errors="coerce", dtype_backend="numpy_nullable")
        if int(numbers.notna().sum()) * 2 > n_values:
            guessed = guess_epoch_unit(numbers.dropna())
            log.info("reading numeric timestamps as epoch %s (guessed from magnitude)", guessed)
            parsed = pd.to_datetime(numbers, unit=guessed, errors="coerce", utc=True)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                inferred = pd.to_datetime(text, errors="coerce", utc=True)
            if int(inferred.notna().sum()) > int(parsed.notna().sum()):
                parsed = inferred
    return _to_ns(parsed).set_axis(index)

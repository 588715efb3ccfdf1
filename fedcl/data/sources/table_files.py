"""Reading input tables (CSV or Parquet) with one clear error per problem.

Every failure to read a file as intended becomes a :class:`~fedcl.data.schema.DataError`
whose message names the file, the problem, how to fix it when we can tell, and the
expected layout, e.g.::

    Cannot read '/data/retail.csv': missing required column(s) 'InvoiceNo' (did you
    mean 'Invoice' for 'InvoiceNo'?); found columns: 'Invoice', 'StockCode'.
    Expected: UCI Online Retail CSV with columns InvoiceNo,StockCode,...

A plain all-text CSV takes the Arrow fast path (:mod:`fedcl.data.sources.csv_arrow`);
everything else, and whatever that path cannot promise to read exactly as pandas does,
takes :func:`read_csv_pandas`.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import logging
import lzma
import warnings
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from fedcl.data.schema import DataError
from fedcl.data.sources.csv_arrow import read_csv_arrow
from fedcl.data.sources.csv_sniff import (
    binary_problem,
    delimiter_problem,
    first_line,
    normalise_sep,
    read_head,
    sep_label,
)

log = logging.getLogger(__name__)

PARQUET_SUFFIXES = (".parquet", ".pq")
EXCEL_SUFFIXES = (".xlsx", ".xls", ".xlsm", ".ods")
#: What a compressed file can raise when it is not what its extension says.
_DECOMPRESSION_ERRORS = (OSError, EOFError, zipfile.BadZipFile, lzma.LZMAError, zlib.error)


def _fail(path: Path, problem: str, layout: str, hint: str = "") -> DataError:
    """The one message shape: file, problem, optional fix, expected layout."""
    msg = f"Cannot read '{path}': {problem}."
    if hint:
        msg += f" {hint}"
    return DataError(f"{msg} Expected: {layout}.")


def read_csv_pandas(
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
    except _DECOMPRESSION_ERRORS as exc:
        raise _fail(
            path,
            f"it could not be decompressed or read ({type(exc).__name__}: {exc})",
            layout,
            "Check that the extension matches the compression (.gz, .bz2, .zip, .xz).",
        ) from exc
    except (ValueError, UnicodeError) as exc:
        raise _fail(path, f"it could not be read as CSV ({exc})", layout) from exc


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
    sep = normalise_sep(sep)
    _check_file(path, layout)
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
        n_expected = len(names) if names is not None else len(required)
        df = _read_csv_file(
            path,
            layout=layout,
            sep=sep,
            header=header,
            names=names,
            dtype=dtype,
            n_expected=n_expected,
        )

    found = [str(c) for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise _fail(path, _missing_columns_message(missing, found), layout)
    if len(df) == 0:
        raise _fail(path, "it has a header but no data rows", layout)
    return df


def _check_file(path: Path, layout: str) -> None:
    """Raise unless ``path`` is an existing, accessible, non-empty file."""
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


def _read_csv_file(
    path: Path,
    *,
    layout: str,
    sep: str | None,
    header: int | None,
    names: list[str] | None,
    dtype: dict | type | None,
    n_expected: int,
) -> pd.DataFrame:
    """A CSV read by the Arrow fast path where it applies, else by pandas; the first
    bytes and line are checked first so a wrong file gets a message, not a parser error."""
    head = _checked_head(path, layout)
    _check_first_line(
        first_line(head), path, layout, sep=sep, header=header, names=names, n_expected=n_expected
    )
    df = None
    if dtype is str and header == 0 and names is None and sep is not None and len(sep) == 1:
        df = read_csv_arrow(path, sep=sep, head=head)
    if df is None:
        df = read_csv_pandas(path, layout=layout, sep=sep, header=header, names=names, dtype=dtype)
    df.columns = [str(c).strip() for c in df.columns]
    if sep is not None and len(df.columns) == 1 and n_expected > 1:
        # Header-based fallback, e.g. when the first line was quoted.
        only = str(df.columns[0])
        problem = delimiter_problem(only, sep, sep_absent=False)
        if problem is not None:
            raise _fail(path, problem, layout)
    return df


def _checked_head(path: Path, layout: str) -> bytes:
    """The file's first bytes (decompressed); raise if they are blank or not text CSV."""
    try:
        head = read_head(path)
    except _DECOMPRESSION_ERRORS as exc:
        raise _fail(
            path,
            f"it could not be decompressed ({type(exc).__name__}: {exc})",
            layout,
            "Check that the extension matches the compression (.gz, .bz2, .zip, .xz).",
        ) from exc
    if not head.strip():
        raise _fail(path, "it contains no data (only blank space)", layout)
    binary = binary_problem(head)
    if binary is not None:
        raise _fail(path, binary[0], layout, binary[1])
    return head


def _check_first_line(
    line: str,
    path: Path,
    layout: str,
    *,
    sep: str | None,
    header: int | None,
    names: list[str] | None,
    n_expected: int,
) -> None:
    """Raise when the first line shows the wrong delimiter or field count."""
    if sep is None or len(sep) != 1 or n_expected <= 1:
        return
    problem = delimiter_problem(line, sep)
    if problem is not None:
        raise _fail(path, problem, layout)
    if header is None and names is not None:
        n_fields = len(next(csv.reader([line], delimiter=sep), []))
        if n_fields != len(names):
            raise _fail(
                path,
                f"the first line has {n_fields} {sep_label(sep)}-separated "
                f"field(s), expected {len(names)} ({', '.join(names)})",
                layout,
            )


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

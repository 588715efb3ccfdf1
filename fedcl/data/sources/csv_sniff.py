"""What an input file looks like before it is parsed: its first bytes (decompressed),
signatures of files that are not text CSV, and the delimiter its first line suggests.

These checks let :func:`fedcl.data.sources.table_files.read_table` say "the file looks
semicolon-separated: use sep=';'" instead of handing on a parser's traceback.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import zipfile
from pathlib import Path

#: Delimiters we look for when a file does not contain the one it was read with.
CANDIDATE_SEPS = (",", ";", "\t", "|")
#: Bytes of (decompressed) text inspected before parsing.
SNIFF_BYTES = 64 * 1024

_SEP_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
_COMPRESSION_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def sep_label(sep: str) -> str:
    """``',' (comma)``-style label of a delimiter for messages."""
    name = _SEP_NAMES.get(sep)
    shown = "\\t" if sep == "\t" else sep
    return f"'{shown}'" + (f" ({name})" if name else "")


def sep_arg(sep: str) -> str:
    """The delimiter as typed in an override (``'\\t'`` for a tab)."""
    return "'\\t'" if sep == "\t" else f"'{sep}'"


def normalise_sep(sep: str | None) -> str | None:
    """Accept the two characters ``\\t`` (as typed in YAML or on a command line) for a tab."""
    return "\t" if sep in ("\\t", "tab") else sep


def read_head(path: str | Path, n_bytes: int = SNIFF_BYTES) -> bytes:
    """First ``n_bytes`` of the file's content, decompressed for .gz/.bz2/.xz/.zip files.

    Raises ``OSError``/``EOFError``/``zipfile.BadZipFile``/``lzma.LZMAError`` when the
    file is not what its extension says;
    :func:`~fedcl.data.sources.table_files.read_table` turns those into messages.
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


def binary_problem(head: bytes) -> tuple[str, str] | None:
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


def first_line(head: bytes) -> str:
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    for line in text.splitlines():
        if line.strip():
            return line
    return ""


def delimiter_problem(line: str, sep: str, *, sep_absent: bool = True) -> str | None:
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
        f"{sep_label(sep)} but {counts[best]} {sep_label(best)}, so the file looks "
        f"{name}-separated: use sep={sep_arg(best)} (e.g. data.sep={sep_arg(best)}) "
        "or convert the file"
    )

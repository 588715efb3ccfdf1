"""Helpers that write small generated input files into ``tmp_path``."""

from __future__ import annotations

import bz2
import gzip
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pandas as pd
import pytest


def _write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data``, compressed according to the file extension (.gz/.bz2/.zip)."""
    suffix = path.suffix.lower()
    if suffix == ".gz":
        data = gzip.compress(data)
    elif suffix == ".bz2":
        data = bz2.compress(data)
    elif suffix == ".zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(path.stem, data)
        return path
    path.write_bytes(data)
    return path


@pytest.fixture
def write_text(tmp_path: Path) -> Callable[..., Path]:
    """``write_text(name, text, encoding="utf-8")`` → path (compressed by extension)."""

    def write(name: str, text: str, encoding: str = "utf-8") -> Path:
        return _write_bytes(tmp_path / name, text.encode(encoding))

    return write


@pytest.fixture
def write_bytes(tmp_path: Path) -> Callable[[str, bytes], Path]:
    """``write_bytes(name, data)`` → path, written verbatim."""

    def write(name: str, data: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return write


@pytest.fixture
def write_udata(tmp_path: Path) -> Callable[..., Path]:
    """``write_udata(rows, name="u.data")``: ML-100K lines ``user\\titem\\trating\\tts``."""

    def write(rows: Iterable[Sequence[object]], name: str = "u.data") -> Path:
        text = "".join("\t".join(str(v) for v in row) + "\n" for row in rows)
        return _write_bytes(tmp_path / name, text.encode())

    return write


@pytest.fixture
def write_ratings_csv(tmp_path: Path) -> Callable[..., Path]:
    """``write_ratings_csv(rows, name="ratings.csv")`` with header userId,movieId,..."""

    def write(rows: Iterable[Sequence[object]], name: str = "ratings.csv") -> Path:
        lines = ["userId,movieId,rating,timestamp"]
        lines += [",".join(str(v) for v in row) for row in rows]
        return _write_bytes(tmp_path / name, ("\n".join(lines) + "\n").encode())

    return write


@pytest.fixture
def write_frame(tmp_path: Path) -> Callable[..., Path]:
    """``write_frame(df, name, sep=",")``: CSV (compressed by extension) or Parquet."""

    def write(df: pd.DataFrame, name: str, sep: str = ",") -> Path:
        path = tmp_path / name
        if path.suffix.lower() in (".parquet", ".pq"):
            df.to_parquet(path, index=False)
            return path
        return _write_bytes(path, df.to_csv(index=False, sep=sep).encode())

    return write

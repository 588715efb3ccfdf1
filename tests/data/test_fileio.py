"""read_table / sha256_file / parsing helpers: happy paths and every DataError case."""

from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcl.data.schema import DataError
from fedcl.data.sources.interning import clean_strings
from fedcl.data.sources.table_files import read_table, sha256_file
from fedcl.data.sources.timestamps import guess_epoch_unit, parse_timestamps

LAYOUT = "test CSV with columns user_id,item_id,timestamp"
REQ = ["user_id", "item_id", "timestamp"]
CSV_TEXT = "user_id,item_id,timestamp\nu1,i1,2020-01-01\nu2,,2020-01-02\nNA,i3,\n"


def _error(path, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        read_table(path, **{"required": REQ, "layout": LAYOUT, **kwargs})
    msg = str(info.value)
    assert str(path) in msg
    assert LAYOUT in msg
    return msg


# --- reading ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ev.csv", "ev.csv.gz", "ev.csv.bz2", "ev.csv.zip", "ev.txt"])
def test_reads_csv_as_strings(write_text, name):
    df = read_table(write_text(name, CSV_TEXT), required=REQ, layout=LAYOUT)
    assert list(df.columns) == REQ
    assert len(df) == 3
    assert all(pd.api.types.is_string_dtype(df[c]) for c in df.columns)
    assert df["user_id"].tolist() == ["u1", "u2", "NA"]  # text "NA" is kept
    assert df["item_id"].isna().tolist() == [False, True, False]  # empty cell is NA
    assert df["timestamp"].isna().tolist() == [False, False, True]


def test_dtype_override_and_header_none(write_text):
    path = write_text("x.tsv", "1\t2.5\n3\t\n")
    df = read_table(
        path,
        required=["a", "b"],
        layout=LAYOUT,
        sep="\t",
        header=None,
        names=["a", "b"],
        dtype={"b": "float64"},
    )
    assert df["a"].tolist() == ["1", "3"]
    assert df["b"].dtype == np.float64
    assert np.isnan(df["b"].iloc[1])


def test_tab_written_as_backslash_t_is_a_tab(write_text):
    df = read_table(
        write_text("x.tsv", "a\tb\n1\t2\n"), required=["a", "b"], layout=LAYOUT, sep="\\t"
    )
    assert df.to_dict("list") == {"a": ["1"], "b": ["2"]}


def test_column_names_are_stripped_and_bom_removed(write_text):
    path = write_text("x.csv", "\ufeff user_id , item_id,timestamp\n1,2,3\n")
    assert list(read_table(path, required=REQ, layout=LAYOUT).columns) == REQ


def test_parquet_becomes_strings_without_float_ids(write_frame):
    df = pd.DataFrame(
        {
            "user_id": pd.array([17, None], dtype="Int64"),
            "item_id": ["a", None],
            "timestamp": [1_600_000_000, 1_600_000_001],
        }
    )
    path = write_frame(df, "ev.parquet")
    out = read_table(path, required=REQ, layout=LAYOUT)
    assert out["user_id"].iloc[0] == "17"
    assert out["user_id"].isna().iloc[1] and out["item_id"].isna().iloc[1]
    assert out["timestamp"].tolist() == ["1600000000", "1600000001"]
    native = read_table(path, required=REQ, layout=LAYOUT, dtype=None)
    assert pd.api.types.is_integer_dtype(native["timestamp"])


def test_latin1_file_is_still_read(write_text):
    path = write_text(
        "x.csv", "user_id,item_id,timestamp\nJosé,Café crème,2020-01-01\n", encoding="latin-1"
    )
    df = read_table(path, required=REQ, layout=LAYOUT)
    assert df["user_id"].iloc[0] == "José"
    assert df["item_id"].iloc[0] == "Café crème"


def test_utf8_is_preferred_over_latin1(write_text):
    path = write_text("x.csv", "user_id,item_id,timestamp\nJosé,€,1\n")
    assert read_table(path, required=REQ, layout=LAYOUT)["item_id"].iloc[0] == "€"


# --- DataError cases --------------------------------------------------------------------


def test_missing_file_suggests_close_name(tmp_path, write_text):
    write_text("events.csv.gz", CSV_TEXT)
    msg = _error(tmp_path / "events.csv")
    assert "file not found" in msg
    assert "events.csv.gz" in msg


def test_missing_directory(tmp_path):
    msg = _error(tmp_path / "nope" / "x.csv")
    assert "file not found" in msg and "does not exist" in msg


def test_directory(tmp_path):
    assert "is a directory" in _error(tmp_path)


def test_empty_file(write_bytes):
    assert "empty (0 bytes)" in _error(write_bytes("x.csv", b""))


def test_blank_file(write_text):
    assert "no data" in _error(write_text("x.csv", "\n \n\n"))


def test_empty_compressed_file(write_text):
    assert "no data" in _error(write_text("x.csv.gz", ""))


def test_header_only(write_text):
    assert "header but no data rows" in _error(write_text("x.csv", "user_id,item_id,timestamp\n"))


def test_binary_garbage(write_bytes):
    data = bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8))
    msg = _error(write_bytes("x.csv", b"\x00\x01" + data))
    assert "binary file" in msg


def test_binary_garbage_without_nul_is_still_a_data_error(write_bytes):
    data = bytes(np.random.default_rng(1).integers(1, 256, 4096, dtype=np.uint8))
    msg = _error(write_bytes("x.csv", data))
    assert "Cannot read" in msg


def test_parquet_with_csv_extension(write_frame, tmp_path):
    src = write_frame(pd.DataFrame({"user_id": ["1"]}), "x.parquet")
    target = tmp_path / "x.csv"
    target.write_bytes(src.read_bytes())
    assert ".parquet extension" in _error(target)


def test_gzip_without_gz_extension(write_bytes):
    assert "gzip-compressed" in _error(write_bytes("x.csv", gzip.compress(CSV_TEXT.encode())))


def test_gz_extension_but_not_gzip(write_bytes):
    msg = _error(write_bytes("x.csv.gz", CSV_TEXT.encode()))
    assert "decompress" in msg and ".gz" in msg


def test_utf16_file(write_bytes):
    assert "UTF-16" in _error(write_bytes("x.csv", CSV_TEXT.encode("utf-16")))


def test_excel_workbook(write_bytes):
    assert "Export the sheet as CSV" in _error(write_bytes("x.xlsx", b"PK\x03\x04xx"))


def test_broken_parquet(write_bytes):
    assert "not a readable Parquet file" in _error(write_bytes("x.parquet", b"not parquet"))


@pytest.mark.parametrize(("sep", "shown"), [(";", "';'"), ("\t", "'\\t'"), ("|", "'|'")])
def test_wrong_delimiter_names_the_right_one(write_text, sep, shown):
    path = write_text("x.csv", f"user_id{sep}item_id{sep}timestamp\n1{sep}2{sep}3\n")
    msg = _error(path)
    assert f"sep={shown}" in msg
    assert "separated" in msg


def test_wrong_delimiter_on_quoted_single_column_header(write_text):
    # The first line does contain a comma, inside quotes: the parsed header catches it.
    path = write_text("x.csv", '"user_id;item_id;timestamp,x"\n"1;2;3,x"\n')
    assert "sep=';'" in _error(path)


def test_comma_file_read_as_tab(write_text):
    path = write_text("u.data", "1,2,5,881250949\n")
    msg = _error(path, sep="\t", header=None, names=["user_id", "item_id", "r", "timestamp"])
    assert "sep=','" in msg


def test_renamed_column_lists_missing_and_close_match(write_text):
    path = write_text("x.csv", "User_ID,item,timestamp\n1,2,3\n")
    msg = _error(path)
    assert "missing required column(s) 'user_id', 'item_id'" in msg
    assert "did you mean 'User_ID' for 'user_id'" in msg
    assert "'item' for 'item_id'" in msg
    assert "found columns: 'User_ID', 'item', 'timestamp'" in msg


def test_missing_column_without_close_match(write_text):
    msg = _error(write_text("x.csv", "a,b,c\n1,2,3\n"))
    assert "missing required column(s) 'user_id', 'item_id', 'timestamp'" in msg
    assert "did you mean" not in msg
    assert "found columns: 'a', 'b', 'c'" in msg


def test_ragged_lines(write_text):
    msg = _error(write_text("x.csv", "user_id,item_id,timestamp\n1,2,3\n4,5,6,7,8\n"))
    assert "could not be parsed as CSV" in msg
    assert "line 3" in msg


def test_wrong_field_count_without_header(write_text):
    path = write_text("u.data", "1\t2\t3\n")
    msg = _error(path, sep="\t", header=None, names=["user_id", "item_id", "r", "timestamp"])
    assert "3 '\\t' (tab)-separated field(s), expected 4" in msg


def test_extra_fields_without_header_later_in_file(write_text):
    path = write_text("u.data", "1\t2\t3\t4\n1\t2\t3\t4\t5\n")
    msg = _error(path, sep="\t", header=None, names=["user_id", "item_id", "r", "timestamp"])
    assert "could not be parsed as CSV" in msg and "line 2" in msg


# --- sha256 -----------------------------------------------------------------------------


def test_sha256_file(write_bytes, tmp_path):
    data = bytes(range(256)) * 50
    path = write_bytes("x.bin", data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert sha256_file(path, chunk_size=7) == hashlib.sha256(data).hexdigest()
    with pytest.raises(DataError, match="file not found"):
        sha256_file(tmp_path / "missing")
    with pytest.raises(DataError, match="directory"):
        sha256_file(tmp_path)


# --- parsing helpers --------------------------------------------------------------------


def test_clean_strings():
    out = clean_strings(pd.Series([" a ", "", None, "b"], dtype="str"))
    assert out.iloc[0] == "a" and out.iloc[3] == "b"
    assert out.isna().tolist() == [False, True, True, False]


def test_parse_iso_with_offsets_to_naive_utc():
    s = pd.Series(["2020-01-01T10:00:00+02:00", "2020-01-01 08:00", "garbage", None])
    out = parse_timestamps(s)
    assert out.dtype == "datetime64[ns]"
    assert out.iloc[0] == out.iloc[1] == pd.Timestamp("2020-01-01 08:00")
    assert out.isna().tolist() == [False, False, True, True]


def test_parse_explicit_format():
    out = parse_timestamps(
        pd.Series(["01/12/2010 08:26", "31/12/2010 9:00", "x"]), format="%d/%m/%Y %H:%M"
    )
    assert out.tolist()[:2] == [pd.Timestamp("2010-12-01 08:26"), pd.Timestamp("2010-12-31 09:00")]
    assert pd.isna(out.iloc[2])


def test_parse_falls_back_to_inference_for_non_iso():
    out = parse_timestamps(pd.Series(["12/1/2010 8:26", "12/31/2010 9:00"]))
    assert out.tolist() == [pd.Timestamp("2010-12-01 08:26"), pd.Timestamp("2010-12-31 09:00")]


@pytest.mark.parametrize(("unit", "scale"), [("s", 1), ("ms", 10**3), ("us", 10**6), ("ns", 10**9)])
def test_parse_epoch_units(unit, scale):
    s = pd.Series([str(1_600_000_000 * scale), "oops", None, "1e30"])
    out = parse_timestamps(s, unit=unit)
    assert out.dtype == "datetime64[ns]"
    assert out.iloc[0] == pd.Timestamp("2020-09-13 12:26:40")
    assert out.iloc[1:].isna().all()


def test_parse_ns_epoch_keeps_precision():
    out = parse_timestamps(pd.Series(["1600000000000000001"]), unit="ns")
    assert out.iloc[0].value == 1_600_000_000_000_000_001


def test_parse_guesses_epoch_unit_without_unit():
    out = parse_timestamps(pd.Series(["1600000000000", "1600000001000"]))
    assert out.iloc[0] == pd.Timestamp("2020-09-13 12:26:40")
    assert guess_epoch_unit(pd.Series([1.6e9])) == "s"
    assert guess_epoch_unit(pd.Series([1.6e18])) == "ns"


def test_parse_out_of_ns_range_is_nat():
    out = parse_timestamps(pd.Series(["1500-01-01", "2020-01-01", "3000-01-01"]))
    assert out.isna().tolist() == [True, False, True]


def test_parse_bad_unit_raises():
    with pytest.raises(DataError, match="time unit must be one of s, ms, us, ns"):
        parse_timestamps(pd.Series(["1"]), unit="minutes")


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 4_000_000_000), min_size=1, max_size=20))
def test_epoch_seconds_roundtrip(seconds):
    out = parse_timestamps(pd.Series([str(s) for s in seconds]), unit="s")
    assert (out.astype("int64") // 10**9).tolist() == seconds


def test_read_table_accepts_path_strings(write_text):
    path = write_text("x.csv", CSV_TEXT)
    assert read_table(str(path), required=REQ, layout=LAYOUT).shape == (3, 3)

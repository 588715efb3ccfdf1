"""The generic csv source on generated CSV and Parquet files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedcl.data.schema import ITEM, REASON, REQUIRED, ROW, SHOP, TIME, USER, DataError
from fedcl.data.sources.csv import CsvConfig, describe_layout, read

EVENTS = pd.DataFrame(
    {
        "user_id": ["u1", "u2", " u3 ", "u4"],
        "item_id": ["i1", "i2", "i3", ""],
        "timestamp": ["2020-01-01T10:00:00", "2020-01-02 11:30", "not a time", ""],
        "shop": ["s1", "s2", "", "s1"],
    }
)


def test_default_columns(write_frame):
    sf = read(CsvConfig(path=str(write_frame(EVENTS, "ev.csv"))))
    f = sf.frame
    assert sf.rows_in == 4 and sf.source == "csv"
    assert set(REQUIRED) <= set(f.columns)
    assert f[USER].tolist() == ["u1", "u2", "u3", "u4"]  # stripped
    assert f[ITEM].isna().tolist() == [False, False, False, True]
    assert f[TIME].dtype == "datetime64[ns]"
    assert f[TIME].iloc[:2].tolist() == [
        pd.Timestamp("2020-01-01 10:00"),
        pd.Timestamp("2020-01-02 11:30"),
    ]
    assert f[TIME].iloc[2:].isna().all()  # unparseable → NaT, no exception
    assert f[SHOP].isna().tolist() == [False, False, True, False]
    assert f[ROW].tolist() == [0, 1, 2, 3] and f[ROW].dtype == np.int64
    assert (f[REASON] == "").all()
    assert list(sf.raw.columns) == list(EVENTS.columns)
    assert sf.raw["user_id"].iloc[2] == " u3 "  # raw keeps the original text
    for col in (USER, ITEM, SHOP, REASON):
        assert pd.api.types.is_string_dtype(f[col]), col


def test_custom_columns_no_shop_and_optionals(write_text):
    text = (
        "cust;sku;when;kind;qty;unit_price;cat;extra\n"
        "7;A;01/12/2010 08:26;view;2;1.5;toys;z\n"
        "8;B;31/12/2010 09:00;buy;x;;books;z\n"
    )
    cfg = CsvConfig(
        path=str(write_text("ev.csv", text)),
        user_col="cust",
        item_col="sku",
        time_col="when",
        shop_col=None,
        default_shop="shop0",
        event_type_col="kind",
        quantity_col="qty",
        price_col="unit_price",
        category_col="cat",
        time_format="%d/%m/%Y %H:%M",
        sep=";",
    )
    f = read(cfg).frame
    assert f[USER].tolist() == ["7", "8"] and f[ITEM].tolist() == ["A", "B"]
    assert f[TIME].tolist() == [pd.Timestamp("2010-12-01 08:26"), pd.Timestamp("2010-12-31 09:00")]
    assert f[SHOP].tolist() == ["shop0", "shop0"]
    assert f["event_type"].tolist() == ["view", "buy"]
    assert f["category"].tolist() == ["toys", "books"]
    assert f["quantity"].dtype == np.float64 and f["price"].dtype == np.float64
    assert f["quantity"].iloc[0] == 2 and np.isnan(f["quantity"].iloc[1])
    assert f["price"].iloc[0] == 1.5 and np.isnan(f["price"].iloc[1])
    assert "extra" not in f.columns


def test_absent_optionals_are_not_columns(write_frame):
    f = read(CsvConfig(path=str(write_frame(EVENTS, "ev.csv")))).frame
    assert not {"event_type", "quantity", "price", "category"} & set(f.columns)


@pytest.mark.parametrize(("unit", "scale"), [("s", 1), ("ms", 10**3), ("us", 10**6), ("ns", 10**9)])
def test_epoch_units(write_frame, unit, scale):
    df = EVENTS.assign(timestamp=[str(1_600_000_000 * scale), "bad", "", "-1"])
    f = read(CsvConfig(path=str(write_frame(df, "ev.csv")), time_unit=unit)).frame
    assert f[TIME].iloc[0] == pd.Timestamp("2020-09-13 12:26:40")
    assert f[TIME].iloc[1:3].isna().all()
    assert f[TIME].iloc[3] < pd.Timestamp("1970-01-02")


def test_timezone_offsets_become_naive_utc(write_frame):
    df = EVENTS.assign(timestamp=["2020-01-01T10:00:00+02:00", "2020-01-01T08:00:00Z", "", ""])
    f = read(CsvConfig(path=str(write_frame(df, "ev.csv")))).frame
    assert f[TIME].iloc[0] == f[TIME].iloc[1] == pd.Timestamp("2020-01-01 08:00")


def test_parquet_with_native_types(write_frame):
    df = pd.DataFrame(
        {
            "user": pd.array([10, 11, None], dtype="Int64"),
            "item": ["a", "b", "c"],
            "ts": [1_600_000_000_000, 1_600_000_060_000, 0],
            "price": [1.25, None, 3.0],
        }
    )
    cfg = CsvConfig(
        path=str(write_frame(df, "ev.parquet")),
        user_col="user",
        item_col="item",
        time_col="ts",
        shop_col=None,
        price_col="price",
        time_unit="ms",
    )
    f = read(cfg).frame
    assert f[USER].iloc[:2].tolist() == ["10", "11"] and pd.isna(f[USER].iloc[2])
    assert f[TIME].iloc[1] == pd.Timestamp("2020-09-13 12:27:40")
    assert f["price"].iloc[0] == 1.25 and np.isnan(f["price"].iloc[1])


def test_parquet_datetime_column(write_frame):
    df = EVENTS.assign(
        timestamp=pd.to_datetime(["2020-01-01 10:00", "2020-01-02", None, None], format="ISO8601")
    )
    f = read(CsvConfig(path=str(write_frame(df, "ev.parquet")))).frame
    assert f[TIME].iloc[:2].tolist() == [
        pd.Timestamp("2020-01-01 10:00"),
        pd.Timestamp("2020-01-02"),
    ]
    assert f[TIME].iloc[2:].isna().all()


def test_tab_separated_with_backslash_t(write_frame):
    path = write_frame(EVENTS, "ev.tsv", sep="\t")
    assert read(CsvConfig(path=str(path), sep="\\t")).rows_in == 4


def test_missing_path():
    with pytest.raises(DataError) as info:
        read(CsvConfig())
    assert "data.path=" in str(info.value) and "data.user_col" in str(info.value)


def test_bad_time_unit(write_frame):
    with pytest.raises(DataError, match="data.time_unit must be one of s, ms, us, ns"):
        read(CsvConfig(path=str(write_frame(EVENTS, "ev.csv")), time_unit="minutes"))


def test_missing_mapped_column(write_frame):
    path = write_frame(EVENTS.rename(columns={"user_id": "UserID"}), "ev.csv")
    with pytest.raises(DataError) as info:
        read(CsvConfig(path=str(path)))
    msg = str(info.value)
    assert "missing required column(s) 'user_id'" in msg
    assert "'UserID' for 'user_id'" in msg
    assert "data.user_col=" in msg


def test_semicolon_file_with_default_sep(write_frame):
    with pytest.raises(DataError) as info:
        read(CsvConfig(path=str(write_frame(EVENTS, "ev.csv", sep=";"))))
    assert "sep=';'" in str(info.value)


def test_describe_layout_lists_configured_columns():
    text = describe_layout(CsvConfig(user_col="u", shop_col=None, price_col="p", time_unit="s"))
    assert "u,item_id,timestamp,p" in text and "epoch s" in text

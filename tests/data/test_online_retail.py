"""The Online Retail mapping and the reason every kind of bad row gets."""

from __future__ import annotations

import pandas as pd
import pytest

from fedcl.data.config import ShopsConfig
from fedcl.data.prepare import prepare
from fedcl.data.schema import DataError
from fedcl.data.sources.online_retail import COLUMNS, OnlineRetailConfig, read

# (InvoiceNo, StockCode, Description, Quantity, InvoiceDate, UnitPrice, CustomerID, Country)
# and the reason each row must get ("" = kept).
ROWS = [
    (("536365", "85123A", "HEART", "6", "2010-12-01 08:26:00", "2.55", "17850.0", "France"), ""),
    (("536366", "71053", "LANTERN", "2", "2010-12-02 09:00:00", "3.39", "13047.0", "France"), ""),
    (("C536379", "22556", "CANCELLED", "-1", "2010-12-02 10:00:00", "1.0", "14527.0", "France"),
     "cancellation"),
    (("536380", "22557", "RETURN", "-3", "2010-12-02 11:00:00", "1.0", "14527.0", "France"),
     "return"),
    (("536381", "22558", "NO CUSTOMER", "1", "2010-12-02 11:00:00", "1.0", "", "France"),
     "missing_user"),
    (("536382", "POST", "POSTAGE", "1", "2010-12-02 12:00:00", "18.0", "12583.0", "France"),
     "non_product"),
    (("536383", "22559", "FREE", "1", "2010-12-02 12:00:00", "0", "12583.0", "France"),
     "bad_price"),
    (("536365", "85123A", "HEART", "6", "2010-12-01 08:26:00", "2.55", "17850.0", "France"),
     "duplicate"),
    (("536384", "22560", "BAD DATE", "1", "not a date", "1.0", "12583.0", "France"),
     "bad_timestamp"),
    (("536385", "22561", "OLD", "1", "1970-01-01 00:00:00", "1.0", "12583.0", "France"),
     "implausible_timestamp"),
    (("536386", "22562", "NOWHERE", "1", "2010-12-03 12:00:00", "1.0", "12583.0", "Unspecified"),
     "unknown_shop"),
    (("536387", "22563", "NONE", "0", "2010-12-03 12:00:00", "1.0", "12583.0", "France"),
     "bad_quantity"),
    (("536388", "", "NO CODE", "1", "2010-12-03 12:00:00", "1.0", "12583.0", "France"),
     "missing_item"),
    (("536389", "gift_0001_20", "VOUCHER", "1", "2010-12-03 12:00:00", "16.0", "12583.0",
      "France"), "non_product"),
    (("536390", "22564", "LATER", "4", "2011-01-05 10:00:00", "1.25", "12583.0", "Germany"), ""),
]  # fmt: skip


@pytest.fixture
def retail_file(tmp_path):
    path = tmp_path / "retail.csv"
    pd.DataFrame([r for r, _ in ROWS], columns=COLUMNS).to_csv(path, index=False)
    return path


def _cfg(path, **shops) -> OnlineRetailConfig:
    return OnlineRetailConfig(
        path=str(path), cache=False, shops=ShopsConfig(min_users=1, min_events=1, **shops)
    )


def test_every_bad_row_gets_its_reason(retail_file):
    data, quarantine = prepare(_cfg(retail_file))

    got = dict(zip(quarantine["row"], quarantine["reason"], strict=True))
    expected = {i: reason for i, (_, reason) in enumerate(ROWS) if reason}
    assert got == expected
    assert sorted(data.events["row"]) == [i for i, (_, r) in enumerate(ROWS) if not r]
    assert data.report["rows_kept"] + sum(data.report["quarantined"].values()) == len(ROWS)


def test_mapping_values(retail_file):
    frame = read(_cfg(retail_file)).frame

    first = frame.iloc[0]
    assert first["user_id"] == "17850"  # the float-written id normalised
    assert first["item_id"] == "85123A"
    assert first["shop"] == "France"
    assert first["timestamp"] == pd.Timestamp("2010-12-01 08:26:00")
    assert first["quantity"] == 6 and first["price"] == pytest.approx(2.55)


def test_quarantine_keeps_the_raw_line(retail_file):
    _, quarantine = prepare(_cfg(retail_file))

    line = quarantine.set_index("row").loc[2]
    assert line["InvoiceNo"] == "C536379" and line["reason"] == "cancellation"


def test_small_shops_dropped_are_quarantined(retail_file):
    data, quarantine = prepare(
        OnlineRetailConfig(
            path=str(retail_file),
            cache=False,
            shops=ShopsConfig(min_users=2, min_events=1, small="drop"),
        )
    )

    assert data.shops == ["France"]
    assert (quarantine["reason"] == "small_shop").sum() == 1  # the one Germany row
    assert data.report["rows_kept"] + sum(data.report["quarantined"].values()) == len(ROWS)


def test_small_shops_merged_keep_users_apart(retail_file):
    data, _ = prepare(
        OnlineRetailConfig(
            path=str(retail_file), cache=False, shops=ShopsConfig(min_users=2, min_events=1)
        )
    )

    assert sorted(data.shops) == ["France", "other"]
    assert data.report["merged_into_other"] == ["Germany"]
    other = data.events[data.events["shop"] == "other"]
    assert other["user_id"].tolist() == ["Germany/12583"]


def test_renamed_column_is_a_clear_error(tmp_path):
    path = tmp_path / "renamed.csv"
    cols = [c if c != "CustomerID" else "Customer ID" for c in COLUMNS]
    pd.DataFrame([ROWS[0][0]], columns=cols).to_csv(path, index=False)

    with pytest.raises(DataError) as err:
        read(_cfg(path))

    msg = str(err.value)
    assert "CustomerID" in msg and str(path) in msg

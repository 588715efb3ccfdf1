"""When every row is quarantined, preparation writes the quarantine table and ends in one
clear error naming the reasons (with counts), the file and the likely fix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedcl.data.config import ShopsConfig
from fedcl.data.prepare import prepare
from fedcl.data.schema import REASON, DataError
from fedcl.data.sources.csv import CsvConfig

N = 120


def _second_epochs() -> pd.DataFrame:
    """Events of September 2020 with epoch-second timestamps."""
    return pd.DataFrame(
        {
            "user_id": [f"u{i % 30}" for i in range(N)],
            "item_id": [f"i{i % 17}" for i in range(N)],
            "timestamp": (1_600_000_000 + np.arange(N) * 3600).astype(str),
            "shop": "s1",
        }
    )


def test_seconds_read_as_milliseconds_name_the_reason_file_and_fix(write_frame, tmp_path):
    path = write_frame(_second_epochs(), "ev.csv")
    cfg = CsvConfig(path=str(path), time_unit="ms", cache=False)

    with pytest.raises(DataError) as info:
        prepare(cfg, quarantine_dir=tmp_path / "run")

    msg = str(info.value)
    written = tmp_path / "run" / "quarantine.parquet"
    assert f"implausible_timestamp: {N}" in msg
    assert str(written) in msg
    assert "data.time_unit" in msg and "\n" not in msg
    table = pd.read_parquet(written)
    assert len(table) == N and (table[REASON] == "implausible_timestamp").all()
    assert table["timestamp"].tolist() == _second_epochs()["timestamp"].tolist()


def test_same_file_in_seconds_prepares(write_frame, tmp_path):
    path = write_frame(_second_epochs(), "ev.csv")
    cfg = CsvConfig(path=str(path), time_unit="s", cache=False, shops=ShopsConfig(min_users=1))

    data, quarantine = prepare(cfg, quarantine_dir=tmp_path / "run")

    assert data.report["rows_kept"] == N and len(quarantine) == 0
    assert not (tmp_path / "run").exists()


def test_default_location_is_the_cache_dir(write_frame, tmp_path, monkeypatch):
    monkeypatch.setenv("FEDCL_CACHE", str(tmp_path / "cache"))
    path = write_frame(_second_epochs(), "ev.csv")

    with pytest.raises(DataError, match="implausible_timestamp") as info:
        prepare(CsvConfig(path=str(path), time_unit="ns", cache=False))

    written = tmp_path / "cache" / "quarantine" / "csv.parquet"
    assert str(written) in str(info.value) and len(pd.read_parquet(written)) == N


def test_mixed_reasons_are_all_counted(write_frame, tmp_path):
    events = _second_epochs()
    events.loc[:9, "user_id"] = ""  # 10 rows without a user, the rest small shops
    path = write_frame(events, "ev.csv")
    shops = ShopsConfig(min_users=1000, small="drop")
    cfg = CsvConfig(path=str(path), time_unit="s", cache=False, shops=shops)

    with pytest.raises(DataError) as info:
        prepare(cfg, quarantine_dir=tmp_path)

    msg = str(info.value)
    assert f"small_shop: {N - 10}, missing_user: 10" in msg
    assert "data.shops.min_users" in msg and "data.user_col" in msg
    assert len(pd.read_parquet(tmp_path / "quarantine.parquet")) == N

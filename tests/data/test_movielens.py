"""The movielens source on generated u.data / ratings.csv files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedcl.data.schema import ITEM, REASON, REQUIRED, ROW, SHOP, TIME, USER, DataError
from fedcl.data.sources.movielens import MovieLensConfig, detect_layout, read

UDATA_ROWS = [
    (196, 242, 3, 881250949),
    (186, 302, 4, 891717742),
    (22, 377, 5, 878887116),
    (196, 51, 2, "oops"),
    (244, 51, "x", 880606923),
]
RATINGS_ROWS = [
    (1, 1, 4.0, 964982703),
    (1, 3, 3.5, 964981247),
    (2, 6, 5.0, 964982224),
    (3, 47, 0.5, 964983815),
]


def _ts(seconds: int) -> pd.Timestamp:
    return pd.Timestamp(seconds, unit="s")


def _check_invariants(sf) -> None:
    assert sf.rows_in == len(sf.raw)
    assert sf.frame[ROW].is_unique
    assert set(REQUIRED) <= set(sf.frame.columns)
    assert sf.frame[TIME].dtype == "datetime64[ns]"
    assert sf.frame[ROW].dtype == np.int64
    for col in (USER, ITEM, SHOP, "event_type", REASON):
        assert pd.api.types.is_string_dtype(sf.frame[col]), col


def test_udata_mapping(write_udata):
    sf = read(MovieLensConfig(path=str(write_udata(UDATA_ROWS))))
    _check_invariants(sf)
    f = sf.frame
    assert f[USER].tolist() == ["196", "186", "22", "196", "244"]
    assert f[ITEM].tolist() == ["242", "302", "377", "51", "51"]
    assert f[TIME].iloc[0] == _ts(881250949)
    assert pd.isna(f[TIME].iloc[3])  # unparseable timestamp → NaT, no exception
    assert f[ROW].tolist() == [0, 1, 2, 3, 4]
    assert (f[SHOP] == "all").all()
    assert (f["event_type"] == "rating").all()
    assert f[REASON].tolist() == ["below_threshold", "", "", "below_threshold", "bad_rating"]
    assert list(sf.raw.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert sf.raw["rating"].tolist() == ["3", "4", "5", "2", "x"]
    assert sf.source == "movielens"


def test_ratings_csv_mapping_and_threshold_edge(write_ratings_csv):
    sf = read(MovieLensConfig(path=str(write_ratings_csv(RATINGS_ROWS))))
    _check_invariants(sf)
    f = sf.frame
    assert f[USER].tolist() == ["1", "1", "2", "3"]
    assert f[ITEM].tolist() == ["1", "3", "6", "47"]
    assert f[TIME].tolist() == [_ts(r[3]) for r in RATINGS_ROWS]
    assert f[REASON].tolist() == ["", "below_threshold", "", "below_threshold"]  # 4.0 kept
    assert list(sf.raw.columns) == ["userId", "movieId", "rating", "timestamp"]


def test_threshold_none_keeps_all_but_flags_bad_ratings(write_udata):
    sf = read(MovieLensConfig(path=str(write_udata(UDATA_ROWS)), rating_threshold=None))
    assert sf.frame[REASON].tolist() == ["", "", "", "", "bad_rating"]


def test_custom_threshold_and_default_shop(write_ratings_csv):
    cfg = MovieLensConfig(
        path=str(write_ratings_csv(RATINGS_ROWS)), rating_threshold=3.5, default_shop="ml"
    )
    sf = read(cfg)
    assert sf.frame[REASON].tolist() == ["", "", "", "below_threshold"]
    assert (sf.frame[SHOP] == "ml").all()


def test_compressed_ratings(write_ratings_csv):
    sf = read(MovieLensConfig(path=str(write_ratings_csv(RATINGS_ROWS, "ratings.csv.gz"))))
    assert sf.rows_in == 4


@pytest.mark.parametrize(
    ("writer", "name", "expected"),
    [
        ("write_udata", "u.data", "u.data"),
        ("write_udata", "my_ratings.tsv", "u.data"),  # by content
        ("write_ratings_csv", "ratings.csv", "ratings.csv"),
        ("write_ratings_csv", "whatever.txt", "ratings.csv"),  # by header
    ],
)
def test_auto_layout(request, writer, name, expected):
    rows = UDATA_ROWS if writer == "write_udata" else RATINGS_ROWS
    path = request.getfixturevalue(writer)(rows, name)
    assert detect_layout(path) == expected
    assert read(MovieLensConfig(path=str(path))).rows_in == len(rows)


def test_auto_layout_by_name_when_content_is_ambiguous(write_text, tmp_path):
    assert detect_layout(write_text("u.data", "1 2 3 4\n")) == "u.data"
    assert detect_layout(tmp_path / "missing.csv") == "ratings.csv"  # read_table reports


def test_auto_layout_unknown(write_text):
    path = write_text("mystery.txt", "a;b;c\n1;2;3\n")
    with pytest.raises(DataError) as info:
        read(MovieLensConfig(path=str(path)))
    msg = str(info.value)
    assert str(path) in msg and "data.layout=u.data" in msg and "data.layout=ratings.csv" in msg


def test_wrong_explicit_layout(write_ratings_csv):
    path = write_ratings_csv(RATINGS_ROWS)
    with pytest.raises(DataError) as info:
        read(MovieLensConfig(path=str(path), layout="u.data"))
    msg = str(info.value)
    assert "sep=','" in msg and "data.layout=ratings.csv" in msg and "u.data" in msg


def test_ratings_csv_with_renamed_column(write_text):
    path = write_text("ratings.csv", "userId,itemId,rating,timestamp\n1,2,4,964982703\n")
    with pytest.raises(DataError) as info:
        read(MovieLensConfig(path=str(path)))
    msg = str(info.value)
    assert "'movieId'" in msg and "'itemId'" in msg and "userId,movieId,rating,timestamp" in msg


def test_missing_path_explains_download():
    with pytest.raises(DataError) as info:
        read(MovieLensConfig())
    msg = str(info.value)
    assert "data.path=" in msg and "grouplens.org" in msg


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read(MovieLensConfig(path=str(tmp_path / "u.data")))


def test_unknown_layout_value(write_udata):
    with pytest.raises(DataError, match="Unknown MovieLens layout 'ml-1m'"):
        read(MovieLensConfig(path=str(write_udata(UDATA_ROWS)), layout="ml-1m"))


def test_shop_map(write_udata, write_text):
    shop_map = write_text("shops.csv", "user_id,shop\n196,north\n186, south \n22,north\n22,north\n")
    sf = read(MovieLensConfig(path=str(write_udata(UDATA_ROWS)), shop_map_path=str(shop_map)))
    shops = sf.frame[SHOP]
    assert shops.iloc[:4].tolist() == ["north", "south", "north", "north"]
    assert pd.isna(shops.iloc[4])  # user 244 is not in the map → unknown_shop later
    assert pd.api.types.is_string_dtype(shops)


def test_shop_map_conflict(write_udata, write_text):
    shop_map = write_text("shops.csv", "user_id,shop\n196,north\n196,south\n")
    with pytest.raises(DataError) as info:
        read(MovieLensConfig(path=str(write_udata(UDATA_ROWS)), shop_map_path=str(shop_map)))
    msg = str(info.value)
    assert "'196'" in msg and "more than one shop" in msg and str(shop_map) in msg


def test_shop_map_bad_columns(write_udata, write_text):
    shop_map = write_text("shops.csv", "user,region\n196,north\n")
    with pytest.raises(DataError) as info:
        read(MovieLensConfig(path=str(write_udata(UDATA_ROWS)), shop_map_path=str(shop_map)))
    msg = str(info.value)
    assert "'user_id', 'shop'" in msg and "'user' for 'user_id'" in msg and "user_id,shop" in msg

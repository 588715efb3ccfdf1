"""The fast paths of data preparation give exactly what the plain pandas code gives.

Each fast path (the Arrow CSV reader, per-distinct-value parsing, the duplicate search,
chunk-wise selection, the blank test, the user index) is compared with the simple pandas
expression it replaces, on hand-picked awkward inputs and on generated ones.
"""

from __future__ import annotations

import gzip
import random
from functools import partial

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fedcl.data.sources.csv_arrow as csv_arrow
import fedcl.data.validate as validate_mod
from fedcl.data.catalog import _user_indices, index_events
from fedcl.data.config import ShopsConfig, ValidationConfig
from fedcl.data.schema import ITEM, REASON, ROW, SHOP, TIME, USER, DataError, SourceFrame
from fedcl.data.sources import online_retail
from fedcl.data.sources.csv_sniff import read_head
from fedcl.data.sources.interning import Distinct, map_distinct
from fedcl.data.sources.table_files import read_csv_pandas
from fedcl.data.validate import _blank, duplicated, take_rows, validate

# --- the Arrow CSV reader ---------------------------------------------------------------

AWKWARD_CSV = {
    "plain": "a,b\n1,2\n3,\n",
    "bom": "\ufeffa,b\n1,2\n",
    "bom_quoted_header": '\ufeff"a",b\n1,2\n',
    "quoted_empty_is_na": 'a,b\n"",2\n',
    "text_after_quote": 'a,b\n"ab"cd,2\n',
    "space_after_quote": 'a,b\n"ab" ,2\n',
    "quote_inside_field": 'a,b\nab"c,2\n',
    "doubled_quote": 'a,b\n"a""b",2\n',
    "quoted_separator": 'a,b\n"1,5",2\n',
    "quoted_line_break": 'a,b\n"x\ny",2\n',
    "quoted_crlf": 'a,b\r\n"x\r\ny",2\r\n',
    "crlf": "a,b\r\n1,2\r\n3,4\r\n",
    "bare_cr": "a,b\r1,2\r\r,4\r",
    "blank_lines": "\n\na,b\n\n1,2\n\n3,4\n\n",
    "blank_lines_text": "\n\na,b\nx,y\n",
    "whitespace_line": "a,b\n1,2\n   \n3,4\n",
    "short_row": "a,b\n1\n",
    "long_row": "a,b\n1,2,3\n",
    "header_only": "a,b\n",
    "repeated_header": "a,a\n1,2\n",
    "empty_header": "a,\n1,2\n",
    "spaces_kept": "a , b\n 1 , 2 \n",
    "na_text_kept": "a,b\nNA,null\nnan,None\n",
    "no_final_newline": "a,b\n1,2",
    "unterminated_quote": 'a,b\n1,"abc\n',
    "unterminated_quote_empty": 'a,b\n1,"',
    "unicode": "a,b\n日本,é\n",
    "nul_byte": "a,b\nx\x00y,2\n",
    "typed_looking": "a,b\n1,2020-01-01\n",
    "all_empty_column": "a,b\nx,\ny,\n",
    "latin1": "a,b\ncaf\xe9,2\n",
}


def _both(path, sep=","):
    fast = csv_arrow.read_csv_arrow(path, sep=sep, head=read_head(path))
    try:
        slow = read_csv_pandas(path, layout="L", sep=sep, header=0, names=None, dtype=str)
    except DataError as exc:
        slow = exc
    return fast, slow


def _assert_same_or_fallback(fast, slow, text):
    if fast is None:
        return  # the pandas reader reads it (and words the error)
    assert not isinstance(slow, Exception), f"pyarrow read what pandas rejects: {text!r}"
    pd.testing.assert_frame_equal(fast, slow, check_exact=True)


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".csv.bz2"])
@pytest.mark.parametrize("name", sorted(AWKWARD_CSV))
def test_arrow_reader_reads_what_pandas_reads(write_text, name, suffix):
    text = AWKWARD_CSV[name]
    path = write_text(name + suffix, text, encoding="latin-1" if name == "latin1" else "utf-8")
    fast, slow = _both(path)
    _assert_same_or_fallback(fast, slow, text)


@pytest.mark.parametrize(
    "name", ["bare_cr", "unterminated_quote", "unterminated_quote_empty", "latin1", "short_row"]
)
def test_arrow_reader_leaves_what_it_cannot_promise_to_pandas(write_text, name):
    path = write_text(
        name + ".csv", AWKWARD_CSV[name], encoding="latin-1" if name == "latin1" else "utf-8"
    )
    assert csv_arrow.read_csv_arrow(path, sep=",", head=read_head(path)) is None


def test_arrow_reader_is_used_for_plain_files(write_text):
    path = write_text("x.csv.gz", "a,b\n1,2\n")
    fast = csv_arrow.read_csv_arrow(path, sep=",", head=read_head(path))
    assert fast is not None and fast["a"].tolist() == ["1"]


_CELLS = ["a", "bb", "", '""', '"q,x"', '"a""b"', " ", "NA", "é", '"\n"', '"x\r\ny"', 'x"y']
_CELLS += ['"u"v', "\t", "#", "1.5", '"', "a_longer_value"]


def _random_csv(rng: random.Random, sep: str) -> str:
    n_cols = rng.randint(2, 4)
    lines = [sep.join(f"h{j}" for j in range(n_cols))]
    for _ in range(rng.randint(0, 12)):
        n = n_cols if rng.random() < 0.95 else rng.randint(1, 5)
        lines.append(sep.join(rng.choice(_CELLS).replace(",", sep) for _ in range(n)))
        if rng.random() < 0.05:
            lines.append(rng.choice(["", " ", "\r"]))
    return rng.choice(["\n", "\r\n"]).join(lines) + rng.choice(["", "\n", "\r\n"])


@pytest.mark.parametrize(("block", "tail"), [(7, 4), (16, 64), (1 << 20, 1 << 16)])
@pytest.mark.parametrize("sep", [",", ";", "\t"])
def test_arrow_reader_on_generated_files(tmp_path, monkeypatch, block, tail, sep):
    # Tiny blocks and tail put block edges and the tail limit everywhere.
    monkeypatch.setattr(csv_arrow, "ARROW_BLOCK_SIZE", block)
    monkeypatch.setattr(csv_arrow, "_TAIL_BYTES", tail)
    rng = random.Random(f"{block}-{tail}-{sep!r}")
    for i in range(150):
        text = _random_csv(rng, sep)
        path = tmp_path / f"f{i}.csv{'.gz' if i % 2 else ''}"
        data = text.encode("utf-8")
        path.write_bytes(gzip.compress(data) if i % 2 else data)
        # Only the header in the sniffed head: carriage returns further on are found
        # while reading.
        first = data.split(b"\n")[0].rstrip(b"\r") + b"\n"
        fast = csv_arrow.read_csv_arrow(path, sep=sep, head=first)
        try:
            slow = read_csv_pandas(path, layout="L", sep=sep, header=0, names=None, dtype=str)
        except DataError as exc:
            slow = exc
        _assert_same_or_fallback(fast, slow, text)


# --- per distinct value -----------------------------------------------------------------

text_values = st.lists(
    st.sampled_from(["a", " a", "b ", "", "17850.0", "C1", "c2", None]), max_size=30
)


@settings(max_examples=80, deadline=None)
@given(values=text_values, dtype=st.sampled_from(["str", "object"]))
def test_map_distinct_equals_the_direct_call(values, dtype):
    s = pd.Series(values, dtype=dtype, name="col")
    funcs = [
        lambda x: x.str.strip(),
        lambda x: x.fillna("").str.upper().str.startswith("C"),
        partial(pd.to_numeric, errors="coerce"),
        online_retail._customer_ids,
        online_retail._items,
        lambda x: x,  # identity: the column itself comes back
    ]
    for func in funcs:
        pd.testing.assert_series_equal(map_distinct(s, func), func(s), check_exact=True)


def test_map_distinct_on_numbers_and_times():
    s = pd.Series(["6", "-1", "x", None, "6", "2.5"] * 3)
    pd.testing.assert_series_equal(
        map_distinct(s, partial(pd.to_numeric, errors="coerce")),
        pd.to_numeric(s, errors="coerce"),
        check_exact=True,
    )
    t = pd.Series(["2010-12-01 08:26:00", "not a date", None, "2010-12-01 08:26:00"] * 3)
    times = partial(online_retail._times, time_format="ISO8601")
    pd.testing.assert_series_equal(map_distinct(t, times), times(t), check_exact=True)


def test_distinct_keeps_the_index_and_spreads_results():
    s = pd.Series(["b", "a", "b", None, "a"] * 2, index=range(10, 20), dtype="str")
    d = Distinct(s)
    assert not d.direct
    assert d.distinct.tolist()[:2] == ["b", "a"] and pd.isna(d.distinct.iloc[2])  # first seen
    out = d.map(lambda x: x.str.upper())
    assert out.index.tolist() == list(range(10, 20))
    assert out.tolist()[:3] == ["B", "A", "B"] and pd.isna(out.iloc[3])
    same = d.map(lambda x: x.str.strip()).array.__arrow_array__()  # nothing to strip:
    data = s.array.__arrow_array__()  # the column itself comes back, not a copy
    assert same.chunk(0).buffers()[2].address == data.chunk(0).buffers()[2].address


@settings(max_examples=80, deadline=None)
@given(values=st.lists(st.sampled_from(["C536379", "c1", "536365", "", "Ç1", None]), max_size=20))
def test_cancellation_test_equals_upper_startswith(values):
    s = pd.Series(values, dtype="str")
    expected = s.fillna("").str.upper().str.startswith("C").to_numpy(dtype=bool)
    assert (online_retail._is_cancellation(s) == expected).all()


# --- duplicates, selection, blanks --------------------------------------------------------

cell = st.sampled_from(["a", "b", "", " ", None])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(st.tuples(cell, cell, cell), max_size=60),
    dtype=st.sampled_from(["str", "object", "string"]),
    with_numbers=st.booleans(),
    buckets_from=st.sampled_from([2, 1 << 16]),
)
def test_duplicated_equals_pandas(rows, dtype, with_numbers, buckets_from):
    table = pd.DataFrame(rows, columns=["x", "y", "z"], dtype=dtype)
    if with_numbers:
        table["n"] = [float(i % 3) if i % 4 else np.nan for i in range(len(table))]
    old = validate_mod._BUCKETS_FROM
    validate_mod._BUCKETS_FROM = buckets_from  # the hash pre-filter on small inputs too
    try:
        got = duplicated(table)
    finally:
        validate_mod._BUCKETS_FROM = old
    assert (got == table.duplicated(keep="first").to_numpy()).all()


def _chunked(values: list, sizes: list[int]) -> pd.Series:
    dtype = pd.Series([], dtype=str).dtype
    pieces, start = [], 0
    for size in sizes:
        pieces.append(pa.array(values[start : start + size], type=pa.large_string()))
        start += size
    return pd.Series(dtype.__from_arrow__(pa.chunked_array(pieces, type=pa.large_string())))


def test_duplicated_and_take_rows_on_chunked_text():
    rng = np.random.default_rng(0)
    n = 500
    a = [str(v) for v in rng.integers(0, 5, n)]
    b = [None if v == 0 else str(v) for v in rng.integers(0, 4, n)]
    table = pd.DataFrame({"a": _chunked(a, [100, 0, 250, 150]), "b": _chunked(b, [n]), "c": 1.0})
    assert table["a"].array.__arrow_array__().num_chunks == 4
    assert (duplicated(table) == table.duplicated(keep="first").to_numpy()).all()
    for rows in (np.arange(0), np.arange(n), np.sort(rng.choice(n, 123, replace=False))):
        pd.testing.assert_frame_equal(take_rows(table, rows), table.take(rows), check_exact=True)


def test_blank_equals_strip_test():
    values = ["", " ", "\t\n", "\u3000", "\u00a0x", "a", " a ", None, "\u2003\u2003"]
    for dtype in ("str", "string", "object"):
        s = pd.Series(values, dtype=dtype)
        expected = (s.isna() | (s.astype("string").str.strip() == "")).to_numpy(dtype=bool)
        assert (np.asarray(_blank(s), dtype=bool) == expected).all(), dtype


# --- user indices -------------------------------------------------------------------------


def _user_indices_by_text(events: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The plain version: number the joined "shop\\x1fuser" text."""
    key = events[SHOP].astype(str) + "\x1f" + events[USER].astype(str)
    codes, _ = pd.factorize(key, sort=False)
    rank = pd.Series(codes).groupby(events[SHOP].to_numpy()).rank(method="dense")
    return codes, (rank.to_numpy() - 1).astype(np.int64)


@settings(max_examples=80, deadline=None)
@given(
    pairs=st.lists(
        st.tuples(
            st.sampled_from(["UK", "FR", "a\x1fb", "a"]), st.sampled_from(["1", "2", "b", "\x1fb"])
        ),
        min_size=1,
        max_size=40,
    )
)
def test_user_indices_equal_the_joined_text_numbering(pairs):
    for dtype in ("str", "object"):
        events = pd.DataFrame(pairs, columns=[SHOP, USER], dtype=dtype)
        got_global, got_local = _user_indices(events)
        want_global, want_local = _user_indices_by_text(events)
        assert (got_global == want_global).all() and (got_local == want_local).all()


def test_index_events_numbers_users_per_shop():
    events = pd.DataFrame(
        {
            SHOP: ["UK", "FR", "UK", "FR", "UK"],
            USER: ["1", "1", "2", "3", "1"],
            ITEM: ["x", "y", "x", "z", "y"],
            TIME: pd.to_datetime(["2011-01-01"] * 5),
            "window": np.zeros(5, dtype=np.int32),
        }
    )
    out, catalog = index_events(events)
    assert out["user_idx"].tolist() == [0, 0, 1, 1, 0]
    assert out["guser_idx"].tolist() == [0, 1, 2, 3, 0]
    assert out["item_idx"].tolist() == [0, 1, 0, 2, 1]
    assert catalog["events"].tolist() == [2, 2, 1]
    assert list(events.columns) == [SHOP, USER, ITEM, TIME, "window"]  # input untouched


# --- validation against the plain implementation -----------------------------------------


def _plain_validate(src: SourceFrame, shops: ShopsConfig, bounds: ValidationConfig):
    """Validation as first written: pandas masks, DataFrame.duplicated, one sort."""
    frame = src.frame
    reason = frame[REASON].astype(object).fillna("").copy()

    def blank(s):
        return s.isna() | (s.astype("string").str.strip() == "")

    lo = pd.Timestamp(bounds.min_time)
    hi = pd.Timestamp(bounds.max_time)
    checks = {
        "missing_user": blank(frame[USER]),
        "missing_item": blank(frame[ITEM]),
        "unknown_shop": blank(frame[SHOP]) | frame[SHOP].isin(shops.unknown),
        "bad_timestamp": frame[TIME].isna(),
        "implausible_timestamp": (frame[TIME] < lo) | (frame[TIME] > hi),
        "bad_quantity": ~(frame["quantity"] > 0),
    }
    basis = src.raw if len(src.raw.columns) else frame.drop(columns=[ROW, REASON])
    checks["duplicate"] = basis.duplicated(keep="first")
    for name in validate_mod.GENERIC_REASONS:
        if name in checks:
            reason[(reason == "") & checks[name].to_numpy()] = name
    ok = (reason == "").to_numpy()
    columns = [c for c in (USER, ITEM, TIME, SHOP, "quantity") if c in frame] + [ROW]
    kept = frame.loc[ok, columns].sort_values([TIME, ROW], kind="stable").reset_index(drop=True)
    for col in (USER, ITEM, SHOP):
        kept[col] = kept[col].astype(str)
    detail = src.raw.loc[~ok] if len(src.raw.columns) else frame.loc[~ok]
    quarantine = detail.astype("string").reset_index(drop=True)
    quarantine.insert(0, REASON, reason[~ok].to_numpy(), allow_duplicates=True)
    quarantine.insert(0, ROW, frame.loc[~ok, ROW].to_numpy(), allow_duplicates=True)
    quarantine = quarantine.loc[:, ~quarantine.columns.duplicated()]
    return kept, quarantine


ids = st.sampled_from(["u1", "u2", " ", "", None])
line = st.tuples(
    ids,
    st.sampled_from(["i1", "i2", "", None]),
    st.sampled_from(["2011-01-01 10:00", "2011-01-01 09:00", "1960-01-01 00:00", None]),
    st.sampled_from(["UK", "FR", "Unspecified", None]),
    st.sampled_from([1, 2, 0, -1, None]),
    st.sampled_from(["", "cancellation"]),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(line, max_size=40), with_raw=st.booleans())
def test_validate_equals_the_plain_implementation(rows, with_raw):
    cols = [USER, ITEM, TIME, SHOP, "quantity", REASON]
    frame = pd.DataFrame(rows, columns=cols)
    frame[TIME] = pd.to_datetime(frame[TIME]).astype("datetime64[ns]")
    frame["quantity"] = pd.to_numeric(frame["quantity"])
    frame[ROW] = np.arange(len(frame))[::-1] if rows and rows[0][0] == "u1" else range(len(frame))
    raw = frame[[USER, ITEM, SHOP]].astype("str") if with_raw else pd.DataFrame(index=frame.index)
    src = SourceFrame(frame=frame, raw=raw, source="test")
    shops, bounds = ShopsConfig(), ValidationConfig(max_time="2029-01-01")

    got = validate(src, shops, bounds)
    kept, quarantine = _plain_validate(src, shops, bounds)
    pd.testing.assert_frame_equal(got.kept, kept, check_exact=True)
    pd.testing.assert_frame_equal(got.quarantine, quarantine, check_exact=True)


# --- the Online Retail mapping against the plain implementation ---------------------------


def _plain_online_retail_frame(raw: pd.DataFrame, cfg) -> pd.DataFrame:
    """The Online Retail mapping as first written (column by column, no shortcuts)."""
    invoice = raw["InvoiceNo"].fillna("")
    code = raw["StockCode"].fillna("").str.strip()
    quantity = pd.to_numeric(raw["Quantity"], errors="coerce")
    price = pd.to_numeric(raw["UnitPrice"], errors="coerce")
    customer = raw["CustomerID"].str.strip().str.replace(r"\.0+$", "", regex=True)
    customer = customer.where(customer != "")
    when = pd.to_datetime(
        raw["InvoiceDate"], format=cfg.time_format or "ISO8601", errors="coerce"
    ).astype("datetime64[ns]")
    reason = pd.Series("", index=raw.index, dtype=object)
    non_product = code.isin(cfg.non_product_codes)
    for prefix in cfg.non_product_prefixes:
        non_product |= code.str.startswith(prefix)
    reason[invoice.str.upper().str.startswith("C")] = "cancellation"
    reason[(reason == "") & (quantity < 0)] = "return"
    reason[(reason == "") & non_product] = "non_product"
    return pd.DataFrame(
        {
            USER: customer,
            ITEM: code.where(code != ""),
            TIME: when,
            SHOP: raw["Country"].str.strip(),
            "event_type": "purchase",
            "quantity": quantity,
            "price": price,
            ROW: range(len(raw)),
            REASON: reason,
        }
    )


def test_online_retail_mapping_equals_the_plain_one(tmp_path):
    rng = random.Random(3)
    choices = {
        "InvoiceNo": ["536365", "C536379", "c1", "", "536366"],
        "StockCode": ["85123A", " 71053 ", "POST", "gift_0001", "", "M"],
        "Description": ["HEART", "LANTERN", ""],
        "Quantity": ["6", "-1", "0", "x", "", "2"],
        "InvoiceDate": ["2010-12-01 08:26:00", "2011-01-05 10:00:00", "not a date", ""],
        "UnitPrice": ["2.55", "0", "-1", "1e2", "abc", ""],
        "CustomerID": ["17850.0", " 13047.0", "12583", "", "14527.00"],
        "Country": ["United Kingdom", " France", "Unspecified", ""],
    }
    rows = [[rng.choice(choices[c]) for c in online_retail.COLUMNS] for _ in range(400)]
    path = tmp_path / "retail.csv"
    pd.DataFrame(rows, columns=online_retail.COLUMNS).to_csv(path, index=False)
    cfg = online_retail.OnlineRetailConfig(path=str(path), cache=False)

    src = online_retail.read(cfg)
    pd.testing.assert_frame_equal(
        src.frame, _plain_online_retail_frame(src.raw, cfg), check_exact=True
    )


@pytest.mark.slow
def test_shipped_file_reads_the_same_with_either_reader():
    path = online_retail.default_path()
    fast = csv_arrow.read_csv_arrow(path, sep=",", head=read_head(path))
    assert fast is not None
    slow = read_csv_pandas(path, layout="L", sep=",", header=0, names=None, dtype=str)
    pd.testing.assert_frame_equal(fast, slow, check_exact=True)

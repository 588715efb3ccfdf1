"""Property: whatever the input, every row is kept or quarantined exactly once."""

from __future__ import annotations

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedcl.data.config import ShopsConfig, ValidationConfig
from fedcl.data.schema import REASON, ROW, SourceFrame
from fedcl.data.shops import partition_shops
from fedcl.data.validate import validate

maybe_id = st.one_of(st.none(), st.just(""), st.sampled_from(["u1", "u2", "u3", " "]))
maybe_time = st.one_of(
    st.none(),
    st.datetimes(min_value=pd.Timestamp("1960-01-01"), max_value=pd.Timestamp("2030-01-01")),
)
row = st.tuples(
    maybe_id,
    st.sampled_from(["i1", "i2", "", None]),
    maybe_time,
    st.sampled_from(["a", "b", "Unspecified", None]),
    st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-2, 3)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(row, max_size=40), small=st.sampled_from(["merge", "drop"]))
def test_no_row_lost_or_duplicated(rows, small):
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "shop", "quantity"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"]).astype("datetime64[ns]")
    frame["quantity"] = pd.to_numeric(frame["quantity"], errors="coerce")
    frame[ROW] = range(len(frame))
    frame[REASON] = ""
    src = SourceFrame(frame=frame, raw=pd.DataFrame(index=frame.index), source="test")
    shops = ShopsConfig(min_users=2, min_events=1, small=small)

    checked = validate(src, shops, ValidationConfig(max_time="2029-01-01"))
    parts = partition_shops(checked.kept, shops)

    rows_out = [*checked.quarantine[ROW], *parts.dropped[ROW], *parts.kept[ROW]]
    assert sorted(rows_out) == list(range(len(frame)))
    assert (checked.quarantine[REASON] != "").all()

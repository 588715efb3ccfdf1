"""The closed loop end to end, small: recommendations served over HTTP, customers' events
posted back, appended to the shops' logs and learned in the next window exactly once."""

from __future__ import annotations

import pandas as pd
import pytest

from fedcl.config import load_config
from fedcl.serve.loop import ClosedLoop
from fedcl.shop.ingest import EventLog, ShopIngest

WORLD = [
    "data=synthetic", "data.n_shops=2", "data.n_users=240", "data.n_items=90",
    "data.n_periods=4", "data.shops.min_users=5", "model=ease", "continual=naive",
    "federated.min_shops=2", "federated.min_users=1",
]  # fmt: skip

pytestmark = pytest.mark.slow


def _loop(tmp_path, follow: bool) -> ClosedLoop:
    cfg, _ = load_config(WORLD)
    loop = ClosedLoop(cfg, tmp_path, follow=follow)
    loop.run()
    return loop


def test_feedback_flows_into_the_next_window_exactly_once(tmp_path):
    loop = _loop(tmp_path, follow=True)
    assert [m.month for m in loop.months] == [1, 2, 3]
    # Each month was served by the model evaluated after the month before it.
    for m in loop.months:
        assert set(m.generation.values()) == {m.month}, m.generation
    assert sum(m.from_recs for m in loop.months) > 0
    posted_total = 0
    for shop, path in loop.logs.items():
        log = pd.read_csv(path)
        posted = log["event_id"].str.startswith("m")
        assert posted.any() and (~posted).any()  # month 0 organic, then the loop's
        posted_total += int(posted.sum())
        # The log holds purchases only (the clicks went to the feedback file), none twice.
        assert not log["event_id"].duplicated().any()
        ingest = ShopIngest(shop, EventLog(path, loop.plan_dir), loop.state / shop / "ingest")
        assert ingest.ingest(open_window=4).rows == 0, "the agent had already read every line"
        assert ingest.watermark[0] == len(log)
        assert ingest.quarantined.counts() == {}
        assert len(ingest.prepared().events) == len(log)  # each learned once, none lost
    assert posted_total == sum(m.purchases for m in loop.months)


def test_impressions_are_counted_per_generation(tmp_path):
    loop = _loop(tmp_path, follow=True)
    online = loop.online()
    for m in loop.months:
        # Every visit was one request: a known customer's "discover" list or an unknown
        # one's "popular" list, logged under the generation that answered it.
        shown = sum(
            lists.get(name, {}).get("shown", 0)
            for by_gen in online.values()
            for lists in [by_gen.get(str(m.month), {})]
            for name in ("discover", "popular")
        )
        assert shown == m.visits


def test_a_frozen_service_never_swaps(tmp_path):
    loop = _loop(tmp_path, follow=False)
    assert {g for m in loop.months for g in m.generation.values()} == {1}
    # ...while the shops kept training: newer generations exist on disk.
    assert set(loop.generations().values()) == {4}

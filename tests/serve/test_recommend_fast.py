"""The serving fast paths give exactly what the plain computation gives: ItemItem's
``scorer`` (sparse matrices built once per snapshot) against ``score_all``, ``_top``
(torch.topk threshold) against a full stable sort, and a Recommender's lists against the
same lists cut from ``model.score_all`` by hand."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from fedcl.data.interactions import Interactions
from fedcl.data.schema import ITEM, ITEM_IDX, SHOP, TIME, USER_IDX, WINDOW
from fedcl.models.itemitem import ItemItem
from fedcl.serve.recommend import Recommender, _top
from fedcl.serve.snapshot import read_snapshot, serving_store, write_snapshot

N_USERS, N_ITEMS, SHOP_NAME = 40, 60, "s"


def _events(seed: int = 0, windows: int = 3) -> pd.DataFrame:
    """~8 purchases per user, popularity-skewed, with re-buys, over ``windows`` windows."""
    rng = np.random.default_rng(seed)
    n = N_USERS * 8
    p = 1.0 / np.arange(1, N_ITEMS + 1)
    times = np.sort(rng.integers(1_600_000_000, 1_600_000_000 + windows * 1000, n))
    return pd.DataFrame(
        {
            SHOP: SHOP_NAME,
            USER_IDX: rng.integers(0, N_USERS - 3, n),  # the last 3 users: no history
            ITEM_IDX: rng.choice(N_ITEMS, n, p=p / p.sum()),
            TIME: pd.to_datetime(times, unit="s"),
            WINDOW: (times - 1_600_000_000) // 1000,
        }
    )


def _fitted(events: pd.DataFrame, **options) -> ItemItem:
    model = ItemItem(N_USERS, N_ITEMS, **options)
    for _, part in events.groupby(WINDOW, sort=True):
        model.observe(
            Interactions(
                torch.tensor(part[USER_IDX].to_numpy(np.int64)),
                torch.tensor(part[ITEM_IDX].to_numpy(np.int64)),
                torch.tensor(part[TIME].to_numpy("datetime64[s]").astype(np.int64)),
                N_USERS,
                N_ITEMS,
            )
        )
    return model.eval()


@pytest.mark.parametrize(
    "options",
    [
        {"kind": "knn", "k": 5},
        {"kind": "knn", "k": 5, "repeat": 0.0},
        {"kind": "ease", "k": 20, "l2": 5.0},
        {"kind": "ease", "k": 20, "l2": 5.0, "repeat": 0.0, "recency": 0.0},
    ],
)
def test_itemitem_scorer_gives_score_all_bit_for_bit(options):
    model = _fitted(_events(), **options)
    score = model.scorer()
    users = torch.tensor([0, 5, 5, N_USERS - 1, 3, N_USERS - 2])  # repeats, no history

    for batch in (users, users[:1], users[3:4]):
        assert torch.equal(score(batch), model.score_all(batch))


def _reference_top(scores: np.ndarray, k: int) -> np.ndarray:
    """The k best finite scores by one full stable sort (ties: lower index)."""
    order = np.argsort(-scores, kind="stable")
    return order[np.isfinite(scores[order])][: max(k, 0)]


def test_top_is_the_full_stable_sort_whatever_the_ties():
    rng = np.random.default_rng(1)
    for trial in range(300):
        n = int(rng.integers(1, 200))
        if trial % 3 == 0:
            scores = rng.standard_normal(n)
        else:  # heavy ties
            scores = rng.integers(0, 1 + trial % 5, n).astype(np.float64)
        if trial % 4 == 1:
            scores[rng.random(n) < 0.5] = -np.inf  # unsellable or own items
        if trial % 10 == 2:
            scores[rng.integers(n)] = np.nan
        if trial % 10 == 3:
            scores[rng.integers(n)] = np.inf
        for k in (1, 3, 10, n - 1, n, n + 5):
            items, got = _top(scores.copy(), k)
            want = _reference_top(scores, k)
            assert items.tolist() == want.tolist(), (trial, k)
            assert np.array_equal(got, scores[want])


def test_top_of_nothing():
    assert _top(np.zeros(0), 5)[0].tolist() == []
    assert _top(np.full(4, -np.inf), 2)[0].tolist() == []
    assert _top(np.arange(4.0), 0)[0].tolist() == []


@pytest.mark.parametrize("kind", ["knn", "ease"])
def test_recommender_lists_are_those_of_score_all(kind, tmp_path):
    events = _events(seed=2)
    model = _fitted(events, kind=kind, k=20, l2=5.0)
    cfg = {"_target_": "fedcl.models.itemitem.ItemItem", "kind": kind, "k": 20, "l2": 5.0}
    items = np.asarray([f"i{j}" for j in range(N_ITEMS)])
    users = np.asarray([f"u{u}" for u in range(N_USERS)])
    data = SimpleNamespace(events=events, catalog=pd.DataFrame({ITEM: items}))
    store = serving_store(tmp_path / SHOP_NAME)
    write_snapshot(store, SHOP_NAME, int(events[WINDOW].max()), model, cfg, data, users)
    snap = read_snapshot(store, 1)
    sellable = set(items[::3]) | set(items[1::3])  # a third of the catalogue not for sale
    rec = Recommender(snap, sellable)
    k = 7

    asked = [users[0], users[4], users[N_USERS - 1], "nobody", users[4]]
    got = rec.recommend(asked, k)

    with torch.inference_mode():
        rows = torch.tensor([0, 4, N_USERS - 1])
        plain = snap.model.score_all(rows).double().numpy()
    plain[:, ~np.isin(items, list(sellable))] = -np.inf
    for r, user in zip([0, 1, 2], rows.tolist(), strict=True):
        scores = plain[r].copy()
        h = snap.history
        own = h["items"][h["ptr"][user] : h["ptr"][user + 1]]
        discover = scores.copy()
        discover[own] = -np.inf
        want = [(str(items[j]), float(discover[j])) for j in _reference_top(discover, k)]
        assert got[r].lists["discover"] == want
        assert got[r].known and got[r].source == "model"
        bought = {i for i, _ in got[r].lists["buy_again"]}
        assert bought <= set(items[own]) and bought <= sellable
    assert got[3].source == "popularity"
    assert got[4].lists == got[1].lists

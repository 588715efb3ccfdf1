"""The evaluation protocol on hand-made streams: what each R cell and forward cell scores.

Streams are written as rows ``(shop, user, item, window, split)``; users are shop-local
indices, the global index is the order of first appearance of (shop, user).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fedcl.data.dataset import GLOBAL_USER, PreparedData
from fedcl.data.schema import ITEM_IDX, SHOP, SPLIT, TIME, USER_IDX, WINDOW
from fedcl.evaluation import EvalConfig, Evaluator
from fedcl.metrics.ranking import EvalTask

N_ITEMS = 30
Row = tuple[str, int, int, int, str]  # shop, user, item, window, split


def stream(rows: list[Row], n_windows: int) -> PreparedData:
    """A PreparedData holding exactly ``rows`` (time: window, then train before test)."""
    ev = pd.DataFrame(rows, columns=[SHOP, USER_IDX, ITEM_IDX, WINDOW, SPLIT])
    ev["_order"] = ev[WINDOW] * 2 + (ev[SPLIT] == "test")
    ev = ev.sort_values("_order", kind="stable").reset_index(drop=True)
    days, order = pd.to_timedelta(ev["_order"] * 7, "D"), pd.to_timedelta(ev.index, "s")
    ev[TIME] = pd.Timestamp("2021-01-01") + days + order
    first = ev.drop_duplicates([SHOP, USER_IDX])[[SHOP, USER_IDX]].reset_index(drop=True)
    first[GLOBAL_USER] = np.arange(len(first))
    ev = ev.drop(columns="_order").merge(first, on=[SHOP, USER_IDX], how="left")
    ev[SPLIT] = pd.Categorical(ev[SPLIT], categories=["train", "test"])
    starts = pd.Timestamp("2021-01-01") + pd.to_timedelta(np.arange(n_windows) * 14, "D")
    windows = pd.DataFrame(
        {
            WINDOW: np.arange(n_windows),
            "start": starts,
            "cut": starts + pd.Timedelta(days=7),
            "end": starts + pd.Timedelta(days=14),
        }
    )
    catalog = pd.DataFrame({ITEM_IDX: np.arange(N_ITEMS), "first_seen": starts[0]})
    counts = ev.groupby(SHOP)[USER_IDX].nunique().sort_values(ascending=False)
    report = {"per_shop": {s: {"events": 0, "users": int(n)} for s, n in counts.items()}}
    return PreparedData(ev, catalog, windows, report)


class Fixed(nn.Module):
    """A model with a fixed (n_users, N_ITEMS) score table."""

    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__()
        self.scores = scores.double()
        self.n_users = scores.shape[0]

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.scores[users]


def favourite(n_users: int, best: dict[int, list[int]]) -> Fixed:
    """Scores descending by item index reversed, except ``best[u]`` ranked first, in order."""
    scores = -torch.arange(N_ITEMS, dtype=torch.float64).repeat(n_users, 1) / N_ITEMS
    for u, items in best.items():
        for k, item in enumerate(items):
            scores[u, item] = 10.0 - k
    return Fixed(scores)


def evaluator(data: PreparedData) -> Evaluator:
    return Evaluator(data, EvalConfig(), torch.device("cpu"))


def targets(task: EvalTask) -> dict[int, set[int]]:
    ptr, items = task.target_ptr.tolist(), task.target_items.tolist()
    return {int(u): set(items[ptr[k] : ptr[k + 1]]) for k, u in enumerate(task.users.tolist())}


def masks(task: EvalTask) -> dict[int, set[int]]:
    ptr, items = task.mask_ptr.tolist(), task.mask_items.tolist()
    return {int(u): set(items[ptr[k] : ptr[k + 1]]) for k, u in enumerate(task.users.tolist())}


# --- forward: the whole next window ---------------------------------------------------------
FORWARD_STREAM: list[Row] = [
    ("a", 0, 0, 0, "train"),
    ("a", 0, 1, 0, "test"),
    ("a", 1, 2, 0, "train"),
    ("a", 2, 8, 0, "test"),  # first seen after window 0's cut: the model has no row for it
    ("a", 0, 3, 1, "train"),  # next window, train part
    ("a", 0, 1, 1, "train"),  # a re-buy of a window-0 test item
    ("a", 0, 4, 1, "test"),
    ("a", 1, 5, 1, "test"),
    ("a", 2, 9, 1, "train"),
    ("a", 3, 6, 1, "train"),  # a user without history: cold
]


def test_forward_scores_every_event_of_the_next_window_for_known_users() -> None:
    ev = evaluator(stream(FORWARD_STREAM, 2))
    model = favourite(2, {0: [3]})  # user 0's top item is bought in window 1's TRAIN part
    per_user: list[pd.DataFrame] = []

    out = ev.forward(model, "a", 0, per_user)

    assert targets(ev.forward_task("a", 0, "repeat")) == {0: {1, 3, 4}, 1: {5}, 2: {9}}
    assert targets(ev.forward_task("a", 0, "new")) == {0: {3, 4}, 1: {5}, 2: {9}}
    assert ev.forward_task("a", 0, "repeat").n_cold_users == 1
    assert masks(ev.forward_task("a", 0, "new"))[0] == {0, 1}  # train AND test of window 0
    assert out["repeat"]["a"]["n_users"] == 2  # user 2 is unknown to the model
    frame = pd.concat(per_user)
    user0 = frame[(frame["variant"] == "new") & (frame["user"] == 0)].iloc[0]
    assert user0["mrr"] == 1.0  # a train-part item of window 1 is a target
    assert (frame["kind"] == "forward").all()
    assert set(frame["i"]) == {1} and set(frame["t"]) == {0}


def test_no_forward_cell_after_the_last_window() -> None:
    ev = evaluator(stream(FORWARD_STREAM, 2))

    assert ev.forward(favourite(3, {}), "a", 1) == {"new": {}, "repeat": {}}
    with pytest.raises(ValueError, match="forward"):
        ev.forward(favourite(4, {}), "a", 2)


# --- new means new to the user --------------------------------------------------------------
def test_new_targets_exclude_items_bought_in_earlier_test_parts() -> None:
    rows: list[Row] = [
        ("a", 0, 0, 0, "train"),
        ("a", 0, 1, 0, "test"),
        ("a", 0, 1, 1, "test"),  # bought in window 0's test part already
        ("a", 0, 7, 1, "test"),
        ("a", 1, 2, 0, "train"),
        ("a", 1, 2, 1, "test"),  # its only target is a re-buy: dropped from `new`
    ]
    ev = evaluator(stream(rows, 2))

    new, repeat = ev.task("a", 1, "new"), ev.task("a", 1, "repeat")

    assert targets(new) == {0: {7}} and masks(new)[0] == {0, 1}
    assert new.n_dropped_users == 1
    assert targets(repeat) == {0: {1, 7}, 1: {2}}


# --- no cell gains from later purchases ------------------------------------------------------
LATER_STREAM: list[Row] = [
    ("a", 0, 0, 0, "train"),
    ("a", 0, 1, 0, "test"),
    ("a", 0, 2, 0, "test"),
    ("a", 1, 3, 0, "train"),
    ("a", 1, 4, 0, "test"),
    ("a", 0, 1, 1, "train"),  # user 0 re-buys its window-0 target 1 later
    ("a", 1, 4, 2, "train"),  # user 1 re-buys its only window-0 target two windows later
    ("a", 0, 5, 1, "test"),
    ("a", 1, 6, 2, "test"),
]


@pytest.mark.parametrize("variant", ["new", "repeat"])
def test_a_later_purchase_is_left_out_of_older_cells(variant: str) -> None:
    ev = evaluator(stream(LATER_STREAM, 3))

    before = targets(ev.cell_task("a", 0, variant, 0))
    after_1 = targets(ev.cell_task("a", 0, variant, 1))
    after_2 = ev.cell_task("a", 0, variant, 2)

    assert before == {0: {1, 2}, 1: {4}}
    assert after_1 == {0: {2}, 1: {4}}
    assert targets(after_2) == {0: {2}}  # user 1 has nothing left: it drops out
    assert after_2.n_dropped_users == ev.task("a", 0, variant).n_dropped_users + 1


def test_a_cell_cannot_rise_from_a_later_purchase() -> None:
    ev = evaluator(stream(LATER_STREAM, 3))
    model = favourite(2, {0: [1], 1: [4]})  # each user's top item is the one re-bought later
    rows: dict[int, list[pd.DataFrame]] = {}

    cells = {t: ev.row(model, "a", t, rows.setdefault(t, [])) for t in (-1, 0, 1, 2)}

    assert cells[0]["new"][0]["a"]["mrr"] == 1.0  # right after window 0: both users hit
    assert cells[1]["new"][0]["a"]["mrr"] < 1.0  # user 0's hit came from a later purchase
    assert cells[2]["new"][0]["a"]["n_users"] == 1
    assert cells[-1]["new"][0]["a"] == cells[0]["new"][0]["a"]
    frame = pd.concat(rows[1])
    cell = frame[(frame["variant"] == "new") & (frame["i"] == 0)]
    assert cell["mrr"].mean() == pytest.approx(cells[1]["new"][0]["a"]["mrr"])


# --- per-user values -------------------------------------------------------------------------
def test_per_user_frames_of_a_pooled_model_name_each_users_shop() -> None:
    rows: list[Row] = [
        ("a", 0, 0, 0, "train"),
        ("b", 0, 1, 0, "train"),
        ("a", 0, 2, 0, "test"),
        ("b", 0, 3, 0, "test"),
        ("b", 1, 3, 0, "train"),
        ("b", 1, 4, 0, "test"),
    ]
    data = stream(rows, 1)
    ev = evaluator(data)
    per_user: list[pd.DataFrame] = []

    out = ev.row(favourite(3, {}), None, 0, per_user)

    frame = pd.concat(per_user)
    assert list(frame.columns[:6]) == ["kind", "variant", "t", "i", "shop", "user"]
    assert {"hr@10", "ndcg@10", "recall@20", "mrr"} <= set(frame.columns)
    new = frame[frame["variant"] == "new"].sort_values("user")
    owner = data.events.drop_duplicates(GLOBAL_USER).set_index(GLOBAL_USER)[SHOP]
    assert new["shop"].tolist() == owner.loc[new["user"]].tolist()
    assert (new.groupby("shop").size() == pd.Series({"a": 1, "b": 2})).all()
    assert out["new"][0]["b"]["n_users"] == 2 and out["new"][0]["a"]["n_users"] == 1


# --- invariants on random streams -----------------------------------------------------------
rows_st = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
        st.integers(0, 3),
        st.integers(0, 8),
        st.integers(0, 3),
        st.sampled_from(["train", "test"]),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=40, deadline=None)
@given(rows_st)
def test_no_target_was_bought_before_or_in_a_later_train_part(rows: list[Row]) -> None:
    data = stream(rows, 4)
    ev = evaluator(data)
    bought = {(s, u, i, w, p) for s, u, i, w, p in rows}

    for shop in data.shops:
        for i in range(4):
            for t in range(-1, 4):
                for variant in ("new", "repeat"):
                    for u, items in targets(ev.cell_task(shop, i, variant, t)).items():
                        for item in items:
                            assert (shop, u, item, i, "test") in bought
                            later = [(shop, u, item, w, "train") for w in range(i + 1, t + 1)]
                            assert not bought.intersection(later)
                            if variant == "new":
                                earlier = [
                                    (shop, u, item, w, p)
                                    for w in range(i)
                                    for p in ("train", "test")
                                ]
                                earlier.append((shop, u, item, i, "train"))
                                assert not bought.intersection(earlier)

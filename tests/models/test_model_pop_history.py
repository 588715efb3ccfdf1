"""Hand-checked scores of the count models, and History's CSR against a dense reference."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from model_fixtures import make_interactions

from fedcl.data.interactions import Interactions
from fedcl.models.history import History
from fedcl.models.pop import Pop


def test_pop_ranks_the_most_bought_item_first_and_decays_old_windows():
    model = Pop(n_users=2, n_items=4, decay=0.5)
    model.observe(make_interactions([0, 1, 0, 1, 0, 1], [0, 0, 1, 2, 2, 2], 2, 4))
    first = model.score_all(torch.tensor([0, 1]))
    model.observe(make_interactions([0, 1], [1, 1], 2, 4))
    second = model.score_all(torch.tensor([1]))

    assert first.tolist() == [[2.0, 1.0, 3.0, 0.0]] * 2
    assert first[0].argmax() == 2
    assert second.tolist() == [[1.0, 2.5, 1.5, 0.0]]
    assert model.score(torch.tensor([0]), torch.tensor([1])).tolist() == [2.5]


def test_pop_all_time_keeps_every_count():
    model = Pop(n_users=1, n_items=3, decay=1.0)
    model.observe(make_interactions([0, 0], [0, 0], 1, 3))
    model.observe(make_interactions([0], [1], 1, 3))
    assert model.item_counts.tolist() == [2.0, 1.0, 0.0]


def test_history_ranks_own_frequent_items_first_then_popularity():
    # user 0: item 2 three times, item 1 once; user 1: item 0 twice, item 3 once.
    model = History(n_users=3, n_items=5, decay=0.8, recency=1e-3)
    model.observe(make_interactions([0, 0, 1, 0, 1, 0, 1], [2, 2, 0, 2, 0, 1, 3], 3, 5))
    scores = model.score_all(torch.tensor([0, 1, 2]))

    assert scores[0].argsort(descending=True).tolist() == [2, 1, 0, 3, 4]
    assert scores[1].argsort(descending=True).tolist() == [0, 3, 2, 1, 4]
    # A user with no history gets the shop's popularity, all below 0.
    assert scores[2].argsort(descending=True).tolist() == [2, 0, 1, 3, 4]
    assert (scores[2] < 0).all() and (scores[0, [1, 2]] > 0).all()
    torch.testing.assert_close(scores[0, 2], torch.tensor(3.0), atol=1e-3, rtol=0)


def test_history_decay_lets_recent_purchases_overtake():
    model = History(n_users=1, n_items=3, decay=0.5)
    model.observe(make_interactions([0, 0, 0], [2, 2, 2], 1, 3))
    model.observe(make_interactions([0, 0], [1, 1], 1, 3))
    scores = model.score_all(torch.tensor([0]))[0]
    assert scores.argmax() == 1  # 2.0 > 3 * 0.5
    torch.testing.assert_close(scores[2], torch.tensor(1.5), atol=1e-3, rtol=0)


def test_history_breaks_count_ties_by_recency():
    model = History(n_users=1, n_items=3)
    model.observe(make_interactions([0, 0], [2, 0], 1, 3))
    assert model.score_all(torch.tensor([0]))[0].argmax() == 0


def dense_reference(windows: list[Interactions], n_users, n_items, decay, recency):
    weight = torch.zeros(n_users, n_items, dtype=torch.float64)
    last = torch.full((n_users, n_items), -1, dtype=torch.long)
    pop = torch.zeros(n_items, dtype=torch.float64)
    for w in windows:
        weight *= decay
        pop *= decay
        for u, i, t in zip(w.users.tolist(), w.items.tolist(), w.times.tolist(), strict=True):
            weight[u, i] += 1
            pop[i] += 1
            last[u, i] = max(last[u, i].item(), t)
    bought = last >= 0
    fallback = pop / (pop.max() + 1) - 1
    if not bought.any():
        return fallback.expand(n_users, -1)
    t0, t1 = last[bought].min().double(), last[bought].max().double()
    own = weight + recency * (last.double() - t0) / (t1 - t0 + 1)
    return torch.where(bought, own, fallback.expand(n_users, -1))


events = st.lists(st.tuples(st.integers(0, 5), st.integers(0, 6)), max_size=25)


@settings(max_examples=30, deadline=None)
@given(st.lists(events, min_size=1, max_size=4), st.sampled_from([0.5, 0.8, 1.0]))
def test_history_matches_a_dense_reference(windows, decay):
    model = History(n_users=6, n_items=7, decay=decay)
    parts, clock = [], 0
    for w in windows:
        users, items = [e[0] for e in w], [e[1] for e in w]
        times = torch.arange(clock, clock + len(w), dtype=torch.long)
        clock += len(w) + 10
        parts.append(
            Interactions(
                torch.tensor(users, dtype=torch.long),
                torch.tensor(items, dtype=torch.long),
                times,
                6,
                7,
            )
        )
        model.observe(parts[-1])
    expected = dense_reference(parts, 6, 7, decay, model.recency).float()
    users = torch.arange(6)
    torch.testing.assert_close(model.score_all(users), expected)
    pairs_u, pairs_i = users.repeat_interleave(7), torch.arange(7).repeat(6)
    torch.testing.assert_close(model.score(pairs_u, pairs_i), expected.flatten())


def test_history_private_state_loads_into_a_fresh_model():
    source = History(n_users=3, n_items=4)
    source.observe(make_interactions([0, 1, 2, 0], [1, 2, 3, 1], 3, 4))
    target = History(n_users=3, n_items=4)
    target.load_state_dict(source.private_state(), strict=False)
    users = torch.arange(3)
    assert torch.equal(target.score_all(users), source.score_all(users))

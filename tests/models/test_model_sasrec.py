"""SASRec's sequence state and batches."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from model_fixtures import make_interactions

from fedcl.data.interactions import Interactions
from fedcl.models.sasrec import SASRec


def tiny(n_users: int = 3, n_items: int = 12, max_len: int = 3) -> SASRec:
    torch.manual_seed(0)
    return SASRec(n_users, n_items, dim=8, n_layers=1, n_heads=1, max_len=max_len).eval()


def test_observe_appends_in_time_order_and_keeps_the_last_max_len():
    model = tiny()
    # Interleaved users: user 0 buys 5 then 6, user 1 buys 1, 2, 3, 4.
    model.observe(make_interactions([1, 0, 1, 1, 0, 1], [1, 5, 2, 3, 6, 4], 3, 12))
    assert model.user_seq.tolist() == [[0, 6, 7], [3, 4, 5], [0, 0, 0]]  # item rows = item + 1
    model.observe(make_interactions([0, 2], [9, 11], 3, 12))
    assert model.user_seq.tolist() == [[6, 7, 10], [3, 4, 5], [0, 0, 12]]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 9)), max_size=12), max_size=4))
def test_observe_matches_a_list_reference(windows):
    model = tiny(n_users=4, n_items=10, max_len=4)
    reference: list[list[int]] = [[] for _ in range(4)]
    for w in windows:
        users, items = [e[0] for e in w], [e[1] for e in w]
        model.observe(make_interactions(users, items, 4, 10) if w else Interactions.empty(4, 10))
        for u, i in w:
            reference[u].append(i + 1)
    expected = [([0] * 4 + seq)[-4:] for seq in reference]
    assert model.user_seq.tolist() == expected


def test_batches_shift_inputs_and_skip_padding():
    model = tiny(max_len=4)
    data = make_interactions([0, 0, 0, 1, 1], [1, 2, 3, 4, 5], 3, 12)
    model.observe(data)
    batches = list(model.batches(data, 8, None, torch.Generator().manual_seed(0)))
    assert len(batches) == 1 and batches[0].size == 2  # 8 // max_len = 2 sequences
    b = batches[0]
    order = b.users.argsort()
    seq, pos, neg = (b.extra[k][order] for k in ("seq", "pos", "neg"))
    assert pos.tolist() == [[2, 3, 4], [0, 5, 6]]  # trimmed to the longest sequence (3)
    assert seq.tolist() == [[0, 2, 3], [0, 0, 5]]
    assert neg.shape == (2, 3, 1)
    assert ((neg == 0) == (pos == 0)[..., None]).all()
    assert ((neg >= 0) & (neg <= 12)).all()
    assert b.pos[order].tolist() == [3, 5]  # last targets, as item indices


def test_a_users_score_does_not_depend_on_the_other_users_in_the_batch():
    model = tiny(n_users=3, max_len=5)
    model.observe(make_interactions([0, 1, 1, 1, 1, 1], [4, 1, 2, 3, 5, 6], 3, 12))
    alone = model.score_all(torch.tensor([0]))
    with_long = model.score_all(torch.tensor([0, 1, 2]))
    torch.testing.assert_close(alone[0], with_long[0])
    empty_alone = model.score_all(torch.tensor([2]))
    torch.testing.assert_close(empty_alone[0], with_long[2])


def test_padding_row_stays_zero_after_training_and_growing():
    model = tiny()
    data = make_interactions([0, 0, 1], [1, 2, 3], 3, 12)
    model.observe(data)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model.train()
    for batch in model.batches(data, 8, None, torch.Generator().manual_seed(0)):
        model.loss(batch).backward()
        opt.step()
    model.grow(4, 15)
    assert torch.equal(model.item_emb.weight[0], torch.zeros(8))
    assert model.item_emb.weight.shape == (16, 8)

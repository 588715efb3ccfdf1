"""Contract tests every recommender must pass (shapes, split, grow, learning, determinism)."""

from __future__ import annotations

import pytest
import torch
from model_fixtures import (
    BOUGHT,
    BUILDERS,
    N_ITEMS,
    N_USERS,
    TRAINABLE,
    build,
    shared_purchases,
    train,
)

from fedcl.models.base import Batch
from fedcl.models.sampling import NegativeSampler

ALL = list(BUILDERS)
USERS = torch.tensor([0, 5, 36, 5])


def observed(name: str, seed: int = 0):
    model = build(name, seed)
    model.observe(shared_purchases())
    model.eval()
    return model


def first_batch(model, data, seed: int = 0) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    negatives = NegativeSampler(model.n_items).sample(len(data), 2, gen)
    return next(iter(model.batches(data, 64, negatives, gen)))


@pytest.mark.parametrize("name", ALL)
def test_score_shapes_and_consistency(name):
    model = observed(name)
    items = torch.tensor([3, 0, 22, 11])
    with torch.no_grad():
        all_scores = model.score_all(USERS)
        pair_scores = model.score(USERS, items)
    assert all_scores.shape == (4, N_ITEMS)
    assert pair_scores.shape == (4,)
    assert torch.isfinite(all_scores).all()
    torch.testing.assert_close(pair_scores, all_scores[torch.arange(4), items])


@pytest.mark.parametrize("name", TRAINABLE)
def test_loss_is_a_finite_scalar(name, data):
    model = observed(name)
    loss = model.loss(first_batch(model, data))
    assert loss.shape == ()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("name", ALL)
def test_shared_state_is_not_sized_by_users(name):
    model = observed(name)
    shared, private = model.shared_state(), model.private_state()
    assert set(shared).isdisjoint(private)
    assert set(shared) | set(private) == set(model.state_dict())
    for key, tensor in shared.items():
        assert N_USERS not in tensor.shape, key
    user_sized = {k for k, v in model.state_dict().items() if v.shape[:1] == (N_USERS,)}
    assert user_sized <= set(private)
    assert private, "every model keeps some private state"


@pytest.mark.parametrize(
    ("name", "user_keys"),
    [
        ("mf", {"user_emb.weight"}),
        ("neumf", {"user_gmf.weight", "user_mlp.weight"}),
        ("sasrec", {"user_seq"}),
        ("history", {"user_hist_ptr", "item_counts"}),
        ("pop", {"item_counts"}),
    ],
)
def test_private_state_holds_the_user_tables(name, user_keys):
    assert user_keys <= set(observed(name).private_state())


@pytest.mark.parametrize("name", ALL)
def test_load_shared_state_round_trip(name):
    source, target = observed(name, seed=1), observed(name, seed=2)
    private_before = {k: v.clone() for k, v in target.private_state().items()}
    target.load_shared_state({k: v.clone() for k, v in source.shared_state().items()})
    for key, value in source.shared_state().items():
        assert torch.equal(target.shared_state()[key], value), key
    for key, value in private_before.items():
        assert torch.equal(target.private_state()[key], value), key
    if source.shared_state():
        with pytest.raises(KeyError, match="shared keys differ"):
            target.load_shared_state({})


@pytest.mark.parametrize("name", ALL)
def test_grow_keeps_rows_and_scores_new_ones(name):
    model = observed(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shared_keys = set(model.shared_state())
    model.grow(N_USERS + 4, N_ITEMS + 5)
    after = model.state_dict()
    assert set(model.shared_state()) == shared_keys
    for key, old in before.items():
        new = after[key]
        if key.endswith(("user_hist_items", "user_hist_weight", "user_hist_last")):
            assert torch.equal(new, old), key  # entries, not rows: unchanged
            continue
        assert new.shape[1:] == old.shape[1:], key
        assert torch.equal(new[: old.shape[0]], old), key
    assert (model.n_users, model.n_items) == (N_USERS + 4, N_ITEMS + 5)
    with torch.no_grad():
        scores = model.score_all(torch.tensor([0, N_USERS + 3]))
        pairs = model.score(torch.tensor([0, N_USERS + 3]), torch.tensor([N_ITEMS + 4, 3]))
    assert scores.shape == (2, N_ITEMS + 5)
    assert torch.isfinite(scores).all() and torch.isfinite(pairs).all()


@pytest.mark.parametrize("name", TRAINABLE)
def test_training_lowers_loss_and_ranks_bought_items_first(name, data):
    model = observed(name)
    batch = first_batch(model, data, seed=123)
    with torch.no_grad():
        model.eval()
        loss_before = model.loss(batch).item()
    train(model, name, data, epochs=15)
    with torch.no_grad():
        loss_after = model.loss(batch).item()
        top = model.score_all(torch.arange(N_USERS)).topk(len(BOUGHT)).indices
    assert loss_after < 0.5 * loss_before
    assert (top.sort(dim=1).values == torch.tensor(BOUGHT)).all()


@pytest.mark.parametrize("name", TRAINABLE)
def test_same_seed_same_parameters(name, data):
    states = []
    for _ in range(2):
        model = observed(name, seed=7)
        train(model, name, data, epochs=2, seed=3)
        states.append(model.state_dict())
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


@pytest.mark.parametrize("name", TRAINABLE)
def test_different_seed_different_parameters(name, data):
    a, b = observed(name, seed=1), observed(name, seed=2)
    key = next(iter(a.shared_state()))
    assert not torch.equal(a.state_dict()[key], b.state_dict()[key])


@pytest.mark.parametrize("name", ALL)
def test_observe_rejects_unknown_items(name):
    model = build(name)
    too_big = shared_purchases()
    too_big.n_items = N_ITEMS + 1
    with pytest.raises(ValueError, match="grow"):
        model.observe(too_big)

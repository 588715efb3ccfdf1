"""Item-item models: the Gram of decayed histories, kNN and EASE weights against direct
computations on a tiny matrix, the re-buy blend, and the state a shop saves."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from fedcl.data.interactions import Interactions
from fedcl.models.itemitem import ItemItem, ItemItemConfig, gram, solve, top_k, user_item_matrix

N_USERS, N_ITEMS = 4, 5


def _events(pairs: list[tuple[int, int]], time: int) -> Interactions:
    users = torch.tensor([u for u, _ in pairs])
    items = torch.tensor([i for _, i in pairs])
    return Interactions(users, items, torch.full((len(pairs),), time), N_USERS, N_ITEMS)


WINDOW_0 = [(0, 0), (0, 1), (0, 1), (1, 1), (1, 2), (2, 0), (2, 3)]
WINDOW_1 = [(0, 2), (1, 1), (3, 3), (3, 4), (2, 0)]


def _model(**options) -> ItemItem:
    model = ItemItem(N_USERS, N_ITEMS, decay=0.5, **options)
    model.observe(_events(WINDOW_0, 1_000))
    model.observe(_events(WINDOW_1, 2_000))
    return model


def _direct_x() -> np.ndarray:
    """X by hand: window-0 counts x 0.5 (one window old) + window-1 counts."""
    x = np.zeros((N_USERS, N_ITEMS))
    for u, i in WINDOW_0:
        x[u, i] += 0.5
    for u, i in WINDOW_1:
        x[u, i] += 1.0
    return x


def test_the_gram_is_x_transpose_x_of_the_decayed_counts():
    model = _model()

    assert np.allclose(user_item_matrix(model).toarray(), _direct_x())
    assert np.allclose(model.statistics().toarray(), _direct_x().T @ _direct_x())


def test_knn_weights_are_the_asymmetric_cosine_of_the_gram():
    g = _direct_x().T @ _direct_x()
    cfg = ItemItemConfig(alpha=0.7, shrink=2.0, k=N_ITEMS)

    s = solve(gram(user_item_matrix(_model())), cfg).toarray()

    d = np.diag(g)
    direct = g / (d[:, None] ** 0.7 * d[None, :] ** 0.3 + 2.0)
    np.fill_diagonal(direct, 0.0)
    assert np.allclose(s, direct)


def test_ease_weights_solve_each_items_ridge_regression_on_the_others():
    x, l2 = _direct_x(), 3.0
    cfg = ItemItemConfig(kind="ease", l2=l2, k=N_ITEMS)

    s = solve(gram(user_item_matrix(_model())), cfg).toarray()

    for j in range(N_ITEMS):  # column j: min ||x_j - X_-j b||^2 + l2 ||b||^2
        others = [i for i in range(N_ITEMS) if i != j]
        xo = x[:, others]
        b = np.linalg.solve(xo.T @ xo + l2 * np.eye(len(others)), xo.T @ x[:, j])
        assert np.allclose(s[others, j], b) and s[j, j] == 0


def test_top_k_keeps_each_rows_largest_weights_by_magnitude():
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(6, 6))

    kept = top_k(sp.csr_matrix(dense), 2).toarray()

    for row, full in zip(kept, dense, strict=True):
        assert np.count_nonzero(row) == 2
        assert set(np.nonzero(row)[0]) == set(np.argsort(-np.abs(full))[:2])


def test_scores_rank_neighbours_of_what_the_user_bought_and_a_blend_puts_rebuys_first():
    plain, blended = _model(k=N_ITEMS, repeat=0.0), _model(k=N_ITEMS, repeat=10.0)
    user = torch.tensor([3])  # bought 3 and 4

    scores = plain.score_all(user)[0]
    rebuy = blended.score_all(user)[0]

    x = _direct_x()
    similar = x[3] @ solve(plain.statistics(), plain.cfg).toarray()
    assert torch.argmax(scores).item() == int(np.argmax(similar))
    assert set(torch.topk(rebuy, 2).indices.tolist()) == {3, 4}


def test_a_user_with_no_history_gets_popularity():
    model = ItemItem(N_USERS + 1, N_ITEMS, decay=0.5)
    model.observe(_events(WINDOW_0, 1_000))

    scores = model.score_all(torch.tensor([N_USERS]))[0]

    pop = np.diag(_direct_x_window0().T @ _direct_x_window0())
    assert torch.argmax(scores).item() == int(np.argmax(pop))


def _direct_x_window0() -> np.ndarray:
    x = np.zeros((N_USERS, N_ITEMS))
    for u, i in WINDOW_0:
        x[u, i] += 1.0
    return x


@pytest.mark.parametrize("kind", ["knn", "ease"])
def test_state_round_trip_and_growth_keep_the_scores(kind):
    model = _model(kind=kind, repeat=1.0)
    copy = ItemItem(1, 1, decay=0.5, kind=kind, repeat=1.0)
    copy.grow(N_USERS, N_ITEMS)
    copy.load_state_dict(model.state_dict())
    users = torch.arange(N_USERS)

    assert torch.equal(copy.score_all(users), model.score_all(users))
    model.grow(N_USERS + 2, N_ITEMS + 3)
    grown = model.score_all(users)
    assert grown.shape == (N_USERS, N_ITEMS + 3)
    assert torch.equal(grown[:, :N_ITEMS], copy.score_all(users))

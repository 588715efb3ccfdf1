"""ALS's two steps against the dense closed forms of implicit-feedback ALS on a tiny matrix,
its sums adding up over disjoint users, and the state a shop saves."""

from __future__ import annotations

import numpy as np
import torch

from fedcl.data.interactions import Interactions
from fedcl.models.als import ALS, add

N_USERS, N_ITEMS, DIM = 5, 6, 3
PAIRS = [(0, 0), (0, 1), (0, 1), (1, 1), (1, 2), (2, 0), (2, 3), (3, 4), (3, 5), (4, 2), (4, 5)]


def _model(**options) -> ALS:
    torch.manual_seed(0)
    model = ALS(N_USERS, N_ITEMS, factors=DIM, reg=0.5, alpha=2.0, iterations=2, **options)
    users = torch.tensor([u for u, _ in PAIRS])
    items = torch.tensor([i for _, i in PAIRS])
    model.observe(Interactions(users, items, torch.arange(len(PAIRS)), N_USERS, N_ITEMS))
    return model


def _dense(model: ALS) -> tuple[np.ndarray, np.ndarray]:
    """Confidence and preference matrices (users x items), by hand."""
    x = np.zeros((N_USERS, N_ITEMS))
    for u, i in PAIRS:
        x[u, i] += 1.0
    return 1.0 + model.cfg.alpha * x, (x > 0).astype(float)


def test_the_user_step_is_the_weighted_ridge_regression_over_every_item():
    model = _model()
    c, p = _dense(model)
    y = model.item_factors.numpy()

    model.solve_users()

    for u in range(N_USERS):
        cu = np.diag(c[u])
        direct = np.linalg.solve(y.T @ cu @ y + 0.5 * np.eye(DIM), y.T @ cu @ p[u])
        assert np.allclose(model.user_factors[u].numpy(), direct)


def test_the_item_step_from_the_sums_is_the_weighted_ridge_regression_over_every_user():
    model = _model()
    c, p = _dense(model)
    f = model.user_factors.numpy()

    model.fit(model.statistics())

    for i in range(N_ITEMS):
        ci = np.diag(c[:, i])
        direct = np.linalg.solve(f.T @ ci @ f + 0.5 * np.eye(DIM), f.T @ ci @ p[:, i])
        assert np.allclose(model.item_factors[i].numpy(), direct)


def test_sums_over_disjoint_users_add_up_to_the_whole():
    model = _model()
    whole = model.statistics()
    f = model.user_factors.clone()
    halves = []
    for keep in (torch.arange(N_USERS) < 2, torch.arange(N_USERS) >= 2):
        model.user_factors = f * keep[:, None]  # the others' factors zero: not their shop
        halves.append(model.statistics())

    summed = add(halves, N_ITEMS, DIM)

    full = add([whole], N_ITEMS, DIM)
    assert np.allclose(summed.xtx, full.xtx)
    assert np.allclose(summed.a, full.a) and np.allclose(summed.b, full.b)


def test_state_round_trip_and_growth_keep_the_scores():
    model = _model()
    copy = ALS(1, 1, factors=DIM, reg=0.5, alpha=2.0, iterations=2)
    copy.grow(N_USERS, N_ITEMS)
    copy.load_state_dict(model.state_dict())
    users = torch.arange(N_USERS)

    assert torch.equal(copy.score_all(users), model.score_all(users))
    model.grow(N_USERS + 1, N_ITEMS + 2)
    assert torch.equal(model.score_all(users)[:, :N_ITEMS], copy.score_all(users))
    assert torch.equal(model.score_all(torch.tensor([N_USERS])), torch.zeros(1, N_ITEMS + 2))

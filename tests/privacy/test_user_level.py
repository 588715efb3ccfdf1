"""The shop's DP step: each user's contribution is clipped, Gaussian noise of the stated
scale is really added to every shared coordinate (and none to a user's own row), and one
user's events move the pre-noise sum by at most the clip."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fedcl.data.interactions import Interactions
from fedcl.models.mf import MF
from fedcl.privacy.config import DPConfig
from fedcl.privacy.user_level import dp_train
from fedcl.train import TrainConfig

N_USERS, N_ITEMS = 40, 200
SGD = TrainConfig(optimizer="sgd", lr=1.0, n_neg=1)
#: Every user in the one step (rate 1, one epoch).
ALL = DPConfig(enabled=True, user_rate=1.0, epochs_per_round=1.0, clip=0.05)


def _data(n_users: int = N_USERS) -> Interactions:
    gen = torch.Generator().manual_seed(0)
    users = torch.arange(n_users).repeat_interleave(6)
    items = torch.randint(0, N_ITEMS, (len(users),), generator=gen)
    return Interactions(users, items, torch.arange(len(users)), N_USERS, N_ITEMS)


def _step(sigma: float, dp: DPConfig = ALL, data: Interactions | None = None):
    """The shared and the user parameters' change after one DP step of a fixed model."""
    torch.manual_seed(0)
    model = MF(N_USERS, N_ITEMS, dim=8, init_std=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dp_train(model, data or _data(), dp, sigma, SGD, torch.Generator().manual_seed(1))
    return {k: v - before[k] for k, v in model.state_dict().items()}


def test_noise_of_the_stated_scale_is_added_to_every_shared_coordinate_only():
    clean, noisy = _step(0.0), _step(4.0)
    noise = {k: noisy[k] - clean[k] for k in clean}

    expected_std = SGD.lr * 4.0 * ALL.clip / N_USERS  # lr * sigma * clip / expected users
    shared = torch.cat([noise[k].flatten() for k in ("item_emb.weight", "item_bias.weight")])
    assert shared.std().item() == pytest.approx(expected_std, rel=0.06)  # 1,800 draws: SE 1.7%
    assert shared.mean().abs().item() < 4 * expected_std / len(shared) ** 0.5
    assert (shared != 0).all()  # also the items nobody bought
    assert torch.equal(noise["user_emb.weight"], torch.zeros_like(noise["user_emb.weight"]))


def test_the_shared_update_is_bounded_by_the_clip():
    update = _step(0.0)
    shared = torch.cat([update[k].flatten() for k in ("item_emb.weight", "item_bias.weight")])

    assert shared.norm().item() <= SGD.lr * ALL.clip * (1 + 1e-5)  # mean of norms <= clip


def test_one_user_moves_the_sum_by_at_most_the_clip():
    # The sum before noise: the update times the expected number of users (lr 1, SGD).
    def clipped_sum(n_users: int) -> torch.Tensor:
        update = _step(0.0, data=_data(n_users))
        return -n_users * torch.cat(
            [update[k].flatten() for k in ("item_emb.weight", "item_bias.weight")]
        )

    with_user, without = clipped_sum(N_USERS), clipped_sum(N_USERS - 1)

    moved = (with_user - without).norm().item()
    assert 0 < moved <= ALL.clip * (1 + 1e-5)


def test_users_are_poisson_sampled_at_the_stated_rate():
    dp = dataclasses.replace(ALL, user_rate=0.25, epochs_per_round=25.0)  # 100 steps
    torch.manual_seed(0)
    model = MF(N_USERS, N_ITEMS, dim=8)

    stats = dp_train(model, _data(), dp, 1.0, SGD, torch.Generator().manual_seed(3))

    rows_per_step = stats.examples / dp.steps
    assert rows_per_step == pytest.approx(0.25 * len(_data()), rel=0.1)

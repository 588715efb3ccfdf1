"""NegativeSampler: shapes, range, popularity bias, determinism."""

from __future__ import annotations

import pytest
import torch
from model_fixtures import make_interactions

from fedcl.models.sampling import NegativeSampler


@pytest.mark.parametrize("mode", ["uniform", "popularity"])
def test_shape_and_range(mode):
    counts = torch.tensor([5, 1, 0, 2, 9, 1, 1])
    sampler = NegativeSampler(7, mode, counts=counts)
    out = sampler.sample(50, 3, torch.Generator().manual_seed(0))
    assert out.shape == (50, 3) and out.dtype == torch.long
    assert ((out >= 0) & (out < 7)).all()


def test_popularity_mode_prefers_popular_items():
    counts = torch.tensor([1000, 100, 10, 1, 0])
    sampler = NegativeSampler(5, "popularity", alpha=0.75, counts=counts)
    draws = sampler.sample(20_000, 2, torch.Generator().manual_seed(1)).flatten()
    freq = torch.bincount(draws, minlength=5).double() / draws.numel()
    expected = counts.double() ** 0.75 / (counts.double() ** 0.75).sum()
    assert freq[0] > freq[1] > freq[2] > freq[3]
    assert freq[4] == 0  # never-sold items are never drawn in this mode
    torch.testing.assert_close(freq, expected, atol=0.01, rtol=0)
    torch.testing.assert_close(sampler.probabilities, expected)


def test_uniform_mode_covers_items_evenly():
    draws = NegativeSampler(4).sample(10_000, 1, torch.Generator().manual_seed(2))
    freq = torch.bincount(draws.flatten(), minlength=4).double() / draws.numel()
    torch.testing.assert_close(freq, torch.full((4,), 0.25, dtype=torch.float64), atol=0.02, rtol=0)


def test_from_interactions_counts_train_items_and_same_seed_same_draws():
    train = make_interactions([0, 1, 2, 0], [2, 2, 2, 0], 3, 4)
    sampler = NegativeSampler.from_interactions(train, "popularity", alpha=1.0)
    torch.testing.assert_close(sampler.probabilities, torch.tensor([0.25, 0, 0.75, 0]).double())
    a = sampler.sample(10, 4, torch.Generator().manual_seed(3))
    b = sampler.sample(10, 4, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_all_zero_counts_fall_back_to_uniform_and_bad_mode_is_rejected():
    sampler = NegativeSampler(3, "popularity", counts=torch.zeros(3))
    torch.testing.assert_close(sampler.probabilities, torch.full((3,), 1 / 3).double())
    with pytest.raises(ValueError, match="uniform or popularity"):
        NegativeSampler(3, "zipf")  # type: ignore[arg-type]

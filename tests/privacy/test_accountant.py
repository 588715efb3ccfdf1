"""The accountant is dp-accounting's RDP accountant: it reproduces another library's figure,
composes rounds as steps, calibrates noise to a budget, and the ledger stops at the budget."""

from __future__ import annotations

import math

import pytest

from fedcl.privacy.accountant import Ledger, calibrate, epsilon
from fedcl.privacy.config import DPConfig


def test_epsilon_reproduces_opacus_for_the_dp_sgd_mnist_setting():
    # Abadi et al. (CCS 2016) / TF Privacy's MNIST tutorial: batch 256 of 60,000 (Poisson
    # rate q), noise multiplier 1.1, 60 epochs, delta 1e-5. Opacus 1.6.0's RDP accountant
    # (opacus.accountants.analysis.rdp, its default orders) gives epsilon 2.59656.
    steps = int(60 * 60_000 / 256)

    eps = epsilon(256 / 60_000, 1.1, steps, rounds=1, delta=1e-5)

    assert eps == pytest.approx(2.59656, abs=5e-4)


def test_rounds_compose_like_one_long_run_of_steps():
    assert epsilon(0.5, 1.5, 4, rounds=6, delta=1e-5) == pytest.approx(
        epsilon(0.5, 1.5, 24, rounds=1, delta=1e-5), rel=1e-9
    )


def test_more_rounds_cost_more_and_no_noise_costs_everything():
    eps = [epsilon(0.5, 2.0, 4, rounds=r, delta=1e-5) for r in (0, 1, 2, 10)]

    assert eps[0] == 0 and eps[1] < eps[2] < eps[3]
    assert epsilon(0.5, 0.0, 4, rounds=1, delta=1e-5) == math.inf


@pytest.mark.parametrize("target", [1.0, 8.0])
def test_calibrated_noise_spends_the_budget_and_no_more(target):
    sigma = calibrate(0.5, 4, 24, target, 1e-5)

    assert epsilon(0.5, sigma, 4, 24, 1e-5) <= target
    assert epsilon(0.5, sigma * 0.99, 4, 24, 1e-5) > target * 0.999  # tight: 1% less noise is over


def test_the_ledger_stops_before_the_round_that_would_pass_the_budget():
    probe = DPConfig(enabled=True, noise_multiplier=2.0)
    two, three = (Ledger(probe, 10).epsilon(r) for r in (2, 3))
    dp = DPConfig(enabled=True, noise_multiplier=2.0, epsilon_budget=(two + three) / 2)
    ledger = Ledger(dp, 10)

    allowed = []
    for r in range(1, 6):
        allowed.append(ledger.allows(0, r))
        if allowed[-1]:
            ledger.spend()

    assert allowed == [True, True, False, False, False]
    assert ledger.spent_rounds == 2 and ledger.epsilon() <= dp.epsilon_budget
    assert ledger.stopped_at == {"window": 0, "round": 3}
    report = ledger.report()
    assert report["epsilon"] == pytest.approx(two) and report["stopped_at"] == {
        "window": 0,
        "round": 3,
    }


def test_without_a_noise_multiplier_the_noise_is_calibrated_to_the_budget():
    ledger = Ledger(DPConfig(enabled=True, epsilon_budget=4.0), planned_rounds=12)

    assert ledger.epsilon(12) <= 4.0 < ledger.epsilon(13)

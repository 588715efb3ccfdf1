"""Epsilon of a run's DP rounds, from ``dp-accounting``'s RDP accountant (never a formula
of ours).

One round at a shop is ``steps`` compositions of the Poisson-subsampled Gaussian mechanism
(rate ``user_rate``, noise ``noise_multiplier``); a run composes its rounds. Every round
counts for every customer: a customer who buys in several windows is in every round's
population, so the cumulative epsilon is the guarantee for a customer present all along
(user-level, over the whole run, per shop; shops hold disjoint customers).
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field

import dp_accounting
from dp_accounting import rdp

from fedcl.privacy.config import DPConfig

log = logging.getLogger("fedcl")
# At large noise dp-accounting logs a WARNING for each RDP order whose series does not
# converge, and leaves that order out: the epsilon stays a valid upper bound over the other
# orders, but the warnings (dozens per call) would flood a run's log.
logging.getLogger("absl").setLevel(logging.ERROR)

#: What the reports name as the accountant.
ACCOUNTANT = f"dp-accounting {getattr(dp_accounting, '__version__', '0.6')} RDP"


def round_event(user_rate: float, noise_multiplier: float, steps: int) -> dp_accounting.DpEvent:
    """One shop round: ``steps`` Poisson-sampled Gaussian steps."""
    step = dp_accounting.PoissonSampledDpEvent(
        user_rate, dp_accounting.GaussianDpEvent(noise_multiplier)
    )
    return dp_accounting.SelfComposedDpEvent(step, steps)


def epsilon(
    user_rate: float, noise_multiplier: float, steps: int, rounds: int, delta: float
) -> float:
    """Epsilon at ``delta`` after ``rounds`` rounds (inf without noise, 0 for no round)."""
    if rounds <= 0:
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    acc = rdp.RdpAccountant()
    acc.compose(round_event(user_rate, noise_multiplier, steps), rounds)
    return float(acc.get_epsilon(delta))


@functools.lru_cache(maxsize=64)
def calibrate(user_rate: float, steps: int, rounds: int, target: float, delta: float) -> float:
    """The smallest noise multiplier (to 1e-3) whose ``rounds`` rounds spend at most
    ``target`` epsilon (dp-accounting's calibration: bracketing and bisection)."""
    sigma = dp_accounting.calibrate_dp_mechanism(
        rdp.RdpAccountant,
        lambda s: dp_accounting.SelfComposedDpEvent(round_event(user_rate, s, steps), rounds),
        target,
        delta,
        bracket_interval=dp_accounting.LowerEndpointAndGuess(1e-3, 1.0),
        tol=1e-3,
    )
    return float(sigma)


def noise_multiplier(dp: DPConfig, planned_rounds: int) -> float:
    """``dp.noise_multiplier``, or the one calibrated to spend ``dp.epsilon_budget`` over
    the ``planned_rounds`` rounds of the run."""
    if dp.noise_multiplier is not None:
        return float(dp.noise_multiplier)
    assert dp.epsilon_budget is not None  # DPConfig.check
    return calibrate(dp.user_rate, dp.steps, planned_rounds, float(dp.epsilon_budget), dp.delta)


@dataclass
class Ledger:
    """The server's privacy ledger: rounds trained so far and their cumulative epsilon."""

    dp: DPConfig
    planned_rounds: int
    sigma: float = field(init=False)
    spent_rounds: int = 0
    #: Where the budget stopped training ({"window", "round"}), or None.
    stopped_at: dict[str, int] | None = None

    def __post_init__(self) -> None:
        self.sigma = noise_multiplier(self.dp, self.planned_rounds)

    def epsilon(self, rounds: int | None = None) -> float:
        n = self.spent_rounds if rounds is None else rounds
        return epsilon(self.dp.user_rate, self.sigma, self.dp.steps, n, self.dp.delta)

    def allows(self, window: int, round_: int) -> bool:
        """Whether one more round stays within ``epsilon_budget``; the first refusal is
        logged and recorded (training stops there; evaluation goes on)."""
        if self.stopped_at is not None:
            return False
        budget = self.dp.epsilon_budget
        after = self.epsilon(self.spent_rounds + 1)
        if budget is None or after <= budget * (1 + 1e-9):
            return True
        self.stopped_at = {"window": window, "round": round_}
        log.warning(
            "privacy budget: round %d of window %d would take epsilon to %.3f > "
            "federated.dp.epsilon_budget=%g (spent %.3f over %d rounds): no more training; "
            "the run evaluates and reports",
            round_, window, after, budget, self.epsilon(), self.spent_rounds,
        )  # fmt: skip
        return False

    def spend(self) -> float:
        """Record one trained round; the cumulative epsilon after it."""
        self.spent_rounds += 1
        return self.epsilon()

    def report(self) -> dict:
        """The ``privacy`` block of metrics.json."""
        dp = self.dp
        per_round = self.epsilon(1)
        return {
            "mechanism": "user-level DP at each shop: Poisson-sampled users, per-user gradient "
            "clipping, Gaussian noise on the sum (docs/PRIVACY.md)",
            "unit": "one customer of one shop, all their events over the run",
            "accountant": ACCOUNTANT,
            "delta": dp.delta,
            "noise_multiplier": self.sigma,
            "clip": dp.clip,
            "user_rate": dp.user_rate,
            "steps_per_round": dp.steps,
            "epsilon_per_round": per_round,
            "epsilon": self.epsilon(),
            "rounds_trained": self.spent_rounds,
            "rounds_planned": self.planned_rounds,
            "epsilon_budget": dp.epsilon_budget,
            "stopped_at": self.stopped_at,
        }

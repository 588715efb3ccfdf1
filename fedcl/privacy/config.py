"""``federated.dp``: user-level differential privacy at each shop, and the runs it fits."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from fedcl.checks import above, at_least, within
from fedcl.errors import ConfigError

if TYPE_CHECKING:
    from fedcl.config import Config


@dataclass
class DPConfig:
    """User-level DP at each shop (``federated.dp``; docs/PRIVACY.md).

    Each round a shop trains ``steps`` DP steps instead of its usual epochs: every step it
    samples each of its users with probability ``user_rate`` (Poisson), takes each sampled
    user's gradient of their own loss on all their events of the round, clips it to
    ``clip`` (L2), sums, adds Gaussian noise of std ``noise_multiplier * clip`` to every
    coordinate of every parameter that is not a user's own (so also to items the shop never
    sold), divides by the expected number of sampled users and takes an optimiser step. So
    the arrays the shop sends are (epsilon, delta)-DP with respect to any one customer's
    events, whatever the operator and the other shops do with them.
    """

    enabled: bool = False
    #: Probability that a user is in one step (Poisson sampling).
    user_rate: float = 0.5
    #: L2 bound on one user's gradient in one step.
    clip: float = 0.1
    #: Noise std / clip. None: calibrated so that the planned run (every round of every
    #: window) spends exactly ``epsilon_budget``.
    noise_multiplier: Optional[float] = None  # noqa: UP045 (OmegaConf needs typing.Optional)
    #: Training stops (the run still evaluates and reports) before a round would take the
    #: cumulative epsilon above this. None: no budget (needs ``noise_multiplier``).
    epsilon_budget: Optional[float] = None  # noqa: UP045
    #: Delta of every epsilon reported (well below 1 / a shop's customers).
    delta: float = 1e-5
    #: Expected passes over a shop's users per round: steps = ceil(epochs / user_rate).
    epochs_per_round: float = 2.0
    #: Learning rate of the DP steps. None: ``train.lr``.
    lr: Optional[float] = None  # noqa: UP045

    def check(self, key: str = "federated.dp") -> None:
        within(f"{key}.user_rate", self.user_rate, 0, 1, open_low=True)
        above(f"{key}.clip", self.clip, 0)
        within(f"{key}.delta", self.delta, 0, 1, open_low=True)
        above(f"{key}.epochs_per_round", self.epochs_per_round, 0)
        if self.lr is not None:
            above(f"{key}.lr", self.lr, 0)
        if self.noise_multiplier is not None:
            at_least(f"{key}.noise_multiplier", self.noise_multiplier, 0)
        if self.epsilon_budget is not None:
            above(f"{key}.epsilon_budget", self.epsilon_budget, 0)
        if self.enabled and self.noise_multiplier is None and self.epsilon_budget is None:
            raise ConfigError(
                f"{key}.enabled needs {key}.epsilon_budget (the noise is calibrated to it) or "
                f"{key}.noise_multiplier"
            )

    @property
    def steps(self) -> int:
        """DP steps per round."""
        return max(1, math.ceil(self.epochs_per_round / self.user_rate))


def check_fits(cfg: Config) -> None:
    """Refuse settings under which the per-user bound would not hold: with DP on, what one
    user changes must be that user's own clipped gradient, so nothing else in training may
    read several users' data (a replay buffer of fixed size, popularity negatives, an EWC
    Fisher, a teacher's predictions) and only pairwise gradient models qualify."""
    dp = cfg.federated.dp
    if not dp.enabled:
        return
    if cfg.mode != "federated":
        raise ConfigError(
            f"federated.dp applies to federated runs (mode=federated); got mode={cfg.mode}"
        )
    parts = [name for name, part in cfg.continual.parts().items() if part.enabled]
    if any(name != "joint" for name in parts):
        raise ConfigError(
            f"federated.dp.enabled with continual parts {parts}: a replay buffer of fixed "
            "size, an EWC Fisher or a teacher mixes users' data, so one user's bound would not "
            "hold; use continual=naive or continual=joint"
        )
    if cfg.train.negatives != "uniform":
        raise ConfigError(
            "federated.dp.enabled needs train.negatives=uniform (popularity negatives are "
            "counted over all users)"
        )
    if cfg.strategy.proximal_mu > 0:
        raise ConfigError(
            "federated.dp.enabled does not combine with FedProx (strategy.proximal_mu)"
        )
    if getattr(cfg.model, "sparse", False):
        raise ConfigError("federated.dp.enabled needs a dense model (model.sparse=false)")
    from hydra.utils import get_class

    from fedcl.models.base import Recommender

    cls = get_class(cfg.model._target_)
    if not getattr(cls, "trainable", True) or cls.batches is not Recommender.batches:
        raise ConfigError(
            f"federated.dp.enabled needs a pairwise gradient model (mf, neumf); "
            f"{cfg.model._target_} is not one"
        )

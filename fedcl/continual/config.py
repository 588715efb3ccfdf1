"""Typed configuration of the continual methods (Hydra group ``continual``) and its builder.

Parts are switched on independently (``replay.enabled``, ``ewc.enabled``, ...) and
:func:`build_continual` composes the enabled ones into one :class:`Continual`, so
``replay + distill`` is a YAML of two ``enabled: true`` lines, not a new class.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from fedcl.checks import above, at_least, one_of, within
from fedcl.continual.buffer import POLICIES, ReplayBuffer
from fedcl.continual.compose import Continual
from fedcl.continual.distill import Distill, window_users
from fedcl.continual.ewc import EWC
from fedcl.continual.joint import Joint
from fedcl.continual.replay import MAX_MIX, Replay
from fedcl.errors import ConfigError

DISTILL_USERS = ("replay", "current")


@dataclass
class ReplayConfig:
    enabled: bool = False
    #: Buffer size in events (interactions); 0 = ``budget_fraction`` of the events seen.
    budget: int = 0
    #: Of the events seen so far: the buffer grows with the stream (10%: a common middle
    #: ground in recommendation replay studies between cost and forgetting).
    budget_fraction: float = 0.1
    #: reservoir | window | item | category | recency | herding (fedcl/continual/buffer.py).
    #: recency: chosen on validation (centralized, seeds 0-1): on the recurring-season
    #: synthetic stream it forgets less than reservoir (BWT -0.019 vs -0.024, naive -0.043)
    #: and on Online Retail it keeps reservoir's ACC with a better next-window NDCG.
    policy: str = "recency"
    #: Buffer sizes mixed into each window's training data: 1 = all of it once, 0.5 = a
    #: random half, 2 = twice (replayed events weigh twice the new ones). At most 10.
    mix: float = 1.0
    #: In windows, for policy=recency: an event this many windows old has half the weight.
    recency_half_life: float = 2.0


@dataclass
class EWCConfig:
    enabled: bool = False
    #: Penalty strength, against the model's mean per-example loss (the Fisher estimates the
    #: per-example empirical Fisher). 100: best of 10-100,000 for BPR-MF on Online Retail
    #: (centralized, 2 seeds); 1,000 and more scored below plain fine-tuning there.
    lam: float = 100.0
    #: Online EWC decay of the old Fisher per window (Schwarz et al. 2018 use ~0.9-1).
    gamma: float = 0.9
    #: Batches of the new window whose squared gradients estimate its Fisher.
    fisher_batches: int = 16
    #: Events (positions for sequence models) per Fisher batch.
    fisher_batch_size: int = 1024


@dataclass
class DistillConfig:
    enabled: bool = False
    #: Weight of the KL term against the model's own (mean, per-batch) loss. 0.1: best of
    #: 0.1-10 for BPR-MF on Online Retail (centralized); from 1 on, what it saved on old
    #: windows it lost on the next one.
    weight: float = 0.1
    #: Length of the previous model's list per user that is distilled.
    top_n: int = 50
    #: Softmax temperature (the loss is scaled by T^2, as in Hinton et al.).
    temperature: float = 1.0
    #: Whose lists are snapshotted: "replay" = users in the replay buffer (the window's
    #: users when replay is off), "current" = the users of the window just trained.
    users: str = "replay"
    #: Most snapshot users distilled per batch (the first in the shuffled batch).
    batch_users: int = 256
    #: Most users snapshotted per window (0 = all; else a seeded random subset).
    max_users: int = 0


@dataclass
class ContinualConfig:
    #: A label for reports; what runs is decided by the ``enabled`` flags and ``joint``.
    name: str = "naive"
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    ewc: EWCConfig = field(default_factory=EWCConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    #: Retrain from scratch on everything seen (the upper reference; combines with nothing).
    joint: bool = False


def check(cfg: ContinualConfig, optimizer: str | None = None) -> None:
    """Value checks that need no data; each error names the key and the fix.

    ``optimizer`` (``train.optimizer``), when given, is checked against the parts' gradients.
    ``replay.policy=category`` also needs the data's categories: :func:`check_item_groups`.
    """
    r, e, d = cfg.replay, cfg.ewc, cfg.distill
    if optimizer == "sparse_adam" and (e.enabled or d.enabled):
        raise ConfigError(
            "continual.ewc and continual.distill give the whole item table a dense gradient, "
            "which train.optimizer=sparse_adam cannot take: use train.optimizer=adam or sgd"
        )
    one_of("continual.replay.policy", r.policy, POLICIES)
    at_least("continual.replay.budget", r.budget, 0)
    within("continual.replay.budget_fraction", r.budget_fraction, 0, 1)
    within("continual.replay.mix", r.mix, 0, MAX_MIX)
    above("continual.replay.recency_half_life", r.recency_half_life, 0)
    at_least("continual.ewc.lam", e.lam, 0)
    within("continual.ewc.gamma", e.gamma, 0, 1)
    at_least("continual.ewc.fisher_batches", e.fisher_batches, 1)
    at_least("continual.ewc.fisher_batch_size", e.fisher_batch_size, 1)
    one_of("continual.distill.users", d.users, DISTILL_USERS)
    at_least("continual.distill.weight", d.weight, 0)
    at_least("continual.distill.top_n", d.top_n, 1)
    above("continual.distill.temperature", d.temperature, 0)
    at_least("continual.distill.batch_users", d.batch_users, 1)
    at_least("continual.distill.max_users", d.max_users, 0)
    if cfg.joint and (r.enabled or e.enabled or d.enabled):
        raise ConfigError(
            "continual.joint retrains on all data and combines with no other part: "
            "disable replay, ewc and distill, or set joint=false"
        )


def check_item_groups(cfg: ContinualConfig, item_groups: object | None) -> None:
    """``replay.policy=category`` needs the data's item categories (``item_groups``)."""
    if cfg.replay.enabled and cfg.replay.policy == "category" and item_groups is None:
        raise ConfigError(
            "continual.replay.policy=category needs item categories, and this dataset has no "
            "category column: choose policy=item or a dataset with categories"
        )


def build_continual(
    cfg: ContinualConfig,
    *,
    item_groups: torch.Tensor | np.ndarray | None = None,
    seed: int = 0,
    optimizer: str | None = None,
) -> Continual:
    """The enabled parts of ``cfg`` composed in the order joint, replay, ewc, distill.

    ``item_groups`` (n_items,) int: a category number per item (needed by
    ``replay.policy=category``; items beyond it share one group). ``seed`` (>= 0) seeds
    every random choice, so two methods built alike behave identically. ``optimizer``
    (``train.optimizer``), when given, is checked against the parts' gradients.
    """
    check(cfg, optimizer)
    check_item_groups(cfg, item_groups)
    groups = None if item_groups is None else np.asarray(torch.as_tensor(item_groups).cpu())
    parts: dict = {}
    if cfg.joint:
        parts["joint"] = Joint()
    r = cfg.replay
    if r.enabled:
        buffer = ReplayBuffer(
            r.policy, seed=seed, recency_half_life=r.recency_half_life, item_groups=groups
        )
        parts["replay"] = Replay(
            buffer, budget=r.budget, budget_fraction=r.budget_fraction, mix=r.mix, seed=seed
        )
    e = cfg.ewc
    if e.enabled:
        parts["ewc"] = EWC(
            e.lam,
            gamma=e.gamma,
            fisher_batches=e.fisher_batches,
            fisher_batch_size=e.fisher_batch_size,
            seed=seed,
        )
    d = cfg.distill
    if d.enabled:
        pool = window_users
        if d.users == "replay" and "replay" in parts:
            buffer = parts["replay"].buffer
            pool = lambda new: buffer.users  # noqa: E731 - after replay's update this window
        parts["distill"] = Distill(
            d.weight,
            top_n=d.top_n,
            temperature=d.temperature,
            batch_users=d.batch_users,
            max_users=d.max_users,
            user_pool=pool,
            seed=seed,
        )
    return Continual(parts)

"""Typed configuration of the continual methods (Hydra group ``continual``) and its builder.

A continual method is a part: a :class:`~fedcl.continual.base.ContinualMethod` subclass with
a ``from_config`` classmethod, and its config dataclass (a
:class:`~fedcl.continual.base.PartConfig` whose ``_target_`` names the class), one field of
:class:`ContinualConfig`. Parts are switched on independently (``replay.enabled``, ...) and
:func:`build_continual` composes the enabled ones, in the order of the fields, into one
:class:`Continual`, so ``replay + distill`` is a YAML of two ``enabled: true`` lines, not a
new class. Adding a method is its module, its field here and a YAML under ``conf/continual``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from fedcl.continual.base import BuildContext, PartConfig
from fedcl.continual.compose import Continual
from fedcl.continual.distill import DistillConfig
from fedcl.continual.ewc import EWCConfig
from fedcl.continual.joint import JointConfig
from fedcl.continual.replay import ReplayConfig
from fedcl.errors import ConfigError


@dataclass
class ContinualConfig:
    #: A label for reports; what runs is decided by the parts' ``enabled`` flags.
    name: str = "naive"
    #: Retrain from scratch on everything seen (the upper reference; combines with nothing).
    joint: JointConfig = field(default_factory=JointConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    ewc: EWCConfig = field(default_factory=EWCConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def parts(self) -> dict[str, PartConfig]:
        """Every part's config, in composition order (the order of the fields)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), PartConfig)
        }


def _typed(cfg: ContinualConfig | DictConfig) -> ContinualConfig:
    return OmegaConf.to_object(cfg) if isinstance(cfg, DictConfig) else cfg


def _method_class(key: str, part: PartConfig) -> type:
    try:
        return get_class(part._target_)
    except Exception as e:  # hydra raises several kinds for a bad path
        raise ConfigError(f"{key}._target_={part._target_!r} names no class ({e})") from e


def check(cfg: ContinualConfig, optimizer: str | None = None, key: str = "continual") -> None:
    """Value checks that need no data; each error names the key and the fix.

    ``optimizer`` (``train.optimizer``), when given, is checked against the parts' gradients.
    ``replay.policy=category`` also needs the data's categories: :func:`check_item_groups`.
    """
    cfg = _typed(cfg)
    enabled = []
    for name, part in cfg.parts().items():
        part.check(f"{key}.{name}")
        cls = _method_class(f"{key}.{name}", part)
        if part.enabled:
            enabled.append(name)
            if optimizer == "sparse_adam" and cls.dense_gradient:
                raise ConfigError(
                    f"{key}.{name} gives the whole item table a dense gradient, which "
                    "train.optimizer=sparse_adam cannot take: use train.optimizer=adam or sgd"
                )
    if cfg.joint.enabled and len(enabled) > 1:
        raise ConfigError(
            f"{key}.joint retrains on all data and combines with no other part: disable "
            f"{', '.join(n for n in enabled if n != 'joint')}, or set joint.enabled=false"
        )


def check_item_groups(cfg: ContinualConfig, item_groups: object | None) -> None:
    """``replay.policy=category`` needs the data's item categories (``item_groups``)."""
    cfg = _typed(cfg)
    if cfg.replay.enabled and cfg.replay.policy == "category" and item_groups is None:
        raise ConfigError(
            "continual.replay.policy=category needs item categories, and this dataset has no "
            "category column: choose policy=item or a dataset with categories"
        )


def build_continual(
    cfg: ContinualConfig | DictConfig,
    *,
    item_groups: torch.Tensor | np.ndarray | None = None,
    seed: int = 0,
    optimizer: str | None = None,
) -> Continual:
    """The enabled parts of ``cfg`` composed in the order of its fields.

    ``item_groups`` (n_items,) int: a category number per item (needed by
    ``replay.policy=category``; items beyond it share one group). ``seed`` (>= 0) seeds
    every random choice, so two methods built alike behave identically. ``optimizer``
    (``train.optimizer``), when given, is checked against the parts' gradients.
    """
    cfg = _typed(cfg)
    check(cfg, optimizer)
    check_item_groups(cfg, item_groups)
    groups = None if item_groups is None else np.asarray(torch.as_tensor(item_groups).cpu())
    ctx = BuildContext(item_groups=groups, seed=seed)
    for name, part in cfg.parts().items():
        if part.enabled:
            ctx.parts[name] = _method_class(f"continual.{name}", part).from_config(part, ctx)
    return Continual(ctx.parts)

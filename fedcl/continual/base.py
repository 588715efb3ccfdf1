"""Continual-learning methods as small hooks around one shop's training on one window.

Avalanche-style composition: a method does one thing (mix replayed events into the data, add
a penalty to the loss, ...) and methods combine by composition (:class:`Continual`), never by
a subclass per combination. The runner calls, for each window t::

    model.grow(n_users_t, n_items_t)
    if method.reset_model:                  # joint training: a fresh model every window
        model = build_model(n_users_t, n_items_t)
    data = method.training_data(model, new, t)
    model.observe(data if method.reset_model else new)  # non-gradient state: each event once
    train_window(model, data, cfg, gen, penalty=method.penalty)
    method.after_window(model, new, t)

``new`` is window t's train part (on the model's device, sized like the model); the returned
data is too. Every method's state is a dict of plain numpy arrays / Python scalars / strings,
nested by part (``state_dict`` / ``load_state_dict``), so a shop can persist it between rounds
and across restarts exactly (e.g. with ``np.savez`` of the flattened dict, no pickle): every
``load_state_dict`` also accepts scalars that come back as 0-d arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fedcl.data.interactions import Interactions
from fedcl.models.base import Batch, Recommender

State = dict[str, Any]  # values: numpy arrays, ints, floats, strings, or nested States


@dataclass
class PartConfig:
    """What every part's config has (a field of ``ContinualConfig``): ``_target_`` names its
    :class:`ContinualMethod` class, which builds it with ``from_config``."""

    _target_: str = ""
    enabled: bool = False

    def check(self, key: str) -> None:
        """Value checks of the part's own settings (``key``: its dotted path)."""


@dataclass
class BuildContext:
    """What a part may need to be built: the data's item categories, the seed, and the parts
    built before it (composition order is the order of ``ContinualConfig``'s fields)."""

    item_groups: np.ndarray | None = None
    seed: int = 0
    parts: dict[str, ContinualMethod] = field(default_factory=dict)


class ContinualMethod:
    """A no-op hook set (plain fine-tuning); subclasses override what they need."""

    #: Retrain from scratch each window (joint training): the runner builds a fresh model.
    reset_model: bool = False
    #: Gives the whole item table a dense gradient (a sparse optimiser cannot take it).
    dense_gradient: bool = False

    @classmethod
    def from_config(cls, cfg: PartConfig, ctx: BuildContext) -> ContinualMethod:
        """The part built from its config (the registration: ``_target_`` names this class)."""
        raise NotImplementedError(f"{cls.__name__} has no from_config")

    def training_data(self, model: Recommender, new: Interactions, window: int) -> Interactions:
        """The events to train on at this window (default: the new ones)."""
        return new

    def penalty(self, model: Recommender, batch: Batch) -> torch.Tensor | None:
        """An extra loss term for this batch, or None."""
        return None

    def after_window(self, model: Recommender, new: Interactions, window: int) -> None:
        """Update the method's memory after training on a window."""

    def memory_bytes(self) -> int:
        """Bytes of state kept between windows (buffer, Fisher, teacher)."""
        return 0

    def state_dict(self) -> State:
        return {}

    def load_state_dict(self, state: State) -> None:
        """Restore exactly what ``state_dict`` returned."""


def tensors_to_numpy(tensors: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """CPU numpy copies of a name -> tensor mapping (for ``state_dict``)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in tensors.items()}


def nbytes(tensors: Mapping[str, torch.Tensor] | None) -> int:
    """Total bytes of the tensors of a mapping (0 for None)."""
    return sum(t.numel() * t.element_size() for t in (tensors or {}).values())

"""Popularity: rank every user's catalogue by the shop's (recent) sales counts.

The non-personalised baseline every recommender must beat. Counts are the shop's own
sales, so they are private state: a popularity model shares nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fedcl.checks import within
from fedcl.data.interactions import Interactions
from fedcl.models.base import ModelConfig, Recommender


@dataclass
class PopConfig(ModelConfig):
    _target_: str = "fedcl.models.pop.Pop"
    #: Each new window multiplies the counts seen so far by ``decay`` before adding its
    #: own: 1.0 = all-time popularity, 0.5 = last window weighs as much as all earlier
    #: ones together (recent trends; the default, as shops' bestsellers change monthly),
    #: 0.0 = the last window only.
    decay: float = 0.5

    def check(self, key: str = "model") -> None:
        within(f"{key}.decay", self.decay, 0, 1)


#: The config schema of this module's model (registered from ``conf/model/pop.yaml``).
SCHEMA = PopConfig


class Pop(Recommender):
    """Per-shop item popularity learned in ``observe`` (``trainable=False``).

    State: ``item_counts`` (n_items,) float32, the decayed purchase counts (private).
    """

    trainable = False
    private_prefixes = ("item_counts",)

    def __init__(self, n_users: int, n_items: int, **options: Any) -> None:
        """``options``: fields of :class:`PopConfig` (the others keep its defaults)."""
        super().__init__(n_users, n_items)
        decay = PopConfig(**options).decay
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"pop decay must lie in [0, 1], got {decay}")
        self.decay = decay
        self.register_buffer("item_counts", torch.zeros(n_items))  # (I,)

    def observe(self, train: Interactions) -> None:
        """Decay the old counts, then add the purchases of ``train``."""
        self._check_sizes(train)
        new = torch.bincount(train.items.to(self.item_counts.device), minlength=self.n_items)
        self.item_counts.mul_(self.decay).add_(new.to(self.item_counts.dtype))

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(B,) counts of ``items`` (B,); ``users`` only sets the batch."""
        return self.item_counts[items.to(self.item_counts.device)]

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """(B, n_items): the same count row for every user, as a fresh tensor."""
        return self.item_counts.expand(users.shape[0], -1).clone()

    def grow(self, n_users: int, n_items: int) -> None:
        """New items start with count 0 (they rank after every sold item)."""
        self.n_users = max(self.n_users, n_users)
        if n_items > self.n_items:
            pad = self.item_counts.new_zeros(n_items - self.n_items)
            self.item_counts = torch.cat([self.item_counts, pad])
            self.n_items = n_items

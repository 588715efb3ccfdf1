"""Events of one shop (or a pooled set) as tensors: what models and metrics consume."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Interactions:
    """A time-ordered set of (user, item, time) events with dense indices.

    ``users``, ``items`` and ``times`` are 1-D ``int64`` tensors of equal length N,
    sorted by ``times`` (unix seconds; ties keep input order). User indices lie in
    ``[0, n_users)``, item indices in ``[0, n_items)`` (the shared catalogue).
    """

    users: torch.Tensor  # (N,) int64
    items: torch.Tensor  # (N,) int64
    times: torch.Tensor  # (N,) int64, unix seconds
    n_users: int
    n_items: int

    def __len__(self) -> int:
        return int(self.users.shape[0])

    @classmethod
    def empty(cls, n_users: int, n_items: int) -> Interactions:
        z = torch.zeros(0, dtype=torch.long)
        return cls(z, z.clone(), z.clone(), n_users, n_items)

    def concat(self, other: Interactions) -> Interactions:
        """Both sets merged and re-sorted by time (stable); sizes take the max."""
        times = torch.cat([self.times, other.times])
        order = torch.sort(times, stable=True).indices
        return Interactions(
            torch.cat([self.users, other.users])[order],
            torch.cat([self.items, other.items])[order],
            times[order],
            max(self.n_users, other.n_users),
            max(self.n_items, other.n_items),
        )

    def to(self, device: torch.device | str) -> Interactions:
        return Interactions(
            self.users.to(device),
            self.items.to(device),
            self.times.to(device),
            self.n_users,
            self.n_items,
        )

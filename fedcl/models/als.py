"""Implicit-feedback ALS (Hu, Koren, Volinsky, ICDM 2008) over the decayed purchase history,
written so that its item step is a sum over users, hence over shops.

    confidence c[u, i] = 1 + alpha * X[u, i],  preference p[u, i] = 1 if X[u, i] > 0
    user step:  x_u = (Y^T Y + reg I + sum_i (c_ui - 1) y_i y_i^T)^-1  sum_i c_ui y_i
    item step:  y_i = (S + reg I + A_i)^-1 b_i,   S = sum_u x_u x_u^T,
                A_i = sum_u (c_ui - 1) x_u x_u^T,  b_i = sum_u c_ui x_u   (u who bought i)

``X`` is :class:`~fedcl.models.history.History`'s decayed counts (continual by design: the
past is the decay, no buffer). A window runs ``iterations`` (user step, item step) pairs
from the current factors. User factors are private; item factors are shared. Federated
(:mod:`fedcl.federated.statistics`): one iteration per round, each shop solves its users
with the global item factors and sends ``S`` and, for the items its users bought, ``A_i``
(upper triangle) and ``b_i``; the server adds them and solves every item. The sums are the
centralized model's, so the federated model equals it (same seed, same iterations).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedcl.checks import above, at_least
from fedcl.data.interactions import Interactions
from fedcl.models.history import History, HistoryConfig
from fedcl.models.itemitem import user_item_matrix


@dataclass
class ALSConfig(HistoryConfig):
    _target_: str = "fedcl.models.als.ALS"
    decay: float = 0.5
    #: Factors per user and item (the item step sends D x D per item a shop sold).
    factors: int = 32
    #: L2 regularisation of both steps.
    reg: float = 0.1
    #: Confidence slope: c = 1 + alpha * decayed count.
    alpha: float = 1.0
    #: ALS iterations per window (in a federation: rounds per window).
    iterations: int = 3
    #: Std of the normal init of new item factors.
    init_std: float = 0.01

    def check(self, key: str = "model") -> None:
        super().check(key)
        at_least(f"{key}.factors", self.factors, 1)
        at_least(f"{key}.reg", self.reg, 0)
        above(f"{key}.alpha", self.alpha, 0)
        at_least(f"{key}.iterations", self.iterations, 1)
        above(f"{key}.init_std", self.init_std, 0)


#: The config schema of this module's model (registered from ``conf/model/als.yaml``).
SCHEMA = ALSConfig


@dataclass
class ItemStatistics:
    """One unit's item-step sums: ``xtx`` (D, D); for ``items`` (n,): ``a`` (n, D, D) and
    ``b`` (n, D). Added over shops by :func:`add`."""

    xtx: np.ndarray
    items: np.ndarray
    a: np.ndarray
    b: np.ndarray


def add(parts: list[ItemStatistics], n_items: int, dim: int) -> ItemStatistics:
    """The sum of several units' statistics, over every item."""
    xtx = np.zeros((dim, dim))
    a, b = np.zeros((n_items, dim, dim)), np.zeros((n_items, dim))
    for p in parts:
        xtx += p.xtx
        np.add.at(a, p.items, p.a)
        np.add.at(b, p.items, p.b)
    return ItemStatistics(xtx, np.arange(n_items), a, b)


class ALS(History):
    """Implicit ALS; user factors private, item factors shared (``trainable=False``)."""

    private_prefixes = ("user", "item_counts")
    federation = "statistics"
    statistics_kind = "als"

    def __init__(self, n_users: int, n_items: int, **options: Any) -> None:
        c = ALSConfig(**options)
        history = {k: getattr(c, k) for k in HistoryConfig.__dataclass_fields__ if k != "_target_"}
        super().__init__(n_users, n_items, **history)
        self.cfg = c
        self.local_solve = True
        gen = torch.Generator().manual_seed(int(torch.initial_seed()) % 2**63)
        self.register_buffer("user_factors", torch.zeros(n_users, c.factors, dtype=torch.float64))
        self.register_buffer(
            "item_factors",
            torch.randn(n_items, c.factors, generator=gen, dtype=torch.float64) * c.init_std,
        )

    # --- the two steps ------------------------------------------------------------
    def observe(self, train: Interactions) -> None:
        """Merge the window into the history; alone (not federated), run the window's
        iterations."""
        super().observe(train)
        if self.local_solve:
            for _ in range(self.cfg.iterations):
                self.solve_users()
                self.fit(self.statistics())

    @staticmethod
    def statistics_rounds(cfg: ALSConfig) -> int:
        """Federated rounds a window takes: one ALS iteration each."""
        return cfg.iterations

    def user_step(self) -> None:
        """A federated shop's step before it sends its sums: solve its users."""
        self.solve_users()

    def solve_users(self) -> None:
        """The user step for every user with a history, from the current item factors."""
        x = user_item_matrix(self)
        y = self.item_factors.numpy()
        dim, reg, alpha = self.cfg.factors, self.cfg.reg, self.cfg.alpha
        base = y.T @ y + reg * np.eye(dim)
        out = np.zeros((self.n_users, dim))
        for u in np.nonzero(np.diff(x.indptr))[0]:
            lo, hi = x.indptr[u], x.indptr[u + 1]
            items, conf = x.indices[lo:hi], 1.0 + alpha * x.data[lo:hi]
            yi = y[items]  # (n, D)
            a = base + (yi * (conf - 1.0)[:, None]).T @ yi
            out[u] = np.linalg.solve(a, yi.T @ conf)
        self.user_factors = torch.from_numpy(out)

    def statistics(self) -> ItemStatistics:
        """This unit's item-step sums from its users' current factors."""
        x = user_item_matrix(self).tocsc()
        f = self.user_factors.numpy()
        items = np.nonzero(np.diff(x.indptr))[0]
        dim = self.cfg.factors
        a = np.zeros((len(items), dim, dim))
        b = np.zeros((len(items), dim))
        for k, i in enumerate(items):
            lo, hi = x.indptr[i], x.indptr[i + 1]
            users, conf = x.indices[lo:hi], 1.0 + self.cfg.alpha * x.data[lo:hi]
            fu = f[users]
            a[k] = (fu * (conf - 1.0)[:, None]).T @ fu
            b[k] = fu.T @ conf
        return ItemStatistics(f.T @ f, items.astype(np.int64), a, b)

    def fit(self, stats: ItemStatistics) -> None:
        """The item step from (summed) statistics; an item nobody bought keeps its factor."""
        y = self.item_factors.numpy().copy()
        base = stats.xtx + self.cfg.reg * np.eye(self.cfg.factors)
        bought = np.abs(stats.b).sum(axis=1) > 0
        if bought.any():  # one batched solve over the items, no copy to the whole catalogue
            a, b = base[None] + stats.a[bought], stats.b[bought][..., None]
            y[stats.items[bought]] = np.linalg.solve(a, b)[..., 0]
        self.item_factors = torch.from_numpy(y)

    # --- scoring ------------------------------------------------------------------
    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """(B, n_items) factor scores."""
        u = self.user_factors[users.cpu()]
        return (u @ self.item_factors.T).float().to(users.device)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.score_all(users)[torch.arange(len(users)), items.to(users.device)]

    def grow(self, n_users: int, n_items: int) -> None:
        """New users: zero factors; new items: N(0, init_std^2) (seeded by the item count)."""
        old_users, old_items = self.n_users, self.n_items
        super().grow(n_users, n_items)
        if n_users > old_users:
            pad = self.user_factors.new_zeros(n_users - old_users, self.cfg.factors)
            self.user_factors = torch.cat([self.user_factors, pad])
        if n_items > old_items:
            gen = torch.Generator().manual_seed(n_items)
            new = torch.randn(n_items - old_items, self.cfg.factors, generator=gen,
                              dtype=torch.float64) * self.cfg.init_std  # fmt: skip
            self.item_factors = torch.cat([self.item_factors, new])

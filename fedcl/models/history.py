"""History: rank a user's own past purchases first (the repeat-buy baseline).

Score of item i for user u::

    own(u, i)  = w(u, i) + recency * r(u, i)                      >= 0
    w(u, i)    = sum over purchases of decay ** (age in windows)   (> 0 once bought)
    r(u, i)    = last purchase time, scaled to [0, 1)              (ties: latest first)
    other(i)   = pop(i) / (max pop + 1) - 1                        in [-1, 0)

Items the user never bought fall back to the shop's popularity (decayed the same way),
strictly below every own item, so the ranking is still full: in the ``new`` evaluation
variant (own items masked) this model is a popularity model. All state is private.

Memory: the per-user counts are a CSR matrix (``user_hist_ptr`` (n_users + 1,),
``user_hist_items``/``user_hist_weight``/``user_hist_last`` (nnz,)), so it costs
O(distinct (user, item) pairs), not O(n_users * n_items).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fedcl.checks import at_least, within
from fedcl.data.interactions import Interactions
from fedcl.models.base import ModelConfig, Recommender


@dataclass
class HistoryConfig(ModelConfig):
    _target_: str = "fedcl.models.history.History"
    #: Each new window multiplies old purchase counts by ``decay``: 1.0 = pure frequency,
    #: lower = recent purchases count more. 0.8: a purchase 3 windows ago counts half.
    decay: float = 0.8
    #: Weight of the last-purchase-time term; small, so it only breaks near-ties of counts.
    recency: float = 1e-3

    def check(self, key: str = "model") -> None:
        within(f"{key}.decay", self.decay, 0, 1)
        at_least(f"{key}.recency", self.recency, 0)


#: The config schema of this module's model (registered from ``conf/model/history.yaml``).
SCHEMA = HistoryConfig


class History(Recommender):
    """A user's own purchases by decayed frequency, then recency (``trainable=False``)."""

    trainable = False
    private_prefixes = ("user", "item_counts")
    resizable_buffers = ("user_hist_items", "user_hist_weight", "user_hist_last")

    def __init__(self, n_users: int, n_items: int, **options: Any) -> None:
        """``options``: fields of :class:`HistoryConfig` (the others keep its defaults)."""
        super().__init__(n_users, n_items)
        c = HistoryConfig(**options)
        decay, recency = c.decay, c.recency
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"history decay must lie in [0, 1], got {decay}")
        self.decay = decay
        self.recency = recency
        long = torch.long
        self.register_buffer("user_hist_ptr", torch.zeros(n_users + 1, dtype=long))  # (U+1,)
        self.register_buffer("user_hist_items", torch.zeros(0, dtype=long))  # (nnz,)
        self.register_buffer("user_hist_weight", torch.zeros(0))  # (nnz,) float32
        self.register_buffer("user_hist_last", torch.zeros(0, dtype=long))  # (nnz,) unix s
        self.register_buffer("item_counts", torch.zeros(n_items))  # (I,) decayed

    # --- state --------------------------------------------------------------------
    def _entry_users(self) -> torch.Tensor:
        """(nnz,) the user of each CSR entry."""
        lengths = torch.diff(self.user_hist_ptr)  # (U,)
        users = torch.arange(self.n_users, device=lengths.device)
        return torch.repeat_interleave(users, lengths)

    def observe(self, train: Interactions) -> None:
        """Decay all counts one window, then merge ``train``'s purchases (vectorised)."""
        self._check_sizes(train)
        dev = self.user_hist_ptr.device
        users, items, times = (t.to(dev) for t in (train.users, train.items, train.times))
        new_counts = torch.bincount(items, minlength=self.n_items).to(self.item_counts.dtype)
        self.item_counts.mul_(self.decay).add_(new_counts)

        keys = torch.cat(
            [
                self._entry_users() * self.n_items + self.user_hist_items,
                users * self.n_items + items,
            ]
        )  # (nnz + N,)
        weight = torch.cat([self.user_hist_weight * self.decay, torch.ones(len(users), device=dev)])
        last = torch.cat([self.user_hist_last, times])
        uniq, inverse = torch.unique(keys, sorted=True, return_inverse=True)  # (nnz',)
        merged_w = torch.zeros(len(uniq), device=dev).index_add_(0, inverse, weight)
        merged_t = torch.full((len(uniq),), torch.iinfo(torch.long).min, device=dev)
        merged_t.scatter_reduce_(0, inverse, last, reduce="amax")

        row = uniq // self.n_items  # sorted keys -> CSR rows in order, items sorted within
        self.user_hist_items = uniq % self.n_items
        self.user_hist_weight = merged_w
        self.user_hist_last = merged_t
        ptr = torch.zeros(self.n_users + 1, dtype=torch.long, device=dev)
        ptr[1:] = torch.cumsum(torch.bincount(row, minlength=self.n_users), 0)
        self.user_hist_ptr = ptr

    def _own_scores(self) -> torch.Tensor:
        """(nnz,) float32 own-item scores ``w + recency * r``, all >= 0."""
        last = self.user_hist_last
        if last.numel() == 0:
            return self.user_hist_weight.clone()
        t0, t1 = last.min(), last.max()
        # Subtract in int64 first, so float32 (MPS has no float64) resolves seconds to
        # a few seconds over a year of data.
        r = (last - t0).float() / (t1 - t0 + 1).float()  # (nnz,) in [0, 1)
        return self.user_hist_weight + self.recency * r

    def _fallback(self) -> torch.Tensor:
        """(n_items,) popularity fallback in [-1, 0): below every own item."""
        return self.item_counts / (self.item_counts.max().clamp(min=0) + 1.0) - 1.0

    # --- scoring ------------------------------------------------------------------
    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """(B, n_items) for ``users`` (B,): own items >= 0, others in [-1, 0)."""
        users = users.to(self.user_hist_ptr.device)
        out = self._fallback().expand(users.shape[0], -1).clone()  # (B, I)
        start, end = self.user_hist_ptr[users], self.user_hist_ptr[users + 1]  # (B,)
        lengths = end - start
        rows = torch.repeat_interleave(torch.arange(len(users), device=users.device), lengths)
        # Entry index for the k-th entry of each row: start[row] + k.
        first = torch.cumsum(lengths, 0) - lengths  # (B,) offset of each row in the flat list
        flat = torch.arange(int(lengths.sum()), device=users.device)
        entries = flat - torch.repeat_interleave(first - start, lengths)  # (sum lengths,)
        out[rows, self.user_hist_items[entries]] = self._own_scores()[entries]
        return out

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(B,) scores of (user, item) pairs (B,), by binary search in the sorted entries."""
        dev = self.user_hist_ptr.device
        users, items = users.to(dev), items.to(dev)
        out = self._fallback()[items]  # (B,)
        keys = self._entry_users() * self.n_items + self.user_hist_items  # (nnz,) sorted
        if keys.numel() == 0:
            return out
        query = users * self.n_items + items
        pos = torch.searchsorted(keys, query).clamp_(max=keys.numel() - 1)
        hit = keys[pos] == query
        return torch.where(hit, self._own_scores()[pos], out)

    def grow(self, n_users: int, n_items: int) -> None:
        """New users have an empty history; new items have popularity 0."""
        if n_users > self.n_users:
            pad = self.user_hist_ptr[-1:].expand(n_users - self.n_users)
            self.user_hist_ptr = torch.cat([self.user_hist_ptr, pad])
            self.n_users = n_users
        if n_items > self.n_items:
            # Keys are user * n_items + item: recomputed from the CSR, so nothing to remap.
            pad = self.item_counts.new_zeros(n_items - self.n_items)
            self.item_counts = torch.cat([self.item_counts, pad])
            self.n_items = n_items

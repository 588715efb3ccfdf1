"""A replay buffer of past events under a budget, with one of six storage policies.

All policies are one mechanism (Avalanche's "a balanced buffer is one reservoir per group"):
every event draws a **key** when it arrives and keeps it; the buffer holds, in each group,
the ``quota`` events with the smallest keys among the events of that group it has seen.
Policies differ only in the group and the key:

=========== ================ ==================================================
policy      group            key
=========== ================ ==================================================
reservoir   one for all      uniform U(0, 1)
window      window           uniform
item        item             uniform
category    item_groups[i]   uniform
recency     one for all      log E - window * ln 2 / half_life, E ~ Exp(1)
herding     window           herding rank on the model's item embeddings
=========== ================ ==================================================

Quotas are max-min fair (:func:`water_fill`): equal shares, and a group with fewer events
than its share gives the rest to the others, so the buffer is always full when it can be.
Keeping the k smallest of i.i.d. keys is the random-key form of Vitter's Algorithm R: it has
the same distribution (a uniform k-subset of the stream), batches a whole window into one
partition, and extends to weights: ``E / w`` keys are Efraimidis-Spirakis A-Res, and with
``w = 2^(window / half_life)`` an event ``a`` windows old has ``2^(-a / half_life)`` the
weight of a new one, the same for every later window, so keys never need redrawing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fedcl.continual.herding import herding_ranks
from fedcl.data.interactions import Interactions

POLICIES = ("reservoir", "window", "item", "category", "recency", "herding")
COLUMNS = ("users", "items", "times", "windows")
STREAM = 1  # random stream tag: seeds (seed, STREAM, n) never collide with other parts


def water_fill(counts: np.ndarray, budget: int) -> np.ndarray:
    """Max-min fair integer quotas: ``min(count, level)`` per group, summing to ``budget``
    (or to every count when they all fit); quotas of groups above the level differ by <= 1."""
    counts = np.asarray(counts, dtype=np.int64)
    if budget <= 0 or len(counts) == 0:
        return np.zeros_like(counts)
    if counts.sum() <= budget:
        return counts.copy()
    order = np.argsort(counts, kind="stable")
    c = counts[order]
    g = len(c)
    below = np.concatenate([[0], np.cumsum(c)[:-1]])  # events of the smaller groups
    # First group whose count, given to it and to every larger group, reaches the budget.
    i = int(np.argmax(below + (g - np.arange(g)) * c >= budget))
    level, extra = divmod(int(budget - below[i]), g - i)
    quota = np.minimum(c, level)
    if extra:
        quota[g - extra :] += 1  # the largest groups (all above the level) take the rest
    out = np.empty_like(quota)
    out[order] = quota
    return out


class ReplayBuffer:
    """(user, item, time, window) events as numpy arrays, never more than the budget.

    Invariant (reservoir): after any sequence of updates at a fixed budget k, every event
    seen so far is in the buffer with the same probability k / seen (the buffer is a uniform
    k-subset of the stream). Per group the same holds with the group's quota. A budget that
    grows cannot bring back dropped events: the new room goes to the best-keyed new events.
    Deterministic under ``seed``: update r draws from ``default_rng((seed, 1, r))``.
    """

    def __init__(
        self,
        policy: str = "reservoir",
        *,
        seed: int = 0,
        recency_half_life: float = 2.0,
        item_groups: np.ndarray | None = None,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"replay policy must be one of {', '.join(POLICIES)}, not {policy!r}")
        if policy == "category" and item_groups is None:
            raise ValueError("replay policy 'category' needs item_groups (a category per item)")
        if recency_half_life <= 0:
            raise ValueError(f"recency_half_life must be > 0, got {recency_half_life}")
        self.policy, self.seed, self.half_life = policy, seed, recency_half_life
        self.item_groups = None if item_groups is None else np.asarray(item_groups, np.int64)
        self.users, self.items, self.times, self.windows = (np.zeros(0, np.int64) for _ in range(4))
        self.keys = np.zeros(0, np.float64)
        self.seen = 0  # events offered to update() so far
        self.updates = 0

    def __len__(self) -> int:
        return len(self.users)

    # --- the one job ----------------------------------------------------------------
    def update(
        self,
        new: Interactions,
        window: int,
        budget: int,
        item_features: np.ndarray | None = None,
    ) -> None:
        """Offer window ``window``'s events ``new``; keep at most ``budget`` events.

        ``item_features`` (n_items, D) is needed by the herding policy only, which ranks a
        window once: offer each window's events in one update.
        """
        rng = np.random.default_rng((self.seed, STREAM, self.updates))
        self.updates += 1
        self.seen += len(new)
        cols = [new.users, new.items, new.times]
        fresh = [c.detach().cpu().numpy().astype(np.int64) for c in cols]
        fresh.append(np.full(len(new), window, dtype=np.int64))
        cand = {
            name: np.concatenate([old, f])
            for name, old, f in zip(COLUMNS, self._cols(), fresh, strict=True)
        }
        group, quota = self._quotas(cand, budget)
        if self.policy == "herding":
            if item_features is None:
                raise ValueError("the herding policy needs item_features to update the buffer")
            k = int(quota[group[-1]]) if len(new) else 0  # the new window's quota
            new_keys = herding_ranks(fresh[1], item_features, k, rng)
        elif self.policy == "recency":
            new_keys = np.log(rng.exponential(size=len(new))) - window * np.log(2) / self.half_life
        else:
            new_keys = rng.random(len(new))
        self._keep(cand, np.concatenate([self.keys, new_keys]), group, quota)

    def resize(self, budget: int) -> None:
        """Shrink to at most ``budget`` events by the policy's keys (growing keeps all)."""
        cand = dict(zip(COLUMNS, self._cols(), strict=True))
        self._keep(cand, self.keys, *self._quotas(cand, budget))

    def events(self, n_users: int | None = None, n_items: int | None = None) -> Interactions:
        """Every buffered event, time-ordered (sizes default to the largest index + 1)."""
        return self._interactions(np.arange(len(self)), n_users, n_items)

    def sample(
        self,
        n: int,
        rng: np.random.Generator,
        n_users: int | None = None,
        n_items: int | None = None,
    ) -> Interactions:
        """``min(n, len)`` buffered events drawn uniformly without replacement, time-ordered."""
        idx = np.sort(rng.choice(len(self), size=min(n, len(self)), replace=False))
        return self._interactions(idx, n_users, n_items)

    def memory_bytes(self) -> int:
        return sum(a.nbytes for a in (*self._cols(), self.keys))

    # --- persistence ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        cols = dict(zip(COLUMNS, (a.copy() for a in self._cols()), strict=True))
        meta = {"seed": self.seed, "seen": self.seen, "updates": self.updates}
        return {"policy": self.policy, **cols, "keys": self.keys.copy(), **meta}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if str(state["policy"]) != self.policy:
            raise ValueError(f"state is of a {state['policy']} buffer, not {self.policy}")
        for name in COLUMNS:
            setattr(self, name, np.array(state[name], dtype=np.int64))
        self.keys = np.array(state["keys"], dtype=np.float64)
        self.seed, self.seen, self.updates = (int(state[k]) for k in ("seed", "seen", "updates"))

    # --- internals --------------------------------------------------------------------
    def _cols(self) -> tuple[np.ndarray, ...]:
        return self.users, self.items, self.times, self.windows

    def _groups(self, items: np.ndarray, windows: np.ndarray) -> np.ndarray:
        if self.policy in ("window", "herding"):
            return windows
        if self.policy == "item":
            return items
        if self.policy == "category":
            known = items < len(self.item_groups)
            # Items beyond the category table (added to the catalogue later) share group -1.
            return np.where(known, self.item_groups[np.where(known, items, 0)], -1)
        return np.zeros_like(items)

    def _quotas(self, cand: dict[str, np.ndarray], budget: int) -> tuple[np.ndarray, np.ndarray]:
        """(N,) group number of each candidate (0..G-1) and the (G,) quota of each group."""
        _, group, counts = np.unique(
            self._groups(cand["items"], cand["windows"]), return_inverse=True, return_counts=True
        )
        return group.reshape(-1), water_fill(counts, budget)

    def _keep(
        self, cand: dict[str, np.ndarray], keys: np.ndarray, group: np.ndarray, quota: np.ndarray
    ) -> None:
        """Keep, per group, the events with the ``quota[group]`` smallest (finite) keys."""
        order = np.lexsort((keys, group))  # by group, then key
        sizes = np.bincount(group, minlength=len(quota))
        starts = np.cumsum(sizes) - sizes  # first sorted position of each group
        rank = np.arange(len(order)) - starts[group[order]]
        keep = np.zeros(len(order), dtype=bool)
        keep[order] = (rank < quota[group[order]]) & np.isfinite(keys[order])
        kept = np.flatnonzero(keep)
        kept = kept[np.argsort(cand["times"][kept], kind="stable")]  # time order
        for name in COLUMNS:
            setattr(self, name, cand[name][kept])
        self.keys = keys[kept]

    def _interactions(
        self, idx: np.ndarray, n_users: int | None, n_items: int | None
    ) -> Interactions:
        users, items = self.users[idx], self.items[idx]
        if n_users is None:
            n_users = int(self.users.max()) + 1 if len(self) else 0
        if n_items is None:
            n_items = int(self.items.max()) + 1 if len(self) else 0
        t = (torch.from_numpy(a.copy()) for a in (users, items, self.times[idx]))
        return Interactions(*t, n_users=n_users, n_items=n_items)

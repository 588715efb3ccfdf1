"""Item-item models from the Gram matrix of users' decayed histories: item-kNN (asymmetric
cosine with shrinkage, top-K neighbours) and EASE (Steck, WWW 2019), with a repeat-aware
blend of the user's own history for retail re-buys (in the spirit of TIFU-kNN, Hu et al.,
SIGIR 2020).

    X[u, i]  = sum over u's purchases of i of decay ** (age in windows)   (History's counts)
    G        = X^T X                         (I x I: a sum over users, hence over shops)
    kNN:  S[j, i] = G[j, i] / (G[j, j] ** alpha * G[i, i] ** (1 - alpha) + shrink), i != j,
          the k largest of each row j kept
    EASE: P = (G + l2 I)^-1,  S[j, i] = -P[j, i] / P[i, i],  S[i, i] = 0, top k by |S| per row
    score(u, i) = (X[u] S)[i] / max_i |X[u] S|  +  repeat * own(u, i)  +  1e-3 * pop(i)

``own`` and ``pop`` are :class:`~fedcl.models.history.History`'s scores (own >= 0 only for
items the user bought; pop in [-1, 0)), so ``repeat`` = 0 ranks by similarity alone and a
large ``repeat`` puts the user's own decayed purchases first. Continual by design: the only
memory of the past is the decayed history the Gram is made from (no replay buffer).

Federation (:mod:`fedcl.federated.statistics`): a shop's contribution is its own users' Gram
(sparse: only the item pairs its users bought together) and its users' count; the server
adds them and solves; the result equals the centralized model on the same users.
Where dense EASE stops: the solve inverts a dense I x I matrix, O(I^3) time and 4 I^2 bytes
(4k items: ~1 s and 64 MB; 100k items: 40 GB, infeasible): use kNN beyond ~20k items.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from fedcl.checks import at_least, one_of
from fedcl.data.interactions import Interactions
from fedcl.models.history import History, HistoryConfig

KINDS = ("knn", "ease")


@dataclass
class ItemItemConfig(HistoryConfig):
    _target_: str = "fedcl.models.itemitem.ItemItem"
    #: "knn" (asymmetric cosine) or "ease" (closed-form linear autoencoder).
    kind: str = "knn"
    #: Each window multiplies the history's counts (hence the Gram's users' rows) by this.
    #: Settings chosen on Online Retail validation (``benchmarks/tune_itemitem.py``; the
    #: EASE values are in ``conf/model/ease.yaml``).
    decay: float = 0.5
    #: Neighbours kept per item (the sparse weights' width, hence the bytes a federation
    #: sends down): 1,000 is within 0.0003 validation NDCG@10 of keeping all 4,000.
    k: int = 1000
    #: kNN: exponent of the asymmetric cosine (0.5 = cosine; higher favours popular targets).
    alpha: float = 0.5
    #: kNN: shrinkage added to the denominator (damps pairs seen by few users).
    shrink: float = 10.0
    #: EASE: L2 regularisation of the Gram's diagonal.
    l2: float = 100.0
    #: Weight of the user's own decayed purchases (re-buys) beside the similarity scores
    #: (0: similarity only). 100: the best of {0, 0.3, 1, 3, 10, 30, 100} for the repeat
    #: variant on validation; the "new" variant masks own items, so it does not move it.
    repeat: float = 100.0

    def check(self, key: str = "model") -> None:
        super().check(key)
        one_of(f"{key}.kind", self.kind, KINDS)
        at_least(f"{key}.k", self.k, 1)
        at_least(f"{key}.alpha", self.alpha, 0)
        at_least(f"{key}.shrink", self.shrink, 0)
        at_least(f"{key}.l2", self.l2, 0)
        at_least(f"{key}.repeat", self.repeat, 0)


#: The config schema of this module's model (registered from ``conf/model/itemitem.yaml``).
SCHEMA = ItemItemConfig


def user_item_matrix(model: History) -> sp.csr_matrix:
    """The decayed history ``X`` (n_users x n_items, float64 CSR) of a History model."""
    ptr = model.user_hist_ptr.cpu().numpy()
    items = model.user_hist_items.cpu().numpy()
    weight = model.user_hist_weight.cpu().double().numpy()
    return sp.csr_matrix((weight, items, ptr), shape=(model.n_users, model.n_items))


def gram(x: sp.csr_matrix) -> sp.csr_matrix:
    """``X^T X`` (n_items x n_items, CSR, sorted indices)."""
    g = (x.T @ x).tocsr()
    g.sort_indices()
    return g


def solve(g: sp.csr_matrix, cfg: ItemItemConfig) -> sp.csr_matrix:
    """The item-item weights ``S`` (CSR, top ``cfg.k`` per row) from the Gram ``g``."""
    n = g.shape[0]
    if cfg.kind == "ease":
        dense = g.toarray()
        dense[np.diag_indices(n)] += cfg.l2
        p = np.linalg.inv(dense)
        s = -p / np.diag(p)[None, :]
        s[np.diag_indices(n)] = 0.0
        return top_k(sp.csr_matrix(s), cfg.k)
    d = g.diagonal()
    coo = g.tocoo()
    keep = coo.row != coo.col
    r, c, v = coo.row[keep], coo.col[keep], coo.data[keep]
    denom = np.power(d[r], cfg.alpha) * np.power(d[c], 1 - cfg.alpha) + cfg.shrink
    return top_k(sp.csr_matrix((v / denom, (r, c)), shape=(n, n)), cfg.k)


def top_k(s: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Each row's ``k`` entries of largest absolute value (ties: lower column first)."""
    s = s.tocsr()
    s.eliminate_zeros()
    s.sort_indices()
    lengths = np.diff(s.indptr)
    if lengths.max(initial=0) <= k:
        return s
    rows, cols, vals = [], [], []
    for j in np.nonzero(lengths)[0]:
        lo, hi = s.indptr[j], s.indptr[j + 1]
        v, c = s.data[lo:hi], s.indices[lo:hi]
        if hi - lo > k:
            pick = np.sort(np.argsort(-np.abs(v), kind="stable")[:k])
            v, c = v[pick], c[pick]
        rows.append(np.full(len(c), j))
        cols.append(c)
        vals.append(v)
    out = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=s.shape
    )
    out.sort_indices()
    return out


class ItemItem(History):
    """Item-kNN or EASE over the decayed history, with an optional re-buy blend
    (``trainable=False``: learns in :meth:`observe`)."""

    #: The weights ``sim_*`` are shared (a federation's server solves them from the summed
    #: Grams and sends them); the history and the shop's popularity stay private.
    private_prefixes = ("user", "item_counts")
    federation = "statistics"
    statistics_kind = "gram"
    resizable_buffers = (*History.resizable_buffers, "sim_ptr", "sim_idx", "sim_val")

    def __init__(self, n_users: int, n_items: int, **options: Any) -> None:
        c = ItemItemConfig(**options)
        history = {k: getattr(c, k) for k in HistoryConfig.__dataclass_fields__ if k != "_target_"}
        super().__init__(n_users, n_items, **history)
        self.cfg = c
        #: Solve from this unit's own Gram in :meth:`observe` (a federated shop gets the
        #: weights from the server instead).
        self.local_solve = True
        self.register_buffer("sim_ptr", torch.zeros(n_items + 1, dtype=torch.long))
        self.register_buffer("sim_idx", torch.zeros(0, dtype=torch.int32))
        self.register_buffer("sim_val", torch.zeros(0, dtype=torch.float32))
        #: Popularity from the Gram's diagonal (sum over users of X[u, i]^2): the tie-break,
        #: the same in every mode (a shop's own counts would differ from the pooled ones).
        self.register_buffer("sim_pop", torch.zeros(n_items, dtype=torch.float32))

    # --- learning -----------------------------------------------------------------
    def observe(self, train: Interactions) -> None:
        """Decay and merge the window into the history, then solve from this unit's own
        Gram (a federation replaces the weights with the ones from all shops' Grams)."""
        super().observe(train)
        if self.local_solve:
            self.fit(self.statistics())

    def fit(self, g: sp.spmatrix) -> None:
        """Weights and popularity from a Gram ``g`` (this unit's own, or a federation's sum)."""
        g = g.tocsr()
        self.set_weights(solve(g, self.cfg))
        pop = np.zeros(self.n_items, dtype=np.float32)
        pop[: g.shape[0]] = g.diagonal()
        self.sim_pop = torch.from_numpy(pop)

    @staticmethod
    def statistics_rounds(cfg: ItemItemConfig) -> int:
        """Federated rounds a window takes: the Gram's sum is the same in every round."""
        return 1

    def user_step(self) -> None:
        """Nothing to solve per user: the history is the user side."""

    def statistics(self) -> sp.csr_matrix:
        """This unit's contribution to the federation's Gram."""
        return gram(user_item_matrix(self))

    def set_weights(self, s: sp.csr_matrix) -> None:
        """Use the item-item weights ``s`` (CSR, at most n_items x n_items)."""
        s = s.tocsr()
        s.sort_indices()
        ptr = np.zeros(self.n_items + 1, dtype=np.int64)
        ptr[1 : s.shape[0] + 1] = s.indptr[1:]
        ptr[s.shape[0] + 1 :] = s.indptr[-1]
        self.sim_ptr = torch.from_numpy(ptr)
        self.sim_idx = torch.from_numpy(s.indices.astype(np.int32))
        self.sim_val = torch.from_numpy(s.data.astype(np.float32))

    def weights(self) -> sp.csr_matrix:
        """The item-item weights in use (CSR, n_items x n_items)."""
        return sp.csr_matrix(
            (self.sim_val.numpy(), self.sim_idx.numpy(), self.sim_ptr.numpy()),
            shape=(self.n_items, self.n_items),
        )

    # --- scoring ------------------------------------------------------------------
    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """(B, n_items): normalised similarity scores, plus ``repeat`` x own scores (items
        the user bought), plus a popularity tie-break (users with no history)."""
        return self.scorer()(users)

    def scorer(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """:meth:`score_all` with the model's sparse matrices built once, for a model that
        no longer changes (a serving snapshot: building them costs as much as scoring one
        user); the scores are :meth:`score_all`'s, bit for bit. Stale once the model
        observes, fits or grows: ask again then."""
        x_all, w = user_item_matrix(self), self.weights()
        last = self._users_last() if self.cfg.repeat > 0 else None
        pop = self.sim_pop.double()
        tie = 1e-3 * (pop / (pop.max().clamp(min=0) + 1.0) - 1.0)  # (I,)
        repeat, recency = self.cfg.repeat, self.recency

        def score_all(users: torch.Tensor) -> torch.Tensor:
            rows = users.cpu().numpy()
            x = x_all[rows]
            sim = np.asarray((x @ w).todense(), dtype=np.float64)  # (B, I)
            scale = np.abs(sim).max(axis=1, keepdims=True)
            sim = np.divide(sim, scale, out=np.zeros_like(sim), where=scale > 0)
            out = torch.from_numpy(sim) + tie
            if last is not None:
                own = np.asarray((x + recency * last[rows]).todense())
                out += repeat * torch.from_numpy(own)
            return out.float().to(users.device)

        return score_all

    def _users_last(self) -> sp.csr_matrix:
        """(n_users, n_items) each user's last purchase time on an absolute clock
        (``last / 2**32`` s: the re-buy recency tie-break), so a user's scores do not depend
        on the other users the unit has."""
        return sp.csr_matrix(
            (self.user_hist_last.numpy().astype(np.float64) / 2**32,
             self.user_hist_items.numpy(), self.user_hist_ptr.numpy()),
            shape=(self.n_users, self.n_items),
        )  # fmt: skip

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(B,) scores of (user, item) pairs."""
        rows = self.score_all(users)
        return rows[torch.arange(len(users)), items.to(rows.device)]

    def grow(self, n_users: int, n_items: int) -> None:
        """New users and items: empty history, no neighbours."""
        old = self.n_items
        super().grow(n_users, n_items)
        if n_items > old:
            pad = self.sim_ptr[-1:].expand(n_items - old)
            self.sim_ptr = torch.cat([self.sim_ptr, pad])
            self.sim_pop = torch.cat([self.sim_pop, self.sim_pop.new_zeros(n_items - old)])

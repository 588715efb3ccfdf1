"""NeuMF: generalised matrix factorisation + an MLP tower (He et al., WWW 2017).

    gmf(u, i) = user_gmf[u] * item_gmf[i]                                  (D_g,)
    mlp(u, i) = MLP([user_mlp[u], item_mlp[i]])                            (H_last,)
    score     = out([gmf, mlp])                                            logit

Trained pointwise: one positive and ``n_neg`` sampled negatives per example, binary
cross-entropy on the logits. User tables (``user_gmf``, ``user_mlp``) are private; item
tables, the MLP and the output layer are shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fedcl.checks import above, at_least, within
from fedcl.errors import ConfigError
from fedcl.models.base import Batch, ModelConfig, Recommender, grow_embedding


@dataclass
class NeuMFConfig(ModelConfig):
    _target_: str = "fedcl.models.neumf.NeuMF"
    #: GMF embedding size ("predictive factors" in the paper; 8-64 tested, 32 a good middle).
    dim_gmf: int = 32
    #: MLP embedding size per side; the tower input is 2 * dim_mlp.
    dim_mlp: int = 32
    #: Hidden sizes of the MLP tower, halving as in the paper's "tower" pattern.
    layers: list[int] = field(default_factory=lambda: [64, 32, 16])
    #: Dropout after each hidden layer (the paper uses none).
    dropout: float = 0.0
    #: Std of the normal init of embeddings (paper: 0.01); also for rows added by ``grow``.
    init_std: float = 0.01

    def check(self, key: str = "model") -> None:
        at_least(f"{key}.dim_gmf", self.dim_gmf, 1)
        at_least(f"{key}.dim_mlp", self.dim_mlp, 1)
        if not self.layers or min(self.layers) < 1:
            raise ConfigError(f"{key}.layers must be one or more sizes >= 1; got {self.layers}")
        within(f"{key}.dropout", self.dropout, 0, 0.99)
        above(f"{key}.init_std", self.init_std, 0)


#: The config schema of this module's model (registered from ``conf/model/neumf.yaml``).
SCHEMA = NeuMFConfig


class NeuMF(Recommender):
    """GMF + MLP recommender. Train batches: ``users`` (B,), ``pos`` (B,), ``neg`` (B, K)."""

    #: Pairs per chunk in ``score_all``: bounds the (B, I, H) activations to ~64 MB.
    chunk_pairs: int = 1 << 18

    def __init__(self, n_users: int, n_items: int, **options: Any) -> None:
        """``options``: fields of :class:`NeuMFConfig` (the others keep its defaults)."""
        super().__init__(n_users, n_items)
        c = NeuMFConfig(**options)
        dim_gmf, dim_mlp, dropout, init_std = c.dim_gmf, c.dim_mlp, c.dropout, c.init_std
        layers = list(c.layers)
        if not layers:
            raise ValueError("NeuMF needs at least one MLP layer")
        self.init_std = init_std
        self.user_gmf = nn.Embedding(n_users, dim_gmf)  # private (U, Dg)
        self.user_mlp = nn.Embedding(n_users, dim_mlp)  # private (U, Dm)
        self.item_gmf = nn.Embedding(n_items, dim_gmf)  # shared (I, Dg)
        self.item_mlp = nn.Embedding(n_items, dim_mlp)  # shared (I, Dm)
        for emb in (self.user_gmf, self.user_mlp, self.item_gmf, self.item_mlp):
            nn.init.normal_(emb.weight, std=init_std)
        # The first layer acts on [user_mlp, item_mlp]; score_all splits its weight in two.
        sizes = [2 * dim_mlp, *layers]
        pairs = zip(sizes[:-1], sizes[1:], strict=True)
        self.mlp = nn.ModuleList(nn.Linear(a, b) for a, b in pairs)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(dim_gmf + layers[-1], 1)

    def _tower(self, h: torch.Tensor) -> torch.Tensor:
        """MLP layers after the first pre-activation ``h`` (..., H1) -> (..., H_last)."""
        h = self.dropout(F.relu(h))
        for layer in self.mlp[1:]:
            h = self.dropout(F.relu(layer(h)))
        return h

    def _logits(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits (...) for broadcastable ``users`` and ``items`` index tensors."""
        users, items = torch.broadcast_tensors(users, items)
        gmf = self.user_gmf(users) * self.item_gmf(items)  # (..., Dg)
        h = self.mlp[0](torch.cat([self.user_mlp(users), self.item_mlp(items)], -1))
        return self.out(torch.cat([gmf, self._tower(h)], -1)).squeeze(-1)

    def loss(self, batch: Batch) -> torch.Tensor:
        """Mean BCE over the B x (1 + K) examples (positive label 1, negatives 0)."""
        items = torch.cat([batch.pos[:, None], batch.neg], dim=1)  # (B, 1 + K)
        logits = self._logits(batch.users[:, None], items)  # (B, 1 + K)
        target = torch.zeros_like(logits)
        target[:, 0] = 1.0
        return F.binary_cross_entropy_with_logits(logits, target)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(B,) logits for pairs ``users``, ``items`` (B,)."""
        return self._logits(users, items)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """(B, n_items) logits for ``users`` (B,), in user chunks of bounded memory.

        The first MLP layer is linear in [u, i], so it is applied to users (B, H1) and
        items (I, H1) separately and summed by broadcasting: no (B, I, 2 Dm) tensor.
        """
        first = self.mlp[0]
        dm = self.user_mlp.embedding_dim
        w_user, w_item = first.weight[:, :dm], first.weight[:, dm:]  # (H1, Dm) each
        item_h = self.item_mlp.weight @ w_item.T + first.bias  # (I, H1)
        item_g = self.item_gmf.weight  # (I, Dg)
        w_gmf, w_mlp = self.out.weight[0, : item_g.shape[1]], self.out.weight[0, item_g.shape[1] :]
        per_chunk = max(1, self.chunk_pairs // max(1, self.n_items))
        chunks = []
        for start in range(0, users.shape[0], per_chunk):
            u = users[start : start + per_chunk]
            user_h = self.user_mlp(u) @ w_user.T  # (b, H1)
            tower = self._tower(user_h[:, None, :] + item_h[None])  # (b, I, H_last)
            gmf = (self.user_gmf(u) * w_gmf) @ item_g.T  # (b, I): out's GMF part, folded
            chunks.append(gmf + tower @ w_mlp + self.out.bias)
        if not chunks:
            return item_g.new_zeros((0, self.n_items))
        return torch.cat(chunks)

    def grow(self, n_users: int, n_items: int, generator: torch.Generator | None = None) -> None:
        """New users: N(0, init_std^2). New items: the mean item embedding (GMF and MLP
        tables) plus N(0, init_std^2) noise, so they score like an average item."""
        for emb in (self.user_gmf, self.user_mlp):
            grow_embedding(emb, n_users, std=self.init_std, generator=generator)
        for emb in (self.item_gmf, self.item_mlp):
            grow_embedding(emb, n_items, std=self.init_std, from_mean=True, generator=generator)
        self.n_users = max(self.n_users, n_users)
        self.n_items = max(self.n_items, n_items)

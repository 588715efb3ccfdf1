"""SASRec: causal self-attention over each user's purchase sequence (Kang & McAuley 2018).

    h = Transformer(item_emb[seq] + pos_emb)          (B, L, D), causal, padding ignored
    score(u, i) = <h[u, last], item_emb[i + 1]>

Item ``i`` is stored at row ``i + 1`` of ``item_emb``; row 0 is padding (kept at zero).
Sequences are right-aligned: the newest purchase sits in the last column, padding (0) on
the left, positions count from the window's left edge (column ``c`` uses ``pos_emb[c]``).
Shared: ``item_emb``, ``pos_emb``, ``blocks``, ``norm``. Private: ``user_seq``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fedcl.checks import above, at_least, within
from fedcl.data.interactions import Interactions
from fedcl.errors import ConfigError
from fedcl.models.base import Batch, ModelConfig, Recommender, grow_embedding


@dataclass
class SASRecConfig(ModelConfig):
    _target_: str = "fedcl.models.sasrec.SASRec"
    #: Hidden size; 64 as in the paper (32 is enough for a few thousand items).
    dim: int = 64
    #: Transformer blocks; the paper finds 2 best on sparse data.
    n_layers: int = 2
    #: Attention heads (dim must be divisible); 1 in the paper.
    n_heads: int = 1
    #: Last purchases kept per user; 50 (paper: 50 for sparse, 200 for dense datasets).
    max_len: int = 50
    #: Dropout on embeddings, attention and feed-forward (paper: 0.2 for sparse data).
    dropout: float = 0.2
    #: Uniform negatives per target position (BCE as in the paper: 1).
    n_neg: int = 1
    #: Std of the normal init of embeddings; also of item rows added by ``grow``.
    init_std: float = 0.02

    def check(self, key: str = "model") -> None:
        for name in ("dim", "n_layers", "n_heads", "max_len", "n_neg"):
            at_least(f"{key}.{name}", getattr(self, name), 1)
        if self.dim % self.n_heads:
            raise ConfigError(
                f"{key}.dim ({self.dim}) must be divisible by {key}.n_heads ({self.n_heads})"
            )
        within(f"{key}.dropout", self.dropout, 0, 0.99)
        above(f"{key}.init_std", self.init_std, 0)


#: The config schema of this module's model (registered from ``conf/model/sasrec.yaml``).
SCHEMA = SASRecConfig


class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention + point-wise feed-forward."""

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"SASRec dim={dim} must be divisible by n_heads={n_heads}")
        self.n_heads, self.p = n_heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        # Feed-forward of width dim, as in the paper's point-wise two-layer network.
        self.ff = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        """``x`` (B, T, D), ``attn_mask`` (B, 1, T, T) bool (True = may attend) -> (B, T, D)."""
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(d, dim=-1)  # 3 x (B, T, D)
        q, k, v = (z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (q, k, v))
        p = self.p if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, t, d)))  # (B, T, D)
        return x + self.drop(self.ff(self.norm2(x)))


class SASRec(Recommender):
    """Self-attentive sequential recommender with per-user sequences as private state."""

    def __init__(self, n_users: int, n_items: int, **options: Any) -> None:
        """``options``: fields of :class:`SASRecConfig` (the others keep its defaults)."""
        super().__init__(n_users, n_items)
        c = SASRecConfig(**options)
        dim, n_layers, n_heads, dropout = c.dim, c.n_layers, c.n_heads, c.dropout
        max_len, n_neg, init_std = c.max_len, c.n_neg, c.init_std
        self.max_len, self.n_neg, self.init_std = max_len, n_neg, init_std
        self.item_emb = nn.Embedding(n_items + 1, dim, padding_idx=0)  # shared (I + 1, D)
        self.pos_emb = nn.Embedding(max_len, dim)  # shared (L, D)
        nn.init.normal_(self.item_emb.weight, std=init_std)
        nn.init.normal_(self.pos_emb.weight, std=init_std)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        self.blocks = nn.ModuleList(Block(dim, n_heads, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        # Item rows (item + 1; 0 = padding) of each user's last max_len purchases.
        self.register_buffer("user_seq", torch.zeros(n_users, max_len, dtype=torch.long))

    # --- sequences ----------------------------------------------------------------
    def observe(self, train: Interactions) -> None:
        """Append ``train``'s purchases (time-ordered) to their users' sequences, keeping
        each user's last ``max_len``. Vectorised: one sort, one gather, one scatter."""
        self._check_sizes(train)
        if len(train) == 0:
            return
        dev, length = self.user_seq.device, self.max_len
        users, items = train.users.to(dev), train.items.to(dev)
        order = torch.sort(users, stable=True).indices  # by user, time order kept
        users, items = users[order], items[order]
        touched, counts = torch.unique_consecutive(users, return_counts=True)  # (U',)
        ends = torch.cumsum(counts, 0)  # (U',) one past each user's last event
        row = torch.repeat_interleave(torch.arange(len(touched), device=dev), counts)  # (N,)
        from_end = ends[row] - 1 - torch.arange(len(users), device=dev)  # 0 = newest
        # Shift each old sequence left by its number of new events (capped at L).
        shift = counts.clamp(max=length)  # (U',)
        src = torch.arange(length, device=dev)[None] + shift[:, None]  # (U', L)
        old = self.user_seq[touched].gather(1, src.clamp(max=length - 1))
        new = torch.where(src < length, old, torch.zeros_like(old))  # (U', L)
        keep = from_end < length
        new[row[keep], length - 1 - from_end[keep]] = items[keep] + 1
        self.user_seq[touched] = new

    def batches(
        self,
        train: Interactions,
        batch_size: int,
        negatives: torch.Tensor | None,
        generator: torch.Generator,
    ) -> Iterator[Batch]:
        """One epoch over the sequences of the users in ``train`` (call ``observe`` first).

        ``batch_size`` counts target positions (like events for pairwise models), so a
        batch holds ``max(1, batch_size // max_len)`` sequences. ``negatives`` is ignored:
        ``n_neg`` uniform negatives are drawn per position on ``generator``.
        Batch: ``users`` (B,), ``pos``/``neg`` the last position's target (B,) and
        negatives (B, K); ``extra`` = ``seq`` (B, T) inputs, ``pos`` (B, T) targets,
        ``neg`` (B, T, K), all as item rows (item + 1, 0 = padding), T <= max_len.
        """
        users = torch.unique(train.users.to(self.user_seq.device))
        per_batch = max(1, batch_size // self.max_len)
        perm = torch.randperm(len(users), generator=generator, device=generator.device)
        users = users[perm.to(users.device)]
        for start in range(0, len(users), per_batch):
            u = users[start : start + per_batch]
            target = self.user_seq[u]  # (B, L)
            t = max(1, int((target != 0).sum(1).max()))
            target = target[:, -t:]  # (B, T): drop all-padding columns
            seq = F.pad(target[:, :-1], (1, 0))  # (B, T) input = previous item
            shape = (*target.shape, self.n_neg)
            neg = torch.randint(
                1, self.n_items + 1, shape, generator=generator, device=generator.device
            ).to(target.device)
            neg = neg * (target != 0)[..., None]  # (B, T, K), 0 where no target
            extra = {"seq": seq, "pos": target, "neg": neg}
            yield Batch(u, target[:, -1] - 1, neg[:, -1] - 1, extra)

    # --- model --------------------------------------------------------------------
    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, T, D) of right-aligned item-row sequences ``seq`` (B, T).

        Padding keys are masked out; each position also attends to itself, so an
        all-padding row stays finite (it learns a history-free prior).
        """
        t = seq.shape[1]
        pad = seq != 0  # (B, T)
        x = self.item_emb(seq) + self.pos_emb.weight[self.max_len - t :]  # (B, T, D)
        x = self.drop(x) * pad[..., None]
        causal = torch.ones(t, t, dtype=torch.bool, device=seq.device).tril()  # (T, T)
        eye = torch.eye(t, dtype=torch.bool, device=seq.device)
        mask = (causal & pad[:, None, :]) | eye  # (B, T, T)
        mask = mask[:, None]  # (B, 1, T, T) broadcast over heads
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)

    def loss(self, batch: Batch) -> torch.Tensor:
        """BCE per target position (positive vs each negative), padding ignored."""
        assert batch.extra is not None, "SASRec batches come from SASRec.batches"
        seq, pos, neg = batch.extra["seq"], batch.extra["pos"], batch.extra["neg"]
        h = self.encode(seq)  # (B, T, D)
        valid = pos != 0  # (B, T)
        h, pos, neg = h[valid], pos[valid], neg[valid]  # (P, D), (P,), (P, K)
        pos_logit = (h * self.item_emb(pos)).sum(-1)  # (P,)
        neg_logit = torch.einsum("pd,pkd->pk", h, self.item_emb(neg))  # (P, K)
        loss_pos = F.softplus(-pos_logit).mean()  # = BCE(logit, 1)
        return loss_pos + F.softplus(neg_logit).mean()  # + BCE(logit, 0)

    def _last_hidden(self, users: torch.Tensor) -> torch.Tensor:
        """(B, D) hidden state after each user's newest purchase."""
        seq = self.user_seq[users.to(self.user_seq.device)]  # (B, L)
        t = max(1, int((seq != 0).sum(1).max())) if len(seq) else 1
        return self.encode(seq[:, -t:])[:, -1]

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(B,) scores for pairs ``users``, ``items`` (B,)."""
        return (self._last_hidden(users) * self.item_emb(items + 1)).sum(-1)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """(B, n_items): last hidden state (B, D) times every item row (I, D)."""
        return self._last_hidden(users) @ self.item_emb.weight[1:].T

    def grow(self, n_users: int, n_items: int, generator: torch.Generator | None = None) -> None:
        """New users: empty sequences. New items: the mean item row (padding excluded)
        plus N(0, init_std^2) noise, so they score like an average item."""
        if n_users > self.n_users:
            pad = self.user_seq.new_zeros(n_users - self.n_users, self.max_len)
            self.user_seq = torch.cat([self.user_seq, pad])
            self.n_users = n_users
        grow_embedding(
            self.item_emb,
            n_items + 1,
            std=self.init_std,
            from_mean=True,
            skip_rows=1,
            generator=generator,
        )
        self.n_items = max(self.n_items, n_items)

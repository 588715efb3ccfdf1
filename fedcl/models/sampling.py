"""Negative item sampling for pairwise (BPR) and pointwise (BCE) training.

Negatives are drawn independently of the positive: an accidental hit (the positive, or
another item the user bought, drawn as a negative) is possible and accepted, as in most
implementations (BPR, NCF, SASRec). With thousands of items its rate is about
``(items the user bought) / n_items`` and it only adds a little label noise, while
rejection sampling would need a per-user loop.
"""

from __future__ import annotations

from typing import Literal

import torch

from fedcl.data.interactions import Interactions

Mode = Literal["uniform", "popularity"]


class NegativeSampler:
    """Draws negative items, uniformly or in proportion to ``count ** alpha``.

    ``popularity`` mode (word2vec-style, ``alpha=0.75``) uses the item counts of the
    train interactions: popular items are harder negatives. Items never seen in train
    have probability 0 in that mode; if no item has a count the sampler is uniform.
    """

    def __init__(
        self,
        n_items: int,
        mode: Mode = "uniform",
        alpha: float = 0.75,
        counts: torch.Tensor | None = None,
    ) -> None:
        if mode not in ("uniform", "popularity"):
            raise ValueError(f"negative sampling mode must be uniform or popularity, not {mode!r}")
        if n_items < 1:
            raise ValueError(f"need at least one item to sample from, got n_items={n_items}")
        self.n_items = n_items
        self.mode = mode
        self.alpha = alpha
        self._cdf: torch.Tensor | None = None  # (n_items,) float64, last entry 1
        if mode == "popularity":
            if counts is None:
                raise ValueError("popularity sampling needs item counts (use from_interactions)")
            if counts.shape != (n_items,):
                raise ValueError(f"counts must have shape ({n_items},), got {tuple(counts.shape)}")
            weights = counts.detach().double().cpu().clamp(min=0) ** alpha  # (n_items,)
            total = weights.sum()
            if total > 0:
                self._cdf = torch.cumsum(weights, 0) / total

    @classmethod
    def from_interactions(
        cls, train: Interactions, mode: Mode = "uniform", alpha: float = 0.75
    ) -> NegativeSampler:
        """A sampler over ``train.n_items`` items with counts taken from ``train``."""
        counts = torch.bincount(train.items.cpu(), minlength=train.n_items)
        return cls(train.n_items, mode, alpha, counts if mode == "popularity" else None)

    @property
    def probabilities(self) -> torch.Tensor:
        """(n_items,) float64: the probability of drawing each item."""
        if self._cdf is None:
            return torch.full((self.n_items,), 1.0 / self.n_items, dtype=torch.float64)
        return torch.diff(self._cdf, prepend=self._cdf.new_zeros(1))

    def sample(self, n: int, n_neg: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, n_neg) int64 item indices in ``[0, n_items)``, on ``generator``'s device.

        Vectorised: ``randint`` (uniform) or inverse CDF with ``searchsorted``.
        """
        device = generator.device if generator is not None else torch.device("cpu")
        if self._cdf is None:
            return torch.randint(0, self.n_items, (n, n_neg), generator=generator, device=device)
        dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS: no float64
        u = torch.rand((n, n_neg), generator=generator, device=device, dtype=dtype)
        cdf = self._cdf.to(device, dtype)
        # right=True skips zero-probability items (their cdf step has width 0).
        idx = torch.searchsorted(cdf, u, right=True)
        return idx.clamp_(max=self.n_items - 1)

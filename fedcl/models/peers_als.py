"""implicit's alternating least squares (Hu, Koren & Volinsky, ICDM 2008) as a fedcl model.

    score(u, i) = <user_factors[u], item_factors[i]>

fitted by ``implicit.cpu.als.AlternatingLeastSquares`` on the purchase counts of all windows
so far (confidence ``alpha * count``), from scratch after every window, with ``random_state``
the model's seed and one thread. Users without purchases score 0. All state is private
(shared machinery and state: :mod:`fedcl.models.peers`); needs ``pip install implicit==0.7.3``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fedcl.checks import above, at_least
from fedcl.models.base import ModelConfig
from fedcl.models.peers import ImplicitPeer, import_implicit, one_blas_thread


@dataclass
class ImplicitALSConfig(ModelConfig):
    _target_: str = "fedcl.models.peers_als.ImplicitALS"
    #: Latent factors (64: MF's default ``dim``; implicit's own default is 100).
    factors: int = 64
    #: L2 weight on the factors (implicit's default; 0.1 ties it on Online Retail's
    #: validation split in benchmarks/bench_peers.py: forward NDCG@10 0.0929 vs 0.0928).
    regularization: float = 0.01
    #: Confidence of a purchase: ``alpha * count`` (implicit's default 1; 10 was worse on
    #: Online Retail's validation split: forward NDCG@10 0.081 vs 0.093).
    alpha: float = 1.0
    #: ALS sweeps per fit (implicit's default).
    iterations: int = 15

    def check(self, key: str = "model") -> None:
        at_least(f"{key}.factors", self.factors, 1)
        at_least(f"{key}.regularization", self.regularization, 0)
        above(f"{key}.alpha", self.alpha, 0)
        at_least(f"{key}.iterations", self.iterations, 1)


#: The config schema of this module's model (registered from ``conf/model/implicit_als.yaml``).
SCHEMA = ImplicitALSConfig


class ImplicitALS(ImplicitPeer):
    """implicit's CPU ALS, refitted on all purchases after every window (``trainable=False``).

    State: the counts (:class:`~fedcl.models.peers.ImplicitPeer`), ``user_factors``
    (n_users, factors) and ``item_factors`` (n_items, factors) float32, all private.
    """

    def __init__(self, n_users: int, n_items: int, **options: Any) -> None:
        """``options``: fields of :class:`ImplicitALSConfig` (the others keep its defaults)."""
        super().__init__(n_users, n_items)
        c = ImplicitALSConfig(**options)
        self.factors, self.regularization = c.factors, c.regularization
        self.alpha, self.iterations = c.alpha, c.iterations
        self.register_buffer("user_factors", torch.zeros(n_users, c.factors))  # (U, F)
        self.register_buffer("item_factors", torch.zeros(n_items, c.factors))  # (I, F)

    def fit(self, counts: Any) -> None:
        """A fresh ``AlternatingLeastSquares`` fitted on ``counts`` (n_users, n_items)."""
        name = type(self).__name__
        als = import_implicit("implicit.cpu.als", name)
        with one_blas_thread(name):
            model = als.AlternatingLeastSquares(
                factors=self.factors, regularization=self.regularization, alpha=self.alpha,
                iterations=self.iterations, num_threads=1, random_state=self.seed,
            )  # fmt: skip
            model.fit(counts, show_progress=False)
        dev = self.user_factors.device
        users = torch.from_numpy(model.user_factors).to(dev, torch.float32)  # (U, F)
        # Users without purchases score 0 (implicit's solver leaves them at 0 too; made sure).
        users[~self.seen_users()] = 0.0
        self.user_factors = users
        self.item_factors = torch.from_numpy(model.item_factors).to(dev, torch.float32)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """(B, n_items) ``user_factors[users] @ item_factors.T`` for ``users`` (B,)."""
        return self.user_factors[users.to(self.user_factors.device)] @ self.item_factors.T

    def _grow_fitted(self, n_users: int, n_items: int) -> None:
        uf, itf = self.user_factors, self.item_factors
        self.user_factors = torch.cat([uf, uf.new_zeros(n_users - uf.shape[0], self.factors)])
        self.item_factors = torch.cat([itf, itf.new_zeros(n_items - itf.shape[0], self.factors)])

"""implicit's BM25 item-item nearest neighbours as a fedcl model.

    score(u, i) = sum over items j of count(u, j) * similarity[j, i]

with ``similarity`` the K nearest neighbours of each item under the dot product of the items'
BM25-weighted purchase vectors (``implicit.nearest_neighbours.BM25Recommender``, fitted on the
counts of all windows so far after every window): what implicit's own ``recommend`` ranks by.
Users without purchases score 0. All state is private (shared machinery and state:
:mod:`fedcl.models.peers`); needs ``pip install implicit==0.7.3``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedcl.checks import at_least, within
from fedcl.models.base import ModelConfig
from fedcl.models.peers import ImplicitPeer, import_implicit, one_blas_thread


@dataclass
class ImplicitItemKNNConfig(ModelConfig):
    _target_: str = "fedcl.models.peers_knn.ImplicitItemKNN"
    #: Neighbours kept per item. 1000: chosen on Online Retail's validation split by
    #: benchmarks/bench_peers.py (forward NDCG@10 0.047; K=100 0.038, K=3000 0.047).
    K: int = 1000
    #: BM25's term-frequency saturation (``implicit.nearest_neighbours.bm25_weight``'s
    #: default; ``BM25Recommender``'s own is 1.2).
    K1: float = 100.0
    #: BM25's length normalisation in [0, 1] (``bm25_weight``'s default).
    B: float = 0.8

    def check(self, key: str = "model") -> None:
        at_least(f"{key}.K", self.K, 1)
        at_least(f"{key}.K1", self.K1, 0)
        within(f"{key}.B", self.B, 0, 1)


#: The config schema of this module's model (registered from
#: ``conf/model/implicit_itemknn.yaml``).
SCHEMA = ImplicitItemKNNConfig


class ImplicitItemKNN(ImplicitPeer):
    """implicit's BM25 item-kNN, refitted on all purchases after every window
    (``trainable=False``).

    State: the counts (:class:`~fedcl.models.peers.ImplicitPeer`) and the item-item
    similarity as a CSR matrix: ``item_sim_ptr`` (n_items + 1,), ``item_sim_items`` and
    ``item_sim_values`` (nnz,) float32, all private.
    """

    resizable_buffers = (*ImplicitPeer.resizable_buffers, "item_sim_items", "item_sim_values")

    def __init__(self, n_users: int, n_items: int, **options: Any) -> None:
        """``options``: fields of :class:`ImplicitItemKNNConfig` (the others keep its defaults)."""
        super().__init__(n_users, n_items)
        c = ImplicitItemKNNConfig(**options)
        self.K, self.K1, self.B = c.K, c.K1, c.B
        long = torch.long
        self.register_buffer("item_sim_ptr", torch.zeros(n_items + 1, dtype=long))  # (I+1,)
        self.register_buffer("item_sim_items", torch.zeros(0, dtype=long))  # (nnz,)
        self.register_buffer("item_sim_values", torch.zeros(0))  # (nnz,) float32

    def fit(self, counts: Any) -> None:
        """A fresh ``BM25Recommender`` fitted on ``counts`` (n_users, n_items)."""
        name = type(self).__name__
        knn = import_implicit("implicit.nearest_neighbours", name)
        with one_blas_thread(name), warnings.catch_warnings():
            # BM25Recommender.fit hands its own BM25 weighting to all_pairs_knn as a COO
            # matrix, which implicit then warns about converting to CSR (implicit's own path).
            warnings.filterwarnings("ignore", "Method expects CSR input")
            model = knn.BM25Recommender(K=self.K, K1=self.K1, B=self.B, num_threads=1)
            model.fit(counts, show_progress=False)
        sim = model.similarity.tocsr()  # (I, I)
        sim.sort_indices()
        dev = self.item_sim_ptr.device
        self.item_sim_ptr = torch.from_numpy(sim.indptr.astype(np.int64)).to(dev)
        self.item_sim_items = torch.from_numpy(sim.indices.astype(np.int64)).to(dev)
        self.item_sim_values = torch.from_numpy(sim.data.astype(np.float32)).to(dev)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """(B, n_items) ``counts[users] @ similarity`` for ``users`` (B,)."""
        rows = self.user_rows(users)  # (B, I)
        lengths = torch.diff(self.item_sim_ptr)  # (I,): the ptr is padded by grow
        src = torch.repeat_interleave(torch.arange(self.n_items, device=rows.device), lengths)
        sim_t = torch.sparse_coo_tensor(
            torch.stack([self.item_sim_items, src]),
            self.item_sim_values,
            (self.n_items,) * 2,
            check_invariants=False,  # built from a CSR matrix: in range by construction
        )  # the similarity transposed: (to item, from item)
        return torch.sparse.mm(sim_t, rows.T.contiguous()).T.contiguous()  # (B, I)

    def _grow_fitted(self, n_users: int, n_items: int) -> None:
        pad = self.item_sim_ptr[-1:].expand(n_items + 1 - self.item_sim_ptr.shape[0])
        self.item_sim_ptr = torch.cat([self.item_sim_ptr, pad])

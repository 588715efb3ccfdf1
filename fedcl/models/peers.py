"""Peers from the ``implicit`` library as fedcl models, so they run the same windows through
the same evaluator and reports as fedcl's own models (issue 14, the peer benchmark).

The models are :mod:`fedcl.models.peers_als` (``ImplicitALS``: implicit's CPU alternating
least squares) and :mod:`fedcl.models.peers_knn` (``ImplicitItemKNN``: implicit's BM25
item-item nearest neighbours); this module holds what they share. Neither is trained by
gradient (``trainable = False``): ``observe`` adds the window's train events to a user x item
purchase-count matrix and refits the library's model on all events so far, from scratch.

State (all private: the counts are one shop's sales, the fitted tables describe that shop;
a federation never exchanges or averages them): the counts as a CSR matrix
(``user_counts_ptr`` (n_users + 1,), ``user_counts_items``/``user_counts_values`` (nnz,)),
plus each model's fitted tables, so a state dict restores the scores exactly without a refit.

``implicit`` is not a fedcl dependency (``pip install implicit==0.7.3``, in the ``dev``
extra): it is imported when a model is fitted, so fedcl imports without it. Fits run in one
thread (implicit's and BLAS's), deterministic under the model's seed.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import torch

from fedcl.data.interactions import Interactions
from fedcl.models.base import Recommender

#: The version the peer benchmark was measured with (``benchmarks/bench_peers.py``).
IMPLICIT_PIN = "implicit==0.7.3"


def import_implicit(module: str, model: str) -> ModuleType:
    """``module`` (a part of ``implicit`` or of its dependencies), or an ImportError that
    says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"model {model} needs the implicit library ({module} did not import: {e}); "
            f"install it with: pip install {IMPLICIT_PIN}"
        ) from e


@contextlib.contextmanager
def one_blas_thread(model: str) -> Iterator[None]:
    """BLAS in one thread while implicit fits (its own loops are single-threaded here too):
    deterministic, and no BLAS thread pool fighting other jobs for the cores."""
    threadpoolctl = import_implicit("threadpoolctl", model)
    with threadpoolctl.threadpool_limits(1, "blas"):
        yield


def fit_seed() -> int:
    """The seed of a model's fits: torch's seed when the model is built (fedcl seeds torch
    with the run's seed before it builds a model), folded into numpy's range."""
    return torch.initial_seed() % 2**32


class ImplicitPeer(Recommender):
    """A purchase-count matrix that ``observe`` grows and that the subclass fits
    (:meth:`fit`) after every window with new events. Subclasses implement ``fit``,
    ``score_all`` and ``_grow_fitted``."""

    trainable = False
    private_prefixes = ("user", "item")
    resizable_buffers: tuple[str, ...] = ("user_counts_items", "user_counts_values")

    def __init__(self, n_users: int, n_items: int) -> None:
        super().__init__(n_users, n_items)
        self.seed = fit_seed()
        long = torch.long
        self.register_buffer("user_counts_ptr", torch.zeros(n_users + 1, dtype=long))  # (U+1,)
        self.register_buffer("user_counts_items", torch.zeros(0, dtype=long))  # (nnz,)
        self.register_buffer("user_counts_values", torch.zeros(0))  # (nnz,) float32 counts

    # --- the counts ------------------------------------------------------------------
    def observe(self, train: Interactions) -> None:
        """Add ``train``'s purchases to the counts, then refit on all of them."""
        self._check_sizes(train)
        if len(train) == 0:
            return  # nothing new: the fit of the same counts stands
        dev = self.user_counts_ptr.device
        users, items = train.users.to(dev), train.items.to(dev)
        entry_users = torch.repeat_interleave(
            torch.arange(self.n_users, device=dev), torch.diff(self.user_counts_ptr)
        )  # (nnz,)
        keys = torch.cat(
            [entry_users * self.n_items + self.user_counts_items, users * self.n_items + items]
        )  # (nnz + N,)
        weight = torch.cat([self.user_counts_values, torch.ones(len(users), device=dev)])
        uniq, inverse = torch.unique(keys, sorted=True, return_inverse=True)  # (nnz',)
        merged = torch.zeros(len(uniq), device=dev).index_add_(0, inverse, weight)
        row = uniq // self.n_items  # sorted keys: CSR rows in order, items sorted in a row
        ptr = torch.zeros(self.n_users + 1, dtype=torch.long, device=dev)
        ptr[1:] = torch.cumsum(torch.bincount(row, minlength=self.n_users), 0)
        self.user_counts_ptr = ptr
        self.user_counts_items = uniq % self.n_items
        self.user_counts_values = merged
        self.fit(self.counts_matrix())

    def counts_matrix(self) -> Any:
        """The counts as a ``scipy.sparse.csr_matrix`` (n_users, n_items) float32."""
        sparse = import_implicit("scipy.sparse", type(self).__name__)
        return sparse.csr_matrix(
            (
                self.user_counts_values.cpu().numpy(),
                self.user_counts_items.cpu().numpy(),
                self.user_counts_ptr.cpu().numpy(),
            ),
            shape=(self.n_users, self.n_items),
        )

    def user_rows(self, users: torch.Tensor) -> torch.Tensor:
        """(B, n_items) dense purchase counts of ``users`` (B,)."""
        users = users.to(self.user_counts_ptr.device)
        out = torch.zeros(len(users), self.n_items, device=users.device)
        start, end = self.user_counts_ptr[users], self.user_counts_ptr[users + 1]  # (B,)
        lengths = end - start
        rows = torch.repeat_interleave(torch.arange(len(users), device=users.device), lengths)
        first = torch.cumsum(lengths, 0) - lengths  # (B,) offset of each row in the flat list
        flat = torch.arange(int(lengths.sum()), device=users.device)
        entries = flat - torch.repeat_interleave(first - start, lengths)  # (sum lengths,)
        out[rows, self.user_counts_items[entries]] = self.user_counts_values[entries]
        return out

    def seen_users(self) -> torch.Tensor:
        """(n_users,) bool: the users with at least one purchase."""
        return torch.diff(self.user_counts_ptr) > 0

    # --- the subclass's part -----------------------------------------------------------
    def fit(self, counts: Any) -> None:
        """Refit the tables on ``counts`` (:meth:`counts_matrix`), from scratch."""
        raise NotImplementedError

    def _grow_fitted(self, n_users: int, n_items: int) -> None:
        """Pad the fitted tables for new users/items (they score 0 until the next fit)."""
        raise NotImplementedError

    # --- scoring ------------------------------------------------------------------------
    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(B,) scores of (user, item) pairs (B,): the pairs' cells of ``score_all``."""
        scores = self.score_all(users)
        return scores[torch.arange(len(users), device=scores.device), items.to(scores.device)]

    def grow(self, n_users: int, n_items: int) -> None:
        """New users have no purchases and score 0 everywhere; new items score 0."""
        self._grow_fitted(max(n_users, self.n_users), max(n_items, self.n_items))
        if n_users > self.n_users:
            pad = self.user_counts_ptr[-1:].expand(n_users - self.n_users)
            self.user_counts_ptr = torch.cat([self.user_counts_ptr, pad])
            self.n_users = n_users
        # Items: the counts' keys are rebuilt from the CSR on each merge, nothing to remap.
        self.n_items = max(self.n_items, n_items)

"""Recommendations from one serving snapshot: the two lists a shop's site shows.

For a customer the shop knows, the snapshot's model scores every item of the catalogue view
(the items the model knows, minus what the shop cannot sell) and two lists are cut from those
scores:

* ``buy_again``: items the customer bought before, best score first (ties: more purchases,
  then more recent) — in retail customers re-buy a lot;
* ``discover``: items new to the customer, best score first.

A customer the shop does not know (never bought here, or another shop's customer: a service
holds only its own shop's data) gets one list, ``popular``: the shop's recent popularity,
labelled ``source: "popularity"``. No list ever holds an item outside the catalogue view.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from fedcl.serve.snapshot import Snapshot

LISTS = ("buy_again", "discover")
#: Users scored per model call in a batch request.
SCORE_CHUNK = 256


@dataclass
class Recommendation:
    """One customer's lists: item ids with their scores, best first."""

    user: str
    known: bool
    source: str  # "model" | "popularity"
    lists: dict[str, list[tuple[str, float]]] = field(default_factory=dict)


class Recommender:
    """A snapshot ready to answer requests (immutable once built: swapped whole)."""

    def __init__(self, snap: Snapshot, sellable: Iterable[str] | None = None) -> None:
        self.snap = snap
        self.generation, self.window = snap.generation, snap.window
        named = np.flatnonzero(snap.users != "")  # rows without an id cannot be asked for
        self._user_rows = named
        self.user_index = pd.Index(snap.users[named])
        # The model is frozen: one that can build its scoring once (ItemItem's sparse
        # matrices) does it here rather than per request; the scores are score_all's.
        scorer = getattr(snap.model, "scorer", None)
        self._score_all = scorer() if callable(scorer) else snap.model.score_all
        items = snap.items
        self.sellable = np.ones(len(items), dtype=bool)
        if sellable is not None:
            self.sellable &= np.isin(items, np.asarray(list(sellable), dtype=str))
        h = snap.history
        self.ptr, self.hist_items = h["ptr"], h["items"]
        # Tie-break inside "buy again": more purchases first, then the latest.
        self.hist_key = h["count"].astype(np.float64) + h["last"].astype(np.float64) / 2**40
        pop = np.where(self.sellable, snap.popularity.astype(np.float64), -np.inf)
        ranked = np.argsort(-pop, kind="stable")
        self.popular = ranked[np.isfinite(pop[ranked])]
        self.popular_scores = pop[self.popular]

    def recommend(self, users: Sequence[str], k: int) -> list[Recommendation]:
        """Lists of at most ``k`` items for each of ``users`` (in order)."""
        found = self.user_index.get_indexer(pd.Index(list(users), dtype=object).astype(str))
        idx = np.where(found >= 0, self._user_rows[np.maximum(found, 0)], -1)
        known = np.flatnonzero(idx >= 0)
        out: list[Recommendation | None] = [None] * len(users)
        for start in range(0, len(known), SCORE_CHUNK):
            rows = known[start : start + SCORE_CHUNK]
            scores = self._scores(idx[rows])
            for r, s in zip(rows.tolist(), scores, strict=True):
                out[r] = self._personal(str(users[r]), int(idx[r]), s, k)
        for r in np.flatnonzero(idx < 0).tolist():
            out[r] = self._unknown(str(users[r]), k)
        return out  # type: ignore[return-value]

    def _scores(self, rows: np.ndarray) -> np.ndarray:
        """(B, I) float64 model scores, -inf where the item cannot be sold."""
        with torch.inference_mode():
            s = self._score_all(torch.as_tensor(rows, dtype=torch.long))
        s = s.detach().cpu().double().numpy()
        s[:, ~self.sellable] = -np.inf
        return s

    def _personal(self, user: str, row: int, scores: np.ndarray, k: int) -> Recommendation:
        lo, hi = int(self.ptr[row]), int(self.ptr[row + 1])
        own = self.hist_items[lo:hi]
        own_scores = scores[own]
        keep = np.isfinite(own_scores)
        own, own_scores, key = own[keep], own_scores[keep], self.hist_key[lo:hi][keep]
        order = np.lexsort((-key, -own_scores))[:k]
        scores[own] = -np.inf  # what is left is new to the customer
        return Recommendation(
            user,
            True,
            "model",
            {
                "buy_again": self._named(own[order], own_scores[order]),
                "discover": self._named(*_top(scores, k)),
            },
        )

    def _unknown(self, user: str, k: int) -> Recommendation:
        top = self.popular[:k]
        return Recommendation(
            user, False, "popularity", {"popular": self._named(top, self.popular_scores[:k])}
        )

    def _named(self, items: np.ndarray, scores: np.ndarray) -> list[tuple[str, float]]:
        ids = self.snap.items[items]
        return [(str(i), float(s)) for i, s in zip(ids, scores, strict=True)]


def _top(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The (at most) ``k`` best finite scores, best first (ties: lower index)."""
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0)
    # The k-th best score by torch.topk (a 1-D partial selection: ~10x faster than
    # np.argpartition over 100k items), then the items above it and, of its ties, the
    # lowest indices: exactly the k best, in O(items) whatever the ties.
    kth = float(torch.topk(torch.from_numpy(scores), k, sorted=False).values.min())
    part = np.zeros(0, np.int64)
    if np.isfinite(kth):
        above = np.flatnonzero(scores > kth)  # at most k - 1
        part = np.concatenate([above, np.flatnonzero(scores == kth)[: k - len(above)]])
    if not np.isfinite(kth) or not np.isfinite(scores[part]).all():
        part = np.flatnonzero(np.isfinite(scores))  # fewer than k finite, a NaN or an inf
    part = part[np.lexsort((part, -scores[part]))][:k]
    return part, scores[part]

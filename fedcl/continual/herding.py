"""Herding exemplar selection (Welling 2009; iCaRL, ADER) on a model's item embeddings.

Greedy herding picks, one at a time, the event whose feature brings the mean of the picked
features closest to the mean feature of all candidates; the order of picking is a ranking
whose every prefix is a good summary, so a quota that shrinks later keeps a prefix.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedcl.errors import ConfigError
from fedcl.models.base import Recommender


def item_features(model: Recommender) -> np.ndarray:
    """(n_items, D) float64 L2-normalised item features of ``model``.

    A model's own ``item_embeddings()`` (returning (n_items, D)) wins; otherwise the shared
    ``nn.Embedding`` tables with one row per item (MF's ``item_emb``, NeuMF's ``item_gmf``
    and ``item_mlp``), or one more with padding row 0 (SASRec's ``item_emb``), concatenated.
    """
    own = getattr(model, "item_embeddings", None)
    if callable(own):
        table = own().detach()
    else:
        tables = []
        for name, mod in model.named_modules():
            if not isinstance(mod, nn.Embedding) or mod.embedding_dim < 2:
                continue
            if name.startswith(model.private_prefixes):
                continue
            w = mod.weight.detach()
            if w.shape[0] == model.n_items:
                tables.append(w)
            elif w.shape[0] == model.n_items + 1 and mod.padding_idx == 0:
                tables.append(w[1:])
        if not tables:
            raise ConfigError(
                f"replay.policy=herding needs item embeddings, and {type(model).__name__} has "
                "none: use it with mf, neumf or sasrec, or choose another replay.policy"
            )
        table = torch.cat(tables, dim=1)
    x = table.float().cpu().numpy().astype(np.float64)  # (I, D)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def herding_ranks(
    items: np.ndarray, features: np.ndarray, k: int, rng: np.random.Generator
) -> np.ndarray:
    """(N,) herding rank of each event (0 = picked first), ``inf`` for the unpicked.

    ``items`` (N,) are the events' items, ``features`` (n_items, D) their features; ``k``
    events are ranked. Events of one item share its feature, so the greedy loop runs over
    distinct items (each pickable as often as it has events) and the events of an item are
    then ranked in a random order drawn from ``rng``.
    """
    n = len(items)
    k = min(k, n)
    ranks = np.full(n, np.inf)
    if k <= 0:
        return ranks
    uniq, inverse, counts = np.unique(items, return_inverse=True, return_counts=True)
    x = features[uniq]  # (U, D)
    sq = (x * x).sum(1)  # (U,)
    target = (counts[:, None] * x).sum(0) / n  # (D,) mean feature of all N events
    left = counts.copy()
    total = np.zeros_like(target)  # sum of picked features
    picks = np.empty(k, dtype=np.int64)
    for step in range(k):
        # argmin_i || (step + 1) * target - total - x_i ||^2, over items with events left
        cost = sq - 2.0 * (x @ ((step + 1) * target - total))
        cost[left == 0] = np.inf
        i = int(np.argmin(cost))
        picks[step] = i
        total += x[i]
        left[i] -= 1
    # The j-th pick of item i is the j-th event of item i in a random order.
    pick_order = np.argsort(picks, kind="stable")  # picks grouped by item, in pick order
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sorted_picks = picks[pick_order]
    occurrence = np.arange(k) - np.searchsorted(sorted_picks, sorted_picks)  # j per pick
    shuffled = rng.permutation(n)
    by_item = shuffled[np.argsort(inverse[shuffled], kind="stable")]  # events by item
    chosen = by_item[starts[sorted_picks] + occurrence]
    ranks[chosen] = pick_order.astype(np.float64)
    return ranks

"""Drawing one item per event from per-user softmax distributions, in bounded memory."""

from __future__ import annotations

import numpy as np

#: Max (users x items) logits held at once while sampling.
CHUNK = 1 << 22


def sample_softmax(
    rng: np.random.Generator,
    taste: np.ndarray,
    items: np.ndarray,
    bias: np.ndarray,
    owner: np.ndarray,
) -> np.ndarray:
    """One item per event: event ``e`` draws from ``softmax(taste[owner[e]] @ items.T + bias)``.

    ``owner`` must be sorted; users are processed in chunks of ``CHUNK // n_items``.
    """
    n_items = items.shape[0]
    users, first, counts = np.unique(owner, return_index=True, return_counts=True)
    out = np.empty(len(owner), dtype=np.int64)
    step = max(1, CHUNK // n_items)
    u = rng.random(len(owner))
    for lo in range(0, len(users), step):
        hi = min(lo + step, len(users))
        logits = taste[users[lo:hi]] @ items.T + bias  # (chunk, n_items) float32
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        cum = np.cumsum(logits, axis=1, dtype=np.float64)
        cum /= cum[:, -1:]
        cum += np.arange(hi - lo)[:, None]  # row r lives in (r, r + 1]: one flat search
        ev = slice(first[lo], first[hi - 1] + counts[hi - 1])
        row = np.repeat(np.arange(hi - lo), counts[lo:hi])
        x = row + np.minimum(u[ev], 1.0 - 1e-9)
        idx = np.searchsorted(cum.ravel(), x, side="right") - row * n_items
        out[ev] = np.minimum(idx, n_items - 1)
    return out

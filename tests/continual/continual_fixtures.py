"""Small event streams and state round trips for the continual-method tests."""

from __future__ import annotations

import io

import numpy as np
import torch

from fedcl.continual.base import State
from fedcl.data.interactions import Interactions
from fedcl.models.base import Batch, Recommender
from fedcl.models.sampling import NegativeSampler


def events(users, items, times, n_users: int, n_items: int) -> Interactions:
    """Interactions from sequences (times must be sorted)."""
    t = [torch.as_tensor(np.asarray(a, dtype=np.int64)) for a in (users, items, times)]
    return Interactions(*t, n_users=n_users, n_items=n_items)


def stream(sizes: list[int], n_users: int, n_items: int, seed: int = 0) -> list[Interactions]:
    """Windows of random events; times are the global event numbers (unique, increasing)."""
    rng = np.random.default_rng(seed)
    out, start = [], 0
    for n in sizes:
        users, items = rng.integers(0, n_users, n), rng.integers(0, n_items, n)
        out.append(events(users, items, np.arange(start, start + n), n_users, n_items))
        start += n
    return out


def a_batch(model: Recommender, data: Interactions, size: int = 16, seed: int = 0) -> Batch:
    """One training batch of ``data`` with one uniform negative per event."""
    gen = torch.Generator().manual_seed(seed)
    neg = NegativeSampler.from_interactions(data).sample(len(data), 1, gen)
    return next(model.batches(data, size, neg, gen))


def flatten_state(state: State, prefix: str = "") -> dict[str, np.ndarray]:
    """A nested state as one flat ``{"a/b": array}`` mapping, for ``np.savez``."""
    flat: dict[str, np.ndarray] = {}
    for key, value in state.items():
        assert "/" not in key, key
        if isinstance(value, dict):
            flat.update(flatten_state(value, prefix + key + "/"))
        else:
            flat[prefix + key] = np.asarray(value)
    return flat


def unflatten_state(flat: dict[str, np.ndarray]) -> State:
    state: State = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        node = state
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return state


def savez_round_trip(state: State) -> State:
    """``state`` written with ``np.savez`` and read back (no JSON, no pickle): scalars come
    back as 0-d arrays, empty dicts vanish."""
    f = io.BytesIO()
    np.savez(f, **flatten_state(state))
    f.seek(0)
    with np.load(f, allow_pickle=False) as loaded:
        return unflatten_state({k: loaded[k] for k in loaded.files})

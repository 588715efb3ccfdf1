"""Catalogue growth on the server: a strategy's own state follows the global arrays.

New items join the item tables window by window. Flower's server-side optimisers keep state
shaped like the old arrays (FedAdam/FedYogi ``m_t``/``v_t``, FedAvgM's momentum and its copy
of the current arrays); this pads that state with zeros (no momentum for a new row) so every
shape agrees after the catalogue grows.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord
from flwr.serverapp.strategy import Strategy


def _pad(old: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if old.shape == shape:
        return old
    new = np.zeros(shape, dtype=old.dtype)
    new[tuple(slice(0, s) for s in old.shape)] = old
    return new


def grow_strategy_state(strategy: Strategy, arrays: ArrayRecord) -> None:
    """Pad ``strategy``'s per-array state to the shapes of ``arrays`` (the grown model)."""
    shapes = {k: tuple(a.shape) for k, a in arrays.items()}
    for name in ("m_t", "v_t"):
        state = getattr(strategy, name, None)
        if isinstance(state, dict):
            setattr(strategy, name, {k: _pad(v, shapes[k]) for k, v in state.items()})
    current = getattr(strategy, "current_arrays", None)
    if isinstance(current, dict):
        strategy.current_arrays = {k: a.numpy() for k, a in arrays.items()}
    elif isinstance(current, ArrayRecord):
        strategy.current_arrays = arrays
    momentum = getattr(strategy, "momentum_vector", None)
    if isinstance(momentum, list):
        strategy.momentum_vector = [
            _pad(v, s) for v, s in zip(momentum, shapes.values(), strict=True)
        ]

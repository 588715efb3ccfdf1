"""Poisson bootstrap over users: per-user weights, a cell's replicate sums, intervals, and
paired comparisons of two runs.

Each user has a weight ``w[u, b] ~ Poisson(1)`` in replicate ``b``. The weights depend only on
(bootstrap seed, shop name, the user's shop-local index), never on the run: every cell of a run
and every run of a comparison reuse a user's weights, so an interval of a difference (BWT, run
a minus run b) is a paired interval. A shop turns its users' values into two aggregates per
replicate (:func:`replicate_sums`); per-user values never leave it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np

#: Cell keys of the replicate aggregates of the R-matrix metric (lists of B floats).
BOOT_SUM = "boot_sum"
BOOT_W = "boot_w"
#: The figures a run's ``metrics.json`` carries replicates of (``bootstrap``, ``intervals``).
FIGURES = ("acc", "bwt", "forward", "final")
#: Percentile interval: 95%.
LEVEL = 0.95
NO_DIFFERENCE = "no difference shown"


class _WeightTable:
    """Rows 0..n-1 of a shop's (users, B) Poisson table, drawn row-major from one generator.

    Invariant: ``rows`` holds the first ``len(rows)`` rows of the one infinite table of
    (seed, shop, B); growing continues the same generator, so a row never depends on how many
    rows were asked for before."""

    def __init__(self, shop: str, n_boot: int, seed: int) -> None:
        key = int.from_bytes(hashlib.sha256(shop.encode()).digest()[:8], "little")
        self.gen = np.random.default_rng([seed, key])
        self.n_boot = n_boot
        self.rows = np.zeros((0, n_boot), dtype=np.uint8)

    def take(self, users: np.ndarray) -> np.ndarray:
        need = int(users.max()) + 1 if users.size else 0
        if need > len(self.rows):
            more = max(need, 2 * len(self.rows), 1024) - len(self.rows)
            # Poisson(1) > 255 has probability ~0: uint8 keeps a big shop's table small.
            drawn = self.gen.poisson(1.0, size=(more, self.n_boot)).astype(np.uint8)
            self.rows = np.concatenate([self.rows, drawn])
        return self.rows[users].astype(np.float64)


_TABLES: dict[tuple[str, int, int], _WeightTable] = {}


def poisson_weights(shop: str, users: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap weights of ``users`` (shop-local indices >= 0) of ``shop``: (len(users),
    n_boot) floats, Poisson(1), the same for a user whatever the run or the other users."""
    users = np.asarray(users, dtype=np.int64)
    if users.size and users.min() < 0:
        raise ValueError("user indices must be >= 0")
    key = (shop, seed, n_boot)
    if key not in _TABLES:
        _TABLES[key] = _WeightTable(shop, n_boot, seed)
    return _TABLES[key].take(users)


def replicate_sums(values: np.ndarray, weights: np.ndarray) -> tuple[list[float], list[float]]:
    """A cell's ``(boot_sum, boot_w)``: ``sum_u w[u, b] * values[u]`` and ``sum_u w[u, b]``
    for each replicate b. ``values``: (U,); ``weights``: (U, B)."""
    values = np.asarray(values, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape[0] != values.shape[0]:
        raise ValueError(f"{values.shape[0]} values but {weights.shape[0]} weight rows")
    return (values @ weights).tolist(), weights.sum(axis=0).tolist()


def percentile_interval(replicates: Sequence[float | None] | np.ndarray | None) -> list | None:
    """The 95% percentile interval ``[lo, hi]`` of the finite replicate values (None: none)."""
    if replicates is None:
        return None
    reps = np.array([np.nan if v is None else v for v in replicates], dtype=np.float64)
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return None
    tail = 100 * (1 - LEVEL) / 2
    lo, hi = np.percentile(reps, [tail, 100 - tail])
    return [float(lo), float(hi)]


def figure_point(doc: dict, figure: str) -> float | None:
    """A figure's point estimate in a ``metrics.json`` document."""
    if figure == "final":
        return doc["final"].get(doc["metric"])
    return doc["continual"].get(figure)


def _replicates(doc: dict, figure: str) -> np.ndarray | None:
    reps = (doc.get("bootstrap") or {}).get(figure)
    if reps is None:
        return None
    return np.array([np.nan if v is None else v for v in reps], dtype=np.float64)


def paired_difference(a: dict, b: dict, figure: str) -> dict:
    """Run ``a`` minus run ``b`` on ``figure`` (acc, bwt, forward, final), two ``metrics.json``
    documents of the same data and bootstrap seed.

    Returns ``difference`` (a - b, None if either lacks the figure), ``interval`` (95%
    percentile interval of the replicate differences: both runs weight each user alike, so the
    interval is paired; None without replicates), ``shown`` (False when the interval holds 0)
    and ``text`` ("+0.0123 [+0.0050, +0.0200]", plus "no difference shown" when it holds 0).
    """
    return _difference([a], [b], figure)


def paired_difference_seeds(a: Sequence[dict], b: Sequence[dict], figure: str) -> dict:
    """:func:`paired_difference` of seed means: runs paired by ``seed``, the difference of the
    means over the seeds both have, each replicate likewise (user sampling only; the spread
    over seeds is reported apart)."""
    by_seed = {d["seed"]: d for d in b}
    pairs = [(d, by_seed[d["seed"]]) for d in a if d["seed"] in by_seed]
    return _difference([p[0] for p in pairs], [p[1] for p in pairs], figure)


def _difference(a: Sequence[dict], b: Sequence[dict], figure: str) -> dict:
    points = [(figure_point(x, figure), figure_point(y, figure)) for x, y in zip(a, b, strict=True)]
    diff = None
    if points and all(p is not None and q is not None for p, q in points):
        diff = sum(p - q for p, q in points) / len(points)
    interval = None
    reps = [(_replicates(x, figure), _replicates(y, figure)) for x, y in zip(a, b, strict=True)]
    seeds = {d.get("bootstrap_seed") for d in [*a, *b]}
    if (
        diff is not None
        and len(seeds) == 1
        and all(p is not None and q is not None and p.shape == q.shape for p, q in reps)
        and len({p.shape for p, _ in reps}) == 1
    ):
        interval = percentile_interval(np.mean([p - q for p, q in reps], axis=0))
    shown = None if interval is None else not interval[0] <= 0 <= interval[1]
    return {
        "figure": figure,
        "difference": diff,
        "interval": interval,
        "shown": shown,
        "text": difference_text(diff, interval),
    }


def difference_text(diff: float | None, interval: Sequence[float] | None) -> str:
    """``+0.0123 [+0.0050, +0.0200]``; "no difference shown" appended when it holds 0."""
    if diff is None or math.isnan(diff):
        return "-"
    if interval is None:
        return f"{diff:+.4f}"
    lo, hi = interval
    text = f"{diff:+.4f} [{lo:+.4f}, {hi:+.4f}]"
    return f"{text} {NO_DIFFERENCE}" if lo <= 0 <= hi else text

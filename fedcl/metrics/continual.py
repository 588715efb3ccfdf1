"""Continual-learning metrics from an R matrix, and combining per-shop R matrices.

``R[t][i]``: a metric of the model after training on window ``t``, on the test part of window
``i`` (rows = training windows so far, columns = all windows; rows may be shorter than the
column count). ``None`` marks a cell without a value; NaN is treated the same way. A term with
any ``None`` operand is skipped, and a mean over zero terms is ``None`` (never NaN, never 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Cell = float | None
R = Sequence[Sequence[Cell]]  # (T rows, n_windows columns)
N = Sequence[Sequence[int]]  # user counts matching an R


def _cell(r: R, t: int, i: int) -> float | None:
    if t < 0 or t >= len(r) or i < 0 or i >= len(r[t]):
        return None
    v = r[t][i]
    return None if v is None or math.isnan(v) else float(v)


def _mean_of_diffs(pairs: list[tuple[Cell, Cell]]) -> float | None:
    terms = [a - b for a, b in pairs if a is not None and b is not None]
    return sum(terms) / len(terms) if terms else None


def macro(values: Sequence[Cell]) -> float | None:
    """Unweighted mean of the values that are not ``None``/NaN; ``None`` if there are none."""
    kept = [float(v) for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept else None


def weighted_mean(values: Sequence[Cell], weights: Sequence[float]) -> float | None:
    """Mean of ``values`` weighted by ``weights``, skipping ``None``/NaN values and their weights;
    ``None`` when the kept weights sum to 0."""
    if len(values) != len(weights):
        raise ValueError(f"{len(values)} values but {len(weights)} weights")
    kept = [
        (float(v), w)
        for v, w in zip(values, weights, strict=True)
        if v is not None and not math.isnan(v)
    ]
    total = sum(w for _, w in kept)
    return sum(v * w for v, w in kept) / total if total > 0 else None


def continual_metrics(r: R, baseline: Sequence[Cell] | None = None) -> dict[str, float | None]:
    """ACC, BWT, FWT and forward of an R matrix (definitions of ARCHITECTURE.md).

    With T rows and C columns: ``acc`` = mean_i R[T-1][i] over all C columns;
    ``bwt`` = mean_{i<T-1} (R[T-1][i] - R[i][i]); ``fwt`` = mean_{i>0} (R[i-1][i] - b_i) with
    ``baseline`` b (``None`` without one); ``forward`` = mean_t R[t][t+1] for t < C - 1.
    """
    t_last = len(r) - 1
    n_cols = max((len(row) for row in r), default=0)
    acc = macro([_cell(r, t_last, i) for i in range(n_cols)])
    bwt = _mean_of_diffs(
        [(_cell(r, t_last, i), _cell(r, i, i)) for i in range(min(t_last, n_cols))]
    )
    forward = macro([_cell(r, t, t + 1) for t in range(min(len(r), n_cols - 1))])
    fwt = None
    if baseline is not None:
        b = [baseline]
        pairs = [
            (_cell(r, i - 1, i), _cell(b, 0, i)) for i in range(1, min(len(r), n_cols - 1) + 1)
        ]
        fwt = _mean_of_diffs(pairs)
    return {"acc": acc, "bwt": bwt, "fwt": fwt, "forward": forward}


def combine_r(rs: Sequence[R], ns: Sequence[N]) -> tuple[list[list[Cell]], list[list[int]]]:
    """User-weighted overall R and N from per-shop ``rs`` and user counts ``ns``.

    Cell (t, i) = sum_s R_s[t][i] * N_s[t][i] / sum_s N_s[t][i] over shops whose cell has a
    value and a positive count; ``None`` (with count 0) where no shop contributes. Shapes may
    differ: the result has the largest row count and, per row, the largest row length.
    """
    if len(rs) != len(ns):
        raise ValueError(f"{len(rs)} R matrices but {len(ns)} n_users matrices")
    n_rows = max((len(r) for r in rs), default=0)
    out_r: list[list[Cell]] = []
    out_n: list[list[int]] = []
    for t in range(n_rows):
        n_cols = max((len(r[t]) for r in rs if t < len(r)), default=0)
        row_r: list[Cell] = []
        row_n: list[int] = []
        for i in range(n_cols):
            vals = [_cell(r, t, i) for r in rs]
            counts = [_count(n, t, i) for n in ns]
            kept = [(v, c) for v, c in zip(vals, counts, strict=True) if v is not None and c > 0]
            row_r.append(weighted_mean([v for v, _ in kept], [c for _, c in kept]))
            row_n.append(sum(c for _, c in kept))
        out_r.append(row_r)
        out_n.append(row_n)
    return out_r, out_n


def _count(n: N, t: int, i: int) -> int:
    if t >= len(n) or i >= len(n[t]) or n[t][i] is None:
        return 0
    return int(n[t][i])

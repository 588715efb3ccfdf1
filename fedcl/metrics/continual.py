"""Continual-learning metrics from an R matrix, and combining per-shop R matrices.

``R[t][i]``: a metric of the model after training on window ``t``, on the test part of window
``i`` (rows = training windows so far, columns = all windows; rows may be shorter than the
column count). ``None`` marks a cell without a value; NaN is treated the same way. A term with
any ``None`` operand is skipped, and a mean over zero terms is ``None`` (never NaN, never 0).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from fedcl.metrics.bootstrap import BOOT_SUM, BOOT_W

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


# --- headline figures from cells, with bootstrap replicates -------------------------------
#
# A cell pooled over shops is two vectors of length 1 + B: column 0 is the point
# (sum_u value_u, n_users), columns 1..B the replicates (boot_sum[b], boot_w[b]). Every figure
# is one formula over these columns, so the point estimate and each replicate are computed
# alike; the replicates exist only when every contributing cell carries B of them.

FIGURE_RULES = """\
Every headline figure is a function of cell means, a cell being one (model after window t,
test window i) pair pooled over shops by summing user sums and user counts before dividing.
Where a figure pools several cells it weights users: `final` = the last row's last cell;
`acc` = the user-weighted mean over the last row's cells (sum of their user sums / sum of
their users); `forward` = the user-weighted mean over t of the forward cells (the model after
window t on window t+1's events of users it knows); `bwt` = the mean over i < T-1 of
(R[T-1][i] - R[i][i]) weighted by the users of cell (T-1, i); `fwt` = the mean over i > 0 of
(R[i-1][i] - b_i) weighted by the users of cell (i-1, i). Each of acc, bwt, forward and final
has a 95% interval: the same formula applied to each of B Poisson-bootstrap replicates (cell
means boot_sum[b] / boot_w[b], pooled over shops the same way), then the 2.5th and 97.5th
percentiles. A user's bootstrap weights depend only on the bootstrap seed, its shop and its
index in the shop, so differences (BWT, two runs) get paired intervals. Per shop: the same from
that shop's cells. A figure with no cell is null, and so is its interval."""

ByShop = Mapping[str, Mapping[str, Any]]  # shop -> fedcl.evaluation.Cell


def n_boot(cells: Iterable[Mapping[str, Any]], metric: str) -> int:
    """The replicate count B shared by every cell with users and a ``metric`` value; 0 when
    one lacks replicates or counts differ."""
    counts = set()
    for c in cells:
        if _users(c, metric) == 0:
            continue
        s, w = c.get(BOOT_SUM), c.get(BOOT_W)
        if s is None or w is None or len(s) != len(w):
            return 0
        counts.add(len(s))
    return counts.pop() if len(counts) == 1 else 0


def _users(c: Mapping[str, Any] | None, metric: str) -> int:
    if not c:
        return 0
    v, n = c.get(metric), int(c.get("n_users") or 0)
    return 0 if v is None or math.isnan(v) else n


def pooled_sums(by_shop: ByShop, shops: Sequence[str], metric: str, b: int) -> np.ndarray:
    """(2, 1 + b): user sums and users of one cell over ``shops``; column 0 the point,
    columns 1..b the replicates (``b`` from :func:`n_boot`)."""
    out = np.zeros((2, 1 + b))
    for shop in shops:
        c = by_shop.get(shop)
        n = _users(c, metric)
        if n == 0:
            continue
        out[:, 0] += (float(c[metric]) * n, n)
        if b:
            out[0, 1:] += c[BOOT_SUM]
            out[1, 1:] += c[BOOT_W]
    return out


def _ratio(s: np.ndarray, w: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(w > 0, s / np.where(w > 0, w, 1), np.nan)


def _weighted_diffs(terms: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """Per column: sum_k w_k (x_k - y_k) / sum_k w_k over terms whose x and y are defined."""
    width = terms[0][0].shape[0] if terms else 1
    num, den = np.zeros(width), np.zeros(width)
    for x, y, w in terms:
        d = x - y
        ok = np.isfinite(d) & (w > 0)
        num += np.where(ok, d * w, 0.0)
        den += np.where(ok, w, 0.0)
    return _ratio(num, den)


def cell_figures(
    grid: Sequence[Sequence[ByShop]],
    forward: Sequence[ByShop],
    shops: Sequence[str],
    metric: str,
    baseline: Sequence[ByShop] | None = None,
) -> dict[str, Any]:
    """acc, bwt, fwt, forward and final of ``grid[t][i][shop]`` over ``shops`` (rules:
    :data:`FIGURE_RULES`); ``forward[t][shop]`` the forward cell of t.

    Returns ``point`` {acc, bwt, fwt, forward, final} (None: no cell), ``replicates`` {acc, bwt,
    forward, final: B floats, NaN where a replicate has no user, or None without replicates},
    ``forward_n_users`` (users per forward cell) and ``forward_by_window`` (its means).
    """
    cells = [by.get(s) for row in grid for by in row for s in shops]
    cells += [by.get(s) for by in forward for s in shops]
    b = n_boot([c for c in cells if c], metric)
    sums = [[pooled_sums(by, shops, metric, b) for by in row] for row in grid]
    mean = [[_ratio(*c) for c in row] for row in sums]
    fwd = [pooled_sums(by, shops, metric, b) for by in forward]
    empty = np.full(1 + b, np.nan)

    t_last = len(grid) - 1
    last = sums[-1] if sums else []
    acc = _ratio(*sum(last, np.zeros((2, 1 + b)))) if last else empty
    final = mean[-1][-1] if last else empty
    forward_v = _ratio(*sum(fwd, np.zeros((2, 1 + b)))) if fwd else empty
    bwt_terms = [
        (mean[t_last][i], mean[i][i], sums[t_last][i][1])
        for i in range(min(t_last, len(last)))
        if i < len(mean[i])
    ]
    bwt = _weighted_diffs(bwt_terms) if bwt_terms else empty
    fwt = None
    if baseline is not None:
        base = [_ratio(*pooled_sums(by, shops, metric, 0))[0] for by in baseline]
        n_cols = max((len(row) for row in grid), default=0)
        terms = [
            (mean[i - 1][i][:1], np.array([base[i]]), sums[i - 1][i][1][:1])
            for i in range(1, min(len(grid), n_cols - 1) + 1)
            if i < len(mean[i - 1]) and i < len(base)
        ]
        fwt = _none(_weighted_diffs(terms)[0]) if terms else None
    figs = {"acc": acc, "bwt": bwt, "forward": forward_v, "final": final}
    return {
        "point": {
            "acc": _none(acc[0]),
            "bwt": _none(bwt[0]),
            "fwt": fwt,
            "forward": _none(forward_v[0]),
            "final": _none(final[0]),
        },
        "replicates": {k: (v[1:] if b else None) for k, v in figs.items()},
        "forward_n_users": [int(f[1, 0]) for f in fwd],
        "forward_by_window": [_none(_ratio(*f)[0]) for f in fwd],
    }


def _none(v: float) -> float | None:
    return None if math.isnan(v) else float(v)

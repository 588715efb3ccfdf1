"""Exact federation of models whose item side is a sum over users (``Recommender.federation
== "statistics"``): :class:`~fedcl.models.itemitem.ItemItem` (``statistics_kind`` "gram") and
:class:`~fedcl.models.als.ALS` ("als"). A codec per kind encodes a shop's sums into arrays,
checks a reply's arrays (:class:`Rejected` with the reason) and adds the shops' sums; the
server's model solves from the total (``fit``).

Gram (item-item models), one round per window: every shop sends its own users' Gram
matrix, sparse (the upper triangle of the item pairs its users bought together:
``gram.row``, ``gram.col`` int32, ``gram.val`` float64), the server checks and adds them,
solves the item-item weights once and sends them with the evaluation (the model's shared
``sim_*`` buffers, top-K per item). Shops hold disjoint customers, so the sum is the Gram
of all customers and the weights are exactly the centralized model's. Bytes scale with
what each shop has, not with the catalogue squared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from flwr.app import ArrayRecord, RecordDict

from fedcl.federated.protocol import ARRAYS, Rejected, Spec, decode_train_reply
from fedcl.models.als import ItemStatistics, add
from fedcl.models.base import Recommender
from fedcl.shop.replies import TrainReply

ROW, COL, VAL = "gram.row", "gram.col", "gram.val"


def is_statistics(model: Recommender) -> bool:
    """Whether ``model`` federates by summed statistics (not by averaged parameters)."""
    return getattr(model, "federation", "parameters") == "statistics"


def encode_gram(g: sp.spmatrix) -> dict[str, torch.Tensor]:
    """The upper triangle (with the diagonal) of a symmetric Gram, as three 1-d arrays."""
    upper = sp.triu(g, format="coo")
    order = np.lexsort((upper.col, upper.row))
    return {
        ROW: torch.from_numpy(upper.row[order].astype(np.int32)),
        COL: torch.from_numpy(upper.col[order].astype(np.int32)),
        VAL: torch.from_numpy(upper.data[order].astype(np.float64)),
    }


def decode_gram(arrays: ArrayRecord, n_items: int) -> sp.csr_matrix:
    """The full symmetric Gram of a checked reply's arrays."""
    row, col, val = (arrays[k].numpy() for k in (ROW, COL, VAL))
    upper = sp.coo_matrix((val, (row, col)), shape=(n_items, n_items))
    off = sp.coo_matrix((val[row != col], (col[row != col], row[row != col])), upper.shape)
    return (upper + off).tocsr()


def check_gram(arrays: ArrayRecord, n_items: int) -> None:
    """Raise :class:`Rejected` unless the arrays are a well-formed upper-triangular sparse
    Gram over ``n_items`` items: the three keys, 1-d of one length, int32 indices in range
    with row <= col and no pair twice, finite non-negative values, a positive diagonal
    wherever the item has a pair."""
    if set(arrays) != {ROW, COL, VAL}:
        raise Rejected(f"statistics arrays {sorted(arrays)}, expected {sorted((ROW, COL, VAL))}")
    row, col, val = (arrays[k].numpy() for k in (ROW, COL, VAL))
    if not (row.ndim == col.ndim == val.ndim == 1 and len(row) == len(col) == len(val)):
        raise Rejected("statistics arrays must be 1-d and of one length")
    if row.dtype != np.int32 or col.dtype != np.int32 or val.dtype != np.float64:
        raise Rejected(f"statistics dtypes {row.dtype}, {col.dtype}, {val.dtype}: expected "
                       "int32, int32, float64")  # fmt: skip
    if len(row) == 0:
        return
    if row.min() < 0 or col.max() >= n_items or (row > col).any():
        raise Rejected(f"statistics indices outside the upper triangle of {n_items} items")
    keys = row.astype(np.int64) * n_items + col
    if len(np.unique(keys)) != len(keys):
        raise Rejected("statistics name an item pair twice")
    if not np.isfinite(val).all() or (val < 0).any():
        raise Rejected("statistics values must be finite and >= 0")
    diag = np.zeros(n_items)
    on = row == col
    diag[row[on]] = val[on]
    if (diag[np.concatenate([row, col])] <= 0).any():
        raise Rejected("statistics pair an item whose own count (the diagonal) is 0")


def decode_statistics_reply(
    content: RecordDict, model: Recommender, n_items: int, max_examples: float
) -> TrainReply:
    """A statistics reply: the usual records (``num-examples`` = the shop's users with a
    history) with ``model``'s kind of checked sums as its arrays, or :class:`Rejected`."""
    arrays = content.array_records.get(ARRAYS) if ARRAYS in content.array_records else None
    if arrays is None:
        raise Rejected(f"no '{ARRAYS}' record")
    CODECS[model.statistics_kind].check(arrays, n_items, model)
    spec = Spec({k: tuple(a.shape) for k, a in arrays.items()},
                {k: str(a.dtype) for k, a in arrays.items()})  # fmt: skip
    return decode_train_reply(content, spec, max_examples)


# --- ALS: the item step's sums ------------------------------------------------------------
XTX, ITEMS, A, B = "als.xtx", "als.items", "als.a", "als.b"


def encode_als(stats: ItemStatistics) -> dict[str, torch.Tensor]:
    """``S`` whole; per item its index, ``A_i``'s upper triangle and ``b_i``."""
    dim = stats.xtx.shape[0]
    rows, cols = np.triu_indices(dim)
    return {
        XTX: torch.from_numpy(np.ascontiguousarray(stats.xtx, dtype=np.float64)),
        ITEMS: torch.from_numpy(stats.items.astype(np.int32)),
        A: torch.from_numpy(np.ascontiguousarray(stats.a[:, rows, cols], dtype=np.float64)),
        B: torch.from_numpy(np.ascontiguousarray(stats.b, dtype=np.float64)),
    }


def decode_als(arrays: ArrayRecord) -> ItemStatistics:
    xtx, items, tri, b = (arrays[k].numpy() for k in (XTX, ITEMS, A, B))
    dim = xtx.shape[0]
    rows, cols = np.triu_indices(dim)
    a = np.zeros((len(items), dim, dim))
    a[:, rows, cols] = tri
    a[:, cols, rows] = tri
    return ItemStatistics(xtx, items.astype(np.int64), a, b)


def check_als(arrays: ArrayRecord, n_items: int, model: Recommender) -> None:
    """Rejected unless the arrays are the item-step sums of ``model``'s shape: the four keys,
    float64 sums and int32 items, ``S`` D x D symmetric with a non-negative diagonal, items
    unique and in range, one ``A_i`` triangle (non-negative diagonal) and ``b_i`` each, all
    finite."""
    keys = (XTX, ITEMS, A, B)
    if set(arrays) != set(keys):
        raise Rejected(f"statistics arrays {sorted(arrays)}, expected {sorted(keys)}")
    xtx, items, tri, b = (arrays[k].numpy() for k in keys)
    dim = model.cfg.factors
    n = len(items) if items.ndim == 1 else -1
    shapes = {XTX: (dim, dim), ITEMS: (n,), A: (n, dim * (dim + 1) // 2), B: (n, dim)}
    for k, arr in zip(keys, (xtx, items, tri, b), strict=True):
        if tuple(arr.shape) != shapes[k]:
            raise Rejected(f"statistics '{k}' has shape {tuple(arr.shape)}, expected {shapes[k]}")
        want = np.int32 if k == ITEMS else np.float64
        if arr.dtype != want:
            raise Rejected(f"statistics '{k}' is {arr.dtype}, expected {np.dtype(want)}")
    if n and (items.min() < 0 or items.max() >= n_items or len(np.unique(items)) != n):
        raise Rejected(f"statistics items must be unique indices of the {n_items} items")
    if not all(np.isfinite(x).all() for x in (xtx, tri, b)):
        raise Rejected("statistics values must be finite")
    rows, cols = np.triu_indices(dim)
    diagonal = rows == cols
    if not np.allclose(xtx, xtx.T) or (np.diag(xtx) < 0).any() or (tri[:, diagonal] < 0).any():
        raise Rejected("statistics sums of outer products must be symmetric, diagonal >= 0")


@dataclass(frozen=True)
class Codec:
    """How one kind of statistics travels and adds up."""

    encode: Callable[[Any], dict[str, torch.Tensor]]
    check: Callable[[ArrayRecord, int, Recommender], None]
    total: Callable[[list[ArrayRecord], int, Recommender], Any]
    #: A reply's mass: what grows when a shop inflates its sums (the Gram's trace), compared
    #: per claimed user across the round; None: no such bound (ALS: honest shops' summed A_i
    #: diagonals per user spread over 50x the median on Online Retail, with factors of small
    #: shops' users far larger, so a median bound would reject honest shops).
    mass: Callable[[ArrayRecord], float] | None
    #: Whether a shop's step needs the shared part (ALS's users need the item factors; a
    #: Gram needs nothing, so its train message carries no arrays).
    needs_model: bool = False


CODECS = {
    "gram": Codec(
        encode_gram,
        lambda arrays, n_items, model: check_gram(arrays, n_items),
        lambda records, n_items, model: _sum_gram_records(records, n_items),
        lambda arrays: float(
            _diagonal_sum(arrays[ROW].numpy(), arrays[COL].numpy(), arrays[VAL].numpy())
        ),  # fmt: skip
    ),
    "als": Codec(
        encode_als,
        check_als,
        lambda records, n_items, model: add(
            [decode_als(r) for r in records], n_items, model.cfg.factors
        ),
        None,
        needs_model=True,
    ),
}


def _diagonal_sum(row: np.ndarray, col: np.ndarray, val: np.ndarray) -> float:
    return float(val[row == col].sum())


def bound_statistics(
    model: Recommender, replies: list[TrainReply], multiple: float, min_replies: int
) -> tuple[list[TrainReply], list[tuple[str, str]]]:
    """The replies whose mass per claimed user is at most ``multiple`` x the round's median
    (with at least ``min_replies`` replies; 0: no bound), and (shop, why) of the others."""
    mass = CODECS[model.statistics_kind].mass
    if mass is None or multiple <= 0 or len(replies) < min_replies:
        return list(replies), []
    per_user = [mass(r.arrays) / r.num_examples for r in replies]
    median = float(np.median(per_user))
    if median <= 0:
        return list(replies), []
    kept, rejected = [], []
    for reply, figure in zip(replies, per_user, strict=True):
        if figure > multiple * median:
            rejected.append((reply.shop, f"statistics mass per user {figure:.4g} > {multiple:g} "
                             f"x the round's median {median:.4g}"))  # fmt: skip
        else:
            kept.append(reply)
    return kept, rejected


def _sum_gram_records(records: list[ArrayRecord], n_items: int) -> sp.csr_matrix:
    total = sp.csr_matrix((n_items, n_items), dtype=np.float64)
    for record in records:
        total = total + decode_gram(record, n_items)
    return total.tocsr()


def total(model: Recommender, replies: list[TrainReply], n_items: int) -> Any:
    """The federation's sums of ``model``'s kind over the checked replies."""
    kind = model.statistics_kind
    return CODECS[kind].total([r.arrays for r in replies], n_items, model)


def encode(model: Recommender) -> dict[str, torch.Tensor]:
    """A shop's own sums, encoded for its reply."""
    return CODECS[model.statistics_kind].encode(model.statistics())


def needs_model(model: Recommender) -> bool:
    """Whether a round's train message must carry the shared part."""
    return CODECS[model.statistics_kind].needs_model


def rounds_per_window(model: Recommender) -> int:
    """Rounds a window needs: ALS one per iteration, a Gram one."""
    return int(model.statistics_rounds(model.cfg))

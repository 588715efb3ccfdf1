"""Exact federation of models whose item side is a sum over users (``Recommender.federation
== "statistics"``, e.g. :class:`~fedcl.models.itemitem.ItemItem`).

One round per window: every shop sends its own users' Gram matrix, sparse (the upper
triangle of the item pairs its users bought together: ``gram.row``, ``gram.col`` int32,
``gram.val`` float64), the server checks and adds them, solves the item-item weights once
and sends them with the evaluation (the model's shared ``sim_*`` buffers, top-K per item).
Shops hold disjoint customers, so the sum is the Gram of all customers and the weights are
exactly the centralized model's. Bytes scale with what each shop has, not with the
catalogue squared.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from flwr.app import ArrayRecord, RecordDict

from fedcl.federated.protocol import ARRAYS, Rejected, Spec, decode_train_reply
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


def decode_statistics_reply(content: RecordDict, n_items: int, max_examples: float) -> TrainReply:
    """A statistics reply: the usual records (``num-examples`` = the shop's users with a
    history) with a checked sparse Gram as its arrays, or :class:`Rejected`."""
    arrays = content.array_records.get(ARRAYS) if ARRAYS in content.array_records else None
    if arrays is None:
        raise Rejected(f"no '{ARRAYS}' record")
    check_gram(arrays, n_items)
    spec = Spec({k: tuple(a.shape) for k, a in arrays.items()},
                {k: str(a.dtype) for k, a in arrays.items()})  # fmt: skip
    return decode_train_reply(content, spec, max_examples)


def sum_grams(replies: list[TrainReply], n_items: int) -> sp.csr_matrix:
    """The federation's Gram: the sum of the shops' (disjoint customers')."""
    total = sp.csr_matrix((n_items, n_items), dtype=np.float64)
    for reply in replies:
        total = total + decode_gram(reply.arrays, n_items)
    return total.tocsr()

"""Dense indices: one shared item id space (the catalogue), user ids local to each shop.

Items are numbered in order of first appearance in time, so the catalogue known after
window t is exactly the items with ``item_idx < n_items_upto(t)``: a later window only
appends rows, and no index is ever built from future data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedcl.data.schema import ITEM, ITEM_IDX, SHOP, USER, USER_IDX, WINDOW


def items_known(catalog: pd.DataFrame, windows: pd.DataFrame, t: int) -> int:
    """Catalogue size after window t's train part: the items first seen before its cut."""
    seen = catalog["first_seen"].to_numpy() < windows["cut"].to_numpy()[t]
    return int(seen.sum())


#: Joins shop and user id into the text key of a user (see :func:`_user_indices`).
_SEP = "\x1f"


def _user_indices(events: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(global, per-shop) dense user indices, both in order of first appearance.

    A user is a (shop, user id) pair: the global index numbers the joined text
    ``shop<SEP>user`` by first appearance, the per-shop index is the dense rank of the
    global one within its shop.
    """
    shop, user = events[SHOP].astype(str), events[USER].astype(str)
    shop_codes, shop_names = pd.factorize(shop, sort=False)
    user_codes, user_names = pd.factorize(user, sort=False)
    if (
        shop.hasnans
        or user.hasnans
        or not pd.api.types.is_string_dtype(events[SHOP])
        or shop_names.str.contains(_SEP, regex=False).any()
        or user_names.str.contains(_SEP, regex=False).any()
    ):
        # Rare layouts: number the joined text itself.
        pair_codes, _ = pd.factorize(shop + _SEP + user, sort=False)
        rank = pd.Series(pair_codes).groupby(events[SHOP].to_numpy()).rank(method="dense")
        return pair_codes, (rank.to_numpy() - 1).astype(np.int64)
    # Text without NA or separator: equal joined texts <=> equal (shop, user) codes.
    pair = shop_codes.astype(np.int64) * max(len(user_names), 1) + user_codes
    pair_codes, _ = pd.factorize(pair, sort=False)
    n_pairs = int(pair_codes.max()) + 1 if len(pair_codes) else 0
    pair_shop = np.empty(n_pairs, dtype=np.int64)
    pair_shop[pair_codes] = shop_codes
    # Within a shop its pairs in ascending code order get ranks 0, 1, 2, ...
    by_shop = np.argsort(pair_shop, kind="stable")
    group_start = np.searchsorted(pair_shop[by_shop], pair_shop[by_shop], side="left")
    rank = np.empty(n_pairs, dtype=np.int64)
    rank[by_shop] = np.arange(n_pairs, dtype=np.int64) - group_start
    return pair_codes, rank[pair_codes]


def index_events(events: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Add ``item_idx``, ``user_idx`` (per shop), ``guser_idx`` (global); return (events, catalog).

    ``events`` must be sorted by time. The catalog has ``item_idx, item_id, first_window,
    first_seen, events`` (+ ``category`` when present), ordered by ``item_idx``.
    """
    out = events.copy(deep=False)  # new columns only: the input is left as it is
    # factorize numbers values in order of first occurrence, i.e. of first purchase time.
    item_codes, item_ids = pd.factorize(out[ITEM], sort=False)
    out[ITEM_IDX] = item_codes.astype(np.int64)
    # Users: a dense index per shop, also in order of first appearance.
    user_codes, user_idx = _user_indices(out)
    # A global user index too (pooled/centralized runs), also by first appearance.
    out["guser_idx"] = user_codes.astype(np.int64)
    out[USER_IDX] = user_idx

    grouped = out.groupby(ITEM_IDX, sort=True)
    catalog = pd.DataFrame(
        {
            ITEM_IDX: np.arange(len(item_ids), dtype=np.int64),
            ITEM: np.asarray(item_ids, dtype=object),
            "first_window": grouped[WINDOW].min().to_numpy(),
            "first_seen": grouped["timestamp"].min().to_numpy(),
            "events": grouped.size().to_numpy(),
        }
    )
    if "category" in out:
        catalog["category"] = grouped["category"].first().to_numpy()
    return out, catalog

"""Dense indices: one shared item id space (the catalogue), user ids local to each shop.

Items are numbered in order of first appearance in time, so the catalogue known after
window t is exactly the items with ``item_idx < n_items_upto(t)``: a later window only
appends rows, and no index is ever built from future data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedcl.data.schema import ITEM, ITEM_IDX, SHOP, USER, USER_IDX, WINDOW


def index_events(events: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Add ``item_idx``, ``user_idx`` (per shop), ``guser_idx`` (global); return (events, catalog).

    ``events`` must be sorted by time. The catalog has ``item_idx, item_id, first_window,
    first_seen, events`` (+ ``category`` when present), ordered by ``item_idx``.
    """
    out = events.copy()
    # factorize numbers values in order of first occurrence, i.e. of first purchase time.
    item_codes, item_ids = pd.factorize(out[ITEM], sort=False)
    out[ITEM_IDX] = item_codes.astype(np.int64)
    # Users: a dense index per shop, also in order of first appearance.
    user_key = out[SHOP].astype(str) + "\x1f" + out[USER].astype(str)
    user_codes, _ = pd.factorize(user_key, sort=False)
    # A global user index too (pooled/centralized runs), also by first appearance.
    out["guser_idx"] = user_codes.astype(np.int64)
    shop_first = pd.Series(user_codes).groupby(out[SHOP].to_numpy()).rank(method="dense")
    out[USER_IDX] = (shop_first.to_numpy() - 1).astype(np.int64)

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

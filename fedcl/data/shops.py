"""Shop partition: which shop column values become clients, which are merged or dropped."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from fedcl.data.config import ShopsConfig
from fedcl.data.schema import REASON, ROW, SHOP, USER
from fedcl.errors import ConfigError

SMALL_SHOP = "small_shop"


@dataclass
class ShopPartition:
    kept: pd.DataFrame
    #: Rows of dropped small shops (ROW, REASON, and the event columns).
    dropped: pd.DataFrame
    merged: list[str] = field(default_factory=list)
    dropped_shops: list[str] = field(default_factory=list)


def partition_shops(events: pd.DataFrame, cfg: ShopsConfig) -> ShopPartition:
    """Merge shops below ``min_users``/``min_events`` into ``other_name``, or drop them.

    Dropped rows are returned (reason ``small_shop``) so the caller can quarantine them:
    no row is lost silently.
    """
    if cfg.small not in ("merge", "drop"):
        raise ConfigError(f"data.shops.small must be 'merge' or 'drop', got {cfg.small!r}")
    stats = events.groupby(SHOP, observed=True).agg(users=(USER, "nunique"), events=(USER, "size"))
    small = stats.index[(stats["users"] < cfg.min_users) | (stats["events"] < cfg.min_events)]
    small = sorted(str(s) for s in small)
    is_small = events[SHOP].isin(small)
    if not small:
        return ShopPartition(kept=events, dropped=events.iloc[:0].assign(**{REASON: ""}))
    if cfg.small == "drop":
        dropped = events.loc[is_small].copy()
        dropped.insert(1, REASON, SMALL_SHOP)
        dropped = dropped[[ROW, REASON, *[c for c in dropped if c not in (ROW, REASON)]]]
        kept = events.loc[~is_small].reset_index(drop=True)
        return ShopPartition(kept=kept, dropped=dropped, dropped_shops=small)
    kept = events.copy()
    kept.loc[is_small, SHOP] = cfg.other_name
    # A user id is local to its shop: keep merged users apart by prefixing the origin.
    kept.loc[is_small, USER] = events.loc[is_small, SHOP] + "/" + events.loc[is_small, USER]
    return ShopPartition(kept=kept, dropped=events.iloc[:0].assign(**{REASON: ""}), merged=small)

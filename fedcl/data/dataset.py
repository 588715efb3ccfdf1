"""A prepared dataset: validated, windowed, indexed events of all shops, and its accessors."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fedcl.data.catalog import items_known
from fedcl.data.interactions import Interactions
from fedcl.data.schema import ITEM_IDX, SHOP, SPLIT, TIME, USER_IDX, WINDOW

GLOBAL_USER = "guser_idx"
FILES = ("events.parquet", "catalog.parquet", "windows.parquet", "report.json")


@dataclass
class PreparedData:
    events: pd.DataFrame  # kept events + window, split, item_idx, user_idx, guser_idx
    catalog: pd.DataFrame  # item_idx, item_id, first_window, first_seen, events[, category]
    windows: pd.DataFrame  # window, start, cut, end
    report: dict

    # --- shape of the stream -------------------------------------------------------
    @property
    def shops(self) -> list[str]:
        """Shops, biggest first (``report["per_shop"]`` order)."""
        return list(self.report["per_shop"])

    @property
    def n_windows(self) -> int:
        return len(self.windows)

    def n_items_known(self, t: int) -> int:
        """Catalogue size after window t's train part (items are indexed by first sight)."""
        return items_known(self.catalog, self.windows, t)

    def n_users_known(self, shop: str | None, t: int) -> int:
        """Users (of ``shop``, or of all shops pooled when None) seen before window t's cut."""
        ev = self._select(shop, None, None)
        ev = ev[ev[TIME] < self.windows["cut"].iloc[t]]
        col = GLOBAL_USER if shop is None else USER_IDX
        return int(ev[col].max() + 1) if len(ev) else 0

    # --- slices as tensors ----------------------------------------------------------
    def _select(self, shop: str | None, windows: list[int] | None, split: str | None):
        ev = self.events
        mask = np.ones(len(ev), dtype=bool)
        if shop is not None:
            mask &= (ev[SHOP] == shop).to_numpy()
        if windows is not None:
            mask &= ev[WINDOW].isin(windows).to_numpy()
        if split is not None:
            mask &= (ev[SPLIT] == split).to_numpy()
        return ev.loc[mask]

    def interactions(
        self,
        shop: str | None,
        windows: list[int],
        split: str | None,
        n_users: int,
        n_items: int,
    ) -> Interactions:
        """Events of ``shop`` (None: all shops pooled, global user ids) in ``windows``, of
        their ``split`` part ("train" or "test"; None: both), in time order."""
        ev = self._select(shop, windows, split)
        ucol = GLOBAL_USER if shop is None else USER_IDX
        t = ev[TIME].to_numpy().astype("datetime64[s]").astype(np.int64)
        return Interactions(
            users=torch.from_numpy(ev[ucol].to_numpy(np.int64).copy()),
            items=torch.from_numpy(ev[ITEM_IDX].to_numpy(np.int64).copy()),
            times=torch.from_numpy(t.copy()),
            n_users=n_users,
            n_items=n_items,
        )

    def validation_view(self, fraction: float) -> PreparedData:
        """The same stream with each window's test part hidden and the last ``fraction`` of
        its train part playing the test part: for choosing hyper-parameters without ever
        looking at test data."""
        ev = self.events[self.events[SPLIT] == "train"].copy()
        first = ev.groupby(WINDOW)[TIME].min()
        windows = self.windows.copy()
        lo = windows[WINDOW].map(first).fillna(windows["start"])
        windows["cut"] = (windows["cut"] - (windows["cut"] - lo) * fraction).dt.round("s")
        val = ev[TIME].to_numpy() >= windows["cut"].to_numpy()[ev[WINDOW].to_numpy()]
        ev[SPLIT] = pd.Categorical(np.where(val, "test", "train"), categories=["train", "test"])
        return PreparedData(ev.reset_index(drop=True), self.catalog, windows, self.report)

    # --- persistence ----------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.events.to_parquet(d / "events.parquet", index=False)
        self.catalog.to_parquet(d / "catalog.parquet", index=False)
        self.windows.to_parquet(d / "windows.parquet", index=False)
        (d / "report.json").write_text(json.dumps(self.report, indent=2, default=str))

    @classmethod
    def load(cls, directory: str | Path) -> PreparedData:
        d = Path(directory)
        return cls(
            events=pd.read_parquet(d / "events.parquet"),
            catalog=pd.read_parquet(d / "catalog.parquet"),
            windows=pd.read_parquet(d / "windows.parquet"),
            report=json.loads((d / "report.json").read_text()),
        )

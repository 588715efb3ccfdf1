"""One unit's learning state — a shop, or all shops pooled — shared by every run mode.

A :class:`UnitLearner` holds the model, the continual method and the ingest watermark of a
unit, and knows the one protocol of a window (``fedcl/continual/base.py``). Centralized and
local runs keep a learner in memory; a federated shop rebuilds it from its state store for
every message, so simulation and deployment run the same code.

Window protocol: ``enter(t)`` observes every window's new events up to t exactly once
(watermark), after first finishing the previous window's ``after_window`` (buffer update,
Fisher, teacher snapshot) with the model as it ended that window — in federation that is the
aggregated model the shop receives at its next message.
"""

from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate

from fedcl.continual.config import ContinualConfig, build_continual
from fedcl.data.dataset import PreparedData
from fedcl.data.interactions import Interactions
from fedcl.models.base import ModelConfig, Recommender
from fedcl.train import Penalty, TrainConfig, TrainStats, train_window


def build_model(
    model_cfg: ModelConfig, n_users: int, n_items: int, device: torch.device
) -> Recommender:
    return instantiate(model_cfg, n_users=max(n_users, 1), n_items=max(n_items, 1)).to(device)


def item_groups(data: PreparedData) -> torch.Tensor | None:
    """Category number per item (for category-balanced replay), when the data has one."""
    if "category" not in data.catalog:
        return None
    codes = data.catalog["category"].astype("category").cat.codes.to_numpy()
    return torch.from_numpy(codes.astype("int64"))


class UnitLearner:
    def __init__(
        self,
        unit: str | None,
        data: PreparedData,
        model_cfg: ModelConfig,
        continual_cfg: ContinualConfig,
        device: torch.device,
        seed: int,
    ) -> None:
        self.unit, self.data, self.device, self.seed = unit, data, device, seed
        self.model_cfg = model_cfg
        self.method = build_continual(continual_cfg, item_groups=item_groups(data), seed=seed)
        torch.manual_seed(seed)
        self.model = build_model(model_cfg, *self._sizes(0), device)
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.window = -1  # last window whose train events were observed
        self.pending = -1  # first window whose after_window is still due (-1: none)

    def _sizes(self, t: int) -> tuple[int, int]:
        return self.data.n_users_known(self.unit, t), self.data.n_items_known(t)

    def events(self, first: int, last: int) -> Interactions:
        """Train events of this unit in windows first..last, sized to the model."""
        windows = list(range(first, last + 1))
        m = self.model
        return self.data.interactions(self.unit, windows, "train", m.n_users, m.n_items).to(
            self.device
        )

    # --- the window protocol ---------------------------------------------------------
    def enter(self, t: int) -> Interactions:
        """Make window t current; returns its new events (those after the watermark)."""
        if t <= self.window:
            return self.events(t, t)
        self.finish()
        n_users, n_items = self._sizes(t)
        self.model.grow(max(n_users, self.model.n_users), max(n_items, self.model.n_items))
        new = self.events(self.window + 1, t)
        self.model.observe(new)
        self.pending, self.window = self.window + 1, t
        return new

    def finish(self) -> None:
        """Run the method's ``after_window`` for the windows entered since it last ran."""
        if self.pending < 0:
            return
        self.method.after_window(self.model, self.events(self.pending, self.window), self.window)
        self.pending = -1

    def train(
        self,
        new: Interactions,
        cfg: TrainConfig,
        extra: Penalty | None = None,
        reset: bool = True,
    ) -> TrainStats:
        """Train on window data as the continual method shapes it.

        ``reset=False`` keeps the model even for joint training (in federation the model
        is the global one: joint there means "train on all history", not "start over")."""
        if reset and self.method.reset_model:  # joint: a fresh model each window
            torch.manual_seed(self.seed + self.window)
            fresh = build_model(self.model_cfg, self.model.n_users, self.model.n_items, self.device)
            fresh.observe(self.events(0, self.window))
            self.model = fresh
        data = self.method.training_data(self.model, new, self.window)

        def penalty(model, batch):
            term = self.method.penalty(model, batch)
            if extra is not None:
                term = extra(model, batch) if term is None else term + extra(model, batch)
            return term

        return train_window(self.model, data, cfg, self.generator, penalty=penalty)

    # --- persistence (the shop state store) -----------------------------------------
    def state_dict(self) -> dict[str, Any]:
        m = self.model
        return {
            "window": self.window,
            "pending": self.pending,
            "n_users": m.n_users,
            "n_items": m.n_items,
            "private": m.private_state(),
            "method": self.method.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.grow(max(state["n_users"], self.model.n_users), max(state["n_items"], 1))
        self.model.load_state_dict(state["private"], strict=False)
        self.method.load_state_dict(state["method"])
        self.generator.set_state(torch.as_tensor(state["generator"]).cpu())
        self.window, self.pending = int(state["window"]), int(state["pending"])

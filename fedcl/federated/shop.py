"""What a shop does when the server asks it to train or evaluate (no Flower types here
beyond the records): the same code for simulation and deployment.

A shop rebuilds its :class:`UnitLearner` from its state store for each message, loads the
global shared parameters, keeps its ``local_keys`` and private state, and returns only shared
arrays and aggregate metrics.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from fedcl.data.dataset import PreparedData
from fedcl.data.prepare import prepare_cached
from fedcl.evaluation import Evaluator
from fedcl.federated.config import is_local
from fedcl.federated.state import ShopStateStore
from fedcl.learner import UnitLearner, build_model

UNTRAINED = -1  # evaluate-config window meaning "the untrained model" (FWT baseline)


#: Per-process caches: a simulation actor (or a long-lived agent) serves many messages.
_DATA: dict[str, PreparedData] = {}
_EVALUATORS: dict[str, Evaluator] = {}


def _key(*parts: Any) -> str:
    return json.dumps([dataclasses.asdict(p) for p in parts], sort_keys=True, default=str)


def shop_data(cfg: Any) -> PreparedData:
    """The prepared data of the run (prepared once, then read from the cache)."""
    key = _key(cfg.data)
    if key not in _DATA:
        _DATA[key] = prepare_cached(cfg.data)[0]
    return _DATA[key]


def evaluator(cfg: Any, data: PreparedData, device: torch.device) -> Evaluator:
    """An evaluator whose task cache lives as long as the process."""
    key = _key(cfg.data, cfg.eval) + str(device)
    if key not in _EVALUATORS:
        _EVALUATORS[key] = Evaluator(data, cfg.eval, device)
    return _EVALUATORS[key]


class ShopAgent:
    """One shop's side of federation."""

    def __init__(self, cfg: Any, shop: str, state_dir: str | Path, device: torch.device):
        self.cfg, self.shop, self.device = cfg, shop, device
        self.data = shop_data(cfg)
        if shop not in self.data.shops:
            raise ValueError(f"shop {shop!r} is not in the data (shops: {self.data.shops})")
        self.store = ShopStateStore(Path(state_dir) / _safe(shop))
        self.seed = cfg.seed * 1000 + self.data.shops.index(shop)

    # --- state ------------------------------------------------------------------------
    def _learner(self, shared: dict[str, torch.Tensor], n_items: int) -> tuple[UnitLearner, dict]:
        """The shop's learner with its saved state and the global shared parameters."""
        cfg = self.cfg
        learner = UnitLearner(
            self.shop, self.data, cfg.model, cfg.continual, self.device, self.seed
        )
        saved = self.store.load() or {}
        if saved:
            learner.load_state_dict(saved["learner"])
        learner.model.grow(learner.model.n_users, max(n_items, learner.model.n_items))
        local = saved.get("local") or {}
        state = learner.model.shared_state()
        state.update({k: v.to(self.device) for k, v in shared.items()})
        state.update({k: _fit(v, state[k]) for k, v in local.items() if k in state})
        learner.model.load_shared_state(state)
        return learner, local

    def _save(self, learner: UnitLearner) -> None:
        shared = learner.model.shared_state()
        local = {k: v for k, v in shared.items() if is_local(k, self.cfg.federated.local_keys)}
        self.store.save({"learner": learner.state_dict(), "local": local})

    def _outgoing(self, learner: UnitLearner) -> dict[str, torch.Tensor]:
        keep = self.cfg.federated.local_keys
        return {k: v for k, v in learner.model.shared_state().items() if not is_local(k, keep)}

    # --- the two handlers -------------------------------------------------------------
    def train(
        self, shared: dict[str, torch.Tensor], window: int, n_items: int
    ) -> tuple[dict, dict]:
        """One round of local training at ``window``; returns (shared arrays, metrics).

        ``n_items``: the catalogue size of the global arrays (the server grows them)."""
        learner, _ = self._learner(shared, n_items)
        new = learner.enter(window)
        mu = self.cfg.strategy.proximal_mu
        anchor = {k: v.detach().clone() for k, v in self._outgoing(learner).items()}
        prox = _proximal(anchor, mu) if mu > 0 else None
        stats = learner.train(new, self.cfg.train, extra=prox, reset=False)
        self._save(learner)
        metrics = {
            "num-examples": max(int(stats.examples), 1),
            "train-loss": float(stats.loss) if stats.loss == stats.loss else 0.0,
            "new-events": len(new),
            "train-s": float(stats.seconds),
        }
        return self._outgoing(learner), metrics

    def evaluate(
        self, shared: dict[str, torch.Tensor], window: int, n_items: int
    ) -> dict[str, float | int]:
        """Cells of row ``window`` as aggregates over >= ``min_users`` users each."""
        if window == UNTRAINED:
            last = self.data.n_windows - 1
            torch.manual_seed(self.cfg.seed)
            model = build_model(
                self.cfg.model, self.data.n_users_known(self.shop, last),
                self.data.n_items_known(last), self.device,
            )  # fmt: skip
        else:
            learner, _ = self._learner(shared, n_items)
            if window > learner.window:  # a shop not sampled during this window catches up
                learner.enter(window)
                self._save(learner)
            model = learner.model
        row = evaluator(self.cfg, self.data, self.device).row(model, self.shop)
        return cells_to_metrics(row, self.shop, self.cfg.federated.min_users)


def cells_to_metrics(row: dict, shop: str, min_users: int) -> dict[str, float | int]:
    """Flatten ``row[variant][i][shop]`` to MetricRecord keys ``variant/metric/i``.

    A cell over fewer than ``min_users`` users is withheld (sent as ``n_users`` 0).
    """
    out: dict[str, float | int] = {}
    for variant, cells in row.items():
        for i, by_shop in enumerate(cells):
            cell = by_shop.get(shop, {})
            n = int(cell.get("n_users") or 0)
            if n < max(min_users, 1):
                out[f"{variant}/n_users/{i}"] = 0
                continue
            out[f"{variant}/n_users/{i}"] = n
            for k, v in cell.items():
                if k != "n_users" and v is not None:
                    out[f"{variant}/{k}/{i}"] = float(v)
    return out


def metrics_to_cells(metrics: dict, n_windows: int, variants: list[str]) -> dict:
    """The inverse of :func:`cells_to_metrics` for one shop: ``{variant: [cell per i]}``."""
    out = {}
    for v in variants:
        cells = []
        for i in range(n_windows):
            n = int(metrics.get(f"{v}/n_users/{i}", 0))
            cell = {"n_users": n}
            for key, value in metrics.items():
                parts = key.split("/")
                if (
                    len(parts) == 3
                    and parts[0] == v
                    and parts[2] == str(i)
                    and parts[1] != "n_users"
                ):
                    cell[parts[1]] = float(value) if n else None
            cells.append(cell)
        out[v] = cells
    return out


def _proximal(anchor: dict[str, torch.Tensor], mu: float):
    """FedProx: mu/2 * ||w - w_global||^2 over the exchanged parameters."""

    def penalty(model, batch):
        params = dict(model.named_parameters())
        terms = [((params[k] - a) ** 2).sum() for k, a in anchor.items() if k in params]
        return 0.5 * mu * torch.stack(terms).sum() if terms else None

    return penalty


def _fit(local: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A kept local tensor grown to the (possibly larger) current shape of its key."""
    out = like.clone()
    idx = tuple(slice(0, s) for s in local.shape)
    out[idx] = local.to(like.device)
    return out


def _safe(shop: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in shop)

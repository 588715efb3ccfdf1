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
from fedcl.federated.config import is_local, local_keys
from fedcl.federated.ingest import EventLog, ingest_log
from fedcl.federated.state import ShopStateStore
from fedcl.learner import UnitLearner, build_model
from fedcl.train import TrainStats

UNTRAINED = -1  # evaluate-config window meaning "the untrained model" (FWT baseline)
#: Evaluate-reply metrics of the personalisation's fine-tuning (its cost; no user data).
FINETUNE_EXAMPLES, FINETUNE_S, FINETUNE_CPU_S = "finetune-examples", "finetune-s", "finetune-cpu-s"


#: Per-process caches: a simulation actor (or a long-lived agent) serves many messages.
_DATA: dict[str, PreparedData] = {}
_EVALUATORS: dict[str, Evaluator] = {}


def _key(*parts: Any) -> str:
    return json.dumps([dataclasses.asdict(p) for p in parts], sort_keys=True, default=str)


def shop_data(cfg: Any) -> PreparedData:
    """The prepared data of the run (prepared once, then read from the cache); with
    ``eval.on=validation`` its validation view, as in the other modes (server and shops
    then agree on the shortened train parts and the catalogue they know)."""
    key = _key(cfg.data) + f"|{cfg.eval.on}|{cfg.eval.val_fraction}"
    if key not in _DATA:
        data = prepare_cached(cfg.data)[0]
        if cfg.eval.on == "validation":
            data = data.validation_view(cfg.eval.val_fraction)
        _DATA[key] = data
    return _DATA[key]


def evaluator(cfg: Any, data: PreparedData, device: torch.device) -> Evaluator:
    """An evaluator whose task cache lives as long as the process (for the run's prepared
    data; a shop's own log changes between messages: its data gets a fresh evaluator)."""
    if not any(data is d for d in _DATA.values()):
        return Evaluator(data, cfg.eval, device)
    key = _key(cfg.data, cfg.eval) + str(device)
    if key not in _EVALUATORS:
        _EVALUATORS[key] = Evaluator(data, cfg.eval, device)
    return _EVALUATORS[key]


class ShopAgent:
    """One shop's side of federation.

    ``data``: the run's prepared data (default: :func:`shop_data`, as in simulation), or
    the shop's own :class:`~fedcl.federated.ingest.EventLog`: then what is new in the log is
    ingested (state dir ``<shop>/ingest``) before the learner is built, into the first
    window its learner has not entered yet when it arrives late.
    """

    def __init__(
        self,
        cfg: Any,
        shop: str,
        state_dir: str | Path,
        device: torch.device,
        data: PreparedData | EventLog | None = None,
    ):
        self.cfg, self.shop, self.device = cfg, shop, device
        self.store = ShopStateStore(Path(state_dir) / _safe(shop))
        self._loaded: dict | None = None  # state read by _open_window, for _learner to reuse
        if isinstance(data, EventLog):
            data = ingest_log(shop, data, self.store.dir / "ingest", self._open_window())
        self.data = data if data is not None else shop_data(cfg)
        if shop not in self.data.shops:
            raise ValueError(f"shop {shop!r} is not in the data (shops: {self.data.shops})")
        number = self.data.report.get("shop_number", self.data.shops.index(shop))
        self.seed = cfg.seed * 1000 + number

    def _open_window(self) -> int:
        """The first window the saved learner has not entered (its watermark + 1)."""
        self._loaded = saved = self.store.load() or {}
        return int(saved["learner"]["window"]) + 1 if saved else 0

    # --- state ------------------------------------------------------------------------
    def _learner(self, shared: dict[str, torch.Tensor], n_items: int) -> tuple[UnitLearner, dict]:
        """The shop's learner with its saved state and the global shared parameters."""
        cfg = self.cfg
        learner = UnitLearner(
            self.shop, self.data, cfg.model, cfg.continual, self.device, self.seed
        )
        # Read (and checksum) the state once per message: reuse what _open_window read.
        saved = self._loaded if self._loaded is not None else (self.store.load() or {})
        self._loaded = None
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
        keep = local_keys(self.cfg.federated, learner.model)
        local = {k: v for k, v in shared.items() if is_local(k, keep)}
        self.store.save({"learner": learner.state_dict(), "local": local})

    def _outgoing(self, learner: UnitLearner) -> dict[str, torch.Tensor]:
        keep = local_keys(self.cfg.federated, learner.model)
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
            "train-cpu-s": float(stats.cpu_s),
        }
        return self._outgoing(learner), metrics

    def evaluate(
        self, shared: dict[str, torch.Tensor], window: int, n_items: int
    ) -> dict[str, float | int]:
        """Cells of row ``window`` as aggregates over >= ``min_users`` users each."""
        tuned = None
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
            model, tuned = self._personal(learner, window)
        row = evaluator(self.cfg, self.data, self.device).row(model, self.shop)
        metrics = cells_to_metrics(row, self.shop, self.cfg.federated.min_users)
        if tuned is not None:
            metrics[FINETUNE_EXAMPLES] = int(tuned.examples)
            metrics[FINETUNE_S] = float(tuned.seconds)
            metrics[FINETUNE_CPU_S] = float(tuned.cpu_s)
        return metrics

    def _personal(self, learner: UnitLearner, window: int) -> tuple[Any, TrainStats | None]:
        """The model this shop serves at ``window`` and what tuning it cost: the global
        one, or with ``federated.finetune_epochs`` a private copy fine-tuned on the shop's
        own window (not saved: the next round starts from the aggregate again)."""
        epochs = self.cfg.federated.finetune_epochs
        epochs = self.cfg.train.epochs if epochs is None else epochs
        if epochs <= 0 or learner.window < 0:
            return learner.model, None
        train = dataclasses.replace(self.cfg.train, epochs=epochs)
        stats = learner.train(learner.events(window, window), train, reset=False)
        return learner.model, stats


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

"""What a shop does when the server asks it to train or evaluate: the same code for
simulation and deployment, and no Flower (:mod:`fedcl.federated.client_app` turns messages
into these calls and the typed replies back into records).

A shop rebuilds its :class:`UnitLearner` from its state store for each message, loads the
global shared parameters, keeps its ``local_keys`` and private state, and returns only shared
arrays and aggregate metrics.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fedcl.config import Config
from fedcl.data.dataset import PreparedData
from fedcl.evaluation import Evaluator
from fedcl.federated.config import Schedule, is_local, local_keys
from fedcl.learner import UnitLearner, build_model
from fedcl.models.base import Recommender
from fedcl.privacy.accountant import noise_multiplier
from fedcl.privacy.user_level import dp_train
from fedcl.run_data import is_run_data, run_data
from fedcl.shop.ingest import EventLog, ShopIngest
from fedcl.shop.replies import EvalReply, TrainingCost, TrainReply, withhold, withhold_row
from fedcl.shop.store import GenerationStore, safe_name

log = logging.getLogger("fedcl.shop")

#: How a shop starts a corrupt state over (the :class:`CorruptState` message says it).
RESET_HINT = "node config reset-corrupt-state=true (or federated.reset_corrupt_state=true)"
#: The evaluate window meaning "the untrained model" (FWT's baseline row).
UNTRAINED = -1

#: Per-process cache: a simulation actor (or a long-lived agent) serves many messages.
_EVALUATORS: dict[str, Evaluator] = {}


def evaluator(
    cfg: Config, data: PreparedData, device: torch.device, boot_seed: int | None = None
) -> Evaluator:
    """An evaluator whose task cache lives as long as the process (for the run's prepared
    data; a shop's own log changes between messages: its data gets a fresh evaluator)."""
    if not is_run_data(data):
        return Evaluator(data, cfg.eval, device, boot_seed)
    parts = [dataclasses.asdict(p) for p in (cfg.data, cfg.eval)]
    key = json.dumps(parts, sort_keys=True, default=str) + str(device)
    if key not in _EVALUATORS:
        _EVALUATORS[key] = Evaluator(data, cfg.eval, device)
    return _EVALUATORS[key]


class ShopAgent:
    """One shop's side of federation.

    ``data``: the run's prepared data (default: :func:`~fedcl.run_data.run_data`, as in
    simulation), or the shop's own :class:`~fedcl.shop.ingest.EventLog`: then what is new in
    the log is ingested (state dir ``<shop>/ingest``) before the learner is built, into the first
    window its learner has not entered yet when it arrives late.

    ``reset_corrupt``: start a state over when none of its generations verifies (the
    corrupt files are moved aside); otherwise that is an error (:class:`CorruptState`).
    """

    def __init__(
        self,
        cfg: Config,
        shop: str,
        state_dir: str | Path,
        device: torch.device,
        data: PreparedData | EventLog | None = None,
        reset_corrupt: bool = False,
    ):
        self.cfg, self.shop, self.device = cfg, shop, device
        self.store = GenerationStore(
            Path(state_dir) / safe_name(shop),
            what=f"state of shop {shop}",
            reset_hint=RESET_HINT,
            reset_corrupt=reset_corrupt or cfg.federated.reset_corrupt_state,
        )
        self._loaded: dict | None = None  # state read by _open_window, for _learner to reuse
        #: Customer ids by private index when the shop reads its own log: then it serves
        #: (each evaluated window writes a serving snapshot, :mod:`fedcl.serve.snapshot`).
        self.user_ids: np.ndarray | None = None
        if isinstance(data, EventLog):
            ingest = ShopIngest(shop, data, self.store.dir / "ingest", self.store.reset_corrupt)
            ingest.ingest(self._open_window())
            self.user_ids = ingest.users
            if ingest.plan.shops and shop not in ingest.plan.shops:
                log.warning("shop %r is not among the plan's shops %s", shop, ingest.plan.shops)
            data = ingest.prepared()
        self.data = data if data is not None else run_data(cfg.data, cfg.eval)
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
        if hasattr(learner.model, "local_solve"):  # a statistics model: the server solves
            learner.model.local_solve = False
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
        self,
        shared: dict[str, torch.Tensor],
        window: int,
        n_items: int,
        proximal_mu: float = 0.0,
    ) -> TrainReply:
        """One round of local training at ``window``.

        ``n_items``: the catalogue size of the global arrays (the server grows them);
        ``proximal_mu``: FedProx's mu, as the server's strategy sent it (0: off)."""
        learner, _ = self._learner(shared, n_items)
        if getattr(learner.model, "federation", "parameters") == "statistics":
            return self._contribute(learner, window)
        new = learner.enter(window)
        anchor = {k: v.detach().clone() for k, v in self._outgoing(learner).items()}
        prox = _proximal(anchor, proximal_mu) if proximal_mu > 0 else None
        schedule = Schedule.of(self.cfg.federated, self.cfg.train.epochs)
        train = dataclasses.replace(self.cfg.train, epochs=schedule.per_round)
        dp = self.cfg.federated.dp
        if dp.enabled:  # user-level DP: what leaves the shop bounds each customer
            sigma = noise_multiplier(dp, self.data.n_windows * schedule.rounds)
            data = learner.method.training_data(learner.model, new, learner.window)
            stats = dp_train(learner.model, data, dp, sigma, train, learner.generator)
        else:
            stats = learner.train(new, train, extra=prox, reset=False)
        self._save(learner)
        return TrainReply(
            shop=self.shop,
            arrays=self._outgoing(learner),
            num_examples=max(int(stats.examples), 1),
            train_loss=float(stats.loss) if stats.loss == stats.loss else 0.0,
            new_events=len(new),
            train_s=float(stats.seconds),
            train_cpu_s=float(stats.cpu_s),
        )

    def _contribute(self, learner: UnitLearner, window: int) -> TrainReply:
        """A statistics model's round: enter the window (the history learns it), take the
        model's own step (ALS: its users, from the global item factors) and send this shop's
        sums (:mod:`fedcl.federated.statistics`)."""
        from fedcl.federated.statistics import encode

        start, cpu = time.perf_counter(), time.process_time()
        new = learner.enter(window)
        learner.model.user_step()
        arrays = encode(learner.model)
        self._save(learner)
        users = int((torch.diff(learner.model.user_hist_ptr) > 0).sum())
        return TrainReply(
            shop=self.shop,
            arrays=arrays,
            num_examples=max(users, 1),
            train_loss=0.0,
            new_events=len(new),
            train_s=time.perf_counter() - start,
            train_cpu_s=time.process_time() - cpu,
        )

    def evaluate(self, shared: dict[str, torch.Tensor], window: int, n_items: int) -> EvalReply:
        """Cells of row ``window`` as aggregates over >= ``federated.min_users`` users each."""
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
            self._serve(model, window)
        ev = evaluator(self.cfg, self.data, self.device, self._boot_seed())
        per_user: list[pd.DataFrame] = []
        row = ev.row(model, self.shop, window, per_user)
        last = self.data.n_windows - 1
        forward = ev.forward(model, self.shop, window, per_user) if 0 <= window < last else None
        self._keep_per_user(per_user, window)
        min_users = self.cfg.federated.min_users
        return EvalReply(
            shop=self.shop,
            cells=withhold_row(row, self.shop, min_users),
            forward=None if forward is None else {
                v: withhold(by_shop.get(self.shop, {}), min_users) for v, by_shop in forward.items()
            },
            finetune=tuned,
        )  # fmt: skip

    def _serve(self, model: Recommender, window: int) -> None:
        """A shop reading its own log serves: freeze the model it evaluates at ``window``
        for its recommendation service, and report what the service's lists did so far."""
        if self.user_ids is None:
            return
        from fedcl.serve.online import SERVE_DIR, write_online
        from fedcl.serve.snapshot import serving_store, write_snapshot

        store = serving_store(self.store.dir)
        write_snapshot(store, self.shop, window, model, self.cfg.model, self.data, self.user_ids)
        online = write_online(self.store.dir / SERVE_DIR, window)
        if online and online["by_generation"]:
            gen = max(online["by_generation"], key=int)
            log.info(
                "shop %s online (generation %s): %s", self.shop, gen, online["by_generation"][gen]
            )

    def _boot_seed(self) -> int:
        """The seed of this shop's bootstrap weights. On its own log (deployment) it mixes
        in a secret the shop keeps (``<state>/boot-secret``), so the replicate sums it sends
        cannot be solved for its users' values; on the run's data (simulation, where the
        operator holds every event anyway) it is ``eval.boot_seed``, which pairs runs."""
        if is_run_data(self.data):
            return self.cfg.eval.boot_seed
        path = self.store.dir / "boot-secret"
        if not path.exists():
            self.store.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(str(secrets.randbits(62)))
        return (self.cfg.eval.boot_seed * 1_000_003 + int(path.read_text())) % 2**62

    def _keep_per_user(self, frames: list[pd.DataFrame], window: int) -> None:
        """Per-user values of this evaluation, kept at the shop (``<state>/per_user/``)."""
        if not frames:
            return
        folder = self.store.dir / "per_user"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = folder / f"row-{window:03d}.parquet"
        pd.concat(frames, ignore_index=True).to_parquet(path, index=False)
        os.chmod(path, 0o600)

    def _personal(
        self, learner: UnitLearner, window: int
    ) -> tuple[Recommender, TrainingCost | None]:
        """The model this shop serves at ``window`` and what tuning it cost: the global
        one, or with ``federated.finetune_epochs`` a private copy fine-tuned on the shop's
        own window (not saved: the next round starts from the aggregate again)."""
        epochs = Schedule.of(self.cfg.federated, self.cfg.train.epochs).finetune
        if epochs <= 0 or learner.window < 0:
            return learner.model, None
        train = dataclasses.replace(self.cfg.train, epochs=epochs)
        stats = learner.train(learner.events(window, window), train, reset=False)
        return learner.model, TrainingCost(int(stats.examples), stats.seconds, stats.cpu_s)


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

"""Evaluation of a model: the cells of the R matrix and the forward cells.

R cell (t, i): the model trained through window t on the test part of window i. The history
of a user for test window i is everything the user bought that a model could have seen or
been tested on before: the train parts of windows 0..i and the test parts of windows
0..i-1; the ``new`` variant masks it and counts no re-buy as a target. When t > i the model
has trained on the train parts of windows i+1..t: a target that the same user bought again
there is left out of the cell (both variants; a user left without target drops out), so no
cell gains from a purchase made after its window.

Forward cell t: the model trained through window t on ALL events (train and test parts) of
window t+1, before it learns anything of window t+1. History: everything of the user in
windows 0..t (both parts); ``new`` targets are window t+1's items not in it.

A model knows only users and items seen while it trained: test users it has no row for are
skipped (counted as cold), and items it has no row for are ranked last (score -inf) — they
stay targets, so a model is never credited for items it could not know.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from fedcl.checks import at_least, one_of, within
from fedcl.data.dataset import GLOBAL_USER, PreparedData
from fedcl.data.interactions import Interactions
from fedcl.data.schema import SHOP, USER_IDX
from fedcl.errors import ConfigError
from fedcl.metrics.bootstrap import BOOT_SUM, BOOT_W, poisson_weights, replicate_sums
from fedcl.metrics.ranking import EvalTask, UserMetrics, build_eval_task, drop_targets, evaluate
from fedcl.models.base import Recommender


@dataclass
class EvalConfig:
    """What is measured (Hydra node ``eval``)."""

    #: The R-matrix metric (a key of the per-user metrics).
    metric: str = "ndcg@10"
    ks: list[int] = field(default_factory=lambda: [10, 20])
    variants: list[str] = field(default_factory=lambda: ["new", "repeat"])
    batch_size: int = 1024
    #: "test" (report) or "validation" (tune: the last ``val_fraction`` of each window's
    #: train part is held out and plays the test part; real test parts are not touched).
    on: str = "test"
    val_fraction: float = 0.15
    #: Bootstrap replicates behind every interval (Poisson bootstrap over users, see
    #: fedcl/metrics/bootstrap.py); 0 = no intervals.
    n_boot: int = 200
    #: Seed of the users' bootstrap weights: the same seed pairs the replicates of two runs.
    boot_seed: int = 0

    def check(self, key: str = "eval") -> None:
        """Value checks; each error names ``key.field``, the value and what is allowed."""
        if not self.ks or min(self.ks) < 1:
            raise ConfigError(f"{key}.ks must be one or more cut-offs >= 1; got {self.ks}")
        missing = [k for k in REPORT_KS if k not in self.ks]
        if missing:
            raise ConfigError(
                f"{key}.ks must include {', '.join(map(str, REPORT_KS))} (metrics.json's "
                f"final hr@10 and recall@20); got {self.ks}"
            )
        names = [f"{m}@{k}" for m in ("ndcg", "hr", "recall") for k in self.ks] + ["mrr"]
        one_of(f"{key}.metric", self.metric, names)
        for v in self.variants:
            one_of(f"{key}.variants", v, ("new", "repeat"))
        if "new" not in self.variants:
            raise ConfigError(f"{key}.variants must include 'new' (the R-matrix variant)")
        at_least(f"{key}.batch_size", self.batch_size, 1)
        one_of(f"{key}.on", self.on, ("test", "validation"))
        within(f"{key}.val_fraction", self.val_fraction, 0, 0.9, open_low=True)
        within(f"{key}.n_boot", self.n_boot, 0, 10_000)
        at_least(f"{key}.boot_seed", self.boot_seed, 0)


#: Cut-offs the report needs (``final``: hr@10, ndcg@10, recall@20).
REPORT_KS = (10, 20)


#: metric name -> mean over the users of a cell, plus "n_users" and, for the R metric of the
#: ``new`` variant, its bootstrap replicate sums "boot_sum" and "boot_w" (lists of floats).
Cell = dict[str, float | list[float] | None]


def restrict_users(task: EvalTask, n_users: int) -> EvalTask:
    """The task without users whose index is >= ``n_users`` (users are ascending)."""
    k = int(torch.searchsorted(task.users, torch.tensor(n_users, device=task.users.device)))
    if k == task.n_users:
        return task
    tp, mp = task.target_ptr[: k + 1], task.mask_ptr[: k + 1]
    return EvalTask(
        task.users[:k], tp, task.target_items[: int(tp[-1])], mp,
        task.mask_items[: int(mp[-1])], task.n_items, task.variant,
        task.n_cold_users + task.n_users - k, task.n_dropped_users,
    )  # fmt: skip


#: Above this many (user, item) scores a row is scored batch by batch instead of once.
CACHE_LIMIT = 64_000_000


class RowScores:
    """Scores of one model for the users of a whole R-matrix row, computed once.

    A row evaluates the same model on every window and variant; the users overlap, so their
    ``score_all`` is computed once (batched) and looked up, with -inf padding for catalogue
    items the model has no row for.
    """

    def __init__(self, model: Recommender, users: torch.Tensor, n_items: int, batch: int):
        self.model, self.n_items = model, n_items
        self.table: torch.Tensor | None = None
        if users.numel() * n_items <= CACHE_LIMIT and users.numel():
            with torch.no_grad():
                parts = [model.score_all(users[s : s + batch]) for s in range(0, len(users), batch)]
            self.table = self._pad(torch.cat(parts))
            self.pos = torch.full(
                (int(users.max()) + 1,), -1, dtype=torch.long, device=users.device
            )
            self.pos[users] = torch.arange(users.numel(), device=users.device)

    def _pad(self, scores: torch.Tensor) -> torch.Tensor:
        missing = self.n_items - scores.shape[1]
        return F.pad(scores, (0, missing), value=-torch.inf) if missing > 0 else scores

    def __call__(self, users: torch.Tensor) -> torch.Tensor:
        if self.table is None:
            return self._pad(self.model.score_all(users))
        return self.table[self.pos[users]]  # advanced indexing: a fresh tensor


class Evaluator:
    """Builds (and caches) the test tasks of a unit (one shop, or all shops pooled) and
    scores models on them: :meth:`row` (R-matrix cells) and :meth:`forward`."""

    def __init__(
        self,
        data: PreparedData,
        cfg: EvalConfig,
        device: torch.device,
        boot_seed: int | None = None,
    ) -> None:
        """``boot_seed``: the seed of the users' bootstrap weights (default ``cfg.boot_seed``;
        a shop in deployment mixes in a secret of its own, so the server cannot undo the
        replicate sums it sends)."""
        self.data, self.cfg, self.device = data, cfg, device
        self.boot_seed = cfg.boot_seed if boot_seed is None else boot_seed
        # (shop, kind "r" | "forward", window, variant) -> task on CPU / on ``device``.
        self._tasks: dict[tuple[str | None, str, int, str], EvalTask] = {}
        self._on_device: dict[tuple[str | None, str, int, str], EvalTask] = {}
        self._train: dict[tuple[str | None, int], Interactions] = {}
        self._n_items = len(data.catalog)
        self._n_users = 1 + int(data.events[GLOBAL_USER].max())
        shops = np.asarray(data.shops)
        codes = {s: k for k, s in enumerate(shops)}
        users = data.events.drop_duplicates(GLOBAL_USER)
        self._user_shop = np.empty(self._n_users, dtype=np.int64)
        self._user_shop[users[GLOBAL_USER].to_numpy()] = users[SHOP].map(codes).to_numpy()
        # A user's index in its own shop: bootstrap weights follow (shop, shop's index), so
        # a pooled model's cells and a shop's own cells weigh each user alike.
        self._user_local = np.empty(self._n_users, dtype=np.int64)
        self._user_local[users[GLOBAL_USER].to_numpy()] = users[USER_IDX].to_numpy()
        self._shops = shops

    def _events(self, shop: str | None, windows: list[int], split: str | None) -> Interactions:
        return self.data.interactions(shop, windows, split, self._n_users, self._n_items)

    def task(self, shop: str | None, window: int, variant: str) -> EvalTask:
        """The test task of R column ``window`` before any later purchase is left out (CPU)."""
        key = (shop, "r", window, variant)
        if key not in self._tasks:
            history = self._events(shop, list(range(window)), None)
            history = history.concat(self._train_part(shop, window))
            test = self._events(shop, [window], "test")
            self._tasks[key] = build_eval_task(history, test, variant)
        return self._tasks[key]

    def forward_task(self, shop: str | None, t: int, variant: str) -> EvalTask:
        """All of window ``t + 1`` against the history of windows 0..t, both parts (CPU)."""
        key = (shop, "forward", t + 1, variant)
        if key not in self._tasks:
            history = self._events(shop, list(range(t + 1)), None)
            test = self._events(shop, [t + 1], None)
            self._tasks[key] = build_eval_task(history, test, variant)
        return self._tasks[key]

    def cell_task(
        self, shop: str | None, window: int, variant: str, trained_through: int
    ) -> EvalTask:
        """Task of R cell (``trained_through``, ``window``) on the evaluator's device: the
        base task without targets the user bought again in train parts window+1..t."""
        base = self.task(shop, window, variant)
        later = range(window + 1, trained_through + 1)
        if len(later):
            parts = [self._train_part(shop, w) for w in later]
            users = torch.cat([p.users for p in parts])
            task = drop_targets(base, users, torch.cat([p.items for p in parts]))
            if task is not base:
                return task.to(self.device)
        return self._device_copy((shop, "r", window, variant), base)

    def _device_copy(self, key: tuple[str | None, str, int, str], task: EvalTask) -> EvalTask:
        if key not in self._on_device:
            self._on_device[key] = task.to(self.device)
        return self._on_device[key]

    def _train_part(self, shop: str | None, window: int) -> Interactions:
        if (shop, window) not in self._train:
            self._train[shop, window] = self._events(shop, [window], "train")
        return self._train[shop, window]

    def row(
        self,
        model: Recommender,
        shop: str | None,
        trained_through: int,
        per_user: list[pd.DataFrame] | None = None,
    ) -> dict[str, list[dict[str, Cell]]]:
        """``out[variant][i][shop]``: R cells (``trained_through``, i) of ``model`` on every
        window's test part. ``trained_through``: the last window the model trained on (-1:
        untrained, nothing left out).

        ``shop=None`` evaluates a pooled model on all shops' users and splits by shop. A
        ``per_user`` list gets one frame per scored (variant, i) (see :meth:`user_frame`).
        """
        t = trained_through
        tasks = {
            (v, i): self.cell_task(shop, i, v, t)
            for v in self.cfg.variants
            for i in range(self.data.n_windows)
        }
        cells = self._score(model, shop, tasks, "r", t, per_user)
        return {v: [cells[v, i] for i in range(self.data.n_windows)] for v in self.cfg.variants}

    def forward(
        self,
        model: Recommender,
        shop: str | None,
        t: int,
        per_user: list[pd.DataFrame] | None = None,
    ) -> dict[str, dict[str, Cell]]:
        """``out[variant][shop]``: the forward cell of ``model`` trained through window ``t``
        (scored on all of window t+1; see the module docstring). Empty for the last window.
        ``shop`` and ``per_user`` as in :meth:`row`."""
        last = self.data.n_windows - 1
        if not -1 <= t <= last:
            raise ValueError(f"forward: t must be in [-1, {last}], got {t}")
        if t == last:
            return {v: {} for v in self.cfg.variants}
        tasks = {
            (v, t + 1): self._device_copy(
                (shop, "forward", t + 1, v), self.forward_task(shop, t, v)
            )
            for v in self.cfg.variants
        }
        cells = self._score(model, shop, tasks, "forward", t, per_user)
        return {v: cells[v, t + 1] for v in self.cfg.variants}

    def _score(
        self,
        model: Recommender,
        shop: str | None,
        tasks: dict[tuple[str, int], EvalTask],
        kind: str,
        t: int,
        per_user: list[pd.DataFrame] | None,
    ) -> dict[tuple[str, int], dict[str, Cell]]:
        """Cells of ``model`` on ``tasks`` ((variant, test window) -> task), by shop."""
        model.eval()
        tasks = {key: restrict_users(task, model.n_users) for key, task in tasks.items()}
        users = torch.unique(torch.cat([task.users for task in tasks.values()]))
        scores = RowScores(model, users, self._n_items, self.cfg.batch_size)
        out: dict[tuple[str, int], dict[str, Cell]] = {}
        for (variant, i), task in tasks.items():
            um = evaluate(scores, task, tuple(self.cfg.ks), self.cfg.batch_size, self.device)
            out[variant, i] = self._by_shop(um, shop, boot=variant == BOOT_VARIANT)
            if per_user is not None and um.n_users:
                per_user.append(self.user_frame(um, shop, kind=kind, variant=variant, t=t, i=i))
        return out

    def user_frame(
        self, um: UserMetrics, shop: str | None, *, kind: str, variant: str, t: int, i: int
    ) -> pd.DataFrame:
        """Per-user values of one cell: ``kind`` ("r" | "forward"), ``variant``, ``t`` (trained
        through), ``i`` (test window), ``shop`` (the user's), ``user`` (index as the unit's
        model sees it: the shop's own, or global for a pooled model), one column per metric."""
        users = um.users.numpy()
        owner = (
            np.full(users.size, shop, dtype=object)
            if shop is not None
            else self._shops[self._user_shop[users]].astype(object)
        )
        frame = pd.DataFrame(
            {"kind": kind, "variant": variant, "t": t, "i": i, "shop": owner, "user": users}
        )
        for name, values in um.values.items():
            frame[name] = values.numpy()
        return frame

    def _by_shop(self, um: UserMetrics, shop: str | None, boot: bool) -> dict[str, Cell]:
        """Cells per shop; with ``boot``, the R metric's bootstrap replicate sums too."""
        users = um.users.numpy()
        if shop is not None:
            cells = {shop: (np.ones(users.size, dtype=bool), users)}
        else:
            owner, local = self._user_shop[users], self._user_local[users]
            cells = {s: (owner == k, local[owner == k]) for k, s in enumerate(self._shops)}
        out = {}
        for s, (mask, local_users) in cells.items():
            cell = _mean(um, mask)
            if boot and self.cfg.n_boot and cell["n_users"]:
                values = um.values[self.cfg.metric].numpy()[mask]
                weights = poisson_weights(s, local_users, self.cfg.n_boot, self.boot_seed)
                cell[BOOT_SUM], cell[BOOT_W] = replicate_sums(values, weights)
            out[s] = cell
        return out


#: The variant whose cells carry bootstrap replicate sums (the headline figures').
BOOT_VARIANT = "new"


def _mean(um: UserMetrics, mask: np.ndarray) -> Cell:
    n = int(mask.sum())
    m = torch.from_numpy(mask)
    cell: Cell = {k: (float(v[m].mean()) if n else None) for k, v in um.values.items()}
    cell["n_users"] = n
    return cell

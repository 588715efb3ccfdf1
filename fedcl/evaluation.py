"""Evaluation of a model on every window's test part: the cells of the R matrix.

History of a user for test window i = its purchases in the train parts of windows 0..i
(ARCHITECTURE.md). A model trained up to window t knows only users and items seen by then:
test users it has no row for are skipped (counted as cold), and items it has no row for
are ranked last (score -inf) — they stay targets, so a model is never credited for items
it could not know.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from fedcl.checks import at_least, one_of, within
from fedcl.data.dataset import GLOBAL_USER, PreparedData
from fedcl.data.schema import SHOP
from fedcl.errors import ConfigError
from fedcl.metrics.ranking import EvalTask, UserMetrics, build_eval_task, evaluate
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


#: Cut-offs the report needs (``final``: hr@10, ndcg@10, recall@20).
REPORT_KS = (10, 20)


#: metric name -> mean over the users of a cell, plus "n_users".
Cell = dict[str, float | None]


def restrict_users(task: EvalTask, n_users: int) -> EvalTask:
    """The task without users whose index is >= ``n_users`` (users are ascending)."""
    k = int(torch.searchsorted(task.users, torch.tensor(n_users)))
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
    """Builds (and caches) the test tasks of a unit (one shop, or all shops pooled)."""

    def __init__(self, data: PreparedData, cfg: EvalConfig, device: torch.device) -> None:
        self.data, self.cfg, self.device = data, cfg, device
        self._tasks: dict[tuple[str | None, int, str], EvalTask] = {}
        shops = np.asarray(data.shops)
        codes = {s: k for k, s in enumerate(shops)}
        users = data.events.drop_duplicates(GLOBAL_USER)
        self._user_shop = np.empty(int(data.events[GLOBAL_USER].max()) + 1, dtype=np.int64)
        self._user_shop[users[GLOBAL_USER].to_numpy()] = users[SHOP].map(codes).to_numpy()
        self._shops = shops

    def task(self, shop: str | None, window: int, variant: str) -> EvalTask:
        key = (shop, window, variant)
        if key not in self._tasks:
            n_items = len(self.data.catalog)
            n_users = 1 + int(self.data.events[GLOBAL_USER].max())
            history = self.data.interactions(
                shop, list(range(window + 1)), "train", n_users, n_items
            )
            test = self.data.interactions(shop, [window], "test", n_users, n_items)
            self._tasks[key] = build_eval_task(history, test, variant).to(self.device)
        return self._tasks[key]

    def row(self, model: Recommender, shop: str | None) -> dict[str, list[dict[str, Cell]]]:
        """``out[variant][i][shop]``: cells of ``model`` on every window's test part.

        ``shop=None`` evaluates a pooled model on all shops' users and splits by shop.
        """
        model.eval()
        tasks = {
            (v, i): restrict_users(self.task(shop, i, v), model.n_users)
            for v in self.cfg.variants
            for i in range(self.data.n_windows)
        }
        users = torch.unique(torch.cat([t.users for t in tasks.values()]))
        scores = RowScores(model, users, len(self.data.catalog), self.cfg.batch_size)
        out: dict[str, list[dict[str, Cell]]] = {v: [] for v in self.cfg.variants}
        for (variant, _), task in tasks.items():
            um = evaluate(scores, task, tuple(self.cfg.ks), self.cfg.batch_size, self.device)
            out[variant].append(self._by_shop(um, shop))
        return out

    def _by_shop(self, um: UserMetrics, shop: str | None) -> dict[str, Cell]:
        if shop is not None:
            return {shop: _mean(um, np.ones(um.n_users, dtype=bool))}
        owner = self._user_shop[um.users.numpy()]
        return {s: _mean(um, owner == k) for k, s in enumerate(self._shops)}


def _mean(um: UserMetrics, mask: np.ndarray) -> Cell:
    n = int(mask.sum())
    m = torch.from_numpy(mask)
    cell: Cell = {k: (float(v[m].mean()) if n else None) for k, v in um.values.items()}
    cell["n_users"] = n
    return cell

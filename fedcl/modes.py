"""The non-federated run modes over a stream of windows.

``centralized``: one model on all shops' training data pooled (the reference without
privacy), evaluated per shop. ``local``: every shop trains alone (what a shop gets without
joining). Both go through the windows in order with plain fine-tuning.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from hydra.utils import instantiate

from fedcl.data.dataset import PreparedData
from fedcl.evaluation import Cell, Evaluator
from fedcl.models.base import Recommender
from fedcl.train import TrainConfig, train_window

log = logging.getLogger("fedcl")


@dataclass
class StreamResult:
    """Cells of every (t, i) and the untrained baseline, per variant; training log rows."""

    cells: dict[str, list[list[dict[str, Cell]]]] = field(default_factory=dict)
    baseline: dict[str, list[dict[str, Cell]]] = field(default_factory=dict)
    rounds: list[dict[str, Any]] = field(default_factory=list)

    def merge(self, other: StreamResult) -> None:
        """Add another unit's shops (local mode: one result per shop)."""
        for v, grid in other.cells.items():
            mine = self.cells.setdefault(v, [[{} for _ in row] for row in grid])
            for t, row in enumerate(grid):
                for i, cell in enumerate(row):
                    mine[t][i].update(cell)
        for v, row in other.baseline.items():
            mine = self.baseline.setdefault(v, [{} for _ in row])
            for i, cell in enumerate(row):
                mine[i].update(cell)
        self.rounds.extend(other.rounds)


def build_model(model_cfg: Any, n_users: int, n_items: int, device: torch.device) -> Recommender:
    return instantiate(model_cfg, n_users=max(n_users, 1), n_items=max(n_items, 1)).to(device)


def learn_stream(
    unit: str | None,
    data: PreparedData,
    model_cfg: Any,
    train_cfg: TrainConfig,
    evaluator: Evaluator,
    device: torch.device,
    seed: int,
) -> StreamResult:
    """Fine-tune one model through the windows; evaluate it on every window after each."""
    name = unit or "pooled"
    last = data.n_windows - 1
    torch.manual_seed(seed)
    model = build_model(model_cfg, data.n_users_known(unit, last), data.n_items_known(last), device)
    result = StreamResult()
    # FWT's b_i: the untrained model (sized for the whole stream) on every window.
    untrained = evaluator.row(model, unit)
    result.baseline = {v: cells for v, cells in untrained.items()}
    torch.manual_seed(seed)
    model = build_model(model_cfg, data.n_users_known(unit, 0), data.n_items_known(0), device)
    generator = torch.Generator(device=device).manual_seed(seed)
    for v in result.baseline:
        result.cells[v] = []
    for t in range(data.n_windows):
        n_users, n_items = data.n_users_known(unit, t), data.n_items_known(t)
        model.grow(max(n_users, model.n_users), max(n_items, model.n_items))
        train = data.interactions(unit, [t], "train", model.n_users, model.n_items).to(device)
        model.observe(train)
        stats = train_window(model, train, train_cfg, generator)
        start = time.perf_counter()
        row = evaluator.row(model, unit)
        eval_s = time.perf_counter() - start
        for v, cells in row.items():
            result.cells[v].append(cells)
        diag = [c.get(evaluator.cfg.metric) for c in row["new"][t].values()] if "new" in row else []
        shown = next((x for x in diag if x is not None), None)
        log.info(
            "window %2d/%d  %-14s events %7d  loss %.4f  train %.2fs  eval %.2fs  %s %s",
            t, last, name[:14], len(train), stats.loss, stats.seconds, eval_s,
            evaluator.cfg.metric, "-" if shown is None else f"{shown:.4f}",
        )  # fmt: skip
        result.rounds.append(
            {
                "window": t, "round": 0, "unit": name, "events": len(train),
                "examples": stats.examples, "loss": stats.loss,
                "train_s": round(stats.seconds, 4), "eval_s": round(eval_s, 4),
            }
        )  # fmt: skip
    return result


def run_centralized(data, cfg, evaluator, device) -> StreamResult:
    """All shops' train parts pooled into one model (global user ids)."""
    return learn_stream(None, data, cfg.model, cfg.train, evaluator, device, cfg.seed)


def run_local(data, cfg, evaluator, device) -> StreamResult:
    """Every shop alone, each with its own model and seed offset."""
    result = StreamResult()
    for k, shop in enumerate(data.shops):
        seed = cfg.seed * 1000 + k
        result.merge(learn_stream(shop, data, cfg.model, cfg.train, evaluator, device, seed))
    return result

"""The non-federated run modes over a stream of windows.

``centralized``: one model on all shops' training data pooled (the reference without
privacy), evaluated per shop. ``local``: every shop trains alone (what a shop gets without
joining). Both go through the windows in order with the configured continual method.
"""

from __future__ import annotations

import logging
import time

import pandas as pd
import torch

from fedcl.config import Config
from fedcl.data.dataset import PreparedData
from fedcl.evaluation import Evaluator
from fedcl.learner import UnitLearner, build_model
from fedcl.report import cell_mean
from fedcl.result import RoundRow, Row, RunResult

log = logging.getLogger("fedcl")


def baseline_row(
    unit: str | None, data: PreparedData, cfg: Config, evaluator: Evaluator, device: torch.device
) -> Row:
    """FWT's b_i: an untrained model, sized for the whole stream, on every window."""
    torch.manual_seed(cfg.seed)
    last = data.n_windows - 1
    model = build_model(cfg.model, data.n_users_known(unit, last), data.n_items_known(last), device)
    return evaluator.row(model, unit, -1)


def learn_stream(
    unit: str | None,
    data: PreparedData,
    cfg: Config,
    evaluator: Evaluator,
    device: torch.device,
    seed: int,
    per_user: list[pd.DataFrame] | None = None,
) -> RunResult:
    """Learn window after window; after each, evaluate the model on every window's test part
    (an R-matrix row) and on all of the next window (its forward cell). ``per_user`` gets the
    per-user values of every scored cell."""
    name = unit or "pooled"
    result = RunResult(baseline=baseline_row(unit, data, cfg, evaluator, device))
    learner = UnitLearner(unit, data, cfg.model, cfg.continual, device, seed)
    metric, last = evaluator.cfg.metric, data.n_windows - 1
    for t in range(data.n_windows):
        new = learner.enter(t)
        stats = learner.train(new, cfg.train)
        learner.finish()
        start = time.perf_counter()
        row = evaluator.row(learner.model, unit, t, per_user)
        forward = evaluator.forward(learner.model, unit, t, per_user) if t < last else None
        eval_s = time.perf_counter() - start
        result.add_row(row, forward)
        diag = cell_mean(row["new"][t], list(row["new"][t]), metric)
        memory = learner.method.memory_bytes()
        log.info(
            "window %2d/%d  %-14s new %7d  trained %8d  loss %.4f  train %5.2fs  eval %5.2fs"
            "  %s %s",
            t, last, name[:14], len(new), stats.examples, stats.loss, stats.seconds, eval_s,
            metric, "-" if diag is None else f"{diag:.4f}",
        )  # fmt: skip
        result.rounds.append(
            RoundRow(
                window=t, round=0, unit=name, events=len(new), examples=stats.examples,
                loss=stats.loss, train_s=round(stats.seconds, 4),
                train_cpu_s=round(stats.cpu_s, 4), eval_s=round(eval_s, 4), memory_bytes=memory,
            )
        )  # fmt: skip
    result.memory_bytes[name] = learner.method.memory_bytes()
    return result


def run_centralized(
    data: PreparedData,
    cfg: Config,
    evaluator: Evaluator,
    device: torch.device,
    per_user: list[pd.DataFrame] | None = None,
) -> RunResult:
    """All shops' train parts pooled into one model (global user ids)."""
    return learn_stream(None, data, cfg, evaluator, device, cfg.seed, per_user)


def run_local(
    data: PreparedData,
    cfg: Config,
    evaluator: Evaluator,
    device: torch.device,
    per_user: list[pd.DataFrame] | None = None,
) -> RunResult:
    """Every shop alone, each with its own model and seed offset."""
    result = RunResult()
    for k, shop in enumerate(data.shops):
        seed = cfg.seed * 1000 + k
        result.merge(learn_stream(shop, data, cfg, evaluator, device, seed, per_user))
    return result

"""The server's schedule: for each window, R rounds of train + aggregate, then federated
evaluation of every window's test part (one R-matrix row), then the run directory.

Flower's strategies are used for sampling and aggregation only (``configure_train``,
``aggregate_train``): the loop is ours, so replies are validated before they reach the
aggregate, bytes are counted, and the catalogue grows window by window.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import torch
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedcl.data.dataset import PreparedData
from fedcl.data.plan import Plan
from fedcl.errors import ConfigError, FedclError
from fedcl.federated.checkpoint import ServerCheckpoint, Snapshot
from fedcl.federated.config import is_local, local_keys
from fedcl.federated.growth import grow_strategy_state
from fedcl.federated.records import (
    ARRAYS,
    CONFIG,
    METRICS,
    NUM_EXAMPLES,
    Spec,
    from_record,
    record_bytes,
    reply_node,
    to_record,
    valid_replies,
)  # fmt: skip
from fedcl.federated.shop import (
    FINETUNE_CPU_S,
    FINETUNE_EXAMPLES,
    FINETUNE_S,
    UNTRAINED,
    metrics_to_cells,
    shop_data,
)
from fedcl.federated.strategies import build_strategy
from fedcl.learner import build_model

log = logging.getLogger("fedcl")


class NotEnoughShops(FedclError):
    """Too few shops connected within the timeout."""


def wait_for_shops(
    grid: Grid, n: int, timeout_s: float, setting: str = "federated.min_shops"
) -> list[int]:
    """Node ids once at least ``n`` are connected; a clear error after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while len(nodes := list(grid.get_node_ids())) < n:
        if time.monotonic() > deadline:
            raise NotEnoughShops(
                f"only {len(nodes)} shop(s) connected after {timeout_s:.0f} s, need "
                f"{setting}={n}: start more shop agents or lower {setting}"
            )
        time.sleep(0.5)
    return nodes


def server_plan(cfg: Any) -> Plan | PreparedData:
    """What the server may know: the public plan (``federated.plan_dir``), or in simulation the
    prepared data, of which it reads only the same public parts (windows, catalogue)."""
    if cfg.federated.plan_dir:
        return Plan.load(cfg.federated.plan_dir)
    return shop_data(cfg)


def report_shops(data: Plan | PreparedData, result: dict) -> list[str]:
    """The shops the report lists: the data's (a plan may name none), then any other shop
    whose evaluation replied."""
    rows = [result["baseline"], *result["rows"]]
    replied = {s for row in rows for cells in row.values() for by_shop in cells for s in by_shop}
    return list(data.shops) + sorted(replied - set(data.shops))


class GlobalModel:
    """The server's copy of the shared parameters, grown with the public catalogue."""

    def __init__(self, cfg: Any, n_items: int) -> None:
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model, 1, n_items, torch.device("cpu"))
        self.local = local_keys(cfg.federated, self.model)
        shared = self.model.shared_state()
        unknown = [n for n in self.local if not any(is_local(k, [n]) for k in shared)]
        if unknown:
            raise ConfigError(
                f"federated.local_keys {unknown} name no shared parameter of the model; "
                f"shared keys: {sorted(shared)}"
            )

    def grow(self, n_items: int) -> None:
        self.model.grow(1, max(n_items, self.model.n_items))

    def record(self):
        shared = self.model.shared_state()
        return to_record({k: v for k, v in shared.items() if not is_local(k, self.local)})

    def load(self, record) -> None:
        state = self.model.shared_state()
        state.update(from_record(record))
        self.model.load_shared_state(state)


def run_federated(grid: Grid, cfg: Any, checkpoint: Path | None = None) -> dict[str, Any]:
    """Run every window and round; returns what the report needs.

    ``checkpoint``: the directory of the server checkpoint, written after every step (None:
    no checkpoint). When it holds a checkpoint of this configuration and
    ``federated.resume`` is on, the run continues after its last step."""
    fed = cfg.federated
    random.seed(cfg.seed)  # Flower samples nodes with the random module
    data = server_plan(cfg)  # only the public catalogue and window bounds
    n_windows = data.n_windows
    strategy = build_strategy(cfg.strategy, fed)
    store = ServerCheckpoint(checkpoint, cfg) if checkpoint is not None else None
    snap = store.load() if store is not None and fed.resume else None  # config checked first
    nodes = wait_for_shops(grid, fed.min_shops, fed.wait_timeout_s)
    log.info("%d shops connected; %d windows x %d rounds", len(nodes), n_windows, fed.rounds)

    def save(window: int, next_round: int) -> None:
        if store is not None:
            store.save(Snapshot.take(window, next_round, server_round, out, glob.model, strategy))

    if snap is None:
        out: dict[str, Any] = {"rounds": [], "bytes_up": 0, "bytes_down": 0, "rejected": []}
        final_items = data.n_items_known(n_windows - 1)
        glob = GlobalModel(cfg, final_items)
        out["baseline"] = evaluate_all(grid, glob.record(), UNTRAINED, final_items, cfg, out)
        out["rows"] = []
        glob = GlobalModel(cfg, data.n_items_known(0))
        first_window, first_round, server_round = 0, 1, 0
        save(first_window, first_round)
    else:
        glob = GlobalModel(cfg, snap.n_items)
        snap.restore(glob.model, strategy)
        out, server_round = snap.out, snap.server_round
        first_window, first_round = snap.window, snap.round
        _log_resume(first_window, first_round, fed.rounds, n_windows, checkpoint)
        out.setdefault("resumed_from", []).append(
            {"window": first_window, "round": first_round, "server_round": server_round}
        )
    for t in range(first_window, n_windows):
        n_items = data.n_items_known(t)
        start = first_round if t == first_window else 1
        if start == 1:  # a new window: the catalogue grows (a resumed window has grown)
            glob.grow(n_items)
            grow_strategy_state(strategy, glob.record())
        for r in range(start, fed.rounds + 1):
            server_round += 1
            step = (t, r, server_round)
            train_round(grid, strategy, glob, cfg, step, n_items, n_windows, out)
            save(t, r + 1)
        out["rows"].append(evaluate_all(grid, glob.record(), t, n_items, cfg, out))
        save(t + 1, 1)
    return out


def _log_resume(window: int, round_: int, rounds: int, n_windows: int, where: Path) -> None:
    if window >= n_windows:
        log.info("the checkpoint in %s is at the end of the schedule: nothing left to run", where)
    elif round_ > rounds:
        log.info("resuming at window %d evaluation from %s", window, where)
    else:
        log.info("resuming at window %d round %d from %s", window, round_, where)


def train_round(
    grid: Grid,
    strategy: Strategy,
    glob: GlobalModel,
    cfg: Any,
    step: tuple[int, int, int],
    n_items: int,
    n_windows: int,
    out: dict[str, Any],
) -> None:
    """One round of training and aggregation at ``step`` = (window, round, server round);
    its log entry, bytes and rejections go to ``out``."""
    fed = cfg.federated
    t, r, server_round = step
    start = time.perf_counter()
    arrays = glob.record()
    conf = ConfigRecord({"window": t, "round": r, "n-items": n_items})
    # Shops may have gone away since the start: Flower's sampling would wait for them with no
    # time limit; wait federated.wait_timeout_s at most, then stop with a clear error.
    need = min(cfg.strategy.min_train_nodes, fed.min_shops)
    wait_for_shops(grid, need, fed.wait_timeout_s, "strategy.min_train_nodes")
    messages = list(strategy.configure_train(server_round, arrays, conf, grid))
    replies = list(grid.send_and_receive(messages, timeout=fed.round_timeout_s))
    good, rejected = valid_replies(replies, Spec.of(arrays), fed.max_examples, messages)
    down = record_bytes(arrays) * len(messages)
    up = sum(record_bytes(m.content.array_records[ARRAYS]) for m in good)
    replies_m = [m.content.metric_records[METRICS] for m in good]
    examples = sum(int(m[NUM_EXAMPLES]) for m in replies_m)
    shop_train_s = sum(float(m.get("train-s", 0.0)) for m in replies_m)
    shop_cpu_s = sum(float(m.get("train-cpu-s", 0.0)) for m in replies_m)
    loss = None
    if good:
        agg, metrics = strategy.aggregate_train(server_round, good)
        if agg is not None:
            glob.load(agg)
        loss = None if metrics is None else metrics.get("train-loss")
    out["bytes_up"] += up
    out["bytes_down"] += down
    out["rejected"] += [{"window": t, "round": r, "node": n, "why": w} for n, w in rejected]
    seconds = time.perf_counter() - start
    log.info(
        "window %2d/%d round %d/%d  shops %d/%d ok  loss %s  up %.1f MB  down %.1f MB  %.1fs",
        t, n_windows - 1, r, fed.rounds, len(good), len(messages),
        "-" if loss is None else f"{loss:.4f}", up / 1e6, down / 1e6, seconds,
    )  # fmt: skip
    out["rounds"].append(
        {
            "window": t, "round": r, "unit": "federated", "shops": len(messages),
            "ok": len(good), "rejected": len(rejected), "loss": loss, "examples": examples,
            "train_s": round(shop_train_s, 3), "train_cpu_s": round(shop_cpu_s, 3),
            "bytes_up": up, "bytes_down": down, "round_s": round(seconds, 3),
        }
    )  # fmt: skip


def evaluate_all(grid: Grid, arrays, window: int, n_items: int, cfg: Any, out: dict) -> dict:
    """Every shop evaluates the model; returns ``{variant: [{shop: cell} per window]}``."""
    nodes = list(grid.get_node_ids())
    conf = ConfigRecord({"window": window, "n-items": n_items})
    messages = [
        Message(
            content=RecordDict({ARRAYS: arrays, CONFIG: conf}),
            message_type=MessageType.EVALUATE,
            dst_node_id=node,
        )
        for node in nodes
    ]
    replies = list(grid.send_and_receive(messages, timeout=cfg.federated.round_timeout_s))
    out["bytes_down"] += record_bytes(arrays) * len(messages)
    data = server_plan(cfg)
    row: dict[str, list[dict]] = {v: [{} for _ in range(data.n_windows)] for v in cfg.eval.variants}
    tuned = {"examples": 0, "train_s": 0.0, "train_cpu_s": 0.0, "shops": 0}
    for msg in replies:
        if msg.has_error():
            node = reply_node(msg, messages)
            log.warning("evaluation failed at node %s: %s", node, msg.error.reason)
            continue
        shop = str(msg.content.config_records["shop"]["shop"])
        metrics = dict(msg.content.metric_records[METRICS])
        for v, cells in metrics_to_cells(metrics, data.n_windows, cfg.eval.variants).items():
            for i, cell in enumerate(cells):
                row[v][i][shop] = cell
        if FINETUNE_EXAMPLES in metrics:
            tuned["shops"] += 1
            tuned["examples"] += int(metrics[FINETUNE_EXAMPLES])
            tuned["train_s"] += float(metrics.get(FINETUNE_S, 0.0))
            tuned["train_cpu_s"] += float(metrics.get(FINETUNE_CPU_S, 0.0))
    if tuned["shops"]:  # personalisation is training too: counted in the cost, in rounds.csv
        out["rounds"].append(
            {
                "window": window, "round": 0, "unit": "finetune", "shops": tuned["shops"],
                "ok": tuned["shops"], "rejected": 0, "loss": None,
                "examples": tuned["examples"], "train_s": round(tuned["train_s"], 3),
                "train_cpu_s": round(tuned["train_cpu_s"], 3), "bytes_up": 0, "bytes_down": 0,
                "round_s": 0.0,
            }
        )  # fmt: skip
    return row


def write_report(cfg: Any, result: dict, out_dir: Path, config_yaml: str, wall_s: float) -> dict:
    """metrics.json and the rest of the run directory for a federated run."""
    from fedcl.data.prepare import data_digest
    from fedcl.report import build_metrics, write_run_dir

    data = server_plan(cfg)
    cells = {v: [row[v] for row in result["rows"]] for v in cfg.eval.variants}
    doc = build_metrics(
        mode="federated",
        metric=cfg.eval.metric,
        seed=cfg.seed,
        wall_s=wall_s,
        cells=cells,
        baseline=result["baseline"],
        shops=report_shops(data, result),
        data_sha256=data.digest if isinstance(data, Plan) else data_digest(cfg.data),
        config_yaml=config_yaml,
        comm={"bytes_up": result["bytes_up"], "bytes_down": result["bytes_down"]},
    )
    doc["rejected_replies"] = result["rejected"]
    # Where a restarted server continued (wall_s counts the last run only); [] = never.
    doc["resumed_from"] = result.get("resumed_from", [])
    write_run_dir(out_dir, doc, result["rounds"], config_yaml)
    return doc

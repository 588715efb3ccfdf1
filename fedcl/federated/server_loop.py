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
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from flwr.app import ArrayRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedcl import report
from fedcl.config import Config
from fedcl.data.dataset import PreparedData
from fedcl.data.plan import Plan
from fedcl.errors import ConfigError, FedclError
from fedcl.federated.bounds import apply_bounds
from fedcl.federated.checkpoint import ServerCheckpoint, Snapshot
from fedcl.federated.config import Schedule, is_local, local_keys
from fedcl.federated.growth import grow_strategy_state
from fedcl.federated.protocol import (
    ARRAYS,
    CONFIG,
    SHOP,
    UNTRAINED,
    Rejected,
    RowSpec,
    ShopRoster,
    Spec,
    aggregable,
    decode_eval_reply,
    decode_train_reply,
    evaluate_config,
    from_record,
    record_bytes,
    reply_node,
    to_record,
    train_config,
)
from fedcl.federated.statistics import (
    bound_statistics,
    decode_statistics_reply,
    is_statistics,
    needs_model,
    rounds_per_window,
    total,
)
from fedcl.federated.strategies import build_strategy
from fedcl.learner import build_model
from fedcl.metrics.ranking import metric_names
from fedcl.models.base import training_note
from fedcl.privacy.accountant import Ledger
from fedcl.result import ForwardCells, Rejection, RoundRow, Row, RunResult
from fedcl.run_data import run_data
from fedcl.shop.replies import EvalReply, TrainReply

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


def server_plan(cfg: Config) -> Plan | PreparedData:
    """What the server may know: the public plan (``federated.plan_dir``), or in simulation the
    prepared data, of which it reads only the public parts (windows, catalogue) and, to bound
    what a shop may claim, its user counts."""
    if cfg.federated.plan_dir:
        return Plan.load(cfg.federated.plan_dir)
    return run_data(cfg.data, cfg.eval)


def max_users(data: Plan | PreparedData, cfg: Config) -> Callable[[str], int]:
    """The most users a shop's evaluation cell may claim: its known users when the server
    holds the prepared data (simulation), else ``federated.max_users``."""
    if isinstance(data, Plan):
        return lambda shop: cfg.federated.max_users
    last = data.n_windows - 1
    return lambda shop: data.n_users_known(shop, last) if shop in data.shops else 0


class GlobalModel:
    """The server's copy of the shared parameters, grown with the public catalogue."""

    def __init__(self, cfg: Config, n_items: int) -> None:
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

    def record(self) -> ArrayRecord:
        shared = self.model.shared_state()
        return to_record({k: v for k, v in shared.items() if not is_local(k, self.local)})

    def load(self, record: ArrayRecord) -> None:
        state = self.model.shared_state()
        state.update(from_record(record))
        self.model.load_shared_state(state)


#: A decoded reply (TrainReply or EvalReply).
R = TypeVar("R")


class Server:
    """What one federated run's steps share: the grid, the configuration, what the server
    may know of the data, which shop is which node, and the results so far."""

    def __init__(self, grid: Grid, cfg: Config, result: RunResult) -> None:
        self.grid, self.cfg, self.result = grid, cfg, result
        self.data = server_plan(cfg)
        self.roster = ShopRoster(self.data.shops)
        self.max_users = max_users(self.data, cfg)
        self.metrics = tuple(metric_names(cfg.eval.ks))

    def exchange(
        self, messages: list[Message], decode: Callable[[RecordDict], R], step: tuple[int, int]
    ) -> tuple[list[tuple[Message, R]], list[str]]:
        """Send ``messages`` and decode the replies: (reply, decoded) pairs that passed, and
        the names of the shops whose reply was rejected (logged and kept in the result)."""
        replies = list(
            self.grid.send_and_receive(messages, timeout=self.cfg.federated.round_timeout_s)
        )
        online = set(self.grid.get_node_ids())
        good, bad = [], []
        kind = "train" if step[1] > 0 else "evaluate"
        for msg in replies:
            node = reply_node(msg, messages)
            try:
                if msg.has_error():
                    raise Rejected(f"error reply: {msg.error.reason}")
                reply = decode(msg.content)
                self.roster.claim(node, reply.shop, online)
            except Rejected as e:
                shop = self.roster.name(node)
                log.warning("rejected %s reply of shop %s (node %s): %s", kind, shop, node, e)
                self.result.rejected.append(Rejection(step[0], step[1], kind, shop, node, str(e)))
                bad.append(shop)
            else:
                good.append((msg, reply))
        return good, bad

    def row_spec(self, shop: str, window: int) -> RowSpec:
        """What shop ``shop``'s evaluation after ``window`` must hold (a forward cell unless
        the window is the last one or the untrained baseline)."""
        return RowSpec(
            tuple(self.cfg.eval.variants), self.data.n_windows, self.metrics,
            self.max_users(shop), forward=0 <= window < self.data.n_windows - 1,
            n_boot=self.cfg.eval.n_boot,
        )  # fmt: skip


def run_federated(grid: Grid, cfg: Config, checkpoint: Path | None = None) -> RunResult:
    """Run every window and round; returns the run's results.

    ``checkpoint``: the directory of the server checkpoint, written after every step (None:
    no checkpoint). When it holds a checkpoint of this configuration and
    ``federated.resume`` is on, the run continues after its last step."""
    fed = cfg.federated
    random.seed(cfg.seed)  # Flower samples nodes with the random module
    store = ServerCheckpoint(checkpoint, cfg) if checkpoint is not None else None
    snap = store.load() if store is not None and fed.resume else None  # config checked first
    server = Server(grid, cfg, snap.result if snap is not None else RunResult())
    data, result = server.data, server.result  # data: only the public catalogue and windows
    n_windows = data.n_windows
    strategy = build_strategy(cfg.strategy, fed)
    ledger = _ledger(cfg, n_windows, result)
    nodes = wait_for_shops(grid, fed.min_shops, fed.wait_timeout_s)
    log.info("%d shops connected; %d windows x %d rounds", len(nodes), n_windows, fed.rounds)

    def save(window: int, next_round: int) -> None:
        if store is not None:
            store.save(
                Snapshot.take(window, next_round, server_round, result, glob.model, strategy)
            )

    if snap is None:
        final_items = data.n_items_known(n_windows - 1)
        glob = GlobalModel(cfg, final_items)
        result.baseline, _ = evaluate_all(server, glob.record(), UNTRAINED, final_items)
        glob = GlobalModel(cfg, data.n_items_known(0))
        first_window, first_round, server_round = 0, 1, 0
        save(first_window, first_round)
    else:
        glob = GlobalModel(cfg, snap.n_items)
        snap.restore(glob.model, strategy)
        server_round = snap.server_round
        first_window, first_round = snap.window, snap.round
        rounds = rounds_per_window(glob.model) if is_statistics(glob.model) else fed.rounds
        _log_resume(first_window, first_round, rounds, n_windows, checkpoint)
        result.resumed_from.append(
            {"window": first_window, "round": first_round, "server_round": server_round}
        )
    # A statistics model's rounds: a Gram's sum is the same in every round of a window (one
    # round), ALS runs one iteration a round.
    rounds = rounds_per_window(glob.model) if is_statistics(glob.model) else fed.rounds
    for t in range(first_window, n_windows):
        n_items = data.n_items_known(t)
        start = first_round if t == first_window else 1
        if start == 1:  # a new window: the catalogue grows (a resumed window has grown)
            glob.grow(n_items)
            grow_strategy_state(strategy, glob.record())
        for r in range(start, rounds + 1):
            server_round += 1
            if ledger is None or ledger.allows(t, r):
                train_round(server, strategy, glob, (t, r, server_round), n_items)
                if ledger is not None:  # the shops trained: the round is spent
                    result.rounds[-1].epsilon = ledger.spend()
            if ledger is not None:
                result.privacy = ledger.report()
            save(t, r + 1)
        result.add_row(*evaluate_all(server, glob.record(), t, n_items))
        save(t + 1, 1)
    return result


def _ledger(cfg: Config, n_windows: int, result: RunResult) -> Ledger | None:
    """The privacy ledger of a DP run (None without ``federated.dp``), with the rounds a
    resumed run already spent."""
    dp = cfg.federated.dp
    if not dp.enabled:
        return None
    ledger = Ledger(dp, n_windows * cfg.federated.rounds)
    if result.privacy is not None:
        ledger.spent_rounds = int(result.privacy["rounds_trained"])
        ledger.stopped_at = result.privacy["stopped_at"]
    log.info(
        "user-level DP at each shop: noise multiplier %.4g, clip %g, user rate %g, %d steps a "
        "round; epsilon %.3f per round, %.3f over the %d planned rounds (delta %g)",
        ledger.sigma, dp.clip, dp.user_rate, dp.steps, ledger.epsilon(1),
        ledger.epsilon(ledger.planned_rounds), ledger.planned_rounds, dp.delta,
    )  # fmt: skip
    return ledger


def _log_resume(window: int, round_: int, rounds: int, n_windows: int, where: Path) -> None:
    if window >= n_windows:
        log.info("the checkpoint in %s is at the end of the schedule: nothing left to run", where)
    elif round_ > rounds:
        log.info("resuming at window %d evaluation from %s", window, where)
    else:
        log.info("resuming at window %d round %d from %s", window, round_, where)


def configure_train(
    server: Server,
    strategy: Strategy,
    arrays: ArrayRecord,
    step: tuple[int, int, int],
    n_items: int,
) -> list[Message]:
    """The train messages of round ``step``, once enough shops are connected: shops may have
    gone away since the start, and Flower's sampling would wait for them with no time limit,
    so wait ``federated.wait_timeout_s`` at most, then stop with a clear error."""
    cfg, fed = server.cfg, server.cfg.federated
    need = min(cfg.strategy.min_train_nodes, fed.min_shops)
    wait_for_shops(server.grid, need, fed.wait_timeout_s, "strategy.min_train_nodes")
    conf = train_config(step[0], step[1], n_items)
    return list(strategy.configure_train(step[2], arrays, conf, server.grid))


def train_round(
    server: Server,
    strategy: Strategy,
    glob: GlobalModel,
    step: tuple[int, int, int],
    n_items: int,
) -> None:
    """One round of training and aggregation at ``step`` = (window, round, server round);
    its log row, bytes and rejections go to the server's result."""
    cfg, result = server.cfg, server.result
    fed = cfg.federated
    t, r, server_round = step
    start = time.perf_counter()
    if is_statistics(glob.model):
        return statistics_round(server, strategy, glob, step, n_items)
    arrays = glob.record()
    messages = configure_train(server, strategy, arrays, step, n_items)
    spec = Spec.of(arrays)
    good, bad = server.exchange(
        messages, lambda content: decode_train_reply(content, spec, fed.max_examples), (t, r)
    )
    up = sum(record_bytes(reply.arrays) for _, reply in good)
    bounded = apply_bounds([x for _, x in good], arrays, fed.bounds, result.claims)
    node = {reply.shop: reply_node(msg, messages) for msg, reply in good}
    for shop, why in bounded.rejected:
        result.rejected.append(Rejection(t, r, "train", shop, node[shop], why))
        bad.append(shop)
    # The round's log counts the kept replies as the shops sent them (claims uncapped).
    replies = [x for (_, x), b in zip(good, bounded.replies, strict=True) if b is not None]
    good = [(m, b) for (m, _), b in zip(good, bounded.replies, strict=True) if b is not None]
    for msg, reply in good:  # strategies see exactly the checked, bounded arrays and weight
        msg.content = aggregable(reply)
    down = record_bytes(arrays) * len(messages)
    loss = None
    if good:
        agg, metrics = strategy.aggregate_train(server_round, [m for m, _ in good])
        if agg is not None:
            glob.load(agg)
        loss = None if metrics is None else metrics.get("train-loss")
    result.bytes_up += up
    result.bytes_down += down
    seconds = time.perf_counter() - start
    log.info(
        "window %2d/%d round %d/%d  shops %d/%d ok  loss %s  up %.1f MB  down %.1f MB  %.1fs",
        t, server.data.n_windows - 1, r, fed.rounds, len(good), len(messages),
        "-" if loss is None else f"{loss:.4f}", up / 1e6, down / 1e6, seconds,
    )  # fmt: skip
    result.rounds.append(
        _train_row(
            (t, r), len(messages), replies, bad, up, down, seconds, loss=loss,
            clipped=len(bounded.clipped), clipped_shops=";".join(bounded.clipped),
            capped_shops=";".join(bounded.capped),
        )
    )  # fmt: skip


def _train_row(
    step: tuple[int, int],
    asked: int,
    replies: list[TrainReply],
    bad: list[str],
    up: int,
    down: int,
    seconds: float,
    **extra: Any,
) -> RoundRow:
    """The ``rounds.csv`` row of a training round: the kept replies as the shops sent them
    (claims uncapped), the rejected shops, the bytes and seconds."""
    return RoundRow(
        window=step[0], round=step[1], unit="federated", shops=asked, ok=len(replies),
        rejected=len(bad), rejected_shops=";".join(bad),
        events=sum(x.new_events for x in replies),
        examples=sum(x.num_examples for x in replies),
        train_s=round(sum(x.train_s for x in replies), 3),
        train_cpu_s=round(sum(x.train_cpu_s for x in replies), 3),
        bytes_up=up, bytes_down=down, round_s=round(seconds, 3), **extra,
    )  # fmt: skip


def statistics_round(
    server: Server,
    strategy: Strategy,
    glob: GlobalModel,
    step: tuple[int, int, int],
    n_items: int,
) -> None:
    """A statistics model's round (:mod:`fedcl.federated.statistics`): every sampled shop
    sends its sums (a sparse Gram, or ALS's item-step sums after its user step), the server
    adds the checked ones and solves the shared part (sent with the next message). No
    strategy aggregates (the sum is the model); a reply whose mass per claimed user is far
    above the round's median is rejected (``federated.bounds.statistics_multiple``)."""
    cfg, result = server.cfg, server.result
    fed = cfg.federated
    t, r, server_round = step
    start = time.perf_counter()
    sent = glob.record() if needs_model(glob.model) else ArrayRecord({})
    messages = configure_train(server, strategy, sent, step, n_items)

    def decode(content: RecordDict) -> TrainReply:
        reply = decode_statistics_reply(content, glob.model, n_items, fed.max_examples)
        if reply.num_examples > server.max_users(reply.shop):  # the users the sums are over
            raise Rejected(
                f"claims {reply.num_examples} users, more than the {server.max_users(reply.shop)}"
                " a shop may have"
            )
        return reply

    good, bad = server.exchange(messages, decode, (t, r))
    node = {reply.shop: reply_node(msg, messages) for msg, reply in good}
    replies, too_big = bound_statistics(
        glob.model, [x for _, x in good], fed.bounds.statistics_multiple if fed.bounds.enabled
        else 0, fed.bounds.min_replies,
    )  # fmt: skip
    for shop, why in too_big:
        log.warning("rejected statistics of shop %s: %s", shop, why)
        result.rejected.append(Rejection(t, r, "train", shop, node[shop], why))
        bad.append(shop)
    if replies:
        glob.model.fit(total(glob.model, replies, n_items))
    up = sum(record_bytes(x.arrays) for x in replies)
    down = record_bytes(sent) * len(messages)
    result.bytes_up += up
    result.bytes_down += down
    seconds = time.perf_counter() - start
    log.info(
        "window %2d/%d round %d/%d  statistics of shops %d/%d summed  up %.1f MB  %.1fs",
        t, server.data.n_windows - 1, r, rounds_per_window(glob.model), len(good), len(messages),
        up / 1e6, seconds,
    )  # fmt: skip
    result.rounds.append(_train_row((t, r), len(messages), replies, bad, up, down, seconds))


def evaluate_all(
    server: Server, arrays: ArrayRecord, window: int, n_items: int
) -> tuple[Row, ForwardCells | None]:
    """Every shop evaluates the model; returns its R-matrix row ``{variant: [{shop: cell} per
    window]}`` and forward cells ``{variant: {shop: cell}}`` (None: no next window).

    The shops' fine-tuning (personalisation) is training too: its cost is in the step's row."""
    start = time.perf_counter()
    conf = evaluate_config(window, n_items)
    messages = [
        Message(
            content=RecordDict({ARRAYS: arrays, CONFIG: conf}),
            message_type=MessageType.EVALUATE,
            dst_node_id=node,
        )
        for node in server.grid.get_node_ids()
    ]

    def decode(content: RecordDict) -> EvalReply:
        return decode_eval_reply(content, server.row_spec(_claimed_shop(content), window))

    good, bad = server.exchange(messages, decode, (window, 0))
    down = record_bytes(arrays) * len(messages)
    server.result.bytes_down += down
    n_windows = server.data.n_windows
    row: Row = {v: [{} for _ in range(n_windows)] for v in server.cfg.eval.variants}
    tuned = [reply.finetune for _, reply in good if reply.finetune is not None]
    forward: ForwardCells | None = None
    if 0 <= window < n_windows - 1:
        forward = {v: {} for v in server.cfg.eval.variants}
    for _, reply in good:
        for v, cells in reply.cells.items():
            for i, cell in enumerate(cells):
                row[v][i][reply.shop] = cell
        for v, cell in (reply.forward or {}).items():
            forward[v][reply.shop] = cell
    server.result.rounds.append(
        RoundRow(
            window=window, round=0, unit="evaluate", shops=len(messages), ok=len(good),
            rejected=len(bad), rejected_shops=";".join(bad),
            examples=sum(c.examples for c in tuned),
            train_s=round(sum(c.seconds for c in tuned), 3),
            train_cpu_s=round(sum(c.cpu_s for c in tuned), 3),
            eval_s=round(time.perf_counter() - start, 3), bytes_down=down,
        )
    )  # fmt: skip
    return row, forward


def _claimed_shop(content: RecordDict) -> str:
    """The shop name a reply claims, for the bound on its user counts ("" if none)."""
    try:
        return str(content.config_records[SHOP][SHOP])
    except (KeyError, TypeError):
        return ""


def write_report(
    cfg: Config, result: RunResult, out_dir: Path, config_yaml: str, wall_s: float
) -> dict:
    """metrics.json and the rest of the run directory for a federated run."""
    from fedcl.data.prepare import data_digest

    data = server_plan(cfg)
    return report.write_report(
        out_dir,
        result,
        mode="federated",
        eval_cfg=cfg.eval,
        seed=cfg.seed,
        shops=data.shops,
        data_sha256=data.digest if isinstance(data, Plan) else data_digest(cfg.data),
        config_yaml=config_yaml,
        wall_s=wall_s,
        training=_training(cfg),
    )


def _training(cfg: Config) -> dict:
    note = training_note(cfg.model)
    if note:
        return {"epochs_per_window": 0, "solved": note}
    s = Schedule.of(cfg.federated, cfg.train.epochs)
    return {
        "epochs_per_window": s.epochs_per_window,
        "rounds": s.rounds,
        "epochs_per_round": s.per_round,
        "finetune_epochs": s.finetune,
    }

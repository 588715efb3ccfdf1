"""The shop's Flower ClientApp (thin): messages in, :class:`fedcl.shop.agent.ShopAgent` calls,
typed replies out through :mod:`fedcl.federated.protocol`.

Which shop a node is: ``node_config["shop"]`` (deployment) or the ``partition-id``-th shop
of the data (simulation). Where its state lives: ``node_config["state-dir"]`` or
``federated.state_dir``. Where its events come from: with ``node_config["events"]`` (the
shop's own log) and ``node_config["plan"]`` (the operator's plan directory) the shop reads
only its own log (:mod:`fedcl.shop.ingest`); otherwise the run's prepared data.

A malformed instruction raises: Flower's runtime answers the server with an error reply.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedcl.config import Config, config_from_run
from fedcl.data.sources.csv import CsvConfig
from fedcl.device import resolve_device
from fedcl.errors import ConfigError
from fedcl.federated.attacks import attack, is_attacker
from fedcl.federated.protocol import (
    ARRAYS,
    encode_eval_reply,
    encode_train_reply,
    from_record,
    read_instruction,
)
from fedcl.run_data import run_data
from fedcl.shop.agent import ShopAgent
from fedcl.shop.ingest import EventLog


def _own_log(cfg: Config, node: Mapping[str, Any]) -> EventLog | None:
    """The shop's own event log and the plan, when the node config names them."""
    events, plan = node.get("events"), node.get("plan")
    if not events and not plan:
        return None
    if not (events and plan and node.get("shop")):
        raise ConfigError(
            "a shop reading its own log needs node config shop=..., events=<log file> and "
            f"plan=<plan dir> together; got {sorted(k for k in node if node[k])}"
        )
    layout = cfg.data if isinstance(cfg.data, CsvConfig) else CsvConfig()
    limit = int(node.get("max-line-bytes", EventLog.max_line_bytes))
    if limit < 1024:
        raise ConfigError(f"node config max-line-bytes must be >= 1024; got {limit}")
    return EventLog(
        str(events), str(plan), layout, cfg.data.validation, cfg.data.shops, max_line_bytes=limit
    )


def _agent(cfg: Config, context: Context) -> ShopAgent:
    node = context.node_config
    own = _own_log(cfg, node)
    shop = node.get("shop")
    if not shop:
        shop = run_data(cfg.data, cfg.eval).shops[int(node["partition-id"])]
    state_dir = str(node.get("state-dir") or cfg.federated.state_dir or "shop-state")
    torch.set_num_threads(max(1, int(cfg.federated.cpus_per_shop)))
    reset = str(node.get("reset-corrupt-state", "false")).lower() in ("true", "1", "yes")
    device = resolve_device(cfg.device)
    return ShopAgent(cfg, str(shop), state_dir, device, data=own, reset_corrupt=reset)


def make_client_app(cfg: Config | None = None) -> ClientApp:
    """A ClientApp for ``cfg`` (simulation), or reading the run config (``flwr run``)."""
    app = ClientApp()

    def config(context: Context) -> Config:
        return cfg if cfg is not None else config_from_run(context.run_config)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        agent = _agent(config(context), context)
        ins = read_instruction(msg.content)
        shared = from_record(msg.content[ARRAYS], agent.device)
        reply = agent.train(shared, ins.window, ins.n_items, ins.proximal_mu)
        bad = config(context).federated.attack  # research/simulation only: a simulated attacker
        if is_attacker(bad, context.node_config):
            seed = int(context.node_config["partition-id"]) * 7919 + ins.window * 100 + ins.round
            reply = attack(reply, shared, bad, seed)
        return Message(content=encode_train_reply(reply), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        agent = _agent(config(context), context)
        ins = read_instruction(msg.content)
        shared = from_record(msg.content[ARRAYS], agent.device)
        reply = agent.evaluate(shared, ins.window, ins.n_items)
        return Message(content=encode_eval_reply(reply), reply_to=msg)

    return app

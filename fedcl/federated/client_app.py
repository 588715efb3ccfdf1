"""The shop agent: a thin Flower ClientApp around :class:`fedcl.federated.shop.ShopAgent`.

Which shop a node is: ``node_config["shop"]`` (deployment) or the ``partition-id``-th shop
of the data (simulation). Where its state lives: ``node_config["state-dir"]`` or
``federated.state_dir``. Where its events come from: with ``node_config["events"]`` (the
shop's own log) and ``node_config["plan"]`` (the operator's plan directory) the shop reads
only its own log (:mod:`fedcl.federated.ingest`); otherwise the run's prepared data.
"""

from __future__ import annotations

from typing import Any

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedcl.config import Config, config_from_run
from fedcl.data.sources.csv import CsvConfig
from fedcl.device import resolve_device
from fedcl.errors import ConfigError
from fedcl.federated.ingest import EventLog
from fedcl.federated.records import ARRAYS, CONFIG, METRICS, from_record, to_record
from fedcl.federated.shop import ShopAgent, shop_data

SHOP = "shop"


def _own_log(cfg: Config, node: Any) -> EventLog | None:
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
    return EventLog(str(events), str(plan), layout, cfg.data.validation, cfg.data.shops)


def _agent(cfg: Config, context: Context) -> ShopAgent:
    node = context.node_config
    own = _own_log(cfg, node)
    shop = node.get("shop")
    if not shop:
        shop = shop_data(cfg).shops[int(node["partition-id"])]
    state_dir = str(node.get("state-dir") or cfg.federated.state_dir or "shop-state")
    torch.set_num_threads(max(1, int(cfg.federated.cpus_per_shop)))
    return ShopAgent(cfg, str(shop), state_dir, resolve_device(cfg.device), data=own)


def make_client_app(cfg: Config | None = None) -> ClientApp:
    """A ClientApp for ``cfg`` (simulation), or reading the run config (``flwr run``)."""
    app = ClientApp()

    def config(context: Context) -> Config:
        return cfg if cfg is not None else config_from_run(context.run_config)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        agent = _agent(config(context), context)
        conf: Any = msg.content[CONFIG]
        shared = from_record(msg.content[ARRAYS], agent.device)
        arrays, metrics = agent.train(shared, int(conf["window"]), int(conf["n-items"]))
        content = RecordDict({ARRAYS: to_record(arrays), METRICS: MetricRecord(metrics)})
        return Message(content=content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        agent = _agent(config(context), context)
        conf: Any = msg.content[CONFIG]
        shared = from_record(msg.content[ARRAYS], agent.device)
        metrics = agent.evaluate(shared, int(conf["window"]), int(conf["n-items"]))
        content = RecordDict(
            {METRICS: MetricRecord(metrics), SHOP: ConfigRecord({SHOP: agent.shop})}
        )
        return Message(content=content, reply_to=msg)

    return app


#: For ``flwr run`` (pyproject ``[tool.flwr.app.components]``).
app = make_client_app()

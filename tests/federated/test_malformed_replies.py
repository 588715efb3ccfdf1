"""One misbehaving shop cannot abort a run or write a figure: the server loop (on the
in-process grid) rejects each malformed reply with the shop's name and the reason, counts it
for that shop, and keeps everything of it out of ``metrics.json``."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from fedcl.federated.local_grid import FIRST_NODE, LocalGrid
from fedcl.federated.protocol import METRICS, SHOP
from fedcl.federated.server_loop import run_federated, write_report
from fedcl.run_data import run_data

pytestmark = pytest.mark.usefixtures("server_identity")

BAD = FIRST_NODE + 1  # the misbehaving shop's node (partition 1)
FIRST_SHOP = "shop_00"  # partition 0's shop, whose name the bad shop borrows
Tamper = Callable[[RecordDict], None]


def _metrics(content: RecordDict, **changes) -> None:
    m = dict(content.metric_records[METRICS])
    for k, v in changes.items():
        if v is None:
            m.pop(k.replace("_", "-"), None)
        else:
            m[k.replace("_", "-")] = v
    content[METRICS] = MetricRecord(m)


def _cells(content: RecordDict, value: float, users: int) -> None:
    m = dict(content.metric_records[METRICS])
    for k in m:
        if "/ndcg@10/" in k:
            m[k] = value
        if "/n_users/" in k:
            m[k] = users
    content[METRICS] = MetricRecord(m)


def _name(content: RecordDict, name: str) -> None:
    content[SHOP] = ConfigRecord({SHOP: name})


def _drop(content: RecordDict, name: str) -> None:
    del content[name]


TRAIN_ATTACKS: dict[str, Tamper] = {
    "extra metric key": lambda c: _metrics(c, surprise=1.0),
    "missing train-loss": lambda c: _metrics(c, train_loss=None),
    "train-s as a list": lambda c: _metrics(c, train_s=[1.0, 2.0]),
    "second ArrayRecord": lambda c: c.__setitem__("more", ArrayRecord()),
    "second MetricRecord": lambda c: c.__setitem__("more", MetricRecord({"x": 1.0})),
    "another shop's name": lambda c: _name(c, FIRST_SHOP),
}
EVAL_ATTACKS: dict[str, Tamper] = {
    "no shop record": lambda c: _drop(c, SHOP),
    "ndcg 1e6 over 1e9 users": lambda c: _cells(c, 1e6, 10**9),
    "NaN cells": lambda c: _cells(c, math.nan, 5),
    "another shop's name": lambda c: _name(c, FIRST_SHOP),
}


class TamperingGrid(LocalGrid):
    """Shop partition 1 tampers with its replies of one kind after the baseline evaluation
    (so the server already knows its name)."""

    def __init__(self, cfg, n_shops: int, kind: str, tamper: Tamper) -> None:
        super().__init__(cfg, n_shops)
        self.kind, self.tamper = kind, tamper

    def _handle(self, msg: Message) -> Message:
        reply = super()._handle(msg)
        mine = msg.metadata.dst_node_id == BAD and msg.metadata.message_type == self.kind
        trained = int(msg.content["config"]["window"]) >= 0  # not the baseline evaluation
        if mine and trained and not reply.has_error():
            self.tamper(reply.content)
        return reply


def _run(tiny_cfg, tmp_path, kind: str, tamper: Tamper):
    """The run's result and report, and the names of the bad shop and of another one."""
    cfg = tiny_cfg("data.n_periods=2", "federated.min_users=1")
    grid = TamperingGrid(cfg, 3, kind, tamper)
    result = run_federated(grid, cfg, tmp_path / "ckpt")
    doc = write_report(cfg, result, tmp_path / "run", "mode: federated\n", 1.0)
    shops = run_data(cfg.data, cfg.eval).shops
    return result, doc, shops[BAD - FIRST_NODE], shops[0]


@pytest.mark.parametrize("attack", TRAIN_ATTACKS)
def test_a_malformed_train_reply_is_rejected_by_shop_and_the_run_completes(
    tiny_cfg, tmp_path, attack
):
    result, doc, bad, _ = _run(tiny_cfg, tmp_path, MessageType.TRAIN, TRAIN_ATTACKS[attack])

    assert len(doc["r_matrix"]) == 2  # the run went to the end
    rejected = [r for r in result.rejected if r.kind == "train"]
    assert len(rejected) == 2  # one per round, each with the shop's name and a reason
    assert {r.shop for r in rejected} == {bad} and all(r.why for r in rejected)
    assert doc["rejected_per_shop"] == {bad: 2}
    rows = list(csv.DictReader((tmp_path / "run" / "rounds.csv").open()))
    trained = [r for r in rows if r["unit"] == "federated"]
    assert [(r["ok"], r["rejected"], r["rejected_shops"]) for r in trained] == [("2", "1", bad)] * 2


@pytest.mark.parametrize("attack", EVAL_ATTACKS)
def test_a_malformed_evaluate_reply_never_reaches_the_metrics(tiny_cfg, tmp_path, attack):
    result, doc, bad, good = _run(tiny_cfg, tmp_path, MessageType.EVALUATE, EVAL_ATTACKS[attack])

    rejected = [r for r in result.rejected if r.kind == "evaluate"]
    assert [(r.window, r.shop) for r in rejected] == [(0, bad), (1, bad)]
    # Nothing of the bad shop's trained-model rows is reported; its baseline was honest.
    assert doc["per_shop"][bad]["n_users"] == [[0, 0], [0, 0]]
    assert doc["per_shop"][good]["n_users"][0][0] > 0  # the honest shop is not displaced
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for row in on_disk["r_matrix"]:
        assert all(v is None or 0.0 <= v <= 1.0 for v in row)
    assert 0.0 <= on_disk["continual"]["acc"] <= 1.0
    assert on_disk["rejected_per_shop"] == {bad: 2}

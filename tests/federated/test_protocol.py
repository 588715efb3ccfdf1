"""The shop-server protocol: honest replies round-trip exactly, every malformed one is
rejected with its reason, and a shop cannot answer under another shop's name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.supercore.task_identity import TaskIdentity

from fedcl.federated.protocol import (
    ARRAYS,
    CONFIG,
    METRICS,
    SHOP,
    Rejected,
    RowSpec,
    ShopRoster,
    Spec,
    decode_eval_reply,
    decode_train_reply,
    encode_eval_reply,
    encode_train_reply,
    read_instruction,
    reply_node,
    to_record,
    train_config,
)
from fedcl.shop.replies import EvalReply, TrainingCost, TrainReply

SPEC_RECORD = ArrayRecord(
    {
        "item_emb.weight": Array(np.zeros((5, 3), np.float32)),
        "item_bias": Array(np.zeros(5, np.float32)),
    }
)
SPEC = Spec.of(SPEC_RECORD)
GOOD = {"item_emb.weight": np.ones((5, 3), np.float32), "item_bias": np.ones(5, np.float32)}
ROW = RowSpec(("new", "repeat"), 2, ("hr@10", "ndcg@10", "mrr"), max_users=50)


def _train(arrays=GOOD, **changes) -> TrainReply:
    fields = {
        "shop": "shop_a",
        "arrays": {k: torch.from_numpy(v) for k, v in arrays.items()},
        "num_examples": 10,
        "train_loss": 0.5,
        "new_events": 4,
        "train_s": 0.1,
        "train_cpu_s": 0.1,
    }
    return TrainReply(**{**fields, **changes})


def _eval(**changes) -> EvalReply:
    cell = {"n_users": 7, "hr@10": 0.5, "ndcg@10": 0.25, "mrr": 0.125}
    cells = {v: [dict(cell), {"n_users": 0}] for v in ("new", "repeat")}
    return EvalReply(**{"shop": "shop_a", "cells": cells, **changes})


# --- train replies --------------------------------------------------------------------------
def test_an_honest_train_reply_round_trips():
    sent = _train()

    got = decode_train_reply(encode_train_reply(sent), SPEC, 1e6)

    assert (got.shop, got.num_examples, got.train_loss, got.new_events) == ("shop_a", 10, 0.5, 4)
    assert set(got.arrays.keys()) == set(GOOD)


@pytest.mark.parametrize(
    ("arrays", "n", "why"),
    [
        ({**GOOD, "item_bias": np.array([1, np.nan, 1, 1, 1], np.float32)}, 10, "non-finite"),
        ({**GOOD, "item_bias": np.array([1, np.inf, 1, 1, 1], np.float32)}, 10, "non-finite"),
        ({**GOOD, "item_bias": np.ones(6, np.float32)}, 10, "shape"),
        ({**GOOD, "item_bias": np.ones(5, np.float64)}, 10, "dtype"),
        ({"item_emb.weight": GOOD["item_emb.weight"]}, 10, "missing"),
        ({**GOOD, "user_emb.weight": np.ones((7, 3), np.float32)}, 10, "extra"),
        (GOOD, 10**9, "num-examples"),
        (GOOD, 0, "num-examples"),
    ],
)
def test_bad_arrays_or_weight_are_rejected_with_their_reason(arrays, n, why):
    content = encode_train_reply(_train(arrays, num_examples=n))

    with pytest.raises(Rejected, match=why):
        decode_train_reply(content, SPEC, 1e6)


def _tamper(content: RecordDict, record: str, key: str, value) -> RecordDict:
    metrics = dict(content.metric_records[METRICS])
    if value is None:
        del metrics[key]
    else:
        metrics[key] = value
    content[record] = MetricRecord(metrics)
    return content


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("surprise", 1.0, "unexpected"),  # Flower: InconsistentMessageReplies
        ("train-loss", None, "missing"),  # Flower: InconsistentMessageReplies
        ("train-s", [1.0, 2.0], "expected a finite number"),  # was a TypeError
        ("train-s", -1.0, "expected a value in"),
        ("num-examples", float("nan"), "expected an integer"),
        ("num-examples", 2.5, "expected an integer"),
        ("train-loss", float("inf"), "finite"),
        ("new-events", -3, "expected a value in"),
    ],
)
def test_malformed_train_metrics_are_rejected(key, value, why):
    content = _tamper(encode_train_reply(_train()), METRICS, key, value)

    with pytest.raises(Rejected, match=why):
        decode_train_reply(content, SPEC, 1e6)


@pytest.mark.parametrize(
    ("name", "record", "why"),
    [
        ("more", MetricRecord({"x": 1.0}), "MetricRecords"),  # a second MetricRecord
        ("more", SPEC_RECORD, "ArrayRecords"),  # a second ArrayRecord
    ],
)
def test_extra_records_are_rejected(name, record, why):
    content = encode_train_reply(_train())
    content[name] = record

    with pytest.raises(Rejected, match=why):
        decode_train_reply(content, SPEC, 1e6)


@pytest.mark.parametrize("shop", [ConfigRecord({}), ConfigRecord({SHOP: 3}), None])
def test_a_reply_without_a_proper_shop_name_is_rejected(shop):
    content = encode_train_reply(_train())
    del content[SHOP]
    if shop is not None:
        content[SHOP] = shop

    with pytest.raises(Rejected):
        decode_train_reply(content, SPEC, 1e6)


# --- evaluate replies -----------------------------------------------------------------------
def test_an_honest_evaluate_reply_round_trips():
    sent = _eval(finetune=TrainingCost(examples=12, seconds=0.5, cpu_s=0.4))

    got = decode_eval_reply(encode_eval_reply(sent), ROW)

    assert got == sent


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("new/ndcg@10/0", 1e6, r"expected a value in \[0, 1\]"),  # ACC 999999.9 in metrics.json
        ("new/n_users/0", 10**9, "more users than the shop can have"),
        ("new/n_users/0", -1, "expected a value in"),
        ("new/ndcg@10/0", float("nan"), "finite"),  # NaN cells were written
        ("new/ndcg@10/1", 0.5, "0 users"),  # a metric for a cell of no user
        ("new/ndcg@10/0", None, "missing metric key"),
        ("new/n_users/1", None, "missing metric key"),
        ("new/ndcg@10/7", 0.5, "unexpected metric keys"),  # a window that does not exist
        ("bogus/ndcg@10/0", 0.5, "unexpected metric keys"),
        ("finetune-s", 1.0, "fine-tuning cost"),  # one of three cost keys
        ("new/n_users/0", 2.5, "expected an integer"),
        ("new/withheld/0", 1, "withheld"),  # a withheld mark on a cell that has users
        ("new/withheld/1", 7, "expected 1"),
    ],
)
def test_malformed_evaluate_replies_are_rejected(key, value, why):
    content = _tamper(encode_eval_reply(_eval()), METRICS, key, value)

    with pytest.raises(Rejected, match=why):
        decode_eval_reply(content, ROW)


def test_a_withheld_cell_round_trips_as_withheld():
    sent = _eval()
    sent.cells["new"][1] = {"n_users": 0, "withheld": 1}

    got = decode_eval_reply(encode_eval_reply(sent), ROW)

    assert got.cells["new"][1] == {"n_users": 0, "withheld": 1}
    assert got.cells["repeat"][1] == {"n_users": 0}


def test_an_evaluate_reply_without_its_shop_record_is_rejected():
    content = encode_eval_reply(_eval())
    del content[SHOP]  # was KeyError: 'shop' in the server loop

    with pytest.raises(Rejected, match="ConfigRecords"):
        decode_eval_reply(content, ROW)


# --- instructions ---------------------------------------------------------------------------
def test_the_instruction_carries_fedprox_mu_as_flower_sends_it():
    conf = train_config(2, 1, 40)
    conf["proximal-mu"] = 0.1  # what FedProx.configure_train adds
    content = RecordDict({ARRAYS: SPEC_RECORD, CONFIG: conf})

    ins = read_instruction(content)

    assert (ins.window, ins.round, ins.n_items, ins.proximal_mu) == (2, 1, 40, 0.1)


def test_a_malformed_instruction_is_refused():
    content = RecordDict({ARRAYS: SPEC_RECORD, CONFIG: ConfigRecord({"window": "x"})})

    with pytest.raises(Rejected, match="bad instruction"):
        read_instruction(content)


# --- who is who -----------------------------------------------------------------------------
def test_a_shop_cannot_answer_under_another_shops_name():
    roster = ShopRoster(["shop_a", "shop_b"])
    roster.claim(11, "shop_a", online={11, 12})
    roster.claim(12, "shop_b", online={11, 12})

    with pytest.raises(Rejected, match="already answers from node 11"):
        roster.claim(13, "shop_a", online={11, 12, 13})
    with pytest.raises(Rejected, match="is shop 'shop_b'"):
        roster.claim(12, "shop_a", online={11, 12})
    with pytest.raises(Rejected, match="not a member"):
        roster.claim(14, "shop_z", online={11, 12, 14})
    assert roster.name(12) == "shop_b" and roster.name(99) == "node 99"


def test_a_restarted_shop_may_answer_from_a_new_node_once_the_old_one_left():
    roster = ShopRoster()
    roster.claim(11, "shop_a", online={11})

    roster.claim(21, "shop_a", online={21})

    assert roster.name(21) == "shop_a" and roster.name(11) == "node 11"


def test_to_record_roundtrip_is_exact():
    state = {"a": torch.randn(4, 2), "b": torch.arange(3)}

    back = to_record(state).to_torch_state_dict()

    assert all(torch.equal(state[k], back[k]) for k in state)


def test_an_error_reply_is_charged_to_the_node_it_answers_for():
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    try:
        sent = [
            Message(RecordDict(), dst_node_id=node, message_type=MessageType.TRAIN)
            for node in (11, 12)
        ]
        for i, m in enumerate(sent):
            m.metadata.__dict__["_message_id"] = f"m{i}"  # set by the grid when pushed
        # A dead node's error reply comes from the SuperLink (node 1), not from the node.
        reply = Message(Error(code=0, reason="Node Unavailable"), reply_to=sent[1])
        reply.metadata.__dict__["_src_node_id"] = 1
        node = reply_node(reply, sent)
    finally:
        TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None

    assert node == 12

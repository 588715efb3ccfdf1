"""Bad replies never reach the aggregate."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedcl.federated.records import ARRAYS, METRICS, Spec, reply_problem, to_record, valid_replies

SPEC_RECORD = ArrayRecord(
    {
        "item_emb.weight": Array(np.zeros((5, 3), np.float32)),
        "item_bias": Array(np.zeros(5, np.float32)),
    }
)


def _reply(arrays: dict[str, np.ndarray], n: float = 10) -> RecordDict:
    return RecordDict(
        {
            ARRAYS: ArrayRecord({k: Array(v) for k, v in arrays.items()}),
            METRICS: MetricRecord({"num-examples": n}),
        }
    )


GOOD = {"item_emb.weight": np.ones((5, 3), np.float32), "item_bias": np.ones(5, np.float32)}


def test_good_reply_passes():
    assert reply_problem(_reply(GOOD), Spec.of(SPEC_RECORD), 1e6) is None


@pytest.mark.parametrize(
    ("arrays", "n", "why"),
    [
        ({**GOOD, "item_bias": np.array([1, np.nan, 1, 1, 1], np.float32)}, 10, "non-finite"),
        ({**GOOD, "item_bias": np.array([1, np.inf, 1, 1, 1], np.float32)}, 10, "non-finite"),
        ({**GOOD, "item_bias": np.ones(6, np.float32)}, 10, "shape"),
        ({**GOOD, "item_bias": np.ones(5, np.float64)}, 10, "dtype"),
        ({"item_emb.weight": GOOD["item_emb.weight"]}, 10, "missing"),
        ({**GOOD, "user_emb.weight": np.ones((7, 3), np.float32)}, 10, "extra"),
        (GOOD, 1e9, "num-examples"),
        (GOOD, 0, "num-examples"),
        (GOOD, float("nan"), "num-examples"),
    ],
)
def test_bad_reply_is_rejected_with_its_reason(arrays, n, why):
    problem = reply_problem(_reply(arrays, n), Spec.of(SPEC_RECORD), 1e6)

    assert problem is not None and why in problem


def test_to_record_roundtrip_is_exact():
    import torch

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
        _, rejected = valid_replies([reply], Spec({}, {}), 1e8, sent)
    finally:
        TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None

    assert rejected == [(12, "error reply: Node Unavailable")]

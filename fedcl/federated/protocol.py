"""The bridge between a model's shared state and Flower records, and reply validation.

Only :meth:`Recommender.shared_state` crosses the shop boundary. Every train reply is checked
against the global model's keys, shapes and dtypes, and for finite values, *before* a strategy
aggregates it: Flower checks record keys only, and one NaN reply poisons FedAvg.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import ArrayRecord, Message

log = logging.getLogger("fedcl.federated")

#: Message keys, as constants (Flower's strategies use "arrays", "config", "metrics").
ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
NUM_EXAMPLES = "num-examples"


def to_record(state: dict[str, torch.Tensor]) -> ArrayRecord:
    """An ArrayRecord of a (shared) state dict, on CPU."""
    return ArrayRecord({k: v.detach().cpu().contiguous() for k, v in state.items()})


def from_record(record: ArrayRecord, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in record.to_torch_state_dict().items()}


def record_bytes(record: ArrayRecord) -> int:
    """Payload bytes of an ArrayRecord (the serialized arrays)."""
    return int(sum(len(a.data) for a in record.values()))


@dataclass(frozen=True)
class Spec:
    """What a valid reply's arrays look like: the global model's keys, shapes, dtypes."""

    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]

    @classmethod
    def of(cls, record: ArrayRecord) -> Spec:
        return cls(
            {k: tuple(a.shape) for k, a in record.items()},
            {k: str(a.dtype) for k, a in record.items()},
        )


def reply_problem(content, spec: Spec, max_examples: float) -> str | None:
    """Why a train reply's content cannot be aggregated, or None when it is fine."""
    if ARRAYS not in content.array_records:
        return "no ArrayRecord 'arrays'"
    if METRICS not in content.metric_records:
        return "no MetricRecord 'metrics'"
    arrays = content.array_records[ARRAYS]
    keys = set(arrays.keys())
    if keys != set(spec.shapes):
        missing, extra = sorted(set(spec.shapes) - keys), sorted(keys - set(spec.shapes))
        return f"keys differ from the global model (missing {missing}, extra {extra})"
    for k, a in arrays.items():
        if tuple(a.shape) != spec.shapes[k]:
            return f"array {k!r} has shape {tuple(a.shape)}, expected {spec.shapes[k]}"
        if str(a.dtype) != spec.dtypes[k]:
            return f"array {k!r} has dtype {a.dtype}, expected {spec.dtypes[k]}"
        if not np.isfinite(a.numpy()).all():
            return f"array {k!r} has non-finite values"
    n = content.metric_records[METRICS].get(NUM_EXAMPLES)
    if not isinstance(n, (int, float)) or not np.isfinite(n) or n <= 0 or n > max_examples:
        return f"'{NUM_EXAMPLES}' is {n!r}, expected a number in (0, {max_examples:g}]"
    return None


def reply_node(msg: Message, sent: list[Message]) -> int:
    """The node a reply answers for: the destination of the message it replies to (an error
    reply for a dead node comes from the SuperLink, not from the node), else its sender."""
    for out in sent:
        if out.metadata.message_id and out.metadata.message_id == msg.metadata.reply_to_message_id:
            return out.metadata.dst_node_id
    return msg.metadata.src_node_id


def valid_replies(
    replies: list[Message], spec: Spec, max_examples: float, sent: list[Message] = ()
) -> tuple[list[Message], list[tuple[int, str]]]:
    """Split train replies to the messages ``sent`` into those fit to aggregate and
    (node id, reason) rejections."""
    good, rejected = [], []
    for msg in replies:
        if msg.has_error():
            rejected.append((reply_node(msg, sent), f"error reply: {msg.error.reason}"))
            continue
        problem = reply_problem(msg.content, spec, max_examples)
        if problem is None:
            good.append(msg)
        else:
            rejected.append((reply_node(msg, sent), problem))
    for node, why in rejected:
        log.warning("rejected reply from node %s: %s", node, why)
    return good, rejected

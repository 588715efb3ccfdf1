"""The shop-server protocol: every message key, the instructions' config records, and one
codec per reply kind.

A shop encodes its typed replies (:mod:`fedcl.shop.replies`) with :func:`encode_train_reply`
and :func:`encode_eval_reply`. The server decodes every reply with :func:`decode_train_reply`
or :func:`decode_eval_reply`, which return the typed reply or raise :class:`Rejected` with the
reason: exactly the expected records and keys, the right types, finite values in range
(ranking metrics in [0, 1], user counts within what the shop could have, non-negative
seconds), arrays with the global model's keys, shapes and dtypes. A :class:`ShopRoster`
checks that a reply's shop name belongs to the node the message went to. Nothing a shop
sends reaches a strategy or the report without passing here: Flower itself checks record
keys only, and one NaN reply poisons FedAvg.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedcl.evaluation import Cell
from fedcl.shop.replies import WITHHELD, EvalReply, TrainingCost, TrainReply

# --- record names and keys ----------------------------------------------------------------
#: Record names (Flower's strategies use "arrays", "config" and "metrics").
ARRAYS, CONFIG, METRICS, SHOP = "arrays", "config", "metrics", "shop"
#: Keys of the instructions' config record (``proximal-mu`` is written by Flower's FedProx).
WINDOW, ROUND, N_ITEMS, PROXIMAL_MU = "window", "round", "n-items", "proximal-mu"
#: Keys of a train reply's metric record (``num-examples`` is Flower's aggregation weight).
NUM_EXAMPLES, TRAIN_LOSS, NEW_EVENTS = "num-examples", "train-loss", "new-events"
TRAIN_S, TRAIN_CPU_S = "train-s", "train-cpu-s"
TRAIN_METRICS = frozenset({NUM_EXAMPLES, TRAIN_LOSS, NEW_EVENTS, TRAIN_S, TRAIN_CPU_S})
#: What a strategy aggregates of a train reply (the rest is the server's bookkeeping).
AGGREGATED_METRICS = (NUM_EXAMPLES, TRAIN_LOSS)
#: Keys of an evaluate reply's personalisation cost (all three or none).
FINETUNE_EXAMPLES, FINETUNE_S, FINETUNE_CPU_S = "finetune-examples", "finetune-s", "finetune-cpu-s"
FINETUNE_METRICS = frozenset({FINETUNE_EXAMPLES, FINETUNE_S, FINETUNE_CPU_S})
#: The evaluate instruction's window for "the untrained model" (FWT's baseline row).
UNTRAINED = -1
#: Longest shop name accepted.
MAX_NAME = 200


class Rejected(Exception):
    """A reply that cannot be used; the message is the reason."""


# --- instructions ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Instruction:
    """What the server asks: train (or evaluate the model after) ``window`` with a catalogue
    of ``n_items``; FedProx's ``proximal_mu`` comes with the train config, as Flower sends it."""

    window: int
    n_items: int
    round: int = 0
    proximal_mu: float = 0.0


def train_config(window: int, round_: int, n_items: int) -> ConfigRecord:
    return ConfigRecord({WINDOW: window, ROUND: round_, N_ITEMS: n_items})


def evaluate_config(window: int, n_items: int) -> ConfigRecord:
    return ConfigRecord({WINDOW: window, N_ITEMS: n_items})


def read_instruction(content: RecordDict) -> Instruction:
    """The instruction of a train or evaluate message (raises :class:`Rejected`)."""
    if CONFIG not in content.config_records or ARRAYS not in content.array_records:
        raise Rejected(f"an instruction needs ConfigRecord {CONFIG!r} and ArrayRecord {ARRAYS!r}")
    conf = content.config_records[CONFIG]
    window, n_items = conf.get(WINDOW), conf.get(N_ITEMS)
    if not _is_int(window) or window < UNTRAINED or not _is_int(n_items) or n_items < 1:
        raise Rejected(f"bad instruction: window={window!r}, n-items={n_items!r}")
    mu = conf.get(PROXIMAL_MU, 0.0)
    if not _is_number(mu) or mu < 0:
        raise Rejected(f"bad instruction: {PROXIMAL_MU}={mu!r}, expected a number >= 0")
    return Instruction(int(window), int(n_items), int(conf.get(ROUND, 0)), float(mu))


# --- arrays ---------------------------------------------------------------------------------
def to_record(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
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

    def check(self, arrays: ArrayRecord) -> None:
        keys = set(arrays.keys())
        if keys != set(self.shapes):
            missing, extra = sorted(set(self.shapes) - keys), sorted(keys - set(self.shapes))
            raise Rejected(f"keys differ from the global model (missing {missing}, extra {extra})")
        for k, a in arrays.items():
            if tuple(a.shape) != self.shapes[k]:
                raise Rejected(f"array {k!r} has shape {tuple(a.shape)}, expected {self.shapes[k]}")
            if str(a.dtype) != self.dtypes[k]:
                raise Rejected(f"array {k!r} has dtype {a.dtype}, expected {self.dtypes[k]}")
            if not np.isfinite(a.numpy()).all():
                raise Rejected(f"array {k!r} has non-finite values")


# --- train replies --------------------------------------------------------------------------
def encode_train_reply(reply: TrainReply) -> RecordDict:
    metrics = {
        NUM_EXAMPLES: int(reply.num_examples),
        TRAIN_LOSS: float(reply.train_loss),
        NEW_EVENTS: int(reply.new_events),
        TRAIN_S: float(reply.train_s),
        TRAIN_CPU_S: float(reply.train_cpu_s),
    }
    return RecordDict(
        {
            ARRAYS: to_record(reply.arrays),
            METRICS: MetricRecord(metrics),
            SHOP: ConfigRecord({SHOP: reply.shop}),
        }
    )


def decode_train_reply(content: RecordDict, spec: Spec, max_examples: float) -> TrainReply:
    """The typed train reply (its ``arrays``: the checked ArrayRecord), or :class:`Rejected`."""
    _records(content, arrays={ARRAYS}, metrics={METRICS}, configs={SHOP})
    shop = _shop_name(content)
    arrays = content.array_records[ARRAYS]
    spec.check(arrays)
    m = content.metric_records[METRICS]
    _keys(m, TRAIN_METRICS, "train metrics")
    n = _number(m, NUM_EXAMPLES, integer=True)
    if not 0 < n <= max_examples:
        raise Rejected(f"'{NUM_EXAMPLES}' is {n!r}, expected a number in (0, {max_examples:g}]")
    return TrainReply(
        shop=shop,
        arrays=arrays,
        num_examples=int(n),
        train_loss=_number(m, TRAIN_LOSS),
        new_events=int(_number(m, NEW_EVENTS, integer=True, low=0)),
        train_s=_number(m, TRAIN_S, low=0),
        train_cpu_s=_number(m, TRAIN_CPU_S, low=0),
    )


def aggregable(reply: TrainReply) -> RecordDict:
    """Exactly what a strategy aggregates: the checked arrays and the weight (a shop's extra
    keys can then never make Flower's consistency checks abort the round)."""
    metrics = {NUM_EXAMPLES: reply.num_examples, TRAIN_LOSS: reply.train_loss}
    return RecordDict({ARRAYS: reply.arrays, METRICS: MetricRecord(metrics)})


# --- evaluate replies -----------------------------------------------------------------------
#: The slot of the forward cell in an evaluate reply's keys (R cells use their window).
FORWARD = "fwd"
#: A cell's bootstrap replicate sums (lists of ``eval.n_boot`` floats; see metrics.bootstrap).
BOOT_SUM, BOOT_W = "boot_sum", "boot_w"
BOOT_KEYS = (BOOT_SUM, BOOT_W)


def encode_eval_reply(reply: EvalReply) -> RecordDict:
    """Cells flattened to MetricRecord keys ``variant/metric/slot`` (``n_users`` always; the
    slot is the test window, or ``fwd`` for the forward cell)."""
    metrics: dict[str, int | float | list[float]] = {}
    slots = [(v, str(i), cell) for v, cells in reply.cells.items() for i, cell in enumerate(cells)]
    slots += [(v, FORWARD, cell) for v, cell in (reply.forward or {}).items()]
    for variant, slot, cell in slots:
        metrics[f"{variant}/n_users/{slot}"] = int(cell.get("n_users") or 0)
        for k, v in cell.items():
            if k == WITHHELD:
                metrics[f"{variant}/{k}/{slot}"] = 1
            elif k in BOOT_KEYS:
                metrics[f"{variant}/{k}/{slot}"] = [float(x) for x in v]
            elif k != "n_users" and v is not None:
                metrics[f"{variant}/{k}/{slot}"] = float(v)
    if reply.finetune is not None:
        metrics[FINETUNE_EXAMPLES] = int(reply.finetune.examples)
        metrics[FINETUNE_S] = float(reply.finetune.seconds)
        metrics[FINETUNE_CPU_S] = float(reply.finetune.cpu_s)
    return RecordDict({METRICS: MetricRecord(metrics), SHOP: ConfigRecord({SHOP: reply.shop})})


@dataclass(frozen=True)
class RowSpec:
    """What a valid evaluate reply holds: a cell per variant and test window (and a forward
    cell per variant when ``forward``), each with ``n_users`` at most ``max_users`` and, when
    not 0, every metric in [0, 1] and, in the ``boot_variant`` with ``n_boot`` > 0, bootstrap
    replicate sums of ``n_boot`` values each (0 <= boot_sum <= boot_w)."""

    variants: tuple[str, ...]
    n_windows: int
    metrics: tuple[str, ...]
    max_users: int
    forward: bool = False
    n_boot: int = 0
    boot_variant: str = "new"

    def slots(self) -> list[str]:
        return [str(i) for i in range(self.n_windows)] + ([FORWARD] if self.forward else [])


def decode_eval_reply(content: RecordDict, spec: RowSpec) -> EvalReply:
    """The typed evaluate reply, or :class:`Rejected`."""
    _records(content, arrays=set(), metrics={METRICS}, configs={SHOP})
    shop = _shop_name(content)
    m = content.metric_records[METRICS]
    keys = ("n_users", WITHHELD, *spec.metrics, *BOOT_KEYS)
    expected = {f"{v}/{k}/{slot}" for v in spec.variants for k in keys for slot in spec.slots()}
    extra = sorted(set(m) - expected - FINETUNE_METRICS)
    if extra:
        raise Rejected(f"unexpected metric keys {extra[:5]}{' ...' if len(extra) > 5 else ''}")
    cells = {v: [_cell(m, v, str(i), spec) for i in range(spec.n_windows)] for v in spec.variants}
    forward = {v: _cell(m, v, FORWARD, spec) for v in spec.variants} if spec.forward else None
    finetune = None
    present = FINETUNE_METRICS & set(m)
    if present:
        _keys({k: m[k] for k in present}, FINETUNE_METRICS, "fine-tuning cost")
        finetune = TrainingCost(
            examples=int(_number(m, FINETUNE_EXAMPLES, integer=True, low=0)),
            seconds=_number(m, FINETUNE_S, low=0),
            cpu_s=_number(m, FINETUNE_CPU_S, low=0),
        )
    return EvalReply(shop=shop, cells=cells, forward=forward, finetune=finetune)


def _cell(m: MetricRecord, variant: str, slot: str, spec: RowSpec) -> Cell:
    key = f"{variant}/n_users/{slot}"
    if key not in m:
        raise Rejected(f"missing metric key {key!r}")
    n = int(_number(m, key, integer=True, low=0))
    if n > spec.max_users:
        raise Rejected(f"{key!r} is {n}, more users than the shop can have ({spec.max_users})")
    names = [f"{variant}/{k}/{slot}" for k in (*spec.metrics, *BOOT_KEYS)]
    flag = f"{variant}/{WITHHELD}/{slot}"
    if n == 0:
        sent = [k for k in names if k in m]
        if sent:
            raise Rejected(f"{sent[0]!r} is sent for a cell of 0 users")
        if flag not in m:
            return {"n_users": 0}
        if m[flag] != 1:
            raise Rejected(f"{flag!r} is {m[flag]!r}, expected 1")
        return {"n_users": 0, WITHHELD: 1}
    if flag in m:
        raise Rejected(f"{flag!r} is sent for a cell of {n} users")
    cell: Cell = {"n_users": n}
    for k in spec.metrics:
        name = f"{variant}/{k}/{slot}"
        if name not in m:
            raise Rejected(f"missing metric key {name!r} for a cell of {n} users")
        cell[k] = _number(m, name, low=0.0, high=1.0)
    if spec.n_boot and variant == spec.boot_variant:
        cell.update(_boot(m, f"{variant}/{{}}/{slot}", spec.n_boot))
    return cell


def _boot(m: MetricRecord, key: str, n_boot: int) -> dict[str, list[float]]:
    """A cell's replicate sums: two lists of ``n_boot`` finite values, 0 <= sum <= weight."""
    out = {}
    for k in BOOT_KEYS:
        name = key.format(k)
        v = m.get(name)
        if not isinstance(v, list) or len(v) != n_boot:
            raise Rejected(f"{name!r} must be a list of {n_boot} numbers")
        arr = np.asarray(v, dtype=np.float64)
        if not np.isfinite(arr).all() or (arr < 0).any():
            raise Rejected(f"{name!r} holds negative or non-finite values")
        out[k] = [float(x) for x in arr]
    if (np.asarray(out[BOOT_SUM]) > np.asarray(out[BOOT_W]) * (1 + 1e-9) + 1e-9).any():
        raise Rejected(f"{key.format(BOOT_SUM)!r} exceeds its weights (a metric above 1)")
    return out


# --- which shop is which node ---------------------------------------------------------------
class ShopRoster:
    """Which shop answers from which node.

    A node keeps the name it first answered with, and a name answers from one node at a
    time; a restarted shop may come back on a new node once its old node has left. With
    ``members`` (the plan's shops) a reply must name one of them."""

    def __init__(self, members: Sequence[str] = ()) -> None:
        self.members = set(members)
        self.by_node: dict[int, str] = {}

    def claim(self, node: int, shop: str, online: Collection[int]) -> None:
        """Accept ``shop`` as the name of ``node`` (raises :class:`Rejected`)."""
        if self.members and shop not in self.members:
            raise Rejected(f"shop {shop!r} is not a member of this federation")
        mine = self.by_node.get(node)
        if mine is not None and mine != shop:
            raise Rejected(f"node {node} is shop {mine!r} but replied as {shop!r}")
        for other, name in list(self.by_node.items()):
            if name == shop and other != node:
                if other in online:
                    raise Rejected(f"shop {shop!r} already answers from node {other}")
                del self.by_node[other]  # the shop restarted on a new node
        self.by_node[node] = shop

    def name(self, node: int) -> str:
        """The shop of ``node``; for a node never named, ``node N``."""
        return self.by_node.get(node, f"node {node}")


def reply_node(msg: Message, sent: Sequence[Message]) -> int:
    """The node a reply answers for: the destination of the message it replies to (an error
    reply for a dead node comes from the SuperLink, not from the node), else its sender."""
    for out in sent:
        if out.metadata.message_id and out.metadata.message_id == msg.metadata.reply_to_message_id:
            return out.metadata.dst_node_id
    return msg.metadata.src_node_id


# --- checks ---------------------------------------------------------------------------------
def _records(content: RecordDict, *, arrays: set, metrics: set, configs: set) -> None:
    for kind, have, want in (
        ("ArrayRecord", content.array_records, arrays),
        ("MetricRecord", content.metric_records, metrics),
        ("ConfigRecord", content.config_records, configs),
    ):
        if set(have) != want:
            raise Rejected(f"{kind}s {sorted(have)}, expected exactly {sorted(want)}")


def _shop_name(content: RecordDict) -> str:
    record = content.config_records[SHOP]
    if set(record) != {SHOP}:
        raise Rejected(f"ConfigRecord {SHOP!r} holds {sorted(record)}, expected [{SHOP!r}]")
    name = record[SHOP]
    if not isinstance(name, str) or not name or len(name) > MAX_NAME or not name.isprintable():
        raise Rejected(f"shop name {str(name)[:40]!r} is not a short printable string")
    return name


def _keys(record: Mapping[str, Any], want: frozenset[str], what: str) -> None:
    if set(record) != want:
        missing, extra = sorted(want - set(record)), sorted(set(record) - want)
        raise Rejected(f"{what}: missing {missing}, unexpected {extra}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _number(
    record: Mapping[str, Any],
    key: str,
    *,
    integer: bool = False,
    low: float = -math.inf,
    high: float = math.inf,
) -> float:
    v = record[key]
    if not _is_number(v) or (integer and float(v) != int(v)):
        kind = "an integer" if integer else "a finite number"
        raise Rejected(f"{key!r} is {str(v)[:40]}, expected {kind}")
    if not low <= v <= high:
        raise Rejected(f"{key!r} is {v!r}, expected a value in [{low:g}, {high:g}]")
    return float(v)

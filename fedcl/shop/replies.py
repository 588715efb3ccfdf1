"""What a shop answers, as typed objects: the shop agent returns them, and the federation's
protocol (:mod:`fedcl.federated.protocol`) encodes them into Flower records and decodes (and
checks) them on the server. No Flower types here."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedcl.evaluation import Cell


@dataclass(frozen=True)
class TrainReply:
    """One round of local training: the shared arrays and what the round cost."""

    shop: str
    arrays: dict[str, torch.Tensor]
    #: Training examples processed (the aggregation weight), >= 1.
    num_examples: int
    train_loss: float
    #: Events of the window that were new to the shop's learner this round.
    new_events: int
    train_s: float
    train_cpu_s: float


@dataclass(frozen=True)
class TrainingCost:
    """What personalisation (fine-tuning the aggregate on the shop's window) cost."""

    examples: int
    seconds: float
    cpu_s: float


@dataclass(frozen=True)
class EvalReply:
    """One R-matrix row of a shop: ``cells[variant][i]`` for every test window ``i``, each
    ``{"n_users": n, metric: mean, ...}``. ``n_users == 0`` means no test user, or withheld
    (fewer than ``federated.min_users``): such a cell carries no metric."""

    shop: str
    cells: dict[str, list[Cell]]
    finetune: TrainingCost | None = None


def withhold(row: dict[str, list[dict[str, Cell]]], shop: str, min_users: int):
    """``row[variant][i][shop]`` as the cells a shop may send: a cell over fewer than
    ``min_users`` users (at least 1) leaves as ``{"n_users": 0}``."""
    out: dict[str, list[Cell]] = {}
    for variant, cells in row.items():
        sent = []
        for by_shop in cells:
            cell = by_shop.get(shop, {})
            n = int(cell.get("n_users") or 0)
            if n < max(min_users, 1):
                sent.append({"n_users": 0})
            else:
                values = {k: float(v) for k, v in cell.items() if k != "n_users" and v is not None}
                sent.append({"n_users": n, **values})
        out[variant] = sent
    return out

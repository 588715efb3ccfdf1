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
    #: ``forward[variant]``: the model on all of the next window (None after the last one).
    forward: dict[str, Cell] | None = None
    finetune: TrainingCost | None = None


#: The key marking a cell the shop withheld (it had users, fewer than ``min_users``).
WITHHELD = "withheld"


def withhold(cell: Cell, min_users: int) -> Cell:
    """``cell`` as a shop may send it: over fewer than ``min_users`` users it leaves as
    ``{"n_users": 0, "withheld": 1}``, with no metric and no replicate sums (saying only that
    it had between 1 and min_users - 1 users); a cell without users as ``{"n_users": 0}``."""
    n = int(cell.get("n_users") or 0)
    if n == 0:
        return {"n_users": 0}
    if n < min_users:
        return {"n_users": 0, WITHHELD: 1}
    return {"n_users": n, **{k: v for k, v in cell.items() if k != "n_users" and v is not None}}


def withhold_row(row: dict[str, list[dict[str, Cell]]], shop: str, min_users: int):
    """``row[variant][i][shop]`` as the cells a shop may send (see :func:`withhold`)."""
    return {v: [withhold(by_shop.get(shop, {}), min_users) for by_shop in cells]
            for v, cells in row.items()}  # fmt: skip

"""Joint training: the upper reference that retrains from scratch on everything seen."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedcl.continual.base import BuildContext, ContinualMethod, PartConfig, State
from fedcl.data.interactions import Interactions
from fedcl.models.base import Recommender

COLUMNS = ("users", "items", "times")


@dataclass
class JointConfig(PartConfig):
    _target_: str = "fedcl.continual.joint.Joint"


class Joint(ContinualMethod):
    """Retrain a fresh model each window on all events seen so far (``reset_model``).

    Keeps every past window's train events as numpy arrays: its memory grows with the
    stream, which is the cost a shop would pay for this reference.
    """

    reset_model = True

    @classmethod
    def from_config(cls, cfg: JointConfig, ctx: BuildContext) -> Joint:
        return cls()

    def __init__(self) -> None:
        self.users, self.items, self.times = (np.zeros(0, np.int64) for _ in COLUMNS)

    def training_data(self, model: Recommender, new: Interactions, window: int) -> Interactions:
        """Every past event and ``new``, time-ordered, sized like the model."""
        past = Interactions(
            *(torch.from_numpy(a.copy()) for a in (self.users, self.items, self.times)),
            n_users=model.n_users,
            n_items=model.n_items,
        )
        data = past.to(new.users.device).concat(new)
        data.n_users, data.n_items = model.n_users, model.n_items
        return data

    def after_window(self, model: Recommender, new: Interactions, window: int) -> None:
        for name, col in zip(COLUMNS, (new.users, new.items, new.times), strict=True):
            fresh = col.detach().cpu().numpy().astype(np.int64)
            setattr(self, name, np.concatenate([getattr(self, name), fresh]))

    def memory_bytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in COLUMNS)

    def state_dict(self) -> State:
        return {name: getattr(self, name).copy() for name in COLUMNS}

    def load_state_dict(self, state: State) -> None:
        for name in COLUMNS:
            setattr(self, name, np.array(state[name], dtype=np.int64))

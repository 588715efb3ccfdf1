"""Composition of continual methods: one object the runner calls, whatever is enabled."""

from __future__ import annotations

import torch

from fedcl.continual.base import ContinualMethod, State
from fedcl.data.interactions import Interactions
from fedcl.models.base import Batch, Recommender


class Continual(ContinualMethod):
    """Named parts applied in order (e.g. ``{"replay": Replay(..), "distill": Distill(..)}``).

    ``training_data`` is chained (each part sees the previous part's output), penalties are
    summed, ``after_window`` runs part by part with the window's new events, state is nested
    by part name and memory is summed. With no part it is plain fine-tuning.
    """

    def __init__(self, parts: dict[str, ContinualMethod] | None = None) -> None:
        self.parts = dict(parts or {})
        self.reset_model = any(p.reset_model for p in self.parts.values())

    def training_data(self, model: Recommender, new: Interactions, window: int) -> Interactions:
        data = new
        for part in self.parts.values():
            data = part.training_data(model, data, window)
        return data

    def penalty(self, model: Recommender, batch: Batch) -> torch.Tensor:
        """The sum of the parts' penalties; a zero tensor when none applies, so the
        runner can always pass ``penalty=method.penalty`` to ``train_window``."""
        total = None
        for part in self.parts.values():
            term = part.penalty(model, batch)
            if term is not None:
                total = term if total is None else total + term
        return torch.zeros((), device=batch.users.device) if total is None else total

    def after_window(self, model: Recommender, new: Interactions, window: int) -> None:
        for part in self.parts.values():
            part.after_window(model, new, window)

    def memory_bytes(self) -> int:
        return sum(p.memory_bytes() for p in self.parts.values())

    def memory_by_part(self) -> dict[str, int]:
        """Bytes of state per part (for the cost report)."""
        return {name: p.memory_bytes() for name, p in self.parts.items()}

    def state_dict(self) -> State:
        return {name: p.state_dict() for name, p in self.parts.items()}

    def load_state_dict(self, state: State) -> None:
        unknown = set(state) - set(self.parts)
        if unknown:
            raise KeyError(
                f"state has parts {sorted(unknown)} this method lacks: {list(self.parts)}"
            )
        for name, part in self.parts.items():
            part.load_state_dict(state.get(name, {}))

"""Experience replay: train each window on its new events plus replayed past events.

Two hooks, as in Avalanche's ``ReplayPlugin``: before training, mix (a fraction of) the
buffer into the window's data; after training, offer the window's new events to the buffer.
"""

from __future__ import annotations

import numpy as np

from fedcl.continual.base import ContinualMethod, State
from fedcl.continual.buffer import ReplayBuffer
from fedcl.continual.herding import item_features
from fedcl.data.interactions import Interactions
from fedcl.models.base import Recommender

STREAM = 2  # random stream tag (see buffer.STREAM)


class Replay(ContinualMethod):
    """Replay from a :class:`ReplayBuffer` of ``budget`` events (``budget=0``: a
    ``budget_fraction`` of the events seen so far, so the buffer grows with the stream).

    ``mix`` is the fraction of the buffer drawn (uniformly, without replacement, anew each
    window) into the window's training data; 1 replays the whole buffer.
    """

    def __init__(
        self,
        buffer: ReplayBuffer,
        *,
        budget: int = 0,
        budget_fraction: float = 0.1,
        mix: float = 1.0,
        seed: int = 0,
    ) -> None:
        if budget < 0 or not 0.0 <= budget_fraction <= 1.0 or not 0.0 <= mix <= 1.0:
            raise ValueError(
                f"replay needs budget >= 0 and budget_fraction, mix in [0, 1]; got "
                f"budget={budget}, budget_fraction={budget_fraction}, mix={mix}"
            )
        self.buffer = buffer
        self.budget, self.budget_fraction, self.mix, self.seed = budget, budget_fraction, mix, seed
        self.draws = 0  # training_data calls so far: the sample's rng is (seed, 2, draws)

    def current_budget(self, seen: int) -> int:
        """The buffer's budget in events after ``seen`` events."""
        return self.budget if self.budget > 0 else int(round(self.budget_fraction * seen))

    def training_data(self, model: Recommender, new: Interactions, window: int) -> Interactions:
        """``new`` and ``round(mix * len(buffer))`` buffered events, time-ordered, sized like
        the model, on ``new``'s device."""
        n = int(round(self.mix * len(self.buffer)))
        if n == len(self.buffer):
            old = self.buffer.events(model.n_users, model.n_items)
        else:
            rng = np.random.default_rng((self.seed, STREAM, self.draws))
            old = self.buffer.sample(n, rng, model.n_users, model.n_items)
        self.draws += 1
        data = old.to(new.users.device).concat(new)
        data.n_users, data.n_items = model.n_users, model.n_items
        return data

    def after_window(self, model: Recommender, new: Interactions, window: int) -> None:
        """Offer the window's new events (never the replayed ones) to the buffer."""
        features = item_features(model) if self.buffer.policy == "herding" else None
        budget = self.current_budget(self.buffer.seen + len(new))
        self.buffer.update(new, window, budget, item_features=features)

    def memory_bytes(self) -> int:
        return self.buffer.memory_bytes()

    def state_dict(self) -> State:
        return {"buffer": self.buffer.state_dict(), "draws": self.draws}

    def load_state_dict(self, state: State) -> None:
        self.buffer.load_state_dict(state["buffer"])
        self.draws = int(state["draws"])

"""Knowledge distillation from the previous model's top-N lists (LwF-style, Li & Hoiem 2016).

After each window the model's top-N items and scores are snapshotted for a set of users;
while training the next window, for the batch's users that have a snapshot,

    penalty = weight * T^2 * mean_u KL( softmax(s_prev(u, top_u) / T) || softmax(s(u, top_u) / T) )

keeps the current model's ranking of each user's previous top-N list close to the old one.
The snapshot is plain numpy arrays (users, items, scores), so it persists like any state.
Scores are used as logits as they are. Pairwise (BPR) scores are not log-probabilities and
their scale grows with training, which the KL also resists; z-scoring each list first was
tried and was worse (it amplifies the noise in the near-flat lists of an early model).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fedcl.checks import above, at_least, one_of
from fedcl.continual.base import BuildContext, ContinualMethod, PartConfig, State
from fedcl.data.interactions import Interactions
from fedcl.models.base import Batch, Recommender

#: Users to snapshot after a window, given its new events (e.g. the replay buffer's users).
UserPool = Callable[[Interactions], np.ndarray]

STREAM = 4  # random stream tag (see buffer.STREAM)
SCORE_CHUNK = 1024  # users scored at once when taking a snapshot


def window_users(new: Interactions) -> np.ndarray:
    """The distinct users of a window's events."""
    return np.unique(new.users.detach().cpu().numpy())


#: Whose lists are snapshotted (``continual.distill.users``).
DISTILL_USERS = ("replay", "current")


@dataclass
class DistillConfig(PartConfig):
    _target_: str = "fedcl.continual.distill.Distill"
    #: Weight of the KL term against the model's own (mean, per-batch) loss. 0.1: best of
    #: 0.1-10 for BPR-MF on Online Retail (centralized); from 1 on, what it saved on old
    #: windows it lost on the next one.
    weight: float = 0.1
    #: Length of the previous model's list per user that is distilled.
    top_n: int = 50
    #: Softmax temperature (the loss is scaled by T^2, as in Hinton et al.).
    temperature: float = 1.0
    #: Whose lists are snapshotted: "replay" = users in the replay buffer (the window's
    #: users when replay is off), "current" = the users of the window just trained.
    users: str = "replay"
    #: Most snapshot users distilled per batch (the first in the shuffled batch).
    batch_users: int = 256
    #: Most users snapshotted per window (0 = all; else a seeded random subset).
    max_users: int = 0

    def check(self, key: str) -> None:
        one_of(f"{key}.users", self.users, DISTILL_USERS)
        at_least(f"{key}.weight", self.weight, 0)
        at_least(f"{key}.top_n", self.top_n, 1)
        above(f"{key}.temperature", self.temperature, 0)
        at_least(f"{key}.batch_users", self.batch_users, 1)
        at_least(f"{key}.max_users", self.max_users, 0)


class Distill(ContinualMethod):
    """Listwise distillation of the previous model's top-``top_n`` lists.

    ``user_pool`` chooses whose lists are snapshotted (default: the window's users), at most
    ``max_users`` of them (0 = all; else a seeded uniform subset). A batch distills at most
    ``batch_users`` of its snapshot users: the first ones in batch order, which the trainer
    has shuffled, so the subset is random without another generator to persist.
    """

    def __init__(
        self,
        weight: float,
        *,
        top_n: int = 50,
        temperature: float = 1.0,
        batch_users: int = 256,
        max_users: int = 0,
        user_pool: UserPool = window_users,
        seed: int = 0,
    ) -> None:
        if weight < 0 or top_n < 1 or temperature <= 0 or batch_users < 1 or max_users < 0:
            raise ValueError(
                "distill needs weight >= 0, top_n >= 1, temperature > 0, batch_users >= 1 and "
                f"max_users >= 0; got {weight}, {top_n}, {temperature}, {batch_users}, {max_users}"
            )
        self.weight, self.top_n, self.temperature = weight, top_n, temperature
        self.batch_users, self.max_users, self.user_pool, self.seed = (
            batch_users, max_users, user_pool, seed,
        )  # fmt: skip
        self.users = np.zeros(0, np.int64)  # (S,) sorted snapshot users
        self.items = np.zeros((0, top_n), np.int64)  # (S, N) their previous top-N items
        self.scores = np.zeros((0, top_n), np.float32)  # (S, N) and the previous scores
        self._device_snapshot: tuple[torch.Tensor, ...] | None = None  # row map, items, scores

    dense_gradient = True

    @classmethod
    def from_config(cls, cfg: DistillConfig, ctx: BuildContext) -> Distill:
        """``users=replay`` distills the replay buffer's users when replay is built before."""
        pool = window_users
        replay = ctx.parts.get("replay")
        if cfg.users == "replay" and replay is not None:
            buffer = replay.buffer
            pool = lambda new: buffer.users  # noqa: E731 - after replay's update this window
        return cls(
            cfg.weight,
            top_n=cfg.top_n,
            temperature=cfg.temperature,
            batch_users=cfg.batch_users,
            max_users=cfg.max_users,
            user_pool=pool,
            seed=ctx.seed,
        )

    # --- hooks ------------------------------------------------------------------------
    def after_window(self, model: Recommender, new: Interactions, window: int) -> None:
        """Snapshot the trained model's top-N lists of the pool's users."""
        users = np.unique(np.asarray(self.user_pool(new), dtype=np.int64))
        users = users[users < model.n_users]
        if self.max_users and len(users) > self.max_users:
            rng = np.random.default_rng((self.seed, STREAM, window))
            users = np.sort(rng.choice(users, size=self.max_users, replace=False))
        n = min(self.top_n, model.n_items)
        items, scores = [], []
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for start in range(0, len(users), SCORE_CHUNK):
                u = torch.from_numpy(users[start : start + SCORE_CHUNK]).to(model.device)
                top = model.score_all(u).float().topk(n, dim=1)  # (b, N)
                items.append(top.indices.cpu().numpy())
                scores.append(top.values.cpu().numpy())
        model.train(was_training)
        self.users = users
        self.items = np.concatenate(items) if items else np.zeros((0, n), np.int64)
        self.scores = np.concatenate(scores) if scores else np.zeros((0, n), np.float32)
        self._device_snapshot = None

    def penalty(self, model: Recommender, batch: Batch) -> torch.Tensor | None:
        """``weight * T^2 * KL(previous || current)`` over the batch's snapshot users' lists
        (None before the first snapshot or when no batch user has one)."""
        if len(self.users) == 0:
            return None
        row_of, items, scores = self._on(batch.users.device)
        users = batch.users
        inside = users < len(row_of)
        row = torch.where(inside, row_of[users.clamp(max=len(row_of) - 1)], -1)  # (B,)
        users = _first_distinct(users[row >= 0])[: self.batch_users]  # (b,)
        if len(users) == 0:
            return None
        r = row_of[users]
        t = self.temperature
        current = model.score_all(users).gather(1, items[r]).float()  # (b, N)
        teacher = F.log_softmax(scores[r] / t, dim=1)  # (b, N)
        student = F.log_softmax(current / t, dim=1)  # (b, N)
        kl = F.kl_div(student, teacher, reduction="batchmean", log_target=True)  # mean over b
        return self.weight * t * t * kl

    # --- state ------------------------------------------------------------------------
    def memory_bytes(self) -> int:
        return self.users.nbytes + self.items.nbytes + self.scores.nbytes

    def state_dict(self) -> State:
        return {
            "users": self.users.copy(),
            "items": self.items.copy(),
            "scores": self.scores.copy(),
        }

    def load_state_dict(self, state: State) -> None:
        self.users = np.array(state["users"], dtype=np.int64)
        self.items = np.array(state["items"], dtype=np.int64)
        self.scores = np.array(state["scores"], dtype=np.float32)
        self._device_snapshot = None

    def _on(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        """(user -> snapshot row or -1) map, items and scores, cached on ``device``."""
        cached = self._device_snapshot
        if cached is None or cached[0].device != device:
            size = int(self.users.max()) + 1
            row_of = torch.full((size,), -1, dtype=torch.long)
            row_of[torch.from_numpy(self.users)] = torch.arange(len(self.users))
            tensors = (row_of, torch.from_numpy(self.items), torch.from_numpy(self.scores))
            self._device_snapshot = cached = tuple(x.to(device) for x in tensors)
        return cached


def _first_distinct(users: torch.Tensor) -> torch.Tensor:
    """The distinct values of ``users`` (B,) in order of first appearance."""
    uniq, inverse = torch.unique(users, return_inverse=True)
    first = torch.full_like(uniq, len(users)).scatter_reduce_(
        0, inverse, torch.arange(len(users), device=users.device), "amin"
    )
    return uniq[torch.argsort(first)]

"""Tiny models, data and a training loop shared by the model tests.

Sizes are chosen distinct (37 users, 23 items, other dims 8/12/6/5) so a shared tensor
sized by the user count is caught by its shape.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fedcl.data.interactions import Interactions
from fedcl.models.base import Recommender
from fedcl.models.history import History
from fedcl.models.mf import MF
from fedcl.models.neumf import NeuMF
from fedcl.models.pop import Pop
from fedcl.models.sampling import NegativeSampler
from fedcl.models.sasrec import SASRec

N_USERS, N_ITEMS = 37, 23
BOUGHT = (3, 7, 11)  # every synthetic user buys these

BUILDERS: dict[str, Callable[[int, int], Recommender]] = {
    "pop": lambda u, i: Pop(u, i),
    "history": lambda u, i: History(u, i),
    "mf": lambda u, i: MF(u, i, dim=8),
    "mf_sparse": lambda u, i: MF(u, i, dim=8, sparse=True),
    "neumf": lambda u, i: NeuMF(u, i, dim_gmf=8, dim_mlp=6, layers=[12, 5]),
    "sasrec": lambda u, i: SASRec(u, i, dim=8, n_layers=1, n_heads=2, max_len=6, dropout=0.1),
}
TRAINABLE = ["mf", "mf_sparse", "neumf", "sasrec"]
LR = {"mf": 0.05, "mf_sparse": 0.05, "neumf": 0.02, "sasrec": 0.02}


def make_interactions(
    users: list[int], items: list[int], n_users: int = N_USERS, n_items: int = N_ITEMS
) -> Interactions:
    """Events in the given order, one second apart."""
    t = torch.arange(len(users), dtype=torch.long) + 1_000_000
    return Interactions(torch.tensor(users), torch.tensor(items), t, n_users, n_items)


def shared_purchases(repeats: int = 3) -> Interactions:
    """Every user buys BOUGHT, in that order, ``repeats`` times (time-ordered events)."""
    users, items = [], []
    for _ in range(repeats):
        for item in BOUGHT:
            for user in range(N_USERS):
                users.append(user)
                items.append(item)
    return make_interactions(users, items)


def build(name: str, seed: int = 0) -> Recommender:
    torch.manual_seed(seed)
    return BUILDERS[name](N_USERS, N_ITEMS)


def make_optimizer(model: Recommender, name: str) -> torch.optim.Optimizer:
    if name == "mf_sparse":
        return torch.optim.SparseAdam(list(model.parameters()), lr=LR[name])
    return torch.optim.Adam(model.parameters(), lr=LR[name])


def train(model: Recommender, name: str, data: Interactions, epochs: int, seed: int = 0) -> None:
    """A plain training loop: uniform negatives (2 per event), batches of 64 events."""
    gen = torch.Generator().manual_seed(seed)
    sampler = NegativeSampler(model.n_items)
    opt = make_optimizer(model, name)
    model.train()
    for _ in range(epochs):
        negatives = sampler.sample(len(data), 2, gen)
        for batch in model.batches(data, 64, negatives, gen):
            opt.zero_grad()
            model.loss(batch).backward()
            opt.step()
    model.eval()

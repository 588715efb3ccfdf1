"""A shop's user-level DP training (DP-SGD with one *user* as the unit; McMahan et al.,
"Learning differentially private recurrent language models", ICLR 2018, run inside a shop).

Every step: each of the shop's users with events in the round's data is sampled with
probability ``q`` (Poisson); each sampled user's gradient of the mean loss over all their
rows (with fresh uniform negatives) is taken with respect to every parameter that is not a
user's own, clipped to L2 norm ``clip`` and summed; Gaussian noise of std
``sigma * clip`` is added to every coordinate; the sum is divided by the expected number of
sampled users ``q * n_users`` and the optimiser steps. A user's own parameters (their
embedding row, which never leaves the shop) take that user's unclipped gradient.

Embedding tables are switched to sparse gradients while a user's gradient is taken (a user
touches a few rows), so a step costs about the sampled users' rows, not users x items.
"""

from __future__ import annotations

import dataclasses
import math
import time

import torch
from torch import nn

from fedcl.data.interactions import Interactions
from fedcl.models.base import Batch, Recommender
from fedcl.models.sampling import NegativeSampler
from fedcl.privacy.config import DPConfig
from fedcl.train import TrainConfig, TrainStats, make_optimizer


def dp_train(
    model: Recommender,
    data: Interactions,
    dp: DPConfig,
    sigma: float,
    train: TrainConfig,
    generator: torch.Generator,
) -> TrainStats:
    """``dp.steps`` DP steps on ``data`` (see the module doc); trains ``model`` in place."""
    start, cpu = time.perf_counter(), time.process_time()
    if len(data) == 0:
        return TrainStats(float("nan"), 0, 0.0)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = dict(model.named_parameters())
    shared = [n for n in names if not model._is_private(n)]
    own = [n for n in names if model._is_private(n)]
    lr = dp.lr if dp.lr is not None else train.lr
    opt = make_optimizer(model, dataclasses.replace(train, lr=lr))  # the noisy sum is dense
    order = torch.argsort(data.users, stable=True)
    users, counts = torch.unique_consecutive(data.users[order], return_counts=True)
    ends = torch.cumsum(counts, 0)
    starts = ends - counts
    expected = dp.user_rate * len(users)
    sampler = NegativeSampler(data.n_items, "uniform")
    model.train()
    examples, losses = 0, []
    with _sparse_embeddings(model):
        for _ in range(dp.steps):
            # Negatives for every row first (a row's negatives depend on nothing but its
            # position), then the users in this step.
            negs = sampler.sample(len(data), train.n_neg, generator).to(data.items.device)
            picked = torch.nonzero(
                torch.rand(len(users), generator=generator, device=generator.device)
                < dp.user_rate
            ).flatten().tolist()  # fmt: skip
            total = {n: torch.zeros_like(params[n]) for n in names}
            for j in picked:
                rows = order[starts[j] : ends[j]]
                batch = Batch(data.users[rows], data.items[rows], negs[rows])
                loss = model.loss(batch)
                grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
                g = dict(zip(names, grads, strict=True))
                norm = math.sqrt(sum(_sq_norm(g[n]) for n in shared if g[n] is not None))
                factor = min(1.0, dp.clip / norm) if norm > 0 else 1.0
                for n in shared:
                    _add(total[n], g[n], factor)
                for n in own:
                    _add(total[n], g[n], 1.0)
                losses.append(float(loss.detach()))
                examples += len(rows)
            for n in shared:
                noise = torch.randn(
                    total[n].shape, generator=generator, device=generator.device
                ).to(total[n])
                total[n] = (total[n] + sigma * dp.clip * noise) / expected
            opt.zero_grad(set_to_none=True)
            for n in names:
                params[n].grad = total[n]
            opt.step()
    model.eval()
    mean = sum(losses) / len(losses) if losses else float("nan")
    return TrainStats(mean, examples, time.perf_counter() - start, time.process_time() - cpu)


def _sq_norm(g: torch.Tensor) -> float:
    if g.is_sparse:
        g = g.coalesce()
        return float(g.values().double().square().sum())
    return float(g.double().square().sum())


def _add(total: torch.Tensor, g: torch.Tensor | None, factor: float) -> None:
    if g is None:
        return
    if g.is_sparse:
        g = g.coalesce()
        total.index_add_(0, g.indices()[0], g.values(), alpha=factor)
    else:
        total.add_(g, alpha=factor)


class _sparse_embeddings:
    """Sparse gradients for every ``nn.Embedding`` of a model while inside."""

    def __init__(self, model: nn.Module) -> None:
        self.embeddings = [m for m in model.modules() if isinstance(m, nn.Embedding)]
        self.before = [m.sparse for m in self.embeddings]

    def __enter__(self) -> None:
        for m in self.embeddings:
            m.sparse = True

    def __exit__(self, *exc: object) -> None:
        for m, sparse in zip(self.embeddings, self.before, strict=True):
            m.sparse = sparse

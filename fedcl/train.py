"""One shop's local training on one window: a plain function, no Flower.

Deterministic under a seed on CPU: the shuffle and the negatives come from one
``torch.Generator`` seeded by the caller.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fedcl.checks import above, at_least, one_of
from fedcl.data.interactions import Interactions
from fedcl.device import autocast
from fedcl.errors import ConfigError
from fedcl.models.base import Batch, Recommender
from fedcl.models.sampling import NegativeSampler


@dataclass
class TrainConfig:
    """Local training settings (Hydra group ``train``)."""

    #: Defaults chosen for MF on Online Retail validation (rolling over windows 8-12, 2
    #: seeds; benchmarks/README.md): 20 epochs, batch 1024, lr 2e-3 (0.072 NDCG@10 vs 0.047
    #: for 3 epochs, batch 4096, lr 5e-3).
    epochs: int = 20
    batch_size: int = 1024
    #: "adam" | "adamw" | "sgd" | "adagrad" ("sparse_adam" for models built with sparse=True)
    optimizer: str = "adam"
    lr: float = 2e-3
    weight_decay: float = 0.0
    #: Negative sampling: "uniform" or "popularity" (count^0.75 of the train part).
    negatives: str = "uniform"
    n_neg: int = 1
    #: bf16 autocast on CUDA (ignored on CPU).
    bf16: bool = False

    def check(self, key: str = "train") -> None:
        """Value checks; each error names ``key.field``, the value and what is allowed."""
        at_least(f"{key}.epochs", self.epochs, 1)
        at_least(f"{key}.batch_size", self.batch_size, 1)
        one_of(f"{key}.optimizer", self.optimizer, OPTIMIZERS)
        above(f"{key}.lr", self.lr, 0)
        at_least(f"{key}.weight_decay", self.weight_decay, 0)
        one_of(f"{key}.negatives", self.negatives, NEGATIVES)
        at_least(f"{key}.n_neg", self.n_neg, 1)


OPTIMIZERS = ("adam", "adamw", "sgd", "adagrad", "sparse_adam")
NEGATIVES = ("uniform", "popularity")


@dataclass
class TrainStats:
    loss: float  # mean batch loss of the last epoch (nan when nothing was trained)
    examples: int  # training examples processed (all epochs)
    seconds: float
    #: CPU seconds of the process while training (all its threads): the compute spent,
    #: comparable between a 2-thread centralized run and 1-thread shops.
    cpu_s: float = 0.0


def _fused() -> dict[str, bool]:
    """Fused Adam kernels (one pass over all tables per step: +17-31% measured on CPU);
    torch supports them on CPU from 2.4."""
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    return {"fused": True} if (major, minor) >= (2, 4) else {}


def make_optimizer(model: Recommender, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    dense = not any(p.is_sparse for p in params) and not getattr(model, "sparse", False)
    fused = _fused() if dense else {}
    wd = cfg.weight_decay
    kinds = {
        "adam": lambda: torch.optim.Adam(params, lr=cfg.lr, weight_decay=wd, **fused),
        "adamw": lambda: torch.optim.AdamW(params, lr=cfg.lr, weight_decay=wd, **fused),
        "sgd": lambda: torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay),
        "adagrad": lambda: torch.optim.Adagrad(params, lr=cfg.lr, weight_decay=cfg.weight_decay),
        "sparse_adam": lambda: torch.optim.SparseAdam(params, lr=cfg.lr),
    }
    if cfg.optimizer not in kinds:
        raise ConfigError(f"train.optimizer must be one of {sorted(kinds)}, got {cfg.optimizer!r}")
    return kinds[cfg.optimizer]()


#: An extra loss term added to every batch's loss (EWC penalty, distillation, proximal term).
Penalty = Callable[[Recommender, Batch], torch.Tensor]


def train_window(
    model: Recommender,
    train: Interactions,
    cfg: TrainConfig,
    generator: torch.Generator,
    penalty: Penalty | None = None,
) -> TrainStats:
    """Train ``model`` in place for ``cfg.epochs`` epochs on ``train``.

    ``train`` and ``generator`` must live on the model's device. The loss is accumulated
    on the device and read once at the end: no host/device round trip per batch. The
    caller calls ``model.observe(new_events)`` first (``train`` may also hold replayed
    events, which must not be observed twice).
    """
    start, cpu = time.perf_counter(), time.process_time()
    if not model.trainable or len(train) == 0 or cfg.epochs <= 0:
        return TrainStats(float("nan"), 0, time.perf_counter() - start)
    model.train()
    optimizer = make_optimizer(model, cfg)
    sampler = NegativeSampler.from_interactions(train, cfg.negatives)
    examples = 0
    epoch_loss = torch.zeros((), device=train.users.device)
    for _ in range(cfg.epochs):
        negatives = sampler.sample(len(train), cfg.n_neg, generator)
        epoch_loss = torch.zeros((), device=train.users.device)
        n_batches = 0
        for batch in model.batches(train, cfg.batch_size, negatives, generator):
            with autocast(train.users.device, cfg.bf16):
                loss = model.loss(batch)
                if penalty is not None:
                    loss = loss + penalty(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_loss += loss.detach().float()
            n_batches += 1
            examples += batch.size
    model.eval()
    mean = (epoch_loss / max(n_batches, 1)).item()
    seconds, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    return TrainStats(mean, examples, seconds, cpu_s)

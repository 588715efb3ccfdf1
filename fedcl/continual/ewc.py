"""Online elastic weight consolidation (Kirkpatrick et al. 2017; Schwarz et al. 2018).

    penalty(theta) = lam / 2 * sum_k F_k * (theta_k - anchor_k)^2

over the model's **shared** parameters only (``model.shared_state()``): the private user
tables are the shop's own and change only for its own users. After each window the anchor
becomes the current parameters and the diagonal Fisher is combined online,
``F = gamma * F_old + F_new``. Tables that grew since the anchor (items first seen later) are
penalised on their anchored prefix rows only: new rows have no anchor and move freely.
The penalty gives every anchored row a (dense) gradient at every step, so it needs a dense
optimiser (adam, sgd), not sparse_adam.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedcl.checks import at_least, within
from fedcl.continual.base import (
    BuildContext,
    ContinualMethod,
    PartConfig,
    State,
    nbytes,
    tensors_to_numpy,
)
from fedcl.data.interactions import Interactions
from fedcl.models.base import Batch, Recommender
from fedcl.models.sampling import NegativeSampler

STREAM = 3  # random stream tag (see buffer.STREAM)


def shared_parameters(model: Recommender) -> dict[str, nn.Parameter]:
    """The trainable parameters among ``model.shared_state()``'s keys, by name."""
    shared = model.shared_state()
    return {n: p for n, p in model.named_parameters() if n in shared and p.requires_grad}


def _prefix(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The leading ``shape`` block of ``t`` (the rows and columns an anchor has)."""
    return t[tuple(slice(0, s) for s in shape)]


@dataclass
class EWCConfig(PartConfig):
    _target_: str = "fedcl.continual.ewc.EWC"
    #: Penalty strength, against the model's mean per-example loss (the Fisher estimates the
    #: per-example empirical Fisher). 100: best of 10-100,000 for BPR-MF on Online Retail
    #: (centralized, 2 seeds); 1,000 and more scored below plain fine-tuning there.
    lam: float = 100.0
    #: Online EWC decay of the old Fisher per window (Schwarz et al. 2018 use ~0.9-1).
    gamma: float = 0.9
    #: Batches of the new window whose squared gradients estimate its Fisher.
    fisher_batches: int = 16
    #: Events (positions for sequence models) per Fisher batch.
    fisher_batch_size: int = 1024

    def check(self, key: str) -> None:
        at_least(f"{key}.lam", self.lam, 0)
        within(f"{key}.gamma", self.gamma, 0, 1)
        at_least(f"{key}.fisher_batches", self.fisher_batches, 1)
        at_least(f"{key}.fisher_batch_size", self.fisher_batch_size, 1)


class EWC(ContinualMethod):
    """Online EWC. The Fisher of a window is ``mean_b (B_b * g_b^2)`` over its first
    ``fisher_batches`` batches of ``fisher_batch_size`` (one uniform negative each), ``g_b``
    the gradient of the model's own batch loss: ``B * g^2`` estimates the per-example
    empirical Fisher whatever the batch size, so ``lam`` does not depend on it."""

    def __init__(
        self,
        lam: float,
        *,
        gamma: float = 0.9,
        fisher_batches: int = 16,
        fisher_batch_size: int = 1024,
        seed: int = 0,
    ) -> None:
        if lam < 0 or not 0.0 <= gamma <= 1.0 or fisher_batches < 1 or fisher_batch_size < 1:
            raise ValueError(
                f"EWC needs lam >= 0, gamma in [0, 1], fisher_batches and fisher_batch_size "
                f">= 1; got {lam}, {gamma}, {fisher_batches}, {fisher_batch_size}"
            )
        self.lam, self.gamma, self.seed = lam, gamma, seed
        self.fisher_batches, self.fisher_batch_size = fisher_batches, fisher_batch_size
        self.fisher: dict[str, torch.Tensor] = {}  # name -> F, the shape of the anchor
        self.anchor: dict[str, torch.Tensor] = {}  # name -> parameters after the last window

    dense_gradient = True

    @classmethod
    def from_config(cls, cfg: EWCConfig, ctx: BuildContext) -> EWC:
        return cls(
            cfg.lam,
            gamma=cfg.gamma,
            fisher_batches=cfg.fisher_batches,
            fisher_batch_size=cfg.fisher_batch_size,
            seed=ctx.seed,
        )

    def penalty(self, model: Recommender, batch: Batch) -> torch.Tensor | None:
        """``lam / 2 * sum F (theta - anchor)^2`` (None before the first window)."""
        if not self.anchor:
            return None
        params = shared_parameters(model)
        total = None
        for name, anchor in self.anchor.items():
            theta = params[name]
            if anchor.device != theta.device:  # e.g. restored on CPU, trained on GPU
                self.anchor = {k: v.to(theta.device) for k, v in self.anchor.items()}
                self.fisher = {k: v.to(theta.device) for k, v in self.fisher.items()}
                anchor = self.anchor[name]
            term = (self.fisher[name] * (_prefix(theta, anchor.shape) - anchor).square()).sum()
            total = term if total is None else total + term
        return None if total is None else 0.5 * self.lam * total

    def after_window(self, model: Recommender, new: Interactions, window: int) -> None:
        """Combine this window's Fisher into F and anchor at the current parameters."""
        params = shared_parameters(model)
        if not model.trainable or not params or len(new) == 0:
            return
        fresh = self._window_fisher(model, new, params, window)
        for name, f in fresh.items():
            old = self.fisher.get(name)
            if old is not None:  # the old F covers the anchored prefix only
                _prefix(f, old.shape).add_(old.to(f.device), alpha=self.gamma)
        self.fisher = fresh
        self.anchor = {n: p.detach().clone() for n, p in params.items()}

    def _window_fisher(
        self,
        model: Recommender,
        new: Interactions,
        params: dict[str, nn.Parameter],
        window: int,
    ) -> dict[str, torch.Tensor]:
        device = new.users.device
        seed = int(np.random.SeedSequence((self.seed, STREAM, window)).generate_state(1)[0])
        gen = torch.Generator(device=device).manual_seed(seed)
        negatives = NegativeSampler.from_interactions(new).sample(len(new), 1, gen)
        fisher = {
            n: torch.zeros_like(p, memory_format=torch.contiguous_format) for n, p in params.items()
        }
        was_training = model.training
        model.eval()  # no dropout noise in the estimate
        n_batches = 0
        for batch in model.batches(new, self.fisher_batch_size, negatives, gen):
            grads = torch.autograd.grad(model.loss(batch), list(params.values()), allow_unused=True)
            for f, g in zip(fisher.values(), grads, strict=True):
                if g is not None:
                    f.add_((g.to_dense() if g.is_sparse else g).square(), alpha=batch.size)
            n_batches += 1
            if n_batches == self.fisher_batches:
                break
        model.train(was_training)
        return {n: f / max(n_batches, 1) for n, f in fisher.items()}

    def memory_bytes(self) -> int:
        return nbytes(self.fisher) + nbytes(self.anchor)

    def state_dict(self) -> State:
        return {"fisher": tensors_to_numpy(self.fisher), "anchor": tensors_to_numpy(self.anchor)}

    def load_state_dict(self, state: State) -> None:
        self.fisher = {k: torch.from_numpy(np.array(v)) for k, v in state.get("fisher", {}).items()}
        self.anchor = {k: torch.from_numpy(np.array(v)) for k, v in state.get("anchor", {}).items()}

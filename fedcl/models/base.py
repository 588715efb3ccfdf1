"""The interface every recommender offers (RecBole-style, without string configs).

A model scores items for users of ONE shop (or of a pooled set). Its parameters split
into **shared** ones (item tables, dense layers: what a federation may exchange) and
**private** ones (user embeddings, per-user state, a shop's sales counts: never leave the
shop). The split is by state-dict key prefix (``private_prefixes``); the invariant every
model keeps is that no shared tensor is sized by the user count.

Every model is built as ``Model(n_users, n_items, **config_fields)`` so that
``hydra.utils.instantiate(cfg.model, n_users=.., n_items=..)`` works with the
``conf/model/<name>.yaml`` files. A model's hyper-parameters and their defaults live in its
config dataclass (a :class:`ModelConfig`, the module's ``SCHEMA``) only: the constructor
reads the fields it is not given from there, and the YAML names only ``_target_`` and the
values that differ.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from omegaconf import MISSING
from torch import nn

from fedcl.data.interactions import Interactions


@dataclass
class ModelConfig:
    """Base of every model's config (Hydra group ``model``)."""

    #: The model class (``package.module.Class``); each subclass sets its own.
    _target_: str = MISSING

    def check(self, key: str = "model") -> None:
        """Value checks of the fields (a subclass adds its own); errors name ``key.field``."""


@dataclass
class Batch:
    """One training batch. Pairwise models use ``users``/``pos``/``neg``;
    sequence models put their tensors in ``extra`` (e.g. ``seq``, ``pos``, ``neg``)."""

    users: torch.Tensor  # (B,) int64
    pos: torch.Tensor  # (B,) int64
    neg: torch.Tensor  # (B, n_neg) int64
    extra: dict[str, torch.Tensor] | None = None

    @property
    def size(self) -> int:
        return int(self.users.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        """The same batch with every tensor on ``device``."""
        extra = None if self.extra is None else {k: v.to(device) for k, v in self.extra.items()}
        return Batch(self.users.to(device), self.pos.to(device), self.neg.to(device), extra)


class Recommender(nn.Module):
    """Base class. Subclasses implement ``loss``, ``score``, ``score_all`` and ``grow``.

    ``trainable=False`` models (popularity, history) learn only in ``observe``.
    """

    trainable: bool = True
    #: Names (prefixes of state-dict keys) of the private, per-user parameters/buffers.
    private_prefixes: tuple[str, ...] = ("user",)
    #: Shared parameters that describe one shop rather than the items everywhere (MF's
    #: item biases: a shop's own popularity prior). A federation keeps them at the shop
    #: when ``federated.model_local_keys`` is on (FedPer-style personalisation).
    personal_prefixes: tuple[str, ...] = ()
    #: Buffers whose length varies with the data (e.g. a sparse history's entries):
    #: loading a state dict resizes them instead of failing on a shape mismatch.
    resizable_buffers: tuple[str, ...] = ()
    #: How a federation combines shops: "parameters" (the shared state is averaged by the
    #: strategy) or "statistics" (the model's ``statistics()`` are summed and the server
    #: solves the shared state: :mod:`fedcl.federated.statistics`).
    federation: str = "parameters"

    def __init__(self, n_users: int, n_items: int) -> None:
        super().__init__()
        if n_users < 0 or n_items < 1:
            raise ValueError(f"need n_users >= 0 and n_items >= 1, got {n_users}, {n_items}")
        self.n_users = n_users
        self.n_items = n_items

    @property
    def device(self) -> torch.device:
        """Device of the model's first parameter or buffer (CPU for an empty model)."""
        for t in itertools.chain(self.parameters(), self.buffers()):
            return t.device
        return torch.device("cpu")

    # --- learning -----------------------------------------------------------------
    def observe(self, train: Interactions) -> None:
        """Update non-gradient state (counts, user histories) with a window's train part.

        Called once per window, with that window's new train events only (never with
        replayed ones: they were observed before), before training and evaluation.
        Default: only check that the data fits the tables.
        """
        self._check_sizes(train)

    def batches(
        self,
        train: Interactions,
        batch_size: int,
        negatives: torch.Tensor | None,
        generator: torch.Generator,
    ) -> Iterator[Batch]:
        """One epoch of shuffled pairwise batches over ``train``.

        ``negatives``: optional (N, n_neg) pre-drawn negative items, else none (n_neg 0).
        The shuffle is drawn on ``generator``'s device, batches live on ``train``'s.
        Sequence models override this.
        """
        n = len(train)
        perm = torch.randperm(n, generator=generator, device=generator.device)
        perm = perm.to(train.users.device)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            neg = negatives[idx] if negatives is not None else idx.new_zeros((idx.numel(), 0))
            yield Batch(train.users[idx], train.items[idx], neg)

    def loss(self, batch: Batch) -> torch.Tensor:
        """Scalar training loss of a batch."""
        raise NotImplementedError(f"{type(self).__name__} is not trained by gradient")

    # --- scoring ------------------------------------------------------------------
    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores (B,) for given (user, item) pairs, ``users`` and ``items`` (B,)."""
        raise NotImplementedError

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Scores (B, n_items) over the whole catalogue for users (B,).

        Always a fresh tensor: callers may mask it in place.
        """
        raise NotImplementedError

    # --- federation boundary ------------------------------------------------------
    def _is_private(self, key: str) -> bool:
        return key.startswith(self.private_prefixes)

    def shared_state(self) -> dict[str, torch.Tensor]:
        """Parameters a federation may exchange (no tensor sized by the user count).

        The tensors share storage with the model: clone before changing them.
        """
        return {k: v for k, v in self.state_dict().items() if not self._is_private(k)}

    def private_state(self) -> dict[str, torch.Tensor]:
        """Per-user parameters and state that never leave the shop."""
        return {k: v for k, v in self.state_dict().items() if self._is_private(k)}

    def load_shared_state(self, state: dict[str, torch.Tensor]) -> None:
        """Replace the shared part; the private part is kept. Keys must match exactly."""
        expected = set(self.shared_state())
        if set(state) != expected:
            missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
            raise KeyError(f"shared keys differ: missing {missing}, extra {extra}")
        self.load_state_dict(state, strict=False)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errs
    ) -> None:
        for name in self.resizable_buffers:
            incoming = state_dict.get(prefix + name)
            current = self._buffers.get(name)
            if incoming is not None and current is not None:
                self._buffers[name] = torch.empty_like(incoming, device=current.device)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errs
        )

    def grow(self, n_users: int, n_items: int) -> None:
        """Enlarge user/item tables to at least these sizes, keeping existing rows.

        New rows must be usable (e.g. small random init), so items first seen in a
        later window can be ranked. State-dict key names do not change. Parameters are
        replaced by larger ones, so a trainer rebuilds its optimiser after a grow.
        """
        raise NotImplementedError

    def _check_sizes(self, train: Interactions) -> None:
        """Raise a clear error when ``train`` indexes users/items beyond the tables."""
        if train.n_users > self.n_users or train.n_items > self.n_items:
            raise ValueError(
                f"{type(self).__name__} has {self.n_users} users x {self.n_items} items but the "
                f"data has {train.n_users} x {train.n_items}: call grow(n_users, n_items) first"
            )


def grow_embedding(
    emb: nn.Embedding,
    n_rows: int,
    *,
    std: float,
    from_mean: bool = False,
    skip_rows: int = 0,
    generator: torch.Generator | None = None,
) -> None:
    """Enlarge ``emb`` in place to ``n_rows`` rows (no-op if it has as many already).

    Existing rows are kept bitwise. New rows are ``N(0, std^2)`` noise, plus the mean of
    the existing rows ``[skip_rows:]`` when ``from_mean`` (a new item then scores like an
    average one instead of zero). The module keeps its settings (``sparse``,
    ``padding_idx``) and its state-dict key; the ``weight`` parameter is a new object.
    """
    old = emb.weight.detach()  # (N_old, D)
    n_new = n_rows - old.shape[0]
    if n_new <= 0:
        return
    draw_on = generator.device if generator is not None else old.device
    noise = torch.randn((n_new, old.shape[1]), generator=generator, device=draw_on)
    new = noise.to(old.device, old.dtype) * std
    if from_mean and old.shape[0] > skip_rows:
        new += old[skip_rows:].mean(dim=0, keepdim=True)
    emb.weight = nn.Parameter(torch.cat([old, new]), requires_grad=emb.weight.requires_grad)
    emb.num_embeddings = n_rows


def training_note(model_cfg: ModelConfig) -> str | None:
    """How a model that is not trained by gradient learns a window, for the logs and the
    summary (None for gradient models)."""
    from hydra.utils import get_class

    cls = get_class(model_cfg._target_)
    if getattr(cls, "federation", "parameters") == "statistics":
        n = cls.statistics_rounds(model_cfg)
        solves = f"{n} solve{'s' if n > 1 else ''} a window"
        return f"closed form from summed statistics ({solves}; federated: one round each)"
    return None if cls.trainable else "counts of the window's events, no gradient training"

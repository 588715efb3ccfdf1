"""RESEARCH / SIMULATION ONLY: shops that attack the federation on purpose.

``federated.attack`` (:class:`~fedcl.federated.config.AttackConfig`) makes the first
``shops`` partitions of a *simulation* tamper with their own train reply before it is
encoded, so the server's defences (:mod:`fedcl.federated.bounds`, robust strategies) can be
measured (``simulations/attack_suite.py``). A deployed shop has no ``partition-id`` and is
never touched. Each attack is a plain function of the honest reply and the arrays the round
sent:

- ``scale``: the update (reply - sent) times ``factor`` (model replacement, e.g. x100);
- ``sign_flip``: the update times ``-factor`` (e.g. x10);
- ``noise``: a Gaussian update whose norm is ``factor`` x the honest update's norm;
- ``promote``: a targeted attack pushing item ``item`` into every user's top-10: its
  embedding row becomes ``factor`` x the mean row norm along the mean direction of all item
  rows (where users' scores are high on average) and, when item biases are shared, its bias
  goes above every other; the rest of the reply stays honest;
- ``weight``: the reply claims ``factor`` training examples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

from fedcl.federated.config import AttackConfig
from fedcl.shop.replies import TrainReply


def is_attacker(cfg: AttackConfig, node_config: Mapping[str, Any]) -> bool:
    """Whether this node attacks: only in simulation (a ``partition-id``), the first
    ``cfg.shops`` partitions."""
    pid = node_config.get("partition-id")
    return cfg.kind != "none" and pid is not None and int(pid) < cfg.shops


def attack(
    reply: TrainReply, sent: Mapping[str, torch.Tensor], cfg: AttackConfig, seed: int = 0
) -> TrainReply:
    """``reply`` as an attacking shop sends it (``sent``: the round's global arrays)."""
    if cfg.kind == "none":
        return reply
    if cfg.kind == "weight":
        return dataclasses.replace(reply, num_examples=int(cfg.factor))
    if cfg.kind == "promote":
        return dataclasses.replace(reply, arrays=promote(reply.arrays, cfg.item, cfg.factor))
    update = {k: v.detach() - sent[k].to(v.device) for k, v in reply.arrays.items()}
    if cfg.kind == "scale":
        update = {k: cfg.factor * d for k, d in update.items()}
    elif cfg.kind == "sign_flip":
        update = {k: -cfg.factor * d for k, d in update.items()}
    elif cfg.kind == "noise":
        norm = torch.sqrt(sum((d.double() ** 2).sum() for d in update.values()))
        gen = torch.Generator().manual_seed(seed)
        noise = {
            k: torch.randn(d.shape, generator=gen, dtype=torch.float64) for k, d in update.items()
        }
        scale = cfg.factor * norm / torch.sqrt(sum((n**2).sum() for n in noise.values()))
        update = {k: (scale * n).to(update[k]) for k, n in noise.items()}
    else:
        raise ValueError(f"unknown attack kind {cfg.kind!r}")
    arrays = {k: sent[k].to(d.device) + d for k, d in update.items()}
    return dataclasses.replace(reply, arrays=arrays)


def promote(
    arrays: Mapping[str, torch.Tensor], item: int, factor: float
) -> dict[str, torch.Tensor]:
    """``arrays`` with item ``item`` pushed up: its row of every item table (a 2-d array named
    ``item_emb...``) set to ``factor`` x the mean row norm along the mean unit row (the centre
    of the catalogue's neighbourhoods), and, where the item biases are shared
    (``item_bias...``), its bias set to the largest bias plus ``factor`` x their spread."""
    out = dict(arrays)
    for k, table in arrays.items():
        if item >= table.shape[0] or not k.startswith(("item_emb", "item_bias")):
            continue
        table = table.detach().clone()
        if k.startswith("item_bias"):
            table[item] = table.max() + factor * table.std()
        elif table.dim() == 2:
            norms = table.norm(dim=1, keepdim=True).clamp_min(1e-12)  # (I, 1)
            direction = (table / norms).mean(dim=0)
            direction = direction / direction.norm().clamp_min(1e-12)  # (D,)
            table[item] = factor * norms.mean() * direction
        out[k] = table
    return out

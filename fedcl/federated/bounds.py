"""Bounds on what one checked train reply may move, applied before aggregation.

The protocol (:mod:`fedcl.federated.protocol`) checks that a reply is well formed; this module
checks that it is *moderate*, against bounds set by the round itself, so no constant has to
know the model's scale:

- **update norm**: a reply's update (its arrays minus the global arrays the round sent),
  divided by the square root of its (capped) num-examples, may be at most ``norm_multiple``
  x the round's median of that figure; above it the update is clipped (scaled down to the
  bound) or the reply rejected. Per sqrt(examples), because an honest big shop takes more
  steps: on Online Retail the UK's raw update is 25x the median one. The median needs at
  least ``min_replies`` replies (with fewer, one attacker *is* the median): below that the
  round has no norm bound, and the log says so.
- **weight** (num-examples): a shop's claim may be at most ``max_growth`` x its largest
  earlier claim, and (again with at least ``min_replies`` replies) no shop may hold more
  than ``max_share`` of the round's total weight; the cap is solved so that it holds
  *after* renormalisation.

Everything is logged with the shop's name and returned, so the server counts it per round.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from flwr.app import ArrayRecord

from fedcl.federated.config import BoundsConfig
from fedcl.shop.replies import TrainReply

log = logging.getLogger("fedcl")


@dataclass
class Bounded:
    """The round's replies after the bounds: ``replies[i]`` is reply i as it may be aggregated
    (clipped, weight capped) or None (rejected, the reason in ``rejected``)."""

    replies: list[TrainReply | None]
    #: Shops whose update was scaled down to the bound.
    clipped: list[str] = field(default_factory=list)
    #: (shop, why) of the replies rejected for their norm.
    rejected: list[tuple[str, str]] = field(default_factory=list)
    #: Shops whose num-examples was lowered (growth or share).
    capped: list[str] = field(default_factory=list)
    #: The round's norm bound per sqrt(num-examples): a reply of weight w may move
    #: ``norm_bound * sqrt(w)`` (None: no norm bound this round).
    norm_bound: float | None = None


def update_norm(arrays: ArrayRecord, base: ArrayRecord) -> float:
    """L2 norm of ``arrays - base`` over every array (float64)."""
    total = 0.0
    for k, a in arrays.items():
        d = a.numpy().astype(np.float64) - base[k].numpy().astype(np.float64)
        total += float(np.dot(d.ravel(), d.ravel()))
    return math.sqrt(total)


def scale_update(arrays: ArrayRecord, base: ArrayRecord, factor: float) -> ArrayRecord:
    """``base + factor * (arrays - base)``, in each array's own dtype."""
    out = {}
    for k, a in arrays.items():
        b = base[k].numpy()
        d = a.numpy().astype(np.float64) - b.astype(np.float64)
        out[k] = torch.from_numpy((b.astype(np.float64) + factor * d).astype(b.dtype))
    return ArrayRecord(out)


def share_cap(weights: Sequence[int], max_share: float) -> list[int]:
    """``weights`` with the largest lowered so that none is above ``max_share`` of the total
    *after* lowering (water filling: the k largest become one cap c = s R / (1 - k s), R the
    sum of the others). With fewer than ``1 / max_share`` weights the cap cannot hold: all
    become the smallest (equal shares)."""
    n = len(weights)
    if n == 0 or max_share >= 1 or max(weights) <= max_share * sum(weights):
        return list(weights)
    if n * max_share <= 1:
        return [min(weights)] * n
    order = sorted(weights, reverse=True)
    for k in range(1, n):
        if k * max_share >= 1:
            break
        rest = sum(order[k:])
        cap = math.floor(max_share * rest / (1 - k * max_share))
        # Invariant once it holds: every uncapped weight is <= the cap, and the cap's share,
        # cap / (k cap + rest), is <= max_share because the cap was rounded down.
        if order[k] <= cap:
            return [min(w, max(cap, 1)) for w in weights]
    return [min(weights)] * n


def apply_bounds(
    replies: Sequence[TrainReply],
    base: ArrayRecord,
    cfg: BoundsConfig,
    claims: dict[str, int],
) -> Bounded:
    """The replies of one round after the weight and norm bounds of ``cfg``. ``base``: the
    global arrays the round sent. ``claims``: each shop's largest earlier num-examples claim,
    updated here (the server keeps it across rounds).

    Order: a claim is capped to its growth, then to its share; the norm bound uses the capped
    weight (a lie about the weight cannot buy a larger norm than the share cap allows); the
    share cap is solved again over the replies the norm bound keeps."""
    out = Bounded(list(replies))
    if not cfg.enabled or not replies:
        return out
    grown = [_bound_growth(r, cfg, claims) for r in replies]
    weights = _bound_share(grown, cfg)
    _bound_norms(out, base, cfg, weights)
    kept = [i for i, r in enumerate(out.replies) if r is not None]
    final = _bound_share([grown[i] for i in kept], cfg)
    for i, n in zip(kept, final, strict=True):
        reply = out.replies[i]
        if n < reply.num_examples:
            log.warning(
                "capped num-examples of shop %s: %d -> %d (growth <= %g x its largest earlier "
                "claim, share <= %g of the round)",
                reply.shop, reply.num_examples, n, cfg.max_growth, cfg.max_share,
            )  # fmt: skip
            out.capped.append(reply.shop)
            out.replies[i] = dataclasses.replace(reply, num_examples=n)
    return out


def _bound_growth(reply: TrainReply, cfg: BoundsConfig, claims: dict[str, int]) -> int:
    """The claim of ``reply`` capped to ``max_growth`` x the shop's largest earlier claim;
    records it as the shop's claim."""
    n, before = reply.num_examples, claims.get(reply.shop)
    if cfg.max_growth > 0 and before is not None and n > cfg.max_growth * before:
        n = max(1, math.floor(cfg.max_growth * before))
        log.warning(
            "num-examples of shop %s: %d > %g x its largest earlier claim %d",
            reply.shop, reply.num_examples, cfg.max_growth, before,
        )  # fmt: skip
    claims[reply.shop] = max(claims.get(reply.shop, 0), n)
    return n


def _bound_share(weights: list[int], cfg: BoundsConfig) -> list[int]:
    if len(weights) < cfg.min_replies:  # with 2 replies a share cap would only equalise them
        return weights
    capped = share_cap(weights, cfg.max_share)
    if len(weights) * cfg.max_share <= 1 and len(set(capped)) == 1 != len(set(weights)):
        log.info(
            "%d replies cannot each hold <= %g of the weight: equal weights",
            len(weights), cfg.max_share,
        )  # fmt: skip
    return capped


def _bound_norms(out: Bounded, base: ArrayRecord, cfg: BoundsConfig, weights: list[int]) -> None:
    """Reject or clip each update whose norm per sqrt(weight) is over ``norm_multiple`` x the
    round's median: an honest update grows about as the square root of the examples behind
    it (Online Retail, window 0: raw norms 0.2 .. 44.5, the UK 25x the median; per sqrt of
    the examples all within 1.7x of the median)."""
    if cfg.norm_multiple <= 0:
        return
    if len(out.replies) < cfg.min_replies:
        log.info(
            "%d train replies (< federated.bounds.min_replies=%d): no update-norm bound this "
            "round", len(out.replies), cfg.min_replies,
        )  # fmt: skip
        return
    norms = [update_norm(r.arrays, base) for r in out.replies]
    per = [n / math.sqrt(w) for n, w in zip(norms, weights, strict=True)]
    median = float(np.median(per))
    if median <= 0:
        log.info("median update norm is 0: no update-norm bound this round")
        return
    out.norm_bound = cfg.norm_multiple * median
    for i, (reply, norm, w) in enumerate(zip(list(out.replies), norms, weights, strict=True)):
        bound = out.norm_bound * math.sqrt(w)
        if norm <= bound:
            continue
        why = (
            f"update norm {norm:.4g} > {bound:.4g} ({cfg.norm_multiple:g} x the round's median "
            f"norm per sqrt(num-examples), at {w} examples)"
        )
        if cfg.action == "reject":
            log.warning("rejected train update of shop %s: %s", reply.shop, why)
            out.rejected.append((reply.shop, why))
            out.replies[i] = None
        else:
            log.warning("clipped train update of shop %s: %s", reply.shop, why)
            out.clipped.append(reply.shop)
            arrays = scale_update(reply.arrays, base, bound / norm)
            out.replies[i] = dataclasses.replace(reply, arrays=arrays)

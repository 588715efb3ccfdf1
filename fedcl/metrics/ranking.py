"""Ranking metrics of one shop on one test window: HR@K, NDCG@K, Recall@K, MRR.

One ordering everywhere: score descending, ties broken by the lower item index first. The
rank (1-based) of a target item ``j`` of a user is therefore
``1 + #{k : s_k > s_j} + #{k : s_k == s_j and k < j}``; every metric is a function of the
targets' ranks, so no full sort is needed. NaN scores count as ``-inf``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fedcl.data.interactions import Interactions

VARIANTS = ("new", "repeat")
ScoreAll = Callable[[Tensor], Tensor]  # users (B,) -> scores (B, n_items)


@dataclass
class EvalTask:
    """Test users of one shop on one test window, with their targets and masked items.

    Row ``u`` of a CSR pair holds ``items[ptr[u]:ptr[u + 1]]``. Targets are distinct and in
    order of first purchase in the test part; mask items are distinct and ascending.
    """

    users: Tensor  # (U,) int64, ascending
    target_ptr: Tensor  # (U + 1,) int64
    target_items: Tensor  # (nnz_t,) int64
    mask_ptr: Tensor  # (U + 1,) int64
    mask_items: Tensor  # (nnz_m,) int64
    n_items: int
    variant: str  # "new" | "repeat"
    n_cold_users: int = 0  # test users skipped: no event in the history
    n_dropped_users: int = 0  # "new": users with history whose every test item was a re-buy

    @property
    def n_users(self) -> int:
        return int(self.users.shape[0])

    def to(self, device: torch.device | str) -> EvalTask:
        t = (self.users, self.target_ptr, self.target_items, self.mask_ptr, self.mask_items)
        rest = (self.n_items, self.variant, self.n_cold_users, self.n_dropped_users)
        return EvalTask(*(x.to(device) for x in t), *rest)


def build_eval_task(history: Interactions, test: Interactions, variant: str) -> EvalTask:
    """The evaluation task of ``test`` for users with a ``history`` (see ARCHITECTURE.md).

    ``new``: the user's distinct history items are masked and are not targets; a user left
    without target is dropped (counted in ``n_dropped_users``). ``repeat``: nothing masked,
    every distinct test item is a target. Users of ``test`` without history are skipped and
    counted in ``n_cold_users``. Targets keep the order of first purchase in ``test``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    n_items = max(history.n_items, test.n_items)
    dev = test.users.device
    span = max(n_items, 1)  # pair key = user * span + item
    h_users_ev, h_items_ev = history.users.to(dev), history.items.to(dev)
    h_keys = torch.unique(h_users_ev * span + h_items_ev)  # (P_h,) sorted distinct pairs
    h_users = torch.unique(h_users_ev)

    # Distinct test pairs with the time position of their first purchase.
    by_time = torch.sort(test.times, stable=True).indices  # (N,) (no-op when time-sorted)
    keys, pos = torch.sort((test.users * span + test.items)[by_time], stable=True)
    first = torch.ones_like(keys, dtype=torch.bool)
    first[1:] = keys[1:] != keys[:-1]
    keys, pos = keys[first], pos[first]  # (P,), pos: earliest occurrence (stable sort)

    warm = torch.isin(torch.unique(keys // span), h_users)
    keep = torch.isin(keys // span, h_users)
    if variant == "new":
        keep &= ~torch.isin(keys, h_keys)
    keys, pos = keys[keep], pos[keep]
    # Order by (user, first purchase): sort by position, then stable by user.
    order = torch.sort(pos).indices
    keys = keys[order][torch.sort(keys[order] // span, stable=True).indices]
    users, counts = torch.unique_consecutive(keys // span, return_counts=True)
    target_ptr = _ptr(counts)

    if variant == "new":
        m_keys = h_keys[torch.isin(h_keys // span, users)]
        mask_items = m_keys % span
        starts = torch.searchsorted(m_keys // span, users)
        mask_ptr = torch.cat([starts, starts.new_tensor([m_keys.numel()])])
    else:
        mask_items = keys.new_zeros(0)
        mask_ptr = keys.new_zeros(users.numel() + 1)
    n_warm = int(warm.sum())
    cold, dropped = int(warm.numel()) - n_warm, n_warm - int(users.numel())
    csr = (users, target_ptr, keys % span, mask_ptr, mask_items)
    return EvalTask(*csr, n_items, variant, n_cold_users=cold, n_dropped_users=dropped)


@dataclass
class UserMetrics:
    """Per-user metrics: ``values[name]`` is (U,) float64 on CPU, aligned with ``users``."""

    users: Tensor  # (U,) int64, CPU
    values: dict[str, Tensor]  # e.g. "hr@10", "ndcg@10", "recall@20", "mrr" -> (U,) float64

    def __getitem__(self, name: str) -> Tensor:
        return self.values[name]

    @property
    def n_users(self) -> int:
        return int(self.users.shape[0])

    def aggregate(self) -> dict[str, float | None]:
        return aggregate(self)


def aggregate(metrics: UserMetrics | Sequence[UserMetrics]) -> dict[str, float | None]:
    """Mean of every metric over users (pooled over all parts if a sequence), plus ``n_users``.

    Pooling several shops' metrics gives the user-weighted overall figure. With no user every
    metric is ``None`` (never NaN, never 0).
    """
    parts = [metrics] if isinstance(metrics, UserMetrics) else list(metrics)
    names = list(parts[0].values) if parts else []
    if any(list(p.values) != names for p in parts):
        raise ValueError("cannot aggregate UserMetrics with different metric names")
    n = sum(p.n_users for p in parts)
    out: dict[str, float | None] = {}
    for name in names:
        total = torch.cat([p.values[name] for p in parts]).sum()
        out[name] = float(total) / n if n else None
    out["n_users"] = n
    return out


@torch.no_grad()
def evaluate(
    score_all: ScoreAll,
    task: EvalTask,
    ks: tuple[int, ...] = (10, 20),
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> UserMetrics:
    """Full-catalogue ranking metrics per user: ``hr@K``, ``ndcg@K``, ``recall@K``, ``mrr``.

    Masked items score ``-inf``. NDCG@K: binary relevance, divided by the ideal DCG of
    ``min(#targets, K)`` targets. Recall@K = hits in the top K / #targets (NOT capped at K).
    MRR = 1 / rank of the first relevant item in the full ranking. ``score_all`` is called on
    user batches on ``device`` (default: the device of a bound ``nn.Module`` method, else of
    ``task.users``); metrics are computed where the scores live. Memory: O(batch_size * n_items).
    """
    ks = _check_ks(ks)
    dev = _device(score_all, task, device)
    parts: list[dict[str, Tensor]] = []
    for start in range(0, task.n_users, batch_size):
        stop = min(start + batch_size, task.n_users)
        scores = _scores(score_all, task, start, stop, dev)  # (B, n), own copy
        rows, items = _rows(task.mask_ptr, task.mask_items, start, stop, scores.device)
        scores[rows, items] = -torch.inf
        rows, items = _rows(task.target_ptr, task.target_items, start, stop, scores.device)
        ranks = _target_ranks(scores, rows, items, chunk=batch_size)  # (nnz_b,)
        parts.append(_rank_metrics(ranks, rows, stop - start, ks))
    return _collect(task, parts, [*_names("hr", ks), *_names("ndcg", ks), *_names("recall", ks)])


def sample_negatives(
    task: EvalTask,
    n_negatives: int,
    generator: torch.Generator,
    start: int = 0,
    stop: int | None = None,
) -> Tensor:
    """(B, n_negatives) items drawn i.i.d. uniformly (with replacement, as the NCF reference
    code) from the items neither masked nor targets of each user ``start <= u < stop``.

    Exact inverse sampling (no rejection): the r-th allowed item is ``r + #{forbidden f_i :
    f_i - i <= r}`` over the user's sorted forbidden items. Uniforms come from ``generator``.
    """
    stop = task.n_users if stop is None else stop
    dev, n, span, b = task.users.device, task.n_items, task.n_items + 1, stop - start
    t_rows, t_items = _rows(task.target_ptr, task.target_items, start, stop, dev)
    m_rows, m_items = _rows(task.mask_ptr, task.mask_items, start, stop, dev)
    keys = torch.unique(torch.cat([t_rows * span + t_items, m_rows * span + m_items]))
    f_rows, f_items = keys // span, keys % span  # sorted distinct forbidden items per row
    ptr = _ptr(torch.bincount(f_rows, minlength=b))
    allowed = n - (ptr[1:] - ptr[:-1])  # (B,)
    if bool((allowed <= 0).any()):
        raise ValueError("a user has no item left to sample negatives from")
    # g = f_i - i is non-decreasing within a row and lies in [0, n - 1]: rows stay apart.
    g = f_rows * span + f_items - (torch.arange(keys.numel(), device=dev) - ptr[f_rows])
    gen = generator
    u = torch.rand((b, n_negatives), generator=gen, device=gen.device, dtype=torch.float64)
    r = torch.minimum((u.to(dev) * allowed[:, None]).long(), allowed[:, None] - 1)  # (B, n_neg)
    row_base = torch.arange(b, device=dev)[:, None] * span
    return r + torch.searchsorted(g, row_base + r, right=True) - ptr[:-1, None]


@torch.no_grad()
def evaluate_sampled(
    score_all: ScoreAll,
    task: EvalTask,
    *,
    generator: torch.Generator,
    n_negatives: int = 99,
    ks: tuple[int, ...] = (10,),
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> UserMetrics:
    """Sampled protocol of the NCF papers (for comparison with published numbers only).

    Per user the positive is its first target (earliest purchase), ranked among itself and
    ``n_negatives`` items from :func:`sample_negatives`. Scores come from ``score_all`` and a
    gather (one model interface for both protocols). Ties use the same rule as
    :func:`evaluate`: a negative with an equal score beats the positive iff its item index is
    lower (a duplicated negative counts each time). Reports ``hr@K``, ``ndcg@K``, ``mrr``.
    Deterministic for a given generator seed and ``batch_size``.
    """
    ks = _check_ks(ks)
    dev = _device(score_all, task, device)
    parts: list[dict[str, Tensor]] = []
    for start in range(0, task.n_users, batch_size):
        stop = min(start + batch_size, task.n_users)
        if bool((task.target_ptr[start + 1 : stop + 1] == task.target_ptr[start:stop]).any()):
            raise ValueError("every user of an EvalTask needs at least one target")
        pos = task.target_items[task.target_ptr[start:stop]]  # (B,)
        neg = sample_negatives(task, n_negatives, generator, start, stop)  # (B, n_neg)
        scores = _scores(score_all, task, start, stop, dev)
        cand = torch.cat([pos[:, None], neg], dim=1).to(scores.device)  # (B, 1 + n_neg)
        s = scores.gather(1, cand)
        p_item, p_score = cand[:, :1], s[:, :1]
        beats = (s[:, 1:] > p_score) | ((s[:, 1:] == p_score) & (cand[:, 1:] < p_item))
        rank = (beats.sum(1) + 1).double()  # (B,)
        vals = {f"hr@{k}": (rank <= k).double() for k in ks}
        for k in ks:
            vals[f"ndcg@{k}"] = torch.where(rank <= k, 1.0 / torch.log2(rank + 1), 0.0)
        vals["mrr"] = 1.0 / rank
        parts.append(vals)
    return _collect(task, parts, [*_names("hr", ks), *_names("ndcg", ks)])


# --- helpers ------------------------------------------------------------------------------
def _ptr(counts: Tensor) -> Tensor:
    return torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])


def _names(metric: str, ks: Sequence[int]) -> list[str]:
    return [f"{metric}@{k}" for k in ks]


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive cut-offs, got {ks}")
    return ks


def _device(score_all: ScoreAll, task: EvalTask, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    owner = getattr(score_all, "__self__", None)
    if isinstance(owner, nn.Module):
        for t in (*owner.parameters(), *owner.buffers()):
            return t.device
    return task.users.device


def _rows(
    ptr: Tensor, items: Tensor, start: int, stop: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """CSR rows ``start:stop`` as (row within the batch, item) pairs, both (nnz_b,)."""
    counts = (ptr[start + 1 : stop + 1] - ptr[start:stop]).to(device)
    rows = torch.repeat_interleave(torch.arange(stop - start, device=device), counts)
    return rows, items[int(ptr[start]) : int(ptr[stop])].to(device)


def _scores(
    score_all: ScoreAll, task: EvalTask, start: int, stop: int, dev: torch.device
) -> Tensor:
    """A private (B, n_items) copy of the batch's scores, floating point, NaN -> -inf."""
    scores = score_all(task.users[start:stop].to(dev)).detach()
    if scores.ndim != 2 or scores.shape[0] != stop - start or scores.shape[1] < task.n_items:
        raise ValueError(
            f"score_all returned shape {tuple(scores.shape)}, expected ({stop - start}, >= "
            f"{task.n_items}); grow the model to the catalogue before evaluating"
        )
    if not scores.is_floating_point():
        scores = scores.double()
    return torch.where(scores.isnan(), -torch.inf, scores)


def _target_ranks(scores: Tensor, rows: Tensor, items: Tensor, chunk: int) -> Tensor:
    """(nnz,) 1-based ranks of (row, item) targets; ``chunk`` rows of (n_items,) at a time."""
    ar = torch.arange(scores.shape[1], device=scores.device)
    out = []
    for s in range(0, rows.numel(), chunk):
        it = items[s : s + chunk, None]  # (c, 1)
        row_scores = scores[rows[s : s + chunk]]  # (c, n)
        st = row_scores.gather(1, it)  # (c, 1)
        beats = (row_scores > st) | ((row_scores == st) & (ar < it))
        out.append(beats.sum(1) + 1)
    return torch.cat(out) if out else rows.new_zeros(0)


def _rank_metrics(
    ranks: Tensor, rows: Tensor, n_rows: int, ks: tuple[int, ...]
) -> dict[str, Tensor]:
    """Per-row metrics from the targets' ranks; rows of a CSR batch, each with >= 1 target."""
    n_t = torch.bincount(rows, minlength=n_rows)  # (B,)
    if bool((n_t == 0).any()):
        raise ValueError("every user of an EvalTask needs at least one target")
    k_max = max(ks)
    disc = 1.0 / torch.log2(torch.arange(2, k_max + 2, device=rows.device, dtype=torch.float64))
    # hit[b, r - 1] = 1 iff a target of row b has rank r <= k_max (ranks within a row differ).
    hit = torch.zeros(n_rows, k_max, dtype=torch.float64, device=rows.device)
    top = ranks <= k_max
    hit[rows[top], ranks[top] - 1] = 1.0
    idcg = torch.cumsum(disc, 0)  # (k_max,): ideal DCG of 1..k_max targets
    out: dict[str, Tensor] = {}
    for k in ks:
        hits = hit[:, :k].sum(1)
        out[f"hr@{k}"] = (hits > 0).double()
        out[f"ndcg@{k}"] = (hit[:, :k] @ disc[:k]) / idcg[torch.clamp(n_t, max=k) - 1]
        out[f"recall@{k}"] = hits / n_t
    first = torch.full((n_rows,), torch.iinfo(torch.long).max, device=rows.device)
    first = first.scatter_reduce(0, rows, ranks, reduce="amin")
    out["mrr"] = 1.0 / first.double()
    return out


def _collect(task: EvalTask, parts: list[dict[str, Tensor]], names: list[str]) -> UserMetrics:
    names = [*names, "mrr"]
    empty = torch.zeros(0, dtype=torch.float64)
    values = {n: torch.cat([p[n] for p in parts]).cpu() if parts else empty for n in names}
    return UserMetrics(task.users.cpu(), values)

"""Ranking metrics of one shop on one test window: HR@K, NDCG@K, Recall@K, MRR.

One ordering everywhere: score descending, ties broken by the lower item index first. The
rank (1-based) of a target item ``j`` of a user is therefore
``1 + #{k : s_k > s_j} + #{k : s_k == s_j and k < j}``; every metric is a function of the
targets' ranks, so no full sort is needed. NaN scores count as ``-inf``; ``-0.0`` ties ``+0.0``.
Per user batch, one ``topk`` (ties across its cut repaired) gives the exact top-K lists and
two comparisons with each user's best target give its MRR rank: nothing is done per target
and scores are compared in their own dtype (float64 keeps its full precision).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
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
    # Users with history left without target: "new", every test item was a re-buy; either
    # variant, every target was bought again later (:func:`drop_targets`).
    n_dropped_users: int = 0

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
    span = max(n_items, 1)  # pair key = user * span + item; numpy: fast sorts on CPU
    h_keys = np.sort(history.users.cpu().numpy() * span + history.items.cpu().numpy())
    h_keys = h_keys[_first_of_runs(h_keys)]  # (P_h,) sorted distinct pairs
    h_users = (h_key_users := h_keys // span)[_first_of_runs(h_key_users)]

    # Distinct test pairs with the time position of their first purchase.
    by_time = np.argsort(test.times.cpu().numpy(), kind="stable")  # (N,) (no-op when time-sorted)
    pairs = (test.users.cpu().numpy() * span + test.items.cpu().numpy())[by_time]
    pos = np.argsort(pairs, kind="stable")
    first = _first_of_runs(pairs[pos])
    keys, pos = pairs[pos][first], pos[first]  # (P,), pos: earliest occurrence (stable sort)

    t_users = keys // span  # ascending
    distinct = t_users[_first_of_runs(t_users)]
    n_warm = int(_member(h_users, distinct).sum())
    keep = _member(h_users, t_users)
    if variant == "new":
        keep &= ~_member(h_keys, keys)
    keys, pos = keys[keep], pos[keep]
    keys = keys[np.lexsort((pos, keys // span))]  # by (user, first purchase)
    users = (key_users := keys // span)[_first_of_runs(key_users)]
    target_ptr = np.append(np.searchsorted(key_users, users), key_users.size)

    if variant == "new":  # each user's distinct history items: a slice of h_keys
        lo = np.searchsorted(h_key_users, users, side="left")
        counts = np.searchsorted(h_key_users, users, side="right") - lo
        mask_ptr = np.concatenate([[0], np.cumsum(counts)])
        m_keys = h_keys[np.repeat(lo - mask_ptr[:-1], counts) + np.arange(mask_ptr[-1])]
    else:
        m_keys, mask_ptr = keys[:0], np.zeros(users.size + 1, dtype=np.int64)
    cold, dropped = distinct.size - n_warm, n_warm - users.size
    csr = (users, target_ptr, keys % span, mask_ptr, m_keys % span)
    csr = tuple(torch.from_numpy(x.astype(np.int64)).to(test.users.device) for x in csr)
    return EvalTask(*csr, n_items, variant, n_cold_users=cold, n_dropped_users=dropped)


def drop_targets(task: EvalTask, users: Tensor, items: Tensor) -> EvalTask:
    """``task`` without the targets (user, item) found among the pairs ``(users[k], items[k])``.

    Masks are left as they are. A user left without target is dropped (counted in
    ``n_dropped_users``). Returns ``task`` itself when no target is among the pairs.
    """
    if task.n_users == 0 or users.numel() == 0:
        return task
    span = max(task.n_items, int(items.max()) + 1)  # pair key = user * span + item
    u, tp = task.users.cpu().numpy(), task.target_ptr.cpu().numpy()
    t_items, counts = task.target_items.cpu().numpy(), np.diff(tp)
    row = np.repeat(np.arange(u.size), counts)  # (nnz_t,) owner row of every target
    bought = np.sort(users.cpu().numpy() * span + items.cpu().numpy())
    keep = ~_member(bought, u[row] * span + t_items)
    if keep.all():
        return task
    kept = np.bincount(row[keep], minlength=u.size)  # (U,) targets left per user
    alive = kept > 0
    mp, m_items = task.mask_ptr.cpu().numpy(), task.mask_items.cpu().numpy()
    m_counts = np.diff(mp)
    m_keep = np.repeat(alive, m_counts)
    csr = (
        u[alive],
        np.concatenate([[0], np.cumsum(kept[alive])]),
        t_items[keep],
        np.concatenate([[0], np.cumsum(m_counts[alive])]),
        m_items[m_keep],
    )
    dev = task.users.device
    csr = tuple(torch.from_numpy(x.astype(np.int64)).to(dev) for x in csr)
    dropped = task.n_dropped_users + int((~alive).sum())
    return EvalTask(*csr, task.n_items, task.variant, task.n_cold_users, dropped)


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


def metric_names(ks: Sequence[int]) -> list[str]:
    """The per-user metrics :func:`evaluate` reports for cut-offs ``ks``."""
    ks = _check_ks(tuple(ks))
    return [*_names("hr", ks), *_names("ndcg", ks), *_names("recall", ks), "mrr"]


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
        parts.append(_batch_metrics(scores, rows, items, ks))
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
def _first_of_runs(a: np.ndarray) -> np.ndarray:
    """Boolean mask of the first element of every run of equal values of a 1-D ``a``."""
    return np.concatenate([[True], a[1:] != a[:-1]])[: a.size]


def _member(sorted_unique: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``np.isin(x, sorted_unique)`` by binary search."""
    i = np.minimum(np.searchsorted(sorted_unique, x), max(sorted_unique.size - 1, 0))
    return sorted_unique[i] == x if sorted_unique.size else np.zeros(x.shape, dtype=bool)


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
    return torch.nan_to_num(scores, nan=-torch.inf, posinf=torch.inf, neginf=-torch.inf)


def _top_items(s: Tensor, k: int) -> Tensor:
    """(B, k) the first ``k <= n`` items of each row of ``s`` (B, n) in rank order. ``topk``
    orders equal values arbitrarily: rows whose k-th and (k+1)-th values tie get their set
    rebuilt (items above the k-th value, then the lowest-index ones equal to it)."""
    vals, idx = torch.topk(s, min(k + 1, s.shape[1]))
    if vals.shape[1] > k:
        tied = (vals[:, k - 1] == vals[:, k]).nonzero().squeeze(1)
        vals, idx = vals[:, :k], idx[:, :k]
        if tied.numel():
            cut = vals[tied, k - 1 :]  # (T, 1)
            above = vals[tied] > cut  # (T, k): every item above the cut is in the top k
            eq = s.index_select(0, tied) == cut  # (T, n)
            need = k - above.sum(1, keepdim=True, dtype=torch.int32)
            member = eq & (eq.cumsum(1, dtype=torch.int32) <= need)  # lowest-index ties
            r, c = above.nonzero(as_tuple=True)
            member[r, idx[tied][r, c]] = True
            idx[tied] = member.nonzero()[:, 1].view(-1, k)  # exactly k per row, ascending
    idx = idx.sort(1).values
    v = s.gather(1, idx) + 0.0  # + 0.0: -0.0 becomes +0.0 (they tie, as in comparisons)
    return idx.gather(1, v.sort(dim=1, descending=True, stable=True).indices)


def _batch_metrics(s: Tensor, rows: Tensor, items: Tensor, ks: Sequence[int]) -> dict[str, Tensor]:
    """Per-row metrics of a batch: scores ``s`` (B, n) (masked, no NaN), targets (row, item)
    of a CSR batch, each row with >= 1 target. One ``topk`` and a few passes over ``s``."""
    b, n = s.shape
    n_t = torch.bincount(rows, minlength=b)  # (B,)
    if bool((n_t == 0).any()):
        raise ValueError("every user of an EvalTask needs at least one target")
    k_max = max(ks)
    disc = 1.0 / torch.log2(torch.arange(2, k_max + 2, device=s.device, dtype=torch.float64))
    is_target = torch.zeros(s.shape, dtype=torch.bool, device=s.device)
    is_target[rows, items] = True
    # hit[b, r - 1] = 1 iff the item at rank r <= k_max of row b is a target.
    hit = torch.zeros(b, k_max, dtype=torch.float64, device=s.device)
    hit[:, : min(k_max, n)] = is_target.gather(1, _top_items(s, min(k_max, n))).double()
    idcg = torch.cumsum(disc, 0)  # (k_max,): ideal DCG of 1..k_max targets
    out: dict[str, Tensor] = {}
    for k in ks:
        hits = hit[:, :k].sum(1)
        out[f"hr@{k}"] = (hits > 0).double()
        out[f"ndcg@{k}"] = (hit[:, :k] @ disc[:k]) / idcg[torch.clamp(n_t, max=k) - 1]
        out[f"recall@{k}"] = hits / n_t
    # MRR: the best target j (top score, then lowest index) ranks 1 + #{s > s_j} +
    # #{s == s_j, index < j}. Comparisons written as 0/1 floats sum ~4x faster than bools.
    st = s[rows, items]  # (nnz,)
    best = s.new_full((b,), -torch.inf).scatter_reduce(0, rows, st, reduce="amax")[:, None]
    j = torch.where(st == best[rows, 0], items, n)
    j = rows.new_full((b,), n).scatter_reduce(0, rows, j, reduce="amin")
    exact = torch.float32 if n < 2**24 else torch.float64  # sums of n 0/1 values stay exact
    buf = torch.empty(s.shape, device=s.device, dtype=exact)
    ranks = 1 + torch.gt(s, best, out=buf).sum(1)
    eq = torch.eq(s, best, out=buf)
    tied = (eq.sum(1) > 1).nonzero().squeeze(1)  # rows where other items tie with j
    if tied.numel():
        after = torch.arange(n, device=s.device) >= j[tied, None]
        ranks[tied] += eq.index_select(0, tied).masked_fill_(after, 0).sum(1)
    out["mrr"] = 1.0 / ranks.double()
    return out


def _collect(task: EvalTask, parts: list[dict[str, Tensor]], names: list[str]) -> UserMetrics:
    names = [*names, "mrr"]
    empty = torch.zeros(0, dtype=torch.float64)
    values = {n: torch.cat([p[n] for p in parts]).cpu() if parts else empty for n in names}
    return UserMetrics(task.users.cpu(), values)

"""Speed of full-catalogue evaluation: ``evaluate`` against a full-sort reference, and
``build_eval_task``.

Run: ``python benchmarks/bench_eval.py`` (see ``--help``). The task is Online-Retail-like
but larger: 2,000 test users, 4,000 items, 350k history events, ~20 targets per user
("new" variant: each user's ~170 distinct history items are masked). Two score matrices
(fixed seed): ``randn`` (continuous, as MF / NeuMF / SASRec) and ``counts`` (small integers,
as Pop: many ties). The reference ranks by one full stable ``torch.sort`` per batch and
gathers the targets' ranks; both give identical metrics (checked). Times are the best of
``--repeats`` runs; CPU timings are only comparable within one run on an idle machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from fedcl.data.interactions import Interactions  # noqa: E402
from fedcl.metrics.ranking import (  # noqa: E402
    EvalTask,
    UserMetrics,
    _rows,
    _scores,
    build_eval_task,
    evaluate,
)


def make_data(
    n_users: int, n_items: int, n_history: int, targets_per_user: int, seed: int
) -> tuple[Interactions, Interactions]:
    """History (popularity-skewed items) and a test part with ~``targets_per_user`` new items."""
    g = torch.Generator().manual_seed(seed)
    popular = torch.rand(n_items, generator=g) ** 3  # skewed item popularity
    h_users = torch.randint(n_users, (n_history,), generator=g)
    h_items = torch.multinomial(popular, n_history, replacement=True, generator=g)
    history = Interactions(h_users, h_items, torch.arange(n_history), n_users, n_items)
    n_test = n_users * (targets_per_user + 3)  # a few duplicates and re-buys are dropped
    t_users = torch.arange(n_users).repeat_interleave(targets_per_user + 3)
    t_items = torch.randint(n_items, (n_test,), generator=g)
    times = torch.arange(n_history, n_history + n_test)
    return history, Interactions(t_users, t_items, times, n_users, n_items)


def reference_evaluate(
    score_all: Callable[[torch.Tensor], torch.Tensor],
    task: EvalTask,
    ks: tuple[int, ...],
    batch_size: int,
) -> UserMetrics:
    """Straightforward: a full stable sort per batch, then every target's rank by gather."""
    k_max, parts = max(ks), []
    disc = 1.0 / torch.log2(torch.arange(2, k_max + 2, dtype=torch.float64))
    idcg = torch.cumsum(disc, 0)
    for start in range(0, task.n_users, batch_size):
        stop = min(start + batch_size, task.n_users)
        scores = _scores(score_all, task, start, stop, torch.device("cpu"))
        rows, items = _rows(task.mask_ptr, task.mask_items, start, stop, scores.device)
        scores[rows, items] = -torch.inf
        b, n = scores.shape
        order = torch.sort(scores + 0.0, dim=1, descending=True, stable=True).indices
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(1, n + 1).expand(b, n))  # inverse permutation
        rows, items = _rows(task.target_ptr, task.target_items, start, stop, scores.device)
        ranks = rank[rows, items]
        n_t = torch.bincount(rows, minlength=b)
        hit = torch.zeros(b, k_max, dtype=torch.float64)
        top = ranks <= k_max
        hit[rows[top], ranks[top] - 1] = 1.0
        out = {}
        for k in ks:
            hits = hit[:, :k].sum(1)
            out[f"hr@{k}"] = (hits > 0).double()
            out[f"ndcg@{k}"] = (hit[:, :k] @ disc[:k]) / idcg[torch.clamp(n_t, max=k) - 1]
            out[f"recall@{k}"] = hits / n_t
        first = torch.full((b,), n + 1).scatter_reduce(0, rows, ranks, reduce="amin")
        out["mrr"] = 1.0 / first.double()
        parts.append(out)
    names = [f"{m}@{k}" for m in ("hr", "ndcg", "recall") for k in ks] + ["mrr"]
    return UserMetrics(task.users, {n: torch.cat([p[n] for p in parts]) for n in names})


def best_time(fn: Callable[[], object], repeats: int) -> tuple[object, float]:
    """Result of ``fn()`` and its best wall time over ``repeats`` runs, in s."""
    out, best = None, float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--items", type=int, default=4000)
    ap.add_argument("--history", type=int, default=350_000)
    ap.add_argument("--targets", type=int, default=20, help="~targets per user")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ks = (10, 20)
    history, test = make_data(args.users, args.items, args.history, args.targets, args.seed)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), batch {args.batch_size}"
    )

    for variant in ("new", "repeat"):
        task, dt = best_time(lambda v=variant: build_eval_task(history, test, v), args.repeats)
        print(
            f"build_eval_task {variant:6s}: {dt * 1e3:7.1f} ms  ({len(history):,} history / "
            f"{len(test):,} test events -> {task.n_users:,} users, "
            f"{task.target_items.numel() / max(task.n_users, 1):.1f} targets per user)"
        )
    task = build_eval_task(history, test, "new")

    g = torch.Generator().manual_seed(args.seed + 1)
    shape = (args.users, args.items)
    matrices = {
        "randn": torch.randn(shape, generator=g),
        "counts": torch.randint(0, 30, (args.items,), generator=g).float().expand(shape),
    }
    print(f"{'scores':8s} {'evaluate users/s':>17s} {'full-sort users/s':>18s} {'ratio':>7s}")
    for name, matrix in matrices.items():

        def score_all(users: torch.Tensor, m: torch.Tensor = matrix) -> torch.Tensor:
            return m[users]

        fast, t_fast = best_time(
            lambda f=score_all: evaluate(f, task, ks, args.batch_size), args.repeats
        )
        ref, t_ref = best_time(
            lambda f=score_all: reference_evaluate(f, task, ks, args.batch_size), args.repeats
        )
        if any(not torch.equal(fast[k], ref[k]) for k in ref.values):
            raise SystemExit(f"{name}: evaluate and the full-sort reference disagree")
        u = task.n_users
        print(f"{name:8s} {u / t_fast:17,.0f} {u / t_ref:18,.0f} {t_ref / t_fast:6.1f}x")


if __name__ == "__main__":
    main()

"""Ranking quality and training time of fedcl's models against ``implicit``, same split.

Run: ``python benchmarks/bench_quality.py [--datasets online_retail,movielens] [--seeds 1]
[--threads 2] [--quick]``

Protocol (centralized: all shops pooled, global user ids), with T = number of windows:

* train on the train parts of windows 0..T-1 (pooled; Pop and History observe them window
  after window, as in a run);
* test on the test part of window T-1 with history = train parts of windows 0..T-1, the
  "new" variant (history masked, re-buys are not targets) and the "repeat" variant;
* models are sized to the users/items known at window T-1's cut, like a fedcl run: test
  users beyond are cold (skipped), catalogue items beyond are ranked last;
* NDCG@10 / HR@10 come from ``fedcl.metrics.ranking.build_eval_task`` + ``evaluate`` for
  every model (implicit's factors are wrapped into a ``score_all`` callable);
* hyper-parameters are chosen on ``PreparedData.validation_view(0.15)`` (the same protocol
  on the validation stream: each window's test part hidden, the last 15% of its train part
  plays the test part), by "new" NDCG@10, never on test:
  - fedcl MF (BPR, ``conf/model/mf.yaml``): lr {1e-3, 5e-3, 1e-2} x epochs {5, 20} x batch
    {512, 4096}, Adam, 1 uniform negative (``TrainConfig`` defaults otherwise);
  - implicit BPR (factors 64): learning_rate {0.01, 0.05}, regularization {0.01},
    iterations {50, 100};
  - implicit ALS (factors 64, 15 iterations, confidence matrix = purchase counts):
    regularization {0.01, 0.1} x alpha {1, 10};
  - Pop and History: their ``conf/model`` defaults, no search.
  fedcl MF is also shown with the plain ``TrainConfig`` defaults (no search).

Datasets: ``online_retail`` (the shipped file, ``prepare_cached``) and ``movielens``: a
synthetic stream (``SyntheticConfig(n_shops=1, n_users=3000, n_items=1500, n_periods=6)``)
written as a MovieLens ``u.data`` file (tab-separated user item rating unix_seconds) in a
temp dir and read back with ``MovieLensConfig(path=..., rating_threshold=None)``.

Printed per dataset: the validation grid, then a markdown table with NDCG@10 (+- standard
error over users), HR@10 per variant, train seconds, chosen hyper-parameters, and the ratio
fedcl-MF NDCG@10 / implicit-BPR NDCG@10 ("new"; aim >= 0.9). With ``--seeds N`` the final
(test) models are trained N times and metrics averaged. Without ``implicit`` installed the
script prints "skipped: pip install implicit" and exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import _common
import numpy as np
import torch
from _common import markdown_table, median, require_implicit
from omegaconf import OmegaConf

from fedcl.data.dataset import PreparedData
from fedcl.data.interactions import Interactions
from fedcl.evaluation import restrict_users
from fedcl.metrics.ranking import EvalTask, build_eval_task, evaluate
from fedcl.models.history import History
from fedcl.models.mf import MF
from fedcl.models.pop import Pop
from fedcl.train import TrainConfig, train_window

ScoreAll = Callable[[torch.Tensor], torch.Tensor]
VARIANTS = ("new", "repeat")

MF_GRID = {"lr": [1e-3, 5e-3, 1e-2], "epochs": [5, 20], "batch_size": [512, 4096]}
BPR_GRID = {"learning_rate": [0.01, 0.05], "regularization": [0.01], "iterations": [50, 100]}
ALS_GRID = {"regularization": [0.01, 0.1], "alpha": [1.0, 10.0]}
QUICK = {  # --quick: one point per grid, for a smoke run
    "mf": {"lr": [5e-3], "epochs": [5], "batch_size": [4096]},
    "bpr": {"learning_rate": [0.05], "regularization": [0.01], "iterations": [50]},
    "als": {"regularization": [0.1], "alpha": [10.0]},
}


def conf(name: str) -> dict:
    """Settings of ``conf/model/<name>.yaml`` without Hydra's keys."""
    cfg = OmegaConf.to_container(OmegaConf.load(_common.ROOT / f"conf/model/{name}.yaml"))
    return {k: v for k, v in cfg.items() if k not in ("defaults", "_target_")}


def grid(space: dict[str, list]) -> list[dict]:
    return [dict(zip(space, vals, strict=True)) for vals in itertools.product(*space.values())]


# --- the split --------------------------------------------------------------------------
@dataclass
class Split:
    """Train parts 0..T-1 and the eval tasks of window T-1 (see the module docstring)."""

    n_users: int  # users known at window T-1's cut (model rows)
    n_items: int  # items known at window T-1's cut (model rows)
    parts: list[Interactions]  # train part of each window
    train: Interactions  # all train parts pooled
    tasks: dict[str, EvalTask]  # variant -> task (users restricted to known ones)
    info: str


def make_split(data: PreparedData) -> Split:
    last = data.n_windows - 1
    n_users, n_items = data.n_users_known(None, last), data.n_items_known(last)
    all_users = 1 + int(data.events["guser_idx"].max())
    all_items = len(data.catalog)
    windows = list(range(last + 1))
    parts = [data.interactions(None, [w], "train", n_users, n_items) for w in windows]
    train = data.interactions(None, windows, "train", n_users, n_items)
    history = data.interactions(None, windows, "train", all_users, all_items)
    test = data.interactions(None, [last], "test", all_users, all_items)
    tasks = {}
    for v in VARIANTS:
        tasks[v] = restrict_users(build_eval_task(history, test, v), n_users)
    t = tasks["new"]
    info = (
        f"{len(train):,} train events (windows 0..{last}), {n_users:,} users x {n_items:,} items;"
        f" test window {last}: {len(test):,} events, {t.n_users} test users (new;"
        f" {t.n_cold_users} cold, {t.n_dropped_users} only re-buys),"
        f" {tasks['repeat'].n_users} (repeat)"
    )
    return Split(n_users, n_items, parts, train, tasks, info)


def padded(score_all: ScoreAll, n_items: int) -> ScoreAll:
    """``score_all`` padded with -inf for catalogue items the model has no row for."""

    def score(users: torch.Tensor) -> torch.Tensor:
        s = score_all(users)
        missing = n_items - s.shape[1]
        return torch.nn.functional.pad(s, (0, missing), value=-torch.inf) if missing > 0 else s

    return score


def measure(score_all: ScoreAll, split: Split) -> dict[str, tuple[float, float, float]]:
    """variant -> (NDCG@10, its standard error over users, HR@10)."""
    out = {}
    for v, task in split.tasks.items():
        um = evaluate(padded(score_all, task.n_items), task, ks=(10,), batch_size=1024)
        ndcg, hr = um["ndcg@10"], um["hr@10"]
        se = float(ndcg.std() / math.sqrt(max(len(ndcg), 1))) if len(ndcg) > 1 else float("nan")
        out[v] = (float(ndcg.mean()), se, float(hr.mean()))
    return out


# --- the models: each fit returns (score_all, train seconds) ------------------------------
def fit_mf(split: Split, hp: dict, seed: int) -> tuple[ScoreAll, float]:
    torch.manual_seed(seed)  # embedding init
    model = MF(split.n_users, split.n_items, **conf("mf"))
    model.observe(split.train)
    cfg = dataclasses.replace(TrainConfig(), **hp)
    stats = train_window(model, split.train, cfg, torch.Generator().manual_seed(seed))
    return model.score_all, stats.seconds


def csr(split: Split, binary: bool):
    import scipy.sparse as sp

    users, items = split.train.users.numpy(), split.train.items.numpy()
    m = sp.csr_matrix(
        (np.ones(len(users), dtype=np.float32), (users, items)),
        shape=(split.n_users, split.n_items),
    )  # duplicates are summed: the purchase count of each (user, item)
    m.sum_duplicates()
    if binary:
        m.data[:] = 1.0
    return m


def factor_scores(user_factors: np.ndarray, item_factors: np.ndarray) -> ScoreAll:
    """``user_factors[u] @ item_factors.T`` as fedcl's ``score_all``."""
    uf, itf = torch.from_numpy(np.ascontiguousarray(user_factors)), torch.from_numpy(item_factors)

    def score_all(users: torch.Tensor) -> torch.Tensor:
        return uf[users] @ itf.T  # (B, I), a fresh tensor

    return score_all


def fit_bpr(split: Split, hp: dict, seed: int, threads: int) -> tuple[ScoreAll, float]:
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    m = csr(split, binary=True)
    model = BayesianPersonalizedRanking(
        factors=64, num_threads=threads, random_state=seed, **hp
    )  # fmt: skip
    t0 = time.perf_counter()
    model.fit(m, show_progress=False)
    secs = time.perf_counter() - t0
    # The CPU model's factors already hold the bias column (users: 1, items: the bias).
    return factor_scores(model.user_factors, model.item_factors), secs


def fit_als(split: Split, hp: dict, seed: int, threads: int) -> tuple[ScoreAll, float]:
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    m = csr(split, binary=False)  # confidence = 1 + alpha * purchase count
    with threadpool_limits(1, "blas"):  # implicit's own threads; BLAS threads would fight
        model = AlternatingLeastSquares(
            factors=64, iterations=15, num_threads=threads, random_state=seed, **hp
        )  # fmt: skip
        t0 = time.perf_counter()
        model.fit(m, show_progress=False)
        secs = time.perf_counter() - t0
    return factor_scores(model.user_factors, model.item_factors), secs


def fit_observer(cls, name: str) -> Callable[[Split, dict, int], tuple[ScoreAll, float]]:
    def fit(split: Split, hp: dict, seed: int) -> tuple[ScoreAll, float]:
        model = cls(split.n_users, split.n_items, **conf(name))
        t0 = time.perf_counter()
        for part in split.parts:  # window after window: their per-window decay applies
            model.observe(part)
        return model.score_all, time.perf_counter() - t0

    return fit


# --- the benchmark ----------------------------------------------------------------------
@dataclass
class Result:
    model: str
    hp: str
    metrics: dict[str, tuple[float, float, float]]
    secs: float


def search(name, fit, space, val: Split, log: list[list[str]]) -> dict:
    """The grid point with the best validation "new" NDCG@10 (one seed)."""
    best, best_ndcg = None, -1.0
    for hp in grid(space):
        score_all, secs = fit(val, hp, 0)
        m = measure(score_all, val)["new"]
        log.append([name, fmt_hp(hp), f"{m[0]:.4f}", f"{m[2]:.4f}", f"{secs:.1f}"])
        print(f"  val {name:<14s} {fmt_hp(hp):<52s} ndcg@10 {m[0]:.4f}  {secs:6.1f} s", flush=True)
        if m[0] > best_ndcg:
            best, best_ndcg = hp, m[0]
    return best


def fmt_hp(hp: dict) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in hp.items())


def final(name, fit, hp, test: Split, seeds: int, note: str = "") -> Result:
    runs = [fit(test, hp, s) for s in range(seeds)]
    per_seed = [measure(score_all, test) for score_all, _ in runs]
    metrics = {
        v: tuple(float(np.mean([p[v][k] for p in per_seed])) for k in range(3)) for v in VARIANTS
    }
    return Result(name, note or fmt_hp(hp), metrics, median([s for _, s in runs]))


def bench(label: str, data: PreparedData, args) -> None:
    val, test = make_split(data.validation_view(0.15)), make_split(data)
    print(f"\n## {label}\n\nvalidation: {val.info}\ntest:       {test.info}\n", flush=True)
    spaces = QUICK if args.quick else {"mf": MF_GRID, "bpr": BPR_GRID, "als": ALS_GRID}
    th = args.threads

    def bpr(s, hp, seed):
        return fit_bpr(s, hp, seed, th)

    def als(s, hp, seed):
        return fit_als(s, hp, seed, th)

    log: list[list[str]] = []
    hp_mf = search("fedcl MF", fit_mf, spaces["mf"], val, log)
    hp_bpr = search("implicit BPR", bpr, spaces["bpr"], val, log)
    hp_als = search("implicit ALS", als, spaces["als"], val, log)
    print('\nvalidation grid ("new" variant, seed 0):\n')
    print(markdown_table(["model", "hyper-parameters", "val NDCG@10", "val HR@10", "train s"], log))

    defaults = TrainConfig()
    default_hp = {"lr": defaults.lr, "epochs": defaults.epochs, "batch_size": defaults.batch_size}
    results = [
        final("fedcl MF (BPR)", fit_mf, hp_mf, test, args.seeds),
        final("fedcl MF, TrainConfig defaults", fit_mf, default_hp, test, args.seeds),
        final("implicit BPR", bpr, hp_bpr, test, args.seeds),
        final("implicit ALS", als, hp_als, test, args.seeds),
        final("fedcl Pop", fit_observer(Pop, "pop"), {}, test, 1, fmt_hp(conf("pop"))),
        final("fedcl History", fit_observer(History, "history"), {}, test, 1,
              fmt_hp(conf("history"))),
    ]  # fmt: skip
    rows = []
    for r in results:
        n, r_ = r.metrics["new"], r.metrics["repeat"]
        rows.append([
            r.model, f"{n[0]:.4f} ± {n[1]:.4f}", f"{n[2]:.4f}", f"{r_[0]:.4f} ± {r_[1]:.4f}",
            f"{r_[2]:.4f}", f"{r.secs:.2f}", r.hp,
        ])  # fmt: skip
    head = [
        "model", "NDCG@10 new", "HR@10 new", "NDCG@10 repeat", "HR@10 repeat", "train s",
        "hyper-parameters (chosen on validation)",
    ]  # fmt: skip
    seeds = f"mean of {args.seeds} seeds" if args.seeds > 1 else "seed 0"
    print(f"\ntest ({seeds}; ± = standard error over test users):\n")
    print(markdown_table(head, rows))
    by = {r.model: r for r in results}
    mf, ref = by["fedcl MF (BPR)"].metrics["new"][0], by["implicit BPR"].metrics["new"][0]
    ratio = mf / ref if ref > 0 else float("nan")
    print(f"\nfedcl-MF NDCG@10 / implicit-BPR NDCG@10 (new): {ratio:.3f} (aim >= 0.9)")
    secs = by["fedcl MF (BPR)"].secs / max(by["implicit BPR"].secs, 1e-9)
    print(f"fedcl-MF train s / implicit-BPR train s: {secs:.1f}", flush=True)


def online_retail() -> PreparedData:
    from fedcl.data.prepare import prepare_cached
    from fedcl.data.sources.online_retail import OnlineRetailConfig

    return prepare_cached(OnlineRetailConfig())[0]


def movielens(tmp: Path) -> PreparedData:
    """A synthetic stream written as u.data and prepared through the MovieLens source."""
    from fedcl.data.prepare import prepare
    from fedcl.data.sources.movielens import MovieLensConfig
    from fedcl.data.sources.synthetic import SyntheticConfig, read

    frame = read(SyntheticConfig(n_shops=1, n_users=3000, n_items=1500, n_periods=6)).frame
    users = frame["user_id"].str.extract(r"(\d+)$")[0].astype(int) + 1
    items = frame["item_id"].str.extract(r"(\d+)$")[0].astype(int) + 1
    secs = frame["timestamp"].to_numpy().astype("datetime64[s]").astype(np.int64)
    rng = np.random.default_rng(0)
    ratings = rng.integers(1, 6, len(frame))  # kept whatever they are: rating_threshold=None
    path = tmp / "u.data"
    with path.open("w") as f:
        for row in zip(users, items, ratings, secs, strict=True):
            f.write("\t".join(str(int(x)) for x in row) + "\n")
    data, _ = prepare(MovieLensConfig(path=str(path), rating_threshold=None, cache=False))
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--datasets", default="online_retail,movielens")
    ap.add_argument("--seeds", type=int, default=1, help="seeds of the final (test) models")
    ap.add_argument("--threads", type=int, default=2, help="torch and implicit threads")
    ap.add_argument("--quick", action="store_true", help="one grid point each (smoke run)")
    args = ap.parse_args()
    require_implicit()
    if "OMP_WAIT_POLICY" not in os.environ:
        # OpenMP threads that spin while another process holds a core make a 2-thread run
        # 10-30x slower on a shared machine: re-run with passive waiting (torch + implicit).
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    torch.set_num_threads(args.threads)
    for name in args.datasets.split(","):
        if name == "online_retail":
            bench("Online Retail (pooled, centralized)", online_retail(), args)
        elif name == "movielens":
            with tempfile.TemporaryDirectory() as tmp:
                bench("MovieLens layout (synthetic u.data)", movielens(Path(tmp)), args)
        else:
            sys.exit(f"unknown dataset {name!r}: use online_retail and/or movielens")


if __name__ == "__main__":
    main()

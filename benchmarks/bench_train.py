"""Training throughput of fedcl's ``train_window`` with ``MF`` (BPR) against references.

Run: ``python benchmarks/bench_train.py [--windows 0-5] [--repeat 5] [--batch-size N]
[--epochs N] [--dim N] [--threads 2] [--warmup 1] [--diagnose] [--busy N]``

Data: the pooled train parts of a few Online Retail windows (``prepare_cached`` +
``PreparedData.interactions(None, windows, "train", n_users, n_items)``). Settings: the
defaults of ``conf/model/mf.yaml`` and ``fedcl.train.TrainConfig`` (Adam, lr, batch, epochs,
1 uniform negative per positive) unless overridden by the flags.

Candidates, interleaved, each run ``--repeat`` times (medians reported):

* ``fedcl``: ``train_window(MF(...), train, TrainConfig(...), generator)``;
* ``hand (autograd)``: the minimal loop anyone would write: the same tables
  (user (U, D), item (I, D), item bias (I, 1)), ``F.embedding`` lookups, the same shuffle,
  uniform negatives drawn once per epoch, the same loss (mean softplus(-x) + the batch L2
  term) through autograd, ``torch.optim.Adam``: the "at most 10% overhead" reference;
* ``hand (fused loss)``: the same loop with fedcl's hand-written ``BPRLoss`` backward, so
  ``fedcl / hand (fused loss)`` is the framework overhead alone;
* ``implicit BPR``: ``implicit.cpu.bpr.BayesianPersonalizedRanking(factors=dim,
  iterations=epochs, num_threads=threads)`` on the CSR user x item matrix of the same
  events (one iteration = nnz samples; duplicates of a (user, item) pair are one nnz).
  Skipped when ``implicit`` is not installed.

``--busy N`` runs N busy-loop processes during the measurement, as another user of a shared
machine would: with 2 torch threads on 2 cores, OpenMP's spin-waiting then makes every
torch candidate 10-30x slower unless ``OMP_WAIT_POLICY=PASSIVE`` is set (see README).

``--diagnose`` adds fedcl variants that are not defaults (Adam with ``fused=True``;
``sparse=True`` + SparseAdam) to show where the time goes.

Throughput = training examples / wall seconds of the whole call (sampling, shuffling,
optimiser construction included). No assertion: the figures are for reading.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Callable

import _common  # noqa: F401  (puts the checkout on sys.path)
import torch
import torch.nn.functional as F
from _common import have, markdown_table, median
from omegaconf import OmegaConf

import fedcl.train as fedcl_train
from fedcl.data.prepare import prepare_cached
from fedcl.data.sources.online_retail import OnlineRetailConfig
from fedcl.models.mf import MF, BPRLoss
from fedcl.train import TrainConfig, train_window


def mf_defaults() -> dict:
    """Model settings of ``conf/model/mf.yaml`` (the quality runs' defaults)."""
    cfg = OmegaConf.to_container(OmegaConf.load(_common.ROOT / "conf/model/mf.yaml"))
    return {k: v for k, v in cfg.items() if k not in ("defaults", "_target_")}


def parse_windows(spec: str) -> list[int]:
    out: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def hand_bpr(train, n_users, n_items, mf: dict, cfg: TrainConfig, seed: int, fused_loss: bool):
    """The minimal BPR-MF loop; returns training examples processed."""
    g = torch.Generator().manual_seed(seed)
    dim, std, reg = mf["dim"], mf["init_std"], mf["reg"]
    user = (torch.randn(n_users, dim, generator=g) * std).requires_grad_()  # (U, D)
    item = (torch.randn(n_items, dim, generator=g) * std).requires_grad_()  # (I, D)
    bias = torch.zeros(n_items, 1, requires_grad=True)  # (I, 1)
    opt = torch.optim.Adam([user, item, bias], lr=cfg.lr, weight_decay=cfg.weight_decay)
    users, items, n = train.users, train.items, len(train)
    for _ in range(cfg.epochs):
        neg = torch.randint(0, n_items, (n, cfg.n_neg), generator=g)  # (N, K)
        perm = torch.randperm(n, generator=g)
        for s in range(0, n, cfg.batch_size):
            idx = perm[s : s + cfg.batch_size]
            ni, pi = neg[idx], items[idx]
            u, vp, vn = F.embedding(users[idx], user), F.embedding(pi, item), F.embedding(ni, item)
            bp, bn = F.embedding(pi, bias), F.embedding(ni, bias).squeeze(-1)
            if fused_loss:
                loss = BPRLoss.apply(u, vp, vn, bp, bn, reg)
            else:
                x = ((vp.unsqueeze(1) - vn) * u.unsqueeze(1)).sum(-1) + (bp - bn)  # (B, K)
                l2 = (u.square().sum() + vp.square().sum() + vn.square().sum() / vn.shape[1]) / (
                    idx.numel()
                )
                loss = F.softplus(-x).mean() + reg * l2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return n * cfg.epochs


@contextlib.contextmanager
def fused_adam():
    """Make ``train_window`` build ``Adam(fused=True)`` (diagnosis only)."""
    original = fedcl_train.make_optimizer

    def make(model, cfg):
        params = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)

    fedcl_train.make_optimizer = make
    try:
        yield
    finally:
        fedcl_train.make_optimizer = original


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--windows", default="0-5", help="Online Retail windows to pool, e.g. 0-5")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs of each candidate first")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--dim", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--diagnose", action="store_true", help="add non-default fedcl variants")
    ap.add_argument(
        "--busy", type=int, default=0, help="run N busy-loop processes meanwhile (a shared machine)"
    )
    args = ap.parse_args()
    with busy_loops(args.busy):
        run(args)


@contextlib.contextmanager
def busy_loops(n: int):
    """``n`` child processes spinning one core each (they stop by themselves after 15 min)."""
    code = "import time\nend = time.time() + 900\nwhile time.time() < end:\n    pass\n"
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)

    mf = mf_defaults()
    if args.dim is not None:
        mf["dim"] = args.dim
    cfg = TrainConfig()
    if args.batch_size is not None:
        cfg = dataclasses.replace(cfg, batch_size=args.batch_size)
    if args.epochs is not None:
        cfg = dataclasses.replace(cfg, epochs=args.epochs)
    if cfg.optimizer != "adam" or cfg.negatives != "uniform":
        print(f"note: TrainConfig defaults changed ({cfg}); the hand loop assumes Adam + uniform")

    data, _ = prepare_cached(OnlineRetailConfig())
    windows = parse_windows(args.windows)
    last = max(windows)
    n_users, n_items = data.n_users_known(None, last), data.n_items_known(last)
    train = data.interactions(None, windows, "train", n_users, n_items)
    n = len(train)

    def run_fedcl(sparse: bool = False, fused: bool = False) -> Callable[[int], int]:
        def go(seed: int) -> int:
            c = dataclasses.replace(cfg, optimizer="sparse_adam") if sparse else cfg
            model = MF(n_users, n_items, **{**mf, "sparse": sparse or mf.get("sparse", False)})
            g = torch.Generator().manual_seed(seed)
            with fused_adam() if fused else contextlib.nullcontext():
                return train_window(model, train, c, g).examples

        return go

    candidates: dict[str, Callable[[int], int]] = {
        "fedcl": run_fedcl(),
        "hand (autograd)": lambda s: hand_bpr(train, n_users, n_items, mf, cfg, s, False),
        "hand (fused loss)": lambda s: hand_bpr(train, n_users, n_items, mf, cfg, s, True),
    }
    if args.diagnose:
        candidates["fedcl + Adam(fused=True)"] = run_fedcl(fused=True)
        candidates["fedcl sparse + SparseAdam"] = run_fedcl(sparse=True)
    nnz = None
    if have("implicit") and have("scipy"):
        import numpy as np
        import scipy.sparse as sp
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        ones = np.ones(n, dtype=np.float32)
        matrix = sp.csr_matrix(
            (ones, (train.users.numpy(), train.items.numpy())), shape=(n_users, n_items)
        )
        nnz = matrix.nnz

        def run_implicit(seed: int) -> int:
            model = BayesianPersonalizedRanking(
                factors=mf["dim"], iterations=cfg.epochs, num_threads=args.threads,
                random_state=seed,
            )  # fmt: skip
            model.fit(matrix, show_progress=False)
            return nnz * cfg.epochs

        candidates["implicit BPR"] = run_implicit
    else:
        print("implicit BPR skipped: pip install implicit")

    print(
        f"Online Retail pooled train parts of windows {windows}: {n:,} events, {n_users:,} users"
        f" x {n_items:,} items{f', {nnz:,} distinct pairs (implicit nnz)' if nnz else ''}\n"
        f"MF {mf}; TrainConfig(epochs={cfg.epochs}, batch_size={cfg.batch_size}, "
        f"optimizer={cfg.optimizer}, lr={cfg.lr}, negatives={cfg.negatives}, n_neg={cfg.n_neg})"
        f"; torch threads {torch.get_num_threads()}; {args.repeat} interleaved runs each"
        f"; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; busy loops {args.busy}"
        f"; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
        flush=True,
    )
    for _ in range(args.warmup):  # first calls pay for thread pools and allocator growth
        for fn in candidates.values():
            fn(0)
    rates: dict[str, list[float]] = {k: [] for k in candidates}
    for r in range(args.repeat):
        for name, fn in candidates.items():
            t0 = time.perf_counter()
            examples = fn(r)
            rates[name].append(examples / (time.perf_counter() - t0))
        print(f"repeat {r + 1}/{args.repeat} done", file=sys.stderr, flush=True)

    med = {k: median(v) for k, v in rates.items()}
    best = {k: max(v) for k, v in rates.items()}
    rows = [
        [k, f"{med[k]:,.0f}", f"{best[k]:,.0f}", " ".join(f"{x / 1e3:.0f}k" for x in v)]
        for k, v in rates.items()
    ]
    print()
    print(markdown_table(["candidate", "median interactions/s", "best", "runs"], rows))
    print()

    def ratio(a: str, b: str) -> None:
        if a in med and b in med:
            print(f"{a} / {b}: {med[a] / med[b]:.2f} (median)  {best[a] / best[b]:.2f} (best/best)")

    ratio("fedcl", "hand (autograd)")
    ratio("fedcl", "hand (fused loss)")
    ratio("implicit BPR", "fedcl")
    if args.diagnose:
        ratio("fedcl + Adam(fused=True)", "fedcl")
        ratio("fedcl sparse + SparseAdam", "fedcl")


if __name__ == "__main__":
    main()

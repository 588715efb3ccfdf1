"""fedcl's models against the ``implicit`` library's ALS and BM25 item-kNN, on fedcl's own
windows and through fedcl's own evaluator (issue 14, part 5: a peer benchmark shipped with the
project).

Run (needs ``pip install implicit==0.7.3``, in the ``dev`` extra; ~15 min for 3 seeds on one
core; an interrupted run resumes, finished runs are reused)::

    python benchmarks/bench_peers.py                      # search, then seeds 0 1 2
    python benchmarks/bench_peers.py --seeds 0 --skip-search --out /tmp/peers

The implicit models are fedcl models (``model=implicit_als``, ``model=implicit_itemknn``:
``fedcl/models/peers_als.py``, ``fedcl/models/peers_knn.py``), so every setting is one
``python -m fedcl.simulate`` run (``simulations/common.py``'s ``run_grid``) with the same data,
windows, evaluation and report: centralized Online Retail (the default data; all shops
pooled), one thread, each run's directory under ``<out>/runs/<label>/seed<k>``.

1. Hyper-parameters of the two implicit models, chosen on fedcl's validation split
   (``eval.on=validation``: each window's test part hidden, the last 15% of its train part
   plays it), seed 0, by the forward NDCG@10 (``continual.forward``: the model after window t
   on window t+1), never on test:
   - ALS: factors 64, iterations 15, regularization {0.01, 0.1} x alpha {1, 10};
   - item-kNN (BM25): K {100, 1000, 3000}, K1 100, B 0.8.
   ``--skip-search`` uses the defaults of their config dataclasses instead.
2. The settings on test, for ``--seeds``: fedcl MF with naive fine-tuning and with replay
   (fedcl's default continual method), History, Pop, implicit ALS, implicit item-kNN. The
   non-gradient models (History, Pop, the implicit ones) run ``continual=naive``: with
   nothing to train, replay would only fill a buffer.

Writes ``<out>/settings.json`` (label -> overrides of the final runs) and
``<out>/results.md`` (also printed): the search table and choice, the table (mean ± sd
over seeds) of forward NDCG@10 and HR@10 ("new" variant: items the user never bought), the
"repeat" variant's forward NDCG@10, ACC, final NDCG@10 and wall seconds, and every setting
minus implicit ALS, the best peer (forward, ACC), paired by seed with a 95% bootstrap interval over
users. Forward HR@10 is not a metrics.json figure: it is pooled from each run's
``per_user.parquet`` (forward cells, "new" variant) exactly as ``continual.forward`` pools
NDCG@10 (checked against it for every run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The paired differences' reference: the best peer on forward NDCG@10 (measured).
REFERENCE = "implicit ALS"
CENTRALIZED = ["mode=centralized", "threads=1"]
ALS_GRID = {
    f"ALS reg={reg} alpha={alpha}": [
        "model=implicit_als", "model.factors=64", "model.iterations=15",
        f"model.regularization={reg}", f"model.alpha={alpha}",
    ]
    for reg in (0.01, 0.1)
    for alpha in (1.0, 10.0)
}  # fmt: skip
KNN_GRID = {
    f"item-kNN K={k}": ["model=implicit_itemknn", f"model.K={k}", "model.K1=100", "model.B=0.8"]
    for k in (100, 1000, 3000)
}
FEDCL = {
    "fedcl MF naive": ["model=mf", "continual=naive"],
    "fedcl MF replay": ["model=mf", "continual=replay"],
    "fedcl History": ["model=history", "continual=naive"],
    "fedcl Pop": ["model=pop", "continual=naive"],
    # Settings: their config defaults, chosen on validation by benchmarks/tune_itemitem.py.
    "fedcl item-kNN": ["model=itemitem", "continual=naive"],
    "fedcl EASE": ["model=ease", "continual=naive"],
    "fedcl ALS": ["model=als", "continual=naive"],  # its defaults, not tuned
}
COLUMNS = {
    "forward NDCG@10": "continual.forward",
    "forward HR@10": "bench.forward_hr@10",
    "forward NDCG@10 (repeat)": "continual_repeat.forward",
    "ACC": "continual.acc",
    "final NDCG@10": "final.ndcg@10",
    "wall s": "wall_s",
}
SEARCH_COLUMNS = {
    "val forward NDCG@10": "continual.forward",
    "val forward HR@10": "bench.forward_hr@10",
    "val ACC": "continual.acc",
    "wall s": "wall_s",
}
PAIRED = {"forward": "forward", "ACC": "acc"}


def one_thread() -> None:
    """One thread everywhere (torch's OpenMP, BLAS), set before torch is imported: the
    benchmark shares its machine, and implicit's fits are single-threaded here too."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    for path in (ROOT, ROOT / "simulations"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))  # the checkout's fedcl; simulations/common.py


def add_forward_hr(out: Path, results: dict[str, list[dict]]) -> None:
    """``doc["bench"]["forward_hr@10"]``: HR@10 pooled over the users of all forward cells
    ("new" variant), from the run's per_user.parquet, the way ``continual.forward`` pools
    NDCG@10 (which it must reproduce, else the run is refused)."""
    import pandas as pd

    for label, docs in results.items():
        for doc in docs:
            path = out / "runs" / label / f"seed{doc['seed']}" / "per_user.parquet"
            rows = pd.read_parquet(path, filters=[("kind", "==", "forward")])
            rows = rows[rows["variant"] == "new"]
            ndcg, forward = float(rows["ndcg@10"].mean()), doc["continual"]["forward"]
            if abs(ndcg - forward) > 1e-9:
                raise RuntimeError(f"{path}: forward NDCG@10 {ndcg} != metrics.json {forward}")
            doc["bench"] = {"forward_hr@10": float(rows["hr@10"].mean())}


def grid_runs(out: Path, grid: dict[str, list[str]], seeds: list[int], common: list[str]):
    from common import run_grid

    results = run_grid(out, grid, seeds, common)
    add_forward_hr(out, results)
    return results


def search(out: Path) -> tuple[dict[str, tuple[str, list[str]]], str]:
    """Per implicit model: the chosen (grid label, overrides), and the search's markdown."""
    from common import table

    common = [*CENTRALIZED, "continual=naive", "eval.on=validation"]
    chosen, parts = {}, []
    for name, grid in ((REFERENCE, ALS_GRID), ("implicit item-kNN", KNN_GRID)):
        results = grid_runs(out / "search", grid, [0], common)
        best = max(results, key=lambda label: results[label][0]["continual"]["forward"])
        chosen[name] = (best, grid[best])
        parts.append(f"**{name}** on validation (seed 0): chosen **{best}**\n\n")
        parts.append(table(results, SEARCH_COLUMNS) + "\n\n")
    return chosen, "".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=Path("outputs/peers"))
    ap.add_argument("--skip-search", action="store_true", help="the implicit models' defaults")
    args = ap.parse_args()
    one_thread()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import require_implicit

    require_implicit()
    from common import paired_table, table

    start = time.perf_counter()
    if args.skip_search:
        chosen = {
            REFERENCE: ("ALS defaults", ["model=implicit_als"]),
            "implicit item-kNN": ("item-kNN defaults", ["model=implicit_itemknn"]),
        }
        searched = "Search skipped (`--skip-search`): the config dataclasses' defaults.\n\n"
    else:
        chosen, searched = search(args.out)
    search_s = time.perf_counter() - start
    # A run directory is reused by its label (run_grid): the implicit models' directories
    # name their hyper-parameters, so a run with other ones is never taken for them.
    grid, names = dict(FEDCL), {label: label for label in FEDCL}
    for name, (setting, overrides) in chosen.items():
        grid[f"{name} ({setting})"] = [*overrides, "continual=naive"]
        names[f"{name} ({setting})"] = name
    runs = grid_runs(args.out, grid, args.seeds, CENTRALIZED)
    results = {names[label]: docs for label, docs in runs.items()}
    total_s = time.perf_counter() - start

    settings = "\n".join(f"- {label}: `{' '.join(o)}`" for label, o in grid.items())
    seeds = " ".join(map(str, args.seeds))
    text = (
        "# fedcl vs implicit (ALS, BM25 item-kNN): centralized Online Retail\n\n"
        f"`python benchmarks/bench_peers.py --seeds {seeds} --out {args.out}"
        f"{' --skip-search' if args.skip_search else ''}`; every run: "
        f"`python -m fedcl.simulate {' '.join(CENTRALIZED)} <setting> seed=<k>`.\n\n"
        "## Hyper-parameters (validation split, never test)\n\n"
        f"{searched}"
        "## Settings\n\n"
        f"{settings}\n\n"
        "## Results (test; mean ± sd over seeds)\n\n"
        "forward: the model after window t on window t+1 (all its events), users pooled over "
        'the 11 forward cells; "new": items the user never bought; ACC: mean of the last '
        "R-matrix row; final: the last window's test part; wall: the whole run (implicit's "
        "fits are in `observe`, so they are in wall, not in metrics.json's train_s).\n\n"
        f"{table(results, COLUMNS)}\n\n"
        f"{paired_table(results, REFERENCE, PAIRED)}\n\n"
        f"Search {search_s:.0f} s, total {total_s:.0f} s (runs reused from an earlier "
        "invocation count 0).\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(text)
    (args.out / "settings.json").write_text(json.dumps(grid, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()

"""Continual methods compared: naive, replay at several budgets, EWC, distillation,
replay + distillation and joint retraining, centralized and local, on Online Retail and on the
recurring-season synthetic scenario.

    python simulations/continual_suite.py --quick          # a reduced grid, minutes
    python simulations/continual_suite.py --seeds 0 1 2    # the full grid

Writes ``<out>/results.md`` (one table per dataset x mode: ACC, BWT, forward, final NDCG@10
and cost, mean ± sd over seeds) and ``<out>/<dataset>-<mode>.png`` (per-window curves).
Hyper-parameters are the config defaults, chosen on validation (README "Results").
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import plot_curves, run_grid, table

METHODS = {
    "naive": ["continual=naive"],
    "replay 5%": ["continual=replay", "continual.replay.budget_fraction=0.05"],
    "replay 10%": ["continual=replay"],
    "replay 20%": ["continual=replay", "continual.replay.budget_fraction=0.2"],
    "ewc": ["continual=ewc"],
    "distill": ["continual=distill"],
    "replay+distill": ["continual=replay_distill"],
    "joint": ["continual=joint"],
}
QUICK = ["naive", "replay 10%", "ewc", "replay+distill", "joint"]
DATASETS = {"online_retail": ["data=online_retail"], "synthetic": ["data=synthetic"]}
COLUMNS = {
    "ACC": "continual.acc",
    "BWT": "continual.bwt",
    "forward": "continual.forward",
    "final NDCG@10": "final.ndcg@10",
    "train s": "cost.train_s",
    "examples": "cost.examples",
    "memory MB": "cost.memory_mb",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/continual_suite"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--modes", nargs="+", default=["centralized", "local"])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--quick", action="store_true", help="centralized, 1 seed, 5 methods")
    args = ap.parse_args()
    methods = {k: v for k, v in METHODS.items() if not args.quick or k in QUICK}
    seeds = [args.seeds[0]] if args.quick else args.seeds
    modes = ["centralized"] if args.quick else args.modes
    sections = ["# Continual methods: results\n"]
    for dataset in args.datasets:
        for mode in modes:
            out = args.out / f"{dataset}-{mode}"
            common = [*DATASETS[dataset], f"mode={mode}"]
            results = run_grid(out, methods, seeds, common)
            for docs in results.values():
                for d in docs:
                    d["cost"]["memory_mb"] = d["cost"]["memory_bytes"] / 1e6
            sections.append(f"## {dataset}, {mode}\n\n{table(results, COLUMNS)}\n")
            plot_curves(results, args.out / f"{dataset}-{mode}.png", f"{dataset}, {mode}")
    (args.out / "results.md").write_text("\n".join(sections))
    print("\n".join(sections))
    print(f"written: {args.out / 'results.md'}")


if __name__ == "__main__":
    main()

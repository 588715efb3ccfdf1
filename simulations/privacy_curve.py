"""Privacy-utility curve: forward NDCG@10 against the whole-run user-level epsilon of
``federated.dp`` (noise calibrated to each budget), on Online Retail by country.

    python simulations/privacy_curve.py --seeds 0 1 2           # epsilon 1, 4, 8, 16, no DP
    python simulations/privacy_curve.py --quick                 # seed 0

Every setting is the default federated run with ``continual=naive`` (DP refuses replay:
docs/PRIVACY.md); "no DP" is the same without noise or clipping, the reference of the paired
differences. Writes ``<out>/results.md`` (mean ± sd over seeds, paired differences with 95%
bootstrap intervals over users) and ``<out>/curves.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import paired_table, plot_curves, run_grid, table

EPSILONS = (1, 4, 8, 16)
REFERENCE = "no DP"
COLUMNS = {
    "forward": "continual.forward",
    "ACC": "continual.acc",
    "final NDCG@10": "final.ndcg@10",
    "epsilon spent": "privacy.epsilon",
    "noise multiplier": "privacy.noise_multiplier",
    "wall s": "wall_s",
}


def grid(epsilons: list[float]) -> dict[str, list[str]]:
    out = {
        f"epsilon {e:g}": ["federated.dp.enabled=true", f"federated.dp.epsilon_budget={e}"]
        for e in epsilons
    }
    out[REFERENCE] = []
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="seed 0 only")
    parser.add_argument("--epsilons", type=float, nargs="+", default=list(EPSILONS))
    parser.add_argument("--out", type=Path, default=Path("outputs/privacy_curve"))
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    args = parser.parse_args()
    seeds = [0] if args.quick else args.seeds
    common = ["mode=federated", "model=mf", "continual=naive", *args.overrides]
    results = run_grid(args.out, grid(args.epsilons), seeds, common)
    text = [
        "# Privacy-utility curve (user-level DP at each shop)\n",
        table(results, COLUMNS),
        "",
        paired_table(results, REFERENCE, {"forward": "forward", "ACC": "acc"}),
    ]
    (args.out / "results.md").write_text("\n".join(text) + "\n")
    plot_curves(results, args.out / "curves.png", "Online Retail: epsilon vs quality")
    print("\n".join(text))


if __name__ == "__main__":
    main()

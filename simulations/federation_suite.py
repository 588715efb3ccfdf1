"""Centralized vs local vs federated, each with naive fine-tuning and with replay, on Online
Retail by country; per-shop gain of federated over local-only training.

    python simulations/federation_suite.py --quick         # 1 seed
    python simulations/federation_suite.py --seeds 0 1 2

Writes ``<out>/results.md``: the overall table (mean ± sd over seeds), each setting minus the
reference (``--reference``, default local replay: what a shop gets without joining) with a
paired 95% bootstrap interval over users, the ratios the issue asks for (federated+replay
ACC / centralized-joint ACC, forward vs naive), and per shop the gain of federated+replay over
local+replay with the users each figure rests on. Small shops are judged together: their
cells pooled over all windows, weighted by users.
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

from common import mean, paired_table, plot_curves, run_grid, table

FED = ["mode=federated"]  # the defaults: 2 rounds x 10 epochs + 10 fine-tuning epochs
GRID = {
    "centralized naive": ["mode=centralized", "continual=naive"],
    "centralized replay": ["mode=centralized", "continual=replay"],
    "centralized joint": ["mode=centralized", "continual=joint"],
    "local naive": ["mode=local", "continual=naive"],
    "local replay": ["mode=local", "continual=replay"],
    # 2 rounds x 10 local epochs = the 20 epochs per window of the other modes; personalised
    # as by default (MF item biases stay local; each shop serves the aggregate fine-tuned for
    # one round's worth, 10 epochs, on its own window: README "Federation").
    "federated naive": [*FED, "continual=naive"],
    "federated replay": [*FED, "continual=replay"],
    # The same without personalisation: plain FedAvg of every shared parameter.
    "federated replay, plain FedAvg": [
        *FED,
        "continual=replay",
        "federated.model_local_keys=false",
        "federated.finetune_epochs=0",
    ],
}
COLUMNS = {
    "ACC": "continual.acc",
    "BWT": "continual.bwt",
    "forward": "continual.forward",
    "final NDCG@10": "final.ndcg@10",
    "macro ACC": "macro.acc",
    "MB up": "comm.mb_up",
    "wall s": "wall_s",
}
#: Shops with fewer users than this are "small" and judged together.
SMALL_USERS = 100


def pooled(doc: dict, shops: list[str], cells) -> tuple[float | None, int]:
    """User-weighted mean of the R cells ``cells(T)`` over ``shops`` (per-shop matrices)."""
    total, users = 0.0, 0
    for s in shops:
        p = doc["per_shop"][s]
        for t, i in cells(len(p["r_matrix"])):
            v, n = p["r_matrix"][t][i], p["n_users"][t][i]
            if v is not None and n:
                total, users = total + v * n, users + n
    return (total / users if users else None), users


def pooled_forward(doc: dict, shops: list[str]) -> tuple[float | None, int]:
    """User-weighted forward over ``shops``: each shop's forward (its forward cells pooled)
    weighted by the users those cells rest on; R[t][t+1] in an older metrics.json."""
    if any("forward_n_users" not in doc["per_shop"][s] for s in shops):
        return pooled(doc, shops, next_window)
    total, users = 0.0, 0
    for s in shops:
        p = doc["per_shop"][s]
        n = sum(p["forward_n_users"])
        if p["forward"] is not None and n:
            total, users = total + p["forward"] * n, users + n
    return (total / users if users else None), users


def last_row(n: int):
    return [(n - 1, i) for i in range(n)]


def next_window(n: int):
    return [(t, t + 1) for t in range(n - 1)]


def shop_gains(fed: list[dict], loc: list[dict], sizes: dict[str, int]) -> str:
    shops = list(fed[0]["per_shop"])
    small = [s for s in shops if sizes[s] < SMALL_USERS]
    groups = {s: [s] for s in shops} | {f"small shops together ({len(small)})": small}
    lines = [
        "| shop | users | fed ACC | local ACC | gain | fed forward | local forward | gain |"
        " cells' users |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, members in groups.items():
        row = []
        for figure in (partial(pooled, cells=last_row), pooled_forward):
            f = mean([figure(d, members)[0] for d in fed])
            lo = mean([figure(d, members)[0] for d in loc])
            gain = None if f is None or lo is None else f - lo
            row += [f, lo, gain]
        n = pooled(fed[0], members, last_row)[1] + pooled_forward(fed[0], members)[1]
        users = sum(sizes[m] for m in members)
        fmt = ["-" if v is None else f"{v:+.4f}" if k in (2, 5) else f"{v:.4f}"
               for k, v in enumerate(row)]  # fmt: skip
        lines.append(f"| {name} | {users} | " + " | ".join(fmt) + f" | {n} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/federation_suite"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--quick", action="store_true", help="1 seed")
    ap.add_argument("--only", nargs="+", metavar="LABEL", help=f"a subset of {list(GRID)}")
    ap.add_argument(
        "--reference", default="local replay", choices=list(GRID),
        help="the setting every other is compared with, in pairs (default local replay)",
    )  # fmt: skip
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = ap.parse_args()
    seeds = [args.seeds[0]] if args.quick else args.seeds
    grid = {k: v for k, v in GRID.items() if not args.only or k in args.only}
    # Simulation: the operator owns all shops' data here, so no cell is withheld; in a real
    # deployment federated.min_users (default 5) withholds cells over fewer users.
    # MF unless the overrides say otherwise (e.g. model=ease: the statistics models).
    common = ["data=online_retail", "model=mf", "federated.min_users=1", *args.overrides]
    results = run_grid(args.out, grid, seeds, common)
    for docs in results.values():
        for d in docs:
            d["comm"]["mb_up"] = d["comm"]["bytes_up"] / 1e6
    from fedcl.config import compose_config
    from fedcl.data.prepare import prepare_cached

    data, _ = prepare_cached(compose_config(common)[0].data)
    sizes = {s: v["users"] for s, v in data.report["per_shop"].items()}

    def ratio(a: str, b: str, key: str) -> str:
        if a not in results or b not in results:
            return "-"
        x = mean([d["continual"][key] for d in results[a]])
        y = mean([d["continual"][key] for d in results[b]])
        return "-" if x is None or not y else f"{x / y:.3f}"

    text = ["# Federation: results\n", table(results, COLUMNS), ""]
    paired = paired_table(results, args.reference)
    if paired:
        text += [paired, ""]
    for fed in ("federated replay", "federated replay, plain FedAvg"):
        text += [
            f"- {fed} ACC / centralized-joint ACC: "
            f"{ratio(fed, 'centralized joint', 'acc')} (aim >= 0.9)",
            f"- {fed} forward / federated-naive forward: "
            f"{ratio(fed, 'federated naive', 'forward')} (aim >= 1)",
            f"- {fed} forward / centralized-naive forward: "
            f"{ratio(fed, 'centralized naive', 'forward')}",
        ]
    for fed in ("federated replay", "federated replay, plain FedAvg"):
        if fed in results and "local replay" in results:
            text += [
                "",
                f"## Per shop: {fed} vs local replay (ACC = last row, forward = the forward"
                " cells; cells pooled over windows, weighted by users)\n",
                shop_gains(results[fed], results["local replay"], sizes),
            ]
    (args.out / "results.md").write_text("\n".join(text) + "\n")
    plot_curves(results, args.out / "curves.png", "Online Retail by country")
    print("\n".join(text))


if __name__ == "__main__":
    main()

"""The closed loop: synthetic customers shop with the live service's recommendations and
their events teach the next window (:mod:`fedcl.serve.loop`).

    python simulations/closed_loop.py                       # 3 seeds x 3 policies, 13 months
    python simulations/closed_loop.py --seeds 0 --months 5  # a quick look

Policies: ``continual`` (the default model, federated EASE, swapped after every window),
``frozen`` (the same federation, but each service keeps the model of window 0), and
``popularity`` (``model=pop``: each shop's popularity, a customer's own purchases first). The
same customers visit at the same times under every policy (the world's who-comes-when stream
does not depend on what they were shown), so policies are compared **paired**, visit by
visit, with 95% intervals from a Poisson bootstrap over customers (all seeds pooled).

Writes ``<out>/results.md`` (the tables docs/RESULTS.md quotes), ``<out>/results.json`` and
``<out>/months.png`` (purchases from recommendations and catalogue coverage per month).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from fedcl.config import load_config
from fedcl.metrics.bootstrap import percentile_interval
from fedcl.serve.loop import ClosedLoop, Month

POLICIES = {
    "continual": ([], True),
    "frozen": ([], False),
    "popularity": (["model=pop"], True),
}
REFERENCE = "continual"
WORLD = [
    "data=synthetic", "data.n_shops=3", "data.n_users=1500", "data.n_items=400",
    "model=ease", "continual=naive", "federated.min_shops=3",
]  # fmt: skip
N_BOOT = 1000


def run_policy(policy: str, seed: int, months: int, out: Path, extra: list[str]) -> dict:
    """One closed-loop run; returns its months and offline figures (cached in out)."""
    run_dir = out / "runs" / policy / f"seed{seed}"
    done = run_dir / "months.npz"
    if done.is_file():
        return _load(run_dir)
    overrides, follow = POLICIES[policy]
    cfg, _ = load_config(
        [*WORLD, f"data.n_periods={months}", f"seed={seed}", f"data.seed={seed}", *overrides,
         *extra]
    )  # fmt: skip
    shutil.rmtree(run_dir, ignore_errors=True)
    start = time.perf_counter()
    loop = ClosedLoop(cfg, run_dir / "work", follow=follow)
    result = loop.run()
    summary = {
        "policy": policy,
        "seed": seed,
        "wall_s": time.perf_counter() - start,
        "offline": _offline(result),
        "generations": loop.generations(),
        "online": loop.online(),
        "months": [_month_row(m) for m in loop.months],
    }
    _save(run_dir, summary, loop.months)
    shutil.rmtree(run_dir / "work", ignore_errors=True)  # customers' events: not kept
    return _load(run_dir)


def _offline(result) -> dict:
    """The agents' own evaluation: mean over windows of the current-window cell (model after
    window t on window t's test part), users pooled over shops, per variant."""
    out = {}
    for variant, grid in result.cells.items():
        for metric in ("ndcg@10", "hr@10"):
            num = den = 0.0
            for t, row in enumerate(grid):
                for cell in row[t].values():
                    n = cell.get("n_users") or 0
                    if n and cell.get(metric) is not None:
                        num += n * float(cell[metric])
                        den += n
            out[f"{variant} {metric}"] = num / den if den else None
    return out


def _month_row(m: Month) -> dict:
    return {
        "month": m.month,
        "visits": m.visits,
        "purchases": m.purchases,
        "from_recs": m.from_recs,
        "clicks": m.clicks,
        "coverage": m.distinct_shown / max(m.launched, 1),
        "top10_share": m.top10_share,
        "generation": m.generation,
    }


def _save(run_dir: Path, summary: dict, months: list[Month]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    np.savez(
        run_dir / "months.npz",
        month=np.concatenate([np.full(m.visits, m.month) for m in months]),
        user=np.concatenate([m.user for m in months]),
        bought=np.concatenate([m.bought for m in months]),
        from_rec=np.concatenate([m.from_rec for m in months]),
    )


def _load(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    with np.load(run_dir / "months.npz") as z:
        summary["visits"] = {k: z[k] for k in z.files}
    return summary


# --- tables -----------------------------------------------------------------------------
def per_1000(runs: list[dict], key: str) -> float:
    return (
        1000
        * sum(float(r["visits"][key].sum()) for r in runs)
        / sum(len(r["visits"][key]) for r in runs)
    )


def paired(a: list[dict], b: list[dict], key: str, seed: int = 0) -> tuple[float, list]:
    """(a - b) in ``key`` per 1000 visits, and its 95% interval (customers resampled)."""
    rng = np.random.default_rng(seed)
    diffs, visits, point = [], [], 0.0
    for ra, rb in zip(a, b, strict=True):
        va, vb = ra["visits"], rb["visits"]
        if not np.array_equal(va["user"], vb["user"]):
            raise ValueError("the policies saw different visits: not a paired comparison")
        users, inverse = np.unique(va["user"], return_inverse=True)
        d = va[key].astype(float) - vb[key].astype(float)
        diffs.append(np.bincount(inverse, weights=d, minlength=len(users)))
        visits.append(np.bincount(inverse, minlength=len(users)).astype(float))
        point += d.sum()
    d, n = np.concatenate(diffs), np.concatenate(visits)
    w = rng.poisson(1.0, size=(N_BOOT, len(d)))
    reps = 1000 * (w @ d) / np.maximum(w @ n, 1)
    return 1000 * point / n.sum(), percentile_interval(reps)


def tables(results: dict[str, list[dict]]) -> str:
    seeds = [r["seed"] for r in results[REFERENCE]]
    months = len(results[REFERENCE][0]["months"])
    lines = [
        f"Seeds {seeds}; {months} served months each (windows 1..{months}; window 0 is organic); "
        "3 shops, 1,500 customers, 400 items, k = 10 slots per visit.\n",
        "| policy | purchases from recs / 1000 visits | purchases / 1000 visits | "
        "coverage, month 1 -> last (mean) | top-10 items' share of slots, month 1 -> last | "
        "offline NDCG@10 (new / repeat) | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for policy, runs in results.items():
        first = np.mean([r["months"][0]["coverage"] for r in runs])
        last = np.mean([r["months"][-1]["coverage"] for r in runs])
        mean_cov = np.mean([m["coverage"] for r in runs for m in r["months"]])
        s_first = np.mean([r["months"][0]["top10_share"] for r in runs])
        s_last = np.mean([r["months"][-1]["top10_share"] for r in runs])
        new = np.mean([r["offline"].get("new ndcg@10") or np.nan for r in runs])
        rep = np.mean([r["offline"].get("repeat ndcg@10") or np.nan for r in runs])
        wall = np.median([r["wall_s"] for r in runs])
        lines.append(
            f"| {policy} | {per_1000(runs, 'from_rec'):.1f} | {per_1000(runs, 'bought'):.1f} | "
            f"{first:.2f} -> {last:.2f} ({mean_cov:.2f}) | {s_first:.2f} -> {s_last:.2f} | "
            f"{new:.4f} / {rep:.4f} | {wall:.0f} |"
        )
    lines += [
        "",
        f"Paired against {REFERENCE} (same visits; 95% interval, customers resampled):\n",
        "| policy | from recs / 1000 visits: difference | per seed | purchases / 1000 visits: "
        "difference |",
        "|---|---|---|---|",
    ]
    for policy, runs in results.items():
        if policy == REFERENCE:
            continue
        cells = []
        for key in ("from_rec", "bought"):
            d, ci = paired(results[REFERENCE], runs, key)
            cells.append(f"{d:+.1f} [{ci[0]:+.1f}, {ci[1]:+.1f}]")
        seeds = ", ".join(
            f"{paired([a], [b], 'from_rec')[0]:+.1f}"
            for a, b in zip(results[REFERENCE], runs, strict=True)
        )
        lines.append(f"| {REFERENCE} - {policy} | {cells[0]} | {seeds} | {cells[1]} |")
    lines += ["", online_table(results)]
    return "\n".join(lines)


def online_table(results: dict[str, list[dict]]) -> str:
    """What the shop agents reported (online.json): per list, pooled over shops,
    generations and seeds."""
    lines = [
        "The agents' online figures (impressions joined with the posted events; pooled over "
        "shops, generations and seeds):\n",
        "| policy | list | shown | click-through | purchase-through |",
        "|---|---|---|---|---|",
    ]
    for policy, runs in results.items():
        totals: dict[str, list[int]] = {}
        for r in runs:
            for by_gen in r["online"].values():
                for lists in by_gen.values():
                    for name, c in lists.items():
                        t = totals.setdefault(name, [0, 0, 0])
                        t[0] += c["shown"]
                        t[1] += c["clicks"]
                        t[2] += c["purchases"]
        for name, (shown, clicks, bought) in sorted(totals.items()):
            lines.append(
                f"| {policy} | {name} | {shown} | {clicks / max(shown, 1):.3f} | "
                f"{bought / max(shown, 1):.3f} |"
            )
    return "\n".join(lines)


def plot(results: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for policy, runs in results.items():
        months = [m["month"] for m in runs[0]["months"]]
        rate = np.mean(
            [[1000 * m["from_recs"] / m["visits"] for m in r["months"]] for r in runs], axis=0
        )
        cov = np.mean([[m["coverage"] for m in r["months"]] for r in runs], axis=0)
        axes[0].plot(months, rate, marker="o", label=policy)
        axes[1].plot(months, cov, marker="o", label=policy)
    axes[0].set(xlabel="month", ylabel="purchases from recs / 1000 visits")
    axes[1].set(xlabel="month", ylabel="distinct items shown / items on sale")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--months", type=int, default=13, help="windows (month 0 is organic)")
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    parser.add_argument("--out", type=Path, default=Path("outputs/closed_loop"))
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("fedcl.serve.loop").setLevel(logging.INFO)
    if REFERENCE not in args.policies:
        args.policies.insert(0, REFERENCE)
    results = {
        policy: [run_policy(policy, s, args.months, args.out, args.overrides) for s in args.seeds]
        for policy in args.policies
    }
    text = "# Closed loop: recommendations served, customers' feedback learned\n\n" + tables(
        results
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(text + "\n")
    plot(results, args.out / "months.png")
    print(text)


if __name__ == "__main__":
    main()

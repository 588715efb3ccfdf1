"""Results of a run: ``metrics.json``, ``r_matrix.csv``, ``rounds.csv``, plots, summary.

Input is a :class:`~fedcl.result.RunResult`: the grid of cells ``cells[variant][t][i][shop]``
(a :data:`fedcl.evaluation.Cell` per shop: metric means over that shop's test users and
``n_users``), the untrained baseline row and the training log, so every mode (centralized,
local, federated) reports the same way, through :func:`write_report`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path

from fedcl.evaluation import Cell, EvalConfig
from fedcl.metrics.continual import combine_r, continual_metrics, macro, weighted_mean
from fedcl.result import RoundRow, RunResult

#: ``final`` holds these (K = 10, Recall@20), names exactly as the contract writes them.
FINAL_KEYS = ("hr@10", "ndcg@10", "recall@20", "mrr")
Grid = list[list[dict[str, Cell]]]  # [t][i][shop] -> Cell


def _matrix(grid: Grid, shop: str, key: str) -> list[list[float | None]]:
    return [[row[i].get(shop, {}).get(key) for i in range(len(row))] for row in grid]


def _counts(grid: Grid, shop: str) -> list[list[int]]:
    return [
        [int(row[i].get(shop, {}).get("n_users") or 0) for i in range(len(row))] for row in grid
    ]


def _final(cell_by_shop: dict[str, Cell], shops: Sequence[str]) -> dict:
    """User-weighted metrics over ``shops`` of one cell."""
    out: dict = {k: cell_mean(cell_by_shop, shops, k) for k in FINAL_KEYS}
    out["n_users"] = sum(int(cell_by_shop.get(s, {}).get("n_users") or 0) for s in shops)
    return out


def summarise(grid: Grid, baseline: list[dict[str, Cell]], shops: Sequence[str], metric: str):
    """Overall (user-weighted), per-shop and macro figures of one variant."""
    per_shop = {}
    rs, ns = [], []
    for s in shops:
        r, n = _matrix(grid, s, metric), _counts(grid, s)
        b = [cell.get(s, {}).get(metric) for cell in baseline]
        per_shop[s] = {
            **continual_metrics(r, b),
            "final": _final(grid[-1][-1], [s]),
            "n_users": n,
            "r_matrix": r,
        }
        rs.append(r)
        ns.append(n)
    r_all, n_all = combine_r(rs, ns)
    b_all = [cell_mean(cell, shops, metric) for cell in baseline]
    shop_finals = [per_shop[s]["final"] for s in shops]
    macro_figs = {k: macro([per_shop[s][k] for s in shops]) for k in ("acc", "bwt", "forward")}
    macro_figs["final"] = {k: macro([f[k] for f in shop_finals]) for k in FINAL_KEYS}
    return {
        "r_matrix": r_all,
        "n_users": n_all,
        "continual": continual_metrics(r_all, b_all),
        "final": _final(grid[-1][-1], shops),
        "per_shop": per_shop,
        "macro": macro_figs,
    }


def cell_mean(cell: dict[str, Cell], shops: Sequence[str], metric: str) -> float | None:
    """User-weighted mean of ``metric`` over the ``shops`` of one cell (None: no user)."""
    ns = [int(cell.get(s, {}).get("n_users") or 0) for s in shops]
    return weighted_mean([cell.get(s, {}).get(metric) for s in shops], ns)


def git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )  # fmt: skip
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def build_metrics(
    *,
    mode: str,
    metric: str,
    seed: int,
    wall_s: float,
    cells: dict[str, Grid],
    baseline: dict[str, list[dict[str, Cell]]],
    shops: Sequence[str],
    data_sha256: str,
    config_yaml: str,
    comm: dict[str, int] | None = None,
) -> dict:
    """The ``metrics.json`` document of ARCHITECTURE.md."""
    new = summarise(cells["new"], baseline["new"], shops, metric)
    doc = {
        "mode": mode,
        "metric": metric,
        "seed": seed,
        "wall_s": round(wall_s, 3),
        "provenance": {
            "git_sha": git_sha(),
            "data_sha256": data_sha256,
            "config_sha256": hashlib.sha256(config_yaml.encode()).hexdigest(),
        },
        "r_matrix": new["r_matrix"],
        "n_users": new["n_users"],
        "continual": new["continual"],
        "final": new["final"],
        "per_shop": new["per_shop"],
        "macro": new["macro"],
        "comm": comm or {"bytes_up": 0, "bytes_down": 0},
    }
    if "repeat" in cells:
        rep = summarise(cells["repeat"], baseline["repeat"], shops, metric)
        doc["r_matrix_repeat"] = rep["r_matrix"]
        doc["n_users_repeat"] = rep["n_users"]
        doc["continual_repeat"] = rep["continual"]
        doc["final_repeat"] = rep["final"]
        doc["macro_repeat"] = rep["macro"]
        for s in shops:
            doc["per_shop"][s]["repeat"] = {
                k: rep["per_shop"][s][k] for k in ("acc", "bwt", "forward", "final")
            }
    return doc


def cost(rounds: list[RoundRow]) -> dict[str, float | int]:
    """What learning cost: training wall and CPU seconds, examples processed, method memory
    (bytes)."""
    return {
        "train_s": round(sum(r.train_s or r.round_s for r in rounds), 3),
        "train_cpu_s": round(sum(r.train_cpu_s for r in rounds), 3),
        "examples": int(sum(r.examples for r in rounds)),
        "memory_bytes": int(max((r.memory_bytes for r in rounds), default=0)),
    }


def listed_shops(shops: Sequence[str], result: RunResult) -> list[str]:
    """The shops a report lists: ``shops`` (the data's; a plan may name none), then any other
    shop some cell names."""
    return list(shops) + sorted(result.shops_seen() - set(shops))


def write_report(
    out: Path,
    result: RunResult,
    *,
    mode: str,
    eval_cfg: EvalConfig,
    seed: int,
    shops: Sequence[str],
    data_sha256: str,
    config_yaml: str,
    wall_s: float,
) -> dict:
    """The run directory of any mode from its result; returns the ``metrics.json`` document.

    ``shops``: the shops the report lists first (see :func:`listed_shops`)."""
    doc = build_metrics(
        mode=mode,
        metric=eval_cfg.metric,
        seed=seed,
        wall_s=wall_s,
        cells=result.cells,
        baseline=result.baseline,
        shops=listed_shops(shops, result),
        data_sha256=data_sha256,
        config_yaml=config_yaml,
        comm={"bytes_up": result.bytes_up, "bytes_down": result.bytes_down},
    )
    doc["eval_on"] = eval_cfg.on
    doc["cost"] = cost(result.rounds)
    doc["rejected_replies"] = [asdict(r) for r in result.rejected]
    doc["rejected_per_shop"] = result.rejected_per_shop()
    # Where a restarted server continued (wall_s counts the last run only); [] = never.
    doc["resumed_from"] = result.resumed_from
    write_run_dir(out, doc, result.rounds, config_yaml)
    return doc


def write_run_dir(out: Path, doc: dict, rounds: list[RoundRow], config_yaml: str) -> None:
    """Write the run-directory contract: config.yaml, metrics.json, CSVs, plots."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(config_yaml)
    (out / "metrics.json").write_text(json.dumps(doc, indent=2))
    with (out / "r_matrix.csv").open("w", newline="") as f:
        w = csv.writer(f)
        n_cols = len(doc["r_matrix"][0]) if doc["r_matrix"] else 0
        w.writerow(["train_window", *[f"test_w{i}" for i in range(n_cols)]])
        for t, row in enumerate(doc["r_matrix"]):
            w.writerow([t, *["" if v is None else f"{v:.6f}" for v in row]])
    with (out / "rounds.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[fl.name for fl in fields(RoundRow)])
        w.writeheader()
        w.writerows(asdict(r) for r in rounds)
    from fedcl.plots import plot_run  # matplotlib only when writing

    plot_run(doc, out / "plots")


def summary_table(doc: dict, run_dir: Path) -> str:
    """The end-of-run summary a person reads."""

    def f(v, spec=".4f"):
        return "-" if v is None else format(v, spec)

    c, fin = doc["continual"], doc["final"]
    lines = [
        f"mode {doc['mode']}   metric {doc['metric']}   seed {doc['seed']}   "
        f"wall {doc['wall_s']:.1f} s",
        f"ACC {f(c['acc'])}  BWT {f(c['bwt'])}  FWT {f(c['fwt'])}  forward {f(c['forward'])}",
        f"final: ndcg@10 {f(fin['ndcg@10'])}  hr@10 {f(fin['hr@10'])}  "
        f"recall@20 {f(fin['recall@20'])}  mrr {f(fin['mrr'])}  ({fin['n_users']} users)",
    ]
    if "final_repeat" in doc:
        fr = doc["final_repeat"]
        lines.append(
            f"final (repeat): ndcg@10 {f(fr['ndcg@10'])}  hr@10 {f(fr['hr@10'])}  "
            f"({fr['n_users']} users)"
        )
    lines.append(f"bytes up {doc['comm']['bytes_up']}  down {doc['comm']['bytes_down']}")
    if "cost" in doc:
        co = doc["cost"]
        lines.append(
            f"cost: train {co['train_s']:.1f} s  examples {co['examples']}  "
            f"method memory {co['memory_bytes'] / 1e6:.2f} MB"
        )
    lines.append("")
    if doc["mode"] == "federated":
        lines.append("('-': no cell, or withheld by the shop: fewer than federated.min_users)")
    lines.append(f"{'shop':<18}{'users*':>7}{'ACC':>9}{'forward':>9}{'final ndcg@10':>15}")
    for s, p in doc["per_shop"].items():
        users = max((max(r) for r in p["n_users"] if r), default=0)
        lines.append(
            f"{s[:17]:<18}{users:>7}{f(p['acc']):>9}{f(p['forward']):>9}"
            f"{f(p['final']['ndcg@10']):>15}"
        )
    m = doc["macro"]
    lines.append(
        f"{'macro (shops)':<18}{'':>7}{f(m['acc']):>9}{f(m['forward']):>9}"
        f"{f(m['final']['ndcg@10']):>15}"
    )
    lines.append("* the most test users any of the shop's R cells rests on")
    lines.append(f"\nrun directory: {run_dir}")
    return "\n".join(lines)

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
import math
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path

import pandas as pd

from fedcl.evaluation import Cell, EvalConfig
from fedcl.metrics.bootstrap import BOOT_SUM, BOOT_W, FIGURES, percentile_interval
from fedcl.metrics.continual import cell_figures, combine_r, macro, weighted_mean
from fedcl.result import RoundRow, RunResult
from fedcl.shop.replies import WITHHELD

#: ``final`` holds these (K = 10, Recall@20), names exactly as the contract writes them.
FINAL_KEYS = ("hr@10", "ndcg@10", "recall@20", "mrr")
Grid = list[list[dict[str, Cell]]]  # [t][i][shop] -> Cell
#: Cell keys that are not metrics.
NOT_METRICS = {"n_users", BOOT_SUM, BOOT_W, WITHHELD}


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


def summarise(
    grid: Grid,
    baseline: list[dict[str, Cell]],
    shops: Sequence[str],
    metric: str,
    forward: list[dict[str, Cell]] | None = None,
):
    """Overall (user-weighted), per-shop and macro figures of one variant, with intervals.

    ``forward[t][shop]``: the forward cells (None: R[t][t+1], the next window's test part).
    Figures follow :data:`fedcl.metrics.continual.FIGURE_RULES`."""
    if forward is None:
        n_cols = max((len(row) for row in grid), default=0)
        forward = [grid[t][t + 1] for t in range(min(len(grid), n_cols - 1))]
    per_shop = {}
    rs, ns = [], []
    for s in shops:
        r, n = _matrix(grid, s, metric), _counts(grid, s)
        figs = cell_figures(grid, forward, [s], metric, baseline)
        per_shop[s] = {
            **_continual(figs),
            "final": _final(grid[-1][-1], [s]),
            "n_users": n,
            "r_matrix": r,
            "forward_n_users": figs["forward_n_users"],
            "intervals": _intervals(figs),
        }
        rs.append(r)
        ns.append(n)
    r_all, n_all = combine_r(rs, ns)
    figs = cell_figures(grid, forward, shops, metric, baseline)
    shop_finals = [per_shop[s]["final"] for s in shops]
    macro_figs = {k: macro([per_shop[s][k] for s in shops]) for k in ("acc", "bwt", "forward")}
    macro_figs["final"] = {k: macro([f[k] for f in shop_finals]) for k in FINAL_KEYS}
    # Metrics: the cells' scalar keys but counts ("n_users", ...) and replicate lists.
    held = {k for row in grid for by in row for c in by.values() for k, v in c.items()
            if not isinstance(v, list | tuple) and not k.startswith("n_")}  # fmt: skip
    metrics = sorted(held - NOT_METRICS)
    return {
        "r_matrix": r_all,
        "n_users": n_all,
        "r_matrices": {m: combine_r([_matrix(grid, s, m) for s in shops], ns)[0] for m in metrics},
        "continual": _continual(figs),
        "forward_n_users": figs["forward_n_users"],
        "forward_by_window": figs["forward_by_window"],
        "intervals": _intervals(figs),
        "bootstrap": {k: _listed(v) for k, v in figs["replicates"].items()},
        "final": _final(grid[-1][-1], shops),
        "per_shop": per_shop,
        "macro": macro_figs,
        "withheld": withheld(grid, shops),
    }


def _continual(figs: dict) -> dict[str, float | None]:
    return {k: figs["point"][k] for k in ("acc", "bwt", "fwt", "forward")}


def _intervals(figs: dict) -> dict[str, list[float] | None]:
    return {k: percentile_interval(figs["replicates"][k]) for k in FIGURES}


def _listed(reps) -> list[float | None] | None:
    """Replicate values for JSON: NaN (a replicate without users) becomes null."""
    return None if reps is None else [None if math.isnan(v) else float(v) for v in reps]


def withheld(grid: Grid, shops: Sequence[str]) -> dict[str, int]:
    """``cells``: (t, i, shop) cells a shop withheld (it had users, fewer than
    federated.min_users) ``of`` all of them; ``empty``: cells without any test user."""
    cells = [row[i].get(s, {}) for row in grid for i in range(len(row)) for s in shops]
    held = sum(1 for c in cells if c.get(WITHHELD))
    empty = sum(1 for c in cells if not c.get("n_users") and not c.get(WITHHELD))
    return {"cells": held, "of": len(cells), "empty": empty}


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
    forward: dict[str, list[dict[str, Cell]]] | None = None,
    boot_seed: int | None = None,
) -> dict:
    """The ``metrics.json`` document of ARCHITECTURE.md.

    ``forward[variant][t][shop]``: the forward cells (model after window t on window t+1's
    events of the users it knows); None, or a variant missing: R[t][t+1]. ``boot_seed``: the
    seed of the cells' bootstrap weights (recorded so that only runs of one seed are paired).
    """
    forward = forward or {}
    new = summarise(cells["new"], baseline["new"], shops, metric, forward.get("new"))
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
        "r_matrices": new["r_matrices"],
        "continual": new["continual"],
        "forward_n_users": new["forward_n_users"],
        "forward_by_window": new["forward_by_window"],
        "intervals": new["intervals"],
        "bootstrap": new["bootstrap"],
        "bootstrap_seed": boot_seed,
        "final": new["final"],
        "per_shop": new["per_shop"],
        "macro": new["macro"],
        "withheld": new["withheld"],
        "comm": comm or {"bytes_up": 0, "bytes_down": 0},
    }
    if "repeat" in cells:
        rep = summarise(cells["repeat"], baseline["repeat"], shops, metric, forward.get("repeat"))
        doc["r_matrix_repeat"] = rep["r_matrix"]
        doc["n_users_repeat"] = rep["n_users"]
        doc["r_matrices_repeat"] = rep["r_matrices"]
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


#: Per-user values of every scored cell (centralized and local runs).
PER_USER = "per_user.parquet"


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
    per_user: list[pd.DataFrame] | None = None,
    training: dict[str, int] | None = None,
) -> dict:
    """The run directory of any mode from its result; returns the ``metrics.json`` document.

    ``shops``: the shops the report lists first (see :func:`listed_shops`). ``per_user``:
    per-user values of every scored cell, written to ``per_user.parquet`` (in federated
    runs they never leave the shops: each keeps its own, see :mod:`fedcl.shop.agent`).
    ``training``: the epochs a window cost (``epochs_per_window`` and how), for the summary."""
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
        forward=result.forward or None,
        boot_seed=eval_cfg.boot_seed,
    )
    doc["eval_on"] = eval_cfg.on
    doc["cost"] = cost(result.rounds)
    if training is not None:
        doc["training"] = training
    doc["rejected_replies"] = [asdict(r) for r in result.rejected]
    doc["rejected_per_shop"] = result.rejected_per_shop()
    # Where a restarted server continued (wall_s counts the last run only); [] = never.
    doc["resumed_from"] = result.resumed_from
    if result.privacy is not None:
        doc["privacy"] = result.privacy
    write_run_dir(out, doc, result.rounds, config_yaml)
    if per_user:
        pd.concat(per_user, ignore_index=True).to_parquet(out / PER_USER, index=False)
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


def interval_text(v: float | None, interval: Sequence[float] | None) -> str:
    """``0.1234 [0.1100, 0.1350]`` (``-`` without a value; the value alone without an
    interval)."""
    if v is None:
        return "-"
    return f"{v:.4f}" if not interval else f"{v:.4f} [{interval[0]:.4f}, {interval[1]:.4f}]"


def summary_table(doc: dict, run_dir: Path) -> str:
    """The end-of-run summary a person reads."""

    def f(v, spec=".4f"):
        return "-" if v is None else format(v, spec)

    c, fin = doc["continual"], doc["final"]
    iv = doc.get("intervals") or {}
    fwd_users = doc.get("forward_n_users") or []
    final_point = fin.get(doc["metric"])
    lines = [
        f"mode {doc['mode']}   metric {doc['metric']}   seed {doc['seed']}   "
        f"wall {doc['wall_s']:.1f} s   (95% bootstrap intervals over users)",
        f"forward {interval_text(c['forward'], iv.get('forward'))}  "
        f"({sum(fwd_users)} user-windows over {len(fwd_users)} forward cells)",
        f"final   {interval_text(final_point, iv.get('final'))}  ({fin['n_users']} users)",
        f"ACC {interval_text(c['acc'], iv.get('acc'))}  "
        f"BWT {interval_text(c['bwt'], iv.get('bwt'))}  FWT {f(c['fwt'])}",
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
    if doc.get("privacy"):
        pr = doc["privacy"]
        stop = pr["stopped_at"]
        lines.append(
            f"privacy: user-level ({pr['epsilon']:.3g}, {pr['delta']:g})-DP per shop over "
            f"{pr['rounds_trained']} of {pr['rounds_planned']} rounds "
            f"(per round {pr['epsilon_per_round']:.3g}; noise x{pr['noise_multiplier']:.3g}, "
            f"clip {pr['clip']:g})"
            + (
                f"; budget {pr['epsilon_budget']:g} stopped training at window "
                f"{stop['window']} round {stop['round']}"
                if stop
                else ""
            )
        )
    if "cost" in doc:
        co = doc["cost"]
        lines.append(
            f"cost: examples processed {co['examples']}  train {co['train_s']:.1f} s  "
            f"method memory {co['memory_bytes'] / 1e6:.2f} MB"
        )
    if "training" in doc:
        tr = doc["training"]
        how = (
            f" ({tr['rounds']} rounds x {tr['epochs_per_round']} + {tr['finetune_epochs']} "
            "fine-tuning at each shop)"
            if "rounds" in tr
            else ""
        )
        if tr.get("solved"):
            lines.append(f"training: {tr['solved']} (no gradient epochs)")
        else:
            lines.append(f"training epochs per window: {tr['epochs_per_window']}{how}")
    held = doc.get("withheld") or {}
    if doc["mode"] == "federated" and held.get("cells"):
        lines.append(
            f"{held['cells']} of {held['of']} cells withheld (fewer than federated.min_users users)"
        )
    lines.append("")
    if doc["mode"] == "federated":
        lines.append("('-': no cell, or withheld by the shop: fewer than federated.min_users)")
    lines.append(
        f"{'shop':<18}{'users*':>7}{'ACC':>9}{'forward':>9}{'fwd users':>10}{'final ndcg@10':>15}"
    )
    for s, p in doc["per_shop"].items():
        users = max((max(r) for r in p["n_users"] if r), default=0)
        lines.append(
            f"{s[:17]:<18}{users:>7}{f(p['acc']):>9}{f(p['forward']):>9}"
            f"{sum(p.get('forward_n_users') or []):>10}{f(p['final']['ndcg@10']):>15}"
        )
    m = doc["macro"]
    lines.append(
        f"{'macro (shops)':<18}{'':>7}{f(m['acc']):>9}{f(m['forward']):>9}{'':>10}"
        f"{f(m['final']['ndcg@10']):>15}"
    )
    lines.append("* the most test users any of the shop's R cells rests on")
    lines.append(f"\nrun directory: {run_dir}")
    return "\n".join(lines)

"""Shared machinery of the scenario suites: run a grid of configs x seeds, tabulate.

Each run goes through ``fedcl.simulate.run`` (the same code as the command line) and keeps
its run directory under ``<out>/runs/<label>/seed<k>``; a run already finished is reused, so
an interrupted suite resumes.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedcl.config import compose_config
from fedcl.metrics.bootstrap import paired_difference_seeds
from fedcl.simulate import run

#: Figures compared in pairs: column title -> metrics.json figure.
PAIRED = {"ACC": "acc", "BWT": "bwt", "forward": "forward", "final": "final"}


def run_grid(
    out: Path, grid: dict[str, list[str]], seeds: Sequence[int], common: Sequence[str] = ()
) -> dict[str, list[dict]]:
    """``grid``: label -> Hydra overrides. Returns label -> metrics docs (one per seed)."""
    results: dict[str, list[dict]] = {}
    for label, overrides in grid.items():
        docs = []
        for seed in seeds:
            run_dir = out / "runs" / label / f"seed{seed}"
            metrics = run_dir / "metrics.json"
            if metrics.is_file():
                docs.append(json.loads(metrics.read_text()))
                continue
            cfg, yaml = compose_config([*common, *overrides, f"seed={seed}"])
            print(f"[suite] {label} seed {seed}: {' '.join(overrides)}", flush=True)
            docs.append(run(cfg, yaml, run_dir))
        results[label] = docs
    return results


def mean_sd(values: Sequence[float | None]) -> str:
    """``mean ± sd`` over the non-null values (sd over >= 2 values), or ``-``."""
    kept = [v for v in values if v is not None]
    if not kept:
        return "-"
    spec = ".0f" if all(float(v).is_integer() and abs(v) >= 100 for v in kept) else ".4f"
    if len(kept) == 1:
        return format(kept[0], spec)
    return f"{format(statistics.mean(kept), spec)} ± {format(statistics.stdev(kept), spec)}"


def mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.mean(kept) if kept else None


def pick(doc: dict, path: str) -> Any:
    node: Any = doc
    for key in path.split("."):
        node = None if node is None else node.get(key)
    return node


def table(results: dict[str, list[dict]], columns: dict[str, str]) -> str:
    """Markdown: one row per label, ``mean ± sd`` over seeds for each column path."""
    head = ["setting", "seeds", *columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, docs in results.items():
        cells = [mean_sd([pick(d, path) for d in docs]) for path in columns.values()]
        lines.append("| " + " | ".join([label, str(len(docs)), *cells]) + " |")
    return "\n".join(lines)


def paired_table(
    results: dict[str, list[dict]], reference: str, figures: dict[str, str] = PAIRED
) -> str:
    """Markdown: each setting minus ``reference`` on each figure, runs paired by seed: the mean
    difference over seeds and its 95% bootstrap interval over users (every run weights a user
    alike), "no difference shown" when the interval holds 0. Empty without the reference."""
    if reference not in results:
        return ""
    head = ["setting", *(f"{t} - {reference}" for t in figures)]
    lines = [
        f"Paired differences against {reference} (seed means; 95% bootstrap interval over "
        "users, the same users' weights in both runs):\n",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for label, docs in results.items():
        if label == reference:
            continue
        texts = [paired_difference_seeds(docs, results[reference], f)["text"]
                 for f in figures.values()]  # fmt: skip
        lines.append("| " + " | ".join([label, *texts]) + " |")
    return "\n".join(lines)


def forward_curve(doc: dict) -> list[float | None]:
    """Per window t >= 1: the forward cell of t-1 (``forward_by_window``), or R[t-1][t] in a
    metrics.json written before forward cells existed."""
    if doc.get("forward_by_window") is not None:
        return doc["forward_by_window"]
    r = doc["r_matrix"]
    return [r[t][t + 1] for t in range(len(r) - 1)]


def plot_curves(results: dict[str, list[dict]], out: Path, title: str) -> None:
    """Per-window curves per setting (seed means): next-window quality and final row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for k, (label, docs) in enumerate(results.items()):
        n = len(docs[0]["r_matrix"])
        curves = [forward_curve(d) for d in docs]
        fwd = [mean([c[t] for c in curves]) for t in range(len(curves[0]))]
        last = [mean([d["r_matrix"][-1][i] for d in docs]) for i in range(n)]
        # 10 colours, then the next line style: more than 10 settings stay distinguishable
        style = {"label": label, "color": f"C{k % 10}", "linestyle": ("-", "--", ":")[k // 10 % 3]}
        axes[0].plot(
            range(1, len(fwd) + 1), [v if v is not None else float("nan") for v in fwd], **style
        )
        axes[1].plot(range(n), [v if v is not None else float("nan") for v in last], **style)
    axes[0].set_title("forward: the model of window t-1 on window t")
    axes[1].set_title("after the last window: R[T-1][i]")
    for ax in axes:
        ax.set_xlabel("window")
        ax.set_ylabel("NDCG@10")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)

"""Sweep summary: after ``--multirun``, one table (CSV + markdown) across the jobs."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("fedcl")
COLUMNS = (
    "job", "overrides", "mode", "acc", "bwt", "fwt", "forward", "ndcg@10", "hr@10",
    "macro_acc", "bytes_up", "bytes_down", "wall_s",
)  # fmt: skip


def summary_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job directory holding a metrics.json (job order)."""
    rows = []
    jobs = sorted((p for p in sweep_dir.iterdir() if p.is_dir()), key=_job_order)
    for job in jobs:
        metrics = job / "metrics.json"
        if not metrics.is_file():
            rows.append({"job": job.name, "overrides": _overrides(job), "mode": "FAILED"})
            continue
        doc = json.loads(metrics.read_text())
        c, f = doc["continual"], doc["final"]
        rows.append(
            {
                "job": job.name, "overrides": _overrides(job), "mode": doc["mode"],
                "acc": c["acc"], "bwt": c["bwt"], "fwt": c["fwt"], "forward": c["forward"],
                "ndcg@10": f["ndcg@10"], "hr@10": f["hr@10"], "macro_acc": doc["macro"]["acc"],
                "bytes_up": doc["comm"]["bytes_up"], "bytes_down": doc["comm"]["bytes_down"],
                "wall_s": doc["wall_s"],
            }
        )  # fmt: skip
    return rows


def write_summary(sweep_dir: Path, rows: list[dict[str, Any]]) -> None:
    with (sweep_dir / "summary.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (sweep_dir / "summary.md").write_text(markdown_table(rows, COLUMNS) + "\n")


def markdown_table(rows: list[dict[str, Any]], columns) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _overrides(job: Path) -> str:
    path = job / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return ""
    return " ".join(line.strip()[2:] for line in path.read_text().splitlines() if line.strip())


def _job_order(p: Path) -> tuple[int, str]:
    return (int(p.name), p.name) if p.name.isdigit() else (10**9, p.name)


class SweepSummary(Callback):
    """Hydra callback (conf/config.yaml ``hydra.callbacks``)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = summary_rows(sweep_dir)
        write_summary(sweep_dir, rows)
        print(markdown_table(rows, COLUMNS))
        print(f"\nsweep summary: {sweep_dir / 'summary.csv'} and summary.md")

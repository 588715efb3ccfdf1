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
    "job", "overrides", "mode", "acc", "bwt", "fwt", "forward", "forward_lo", "forward_hi",
    "final", "final_lo", "final_hi", "ndcg@10", "hr@10", "macro_acc", "bytes_up", "bytes_down",
    "wall_s",
)  # fmt: skip
#: The markdown table: forward and final with their 95% intervals in one column each.
MD_COLUMNS = (
    "job", "overrides", "mode", "acc", "bwt", "fwt", "forward [95%]", "final [95%]", "ndcg@10",
    "hr@10", "macro_acc", "bytes_up", "bytes_down", "wall_s",
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
        iv = doc.get("intervals") or {}
        fwd, fin = iv.get("forward") or (None, None), iv.get("final") or (None, None)
        rows.append(
            {
                "job": job.name, "overrides": _overrides(job), "mode": doc["mode"],
                "acc": c["acc"], "bwt": c["bwt"], "fwt": c["fwt"], "forward": c["forward"],
                "forward_lo": fwd[0], "forward_hi": fwd[1], "final": f.get(doc["metric"]),
                "final_lo": fin[0], "final_hi": fin[1],
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
    (sweep_dir / "summary.md").write_text(markdown_table(rows, MD_COLUMNS) + "\n")


def _with_interval(row: dict[str, Any], key: str) -> str:
    v, lo, hi = row.get(key), row.get(f"{key}_lo"), row.get(f"{key}_hi")
    if v is None:
        return "-"
    return f"{v:.4f}" if lo is None or hi is None else f"{v:.4f} [{lo:.4f}, {hi:.4f}]"


def markdown_table(rows: list[dict[str, Any]], columns) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, str):
            return v
        if v is None:
            return "-"
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(_value(r, c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _value(row: dict[str, Any], column: str) -> Any:
    """A row's value for a column; "forward [95%]" is forward with its interval."""
    if column.endswith(" [95%]"):
        return _with_interval(row, column.removesuffix(" [95%]"))
    return row.get(column)


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
        print(markdown_table(rows, MD_COLUMNS))
        print(f"\nsweep summary: {sweep_dir / 'summary.csv'} and summary.md")

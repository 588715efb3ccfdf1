"""Helpers shared by the benchmark scripts (not a fedcl module: run the scripts from a checkout).

The machine the benchmarks were written on is shared and noisy, so every script repeats
each measurement, interleaves the candidates (A B A B ... rather than A A B B) and reports
medians (plus the best run: noise only ever slows a run down).
"""

from __future__ import annotations

import importlib.util
import resource
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # import the checkout's fedcl, not an installed copy

SKIP_IMPLICIT = "skipped: pip install implicit"


def have(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken install, or sys.modules[module] is None
        return False


def require_implicit() -> None:
    """Exit 0 with the skip message when the ``implicit`` library is not installed."""
    if not have("implicit") or not have("scipy"):
        print(SKIP_IMPLICIT)
        sys.exit(0)


def peak_mb() -> float:
    """Peak resident set size of this process so far, in MB (``ru_maxrss``)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / (1024 * 1024) if sys.platform == "darwin" else kb / 1024


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def fmt_runs(xs: Sequence[float], fmt: str = "{:.2f}") -> str:
    return "[" + ", ".join(fmt.format(x) for x in xs) + "]"


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table with padded columns."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in [list(head), *rows]) for i in range(len(head))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(head, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for r in rows:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    return "\n".join(lines)

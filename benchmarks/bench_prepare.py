"""Cold preparation of the full Online Retail file against a plain ``pandas.read_csv``.

Run: ``python benchmarks/bench_prepare.py [--repeat 5] [--path FILE]``

Each measurement runs in a fresh Python process (nothing warmed up, no prepared-data
cache: ``OnlineRetailConfig(cache=False)``), and the candidates are interleaved:

* ``read_csv``: ``pandas.read_csv(path)`` with pandas' own type inference (the reference);
* ``read_csv(dtype=str)``: every column as text, as fedcl's reader does (information only);
* ``prepare``: ``fedcl.data.prepare.prepare(OnlineRetailConfig(cache=False, path=path))``.

Printed: each candidate's median (and every run), the ratio prepare / read_csv (aim:
under 3x), prepare's step breakdown (from its own progress log) and the peak RSS of each
process (absolute, and above what the imports alone took).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time

import _common  # noqa: F401  (puts the checkout on sys.path)
from _common import fmt_runs, markdown_table, median, peak_mb

CANDIDATES = ("read_csv", "read_csv(dtype=str)", "prepare")


class _StepLog(logging.Handler):
    """Collects prepare's ``<step> <cumulative seconds>`` progress records."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.steps: list[tuple[str, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if isinstance(args, tuple) and len(args) == 2 and isinstance(args[1], float):
            self.steps.append((str(args[0]), args[1]))


def child(what: str, path: str | None) -> None:
    """One measurement in this (fresh) process; prints one JSON line."""
    import pandas as pd

    from fedcl.data.prepare import prepare
    from fedcl.data.sources.online_retail import OnlineRetailConfig, default_path

    path = path or str(default_path())
    steps = _StepLog()
    logger = logging.getLogger("fedcl.data.prepare")
    logger.addHandler(steps)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    base = peak_mb()
    t0 = time.perf_counter()
    if what == "read_csv":
        rows = len(pd.read_csv(path))
    elif what == "read_csv(dtype=str)":
        rows = len(pd.read_csv(path, dtype=str, keep_default_na=False))
    else:
        data, _ = prepare(OnlineRetailConfig(path=path, cache=False))
        rows = data.report["rows_in"]
    secs = time.perf_counter() - t0
    out = {"seconds": secs, "peak_mb": peak_mb(), "base_mb": base, "rows": rows}
    out["steps"] = steps.steps
    print(json.dumps(out))


def run_child(what: str, path: str | None) -> dict:
    cmd = [sys.executable, __file__, "--child", what]
    if path:
        cmd += ["--path", path]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--path", default=None, help="Online Retail file (default: the shipped one)")
    ap.add_argument("--child", choices=CANDIDATES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.path)
        return

    runs: dict[str, list[dict]] = {c: [] for c in CANDIDATES}
    for r in range(args.repeat):
        for c in CANDIDATES:  # interleaved: a noisy spell hits all candidates alike
            runs[c].append(run_child(c, args.path))
        print(f"repeat {r + 1}/{args.repeat} done", file=sys.stderr)

    secs = {c: [m["seconds"] for m in runs[c]] for c in CANDIDATES}
    med = {c: median(secs[c]) for c in CANDIDATES}
    rows = []
    for c in CANDIDATES:
        peak = median([m["peak_mb"] for m in runs[c]])
        extra = median([m["peak_mb"] - m["base_mb"] for m in runs[c]])
        rows.append(
            [
                c,
                f"{med[c]:.3f}",
                f"{min(secs[c]):.3f}",
                fmt_runs(secs[c]),
                f"{peak:.0f}",
                f"{extra:.0f}",
            ]
        )
    print(
        f"\nOnline Retail, {runs['prepare'][0]['rows']:,} rows in, {args.repeat} cold runs each\n"
    )
    head = ["step", "median s", "best s", "runs s", "peak RSS MB", "RSS above imports MB"]
    print(markdown_table(head, rows))
    ratio = med["prepare"] / med["read_csv"]
    best = min(secs["prepare"]) / min(secs["read_csv"])
    print(f"\nprepare / read_csv: {ratio:.2f}x median, {best:.2f}x best-vs-best (aim: < 3x)")
    print(f"prepare / read_csv(dtype=str): {med['prepare'] / med['read_csv(dtype=str)']:.2f}x")

    # Step breakdown from prepare's progress log (cumulative times -> per step).
    names = [s for s, _ in runs["prepare"][0]["steps"]]
    if names:
        per_run = []
        for m in runs["prepare"]:
            cum = [t for _, t in m["steps"]] + [m["seconds"]]
            per_run.append([b - a for a, b in zip([0.0, *cum[:-1]], cum, strict=True)])
        labels = [*names, "report (rest)"]
        print("\nprepare steps (median s, share of prepare):")
        for k, label in enumerate(labels):
            s = median([p[k] for p in per_run])
            print(f"  {label:<42s} {s:7.3f}  {s / med['prepare']:5.0%}")


if __name__ == "__main__":
    main()

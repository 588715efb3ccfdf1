"""Time and memory of the synthetic source: the default scenario and a 1,000-shop stream.

Run: ``python benchmarks/bench_synthetic.py`` (add ``--skip-default`` or ``--skip-large``).
Peak memory is the process high-water mark (``ru_maxrss``) after each step, so the large
row includes whatever the default row allocated (little). Aim: large < 60 s and < 4 GB.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from fedcl.data.sources import synthetic  # noqa: E402
from fedcl.data.sources.synthetic import SyntheticConfig, read  # noqa: E402

# ~1,000,000 events: 100k users x ~7 active months (some join late) x ~1.45 events.
LARGE = {"n_shops": 1000, "n_users": 100_000, "n_items": 2000, "events_per_user_period": 1.45}


def peak_mb() -> float:
    """Peak resident set size of this process so far, in MB."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / (1024 * 1024) if sys.platform == "darwin" else kb / 1024


def timed(fn: Callable[[], object]) -> tuple[object, float, float]:
    """Result of ``fn()``, its wall time in s and the peak RSS after it in MB."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, peak_mb()


def bench(label: str, cfg: SyntheticConfig, rows: list[tuple[str, ...]]) -> None:
    """Generate (and, if available, prepare) ``cfg``; append table rows."""
    src, gen_secs, mb = timed(lambda: read(cfg))
    frame = src.frame  # type: ignore[attr-defined]
    size = f"{len(frame):,} ev / {frame['user_id'].nunique():,} u / {cfg.n_shops} shops"
    rows.append((label, "generate", size, f"{gen_secs:.2f}", f"{mb:.0f}"))
    try:
        from fedcl.data.prepare import prepare  # written by another engineer
    except ImportError as err:
        print(f"note: fedcl.data.prepare.prepare not available ({err}); skipping prepare")
        return
    pcfg = dataclasses.replace(cfg, cache=False)
    # prepare() calls the reader itself (looked up on the module at call time): time that
    # call separately so the table can show the cost of preparation alone.
    read_secs: list[float] = []

    def timed_read(c: SyntheticConfig) -> object:
        t0 = time.perf_counter()
        out = read(c)
        read_secs.append(time.perf_counter() - t0)
        return out

    synthetic.read = timed_read  # type: ignore[assignment]
    try:
        _, secs, mb = timed(lambda: prepare(pcfg))
    except Exception as err:  # noqa: BLE001 - a benchmark reports, it does not fail
        print(f"note: prepare({label}) failed: {type(err).__name__}: {err}")
        return
    finally:
        synthetic.read = read
    prep_only = secs - sum(read_secs)
    rows.append((label, "prepare (incl. read)", size, f"{secs:.2f}", f"{mb:.0f}"))
    rows.append((label, "prepare excl. read", size, f"{prep_only:.2f}", ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--skip-default", action="store_true")
    ap.add_argument("--skip-large", action="store_true")
    args = ap.parse_args()
    rows: list[tuple[str, ...]] = []
    if not args.skip_default:
        bench("default", SyntheticConfig(), rows)
    if not args.skip_large:
        bench("1000 shops", SyntheticConfig(**LARGE), rows)
    head = ("scenario", "step", "size", "wall s", "peak MB")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, tuple("-" * w for w in widths), *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


if __name__ == "__main__":
    main()

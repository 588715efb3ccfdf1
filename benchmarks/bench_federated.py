"""Cost and scale of federation.

1. Overhead: the same synthetic stream, model and epochs per window, centralized vs federated
   (Flower simulation, 2 rounds x half the epochs). Prints the wall time of each, the training
   compute of each (the shops' own train seconds, summed), and Flower's overhead per round =
   (round wall time - the shops' train seconds / parallel actors).
2. Scale: a synthetic stream of 100 and 1,000 shops (``--shops``), 10% of the shops sampled per
   round: seconds per round and peak memory of the whole process tree (driver + Ray actors).

    python benchmarks/bench_federated.py                 # overhead + 100 and 1,000 shops
    python benchmarks/bench_federated.py --skip-scale
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import _common  # noqa: F401  (puts the checkout first on sys.path)

from fedcl.config import compose_config
from fedcl.simulate import run


def tree_rss_mb() -> float:
    """Resident memory of this process and all its children, in MB (psutil if present)."""
    try:
        import psutil
    except ImportError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    me = psutil.Process()
    procs = [me, *me.children(recursive=True)]
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total / 2**20


class PeakMemory:
    """Samples the process tree's RSS every 0.5 s while a block runs."""

    def __enter__(self):
        self.peak, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss_mb())
            time.sleep(0.5)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def timed(overrides: list[str], out: Path) -> tuple[dict, float, float]:
    cfg, yaml = compose_config(overrides)
    start = time.perf_counter()
    with PeakMemory() as mem:
        doc = run(cfg, yaml, out)
    return doc, time.perf_counter() - start, mem.peak


def rounds(out: Path) -> list[dict]:
    import csv

    with (out / "rounds.csv").open() as f:
        return list(csv.DictReader(f))


def overhead(tmp: Path, epochs: int) -> None:
    base = ["data=synthetic", "continual=naive", "federated.min_users=1"]
    central, c_wall, c_mem = timed(
        [*base, "mode=centralized", f"train.epochs={epochs}"], tmp / "central"
    )
    # Like for like: the same epochs per window, no personalisation fine-tuning on top.
    plain = ["federated.finetune_epochs=0", "federated.model_local_keys=false"]
    fed, f_wall, f_mem = timed(
        [*base, "mode=federated", "federated.rounds=2", f"train.epochs={epochs // 2}", *plain],
        tmp / "fed",
    )
    rs = [r for r in rounds(tmp / "fed") if r["unit"] == "federated"]
    actors = 2  # federated.sim_cpus / cpus_per_shop
    per_round = [float(r["round_s"]) - float(r["train_s"]) / actors for r in rs]
    print("\n## Overhead (synthetic default: 5 shops, 8 windows)\n")
    print("| mode | wall s | training s (wall) | training CPU s | peak MB | ACC |")
    print("|---|---|---|---|---|---|")
    for name, doc, wall, mem in (("centralized", central, c_wall, c_mem),
                                 ("federated", fed, f_wall, f_mem)):  # fmt: skip
        co = doc["cost"]
        print(f"| {name} | {wall:.1f} | {co['train_s']:.1f} | {co['train_cpu_s']:.1f} |"
              f" {mem:.0f} | {doc['continual']['acc']:.4f} |")  # fmt: skip
    ratio = fed["cost"]["train_s"] / max(central["cost"]["train_s"], 1e-9)
    cpu = fed["cost"]["train_cpu_s"] / max(central["cost"]["train_cpu_s"], 1e-9)
    print(f"\ntraining CPU seconds federated / centralized: {cpu:.2f} (aim <= 1.5)")
    print(
        f"training wall seconds federated (summed over 1-thread shops) / centralized "
        f"(torch's default threads): {ratio:.2f}"
    )
    print(f"Flower overhead per round: median {statistics.median(per_round):.2f} s "
          f"over {len(per_round)} rounds (aim < 1 s)")  # fmt: skip
    print(
        f"wall federated / centralized: {f_wall / c_wall:.2f} (includes Ray start-up, "
        "per-message state loads and evaluation on every window)"
    )


def scale(tmp: Path, shops: int) -> None:
    overrides = [
        "mode=federated", "data=synthetic", f"data.n_shops={shops}", f"data.n_users={shops * 60}",
        "data.n_items=1000", "data.n_periods=2", "data.shops.min_users=5",
        "data.shops.min_events=20", "federated.rounds=2", "strategy.fraction_train=0.1",
        "federated.min_users=1", "model=mf", "continual=naive", "train.epochs=2",
    ]  # fmt: skip
    doc, wall, peak = timed(overrides, tmp / f"scale{shops}")
    rs = rounds(tmp / f"scale{shops}")
    per = statistics.median(float(r["round_s"]) for r in rs)
    print(f"| {shops} | {len(doc['per_shop'])} | {per:.2f} | {wall:.0f} | {peak:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--shops", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--skip-overhead", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if not args.skip_overhead:
            overhead(tmp, args.epochs)
        if not args.skip_scale:
            print("\n## Scale (10% of shops per round, 2 windows x 2 rounds, evaluation of every"
                  " shop after each window)\n")  # fmt: skip
            print("| shops asked | shops kept | s per round (median) | wall s | peak MB (tree) |")
            print("|---|---|---|---|---|")
            for n in args.shops:
                scale(tmp, n)
    print(json.dumps({"note": "machine is shared: compare ratios, not seconds"}))


if __name__ == "__main__":
    main()

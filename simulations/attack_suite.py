"""Attacking shops against the server's defences, on tiny synthetic data (RESEARCH: the
attacks are ``federated.attack``, a simulation-only option; :mod:`fedcl.federated.attacks`).

    python simulations/attack_suite.py --seeds 0 1 2            # the full table, minutes
    python simulations/attack_suite.py --seeds 0 --attackers 2  # a quick look

10 synthetic shops (partitions sorted biggest first: the attackers are the biggest shops),
3 windows x 2 rounds, on the in-process grid of the tests (no Ray). Strategies: FedAvg with
the bounds off (the positive control), FedAvg with the default bounds
(``federated.bounds``), FedMedian, FedTrimmedAvg (beta 0.2, 0.3) and MultiKrum, the robust
ones with the bounds off (each defence alone). Attacks: the update x100 (``scale``), x-10
(``sign_flip``), Gaussian noise of 100x the update's norm (``noise``), and the targeted
``promote`` (one mid-popularity item pushed into everyone's top-10), by the first 1, 2, 3
of 10 shops. Reported: ACC (NDCG@10 of the last model on every window, as metrics.json) and
the promoted item's HR@10 among the honest shops' users who never bought it (global item
table, each shop's own user vectors and item biases).

Writes ``<out>/runs/*.json`` (one per run: a rerun reuses them, so the suite resumes and
several processes with different ``--strategies`` can share ``--out``), then
``<out>/results.md`` (tables) and ``<out>/results.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from flwr.supercore.task_identity import TaskIdentity

from fedcl.config import compose_config
from fedcl.federated.protocol import ARRAYS, from_record
from fedcl.federated.server_loop import run_federated, write_report
from fedcl.run_data import run_data
from fedcl.shop.agent import ShopAgent

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "federated"))
from local_grid import LocalGrid  # noqa: E402 (the tests' in-process grid)

N_SHOPS = 10
DATA = [
    "data=synthetic",
    f"data.n_shops={N_SHOPS}",
    "data.n_users=600",
    "data.n_items=120",
    "data.n_periods=3",
    "data.shops.min_users=5",
    "train.epochs=2",
    "train.batch_size=256",
    "model=mf",
    "model.dim=8",
    "continual=replay",
    "federated.rounds=2",
    "federated.min_users=1",
    "eval.n_boot=0",
]
OFF = ["federated.bounds.enabled=false"]
STRATEGIES = {
    "fedavg (no bounds)": ["strategy=fedavg", *OFF],
    "fedavg + bounds": ["strategy=fedavg"],
    "fedavg + bounds (clip)": ["strategy=fedavg", "federated.bounds.action=clip"],
    "fedmedian": ["strategy=fedmedian", *OFF],
    "fedtrimmedavg 0.2": ["strategy=fedtrimmedavg", "strategy.kwargs.beta=0.2", *OFF],
    "fedtrimmedavg 0.3": ["strategy=fedtrimmedavg", "strategy.kwargs.beta=0.3", *OFF],
    "multikrum": [
        "strategy=multikrum",
        "strategy.kwargs.num_malicious_nodes=3",
        "strategy.kwargs.num_nodes_to_select=5",
        *OFF,
    ],
}
ATTACKS = {
    "scale": ["federated.attack.kind=scale", "federated.attack.factor=100"],
    "sign_flip": ["federated.attack.kind=sign_flip", "federated.attack.factor=10"],
    "noise": ["federated.attack.kind=noise", "federated.attack.factor=100"],
    "promote": ["federated.attack.kind=promote", "federated.attack.factor=10"],
    "weight": ["federated.attack.kind=weight", "federated.attack.factor=99000000"],
}


def target_item(overrides: list[str]) -> int:
    """A mid-popularity item of the first window (the promoted one), by its buyers."""
    cfg, _ = compose_config([*DATA, *overrides])
    data = run_data(cfg.data, cfg.eval)
    n0 = data.n_items_known(0)
    counts = torch.zeros(n0)
    for shop in data.shops:
        x = data.interactions(shop, [0], "train", data.n_users_known(shop, 0) + 1, n0)
        counts += torch.bincount(x.items[x.items < n0], minlength=n0)[:n0].float()
    order = torch.argsort(counts)
    return int(order[len(order) // 2])


def promoted_hr(cfg, grid: LocalGrid, item: int, honest: list[str]) -> float:
    """HR@10 of ``item`` among the honest shops' users who never bought it."""
    final = [m for m in grid.sent if m.metadata.message_type == "evaluate"][-1]
    shared = from_record(final.content[ARRAYS])
    n_items = next(iter(shared.values())).shape[0]
    data = run_data(cfg.data, cfg.eval)
    hits = users = 0
    for shop in honest:
        agent = ShopAgent(cfg, shop, cfg.federated.state_dir, torch.device("cpu"))
        learner, _ = agent._learner(shared, n_items)  # the shop's saved state + global table
        model = learner.model.eval()
        windows = list(range(data.n_windows))
        x = data.interactions(shop, windows, None, model.n_users, n_items)
        bought = set(x.users[x.items == item].tolist())
        who = torch.tensor([u for u in range(model.n_users) if u not in bought])
        if len(who) == 0:
            continue
        with torch.no_grad():
            top = model.score_all(who).topk(10, dim=1).indices
        hits += int((top == item).any(dim=1).sum())
        users += len(who)
    return hits / max(users, 1)


def one_run(overrides: list[str], seed: int, item: int, n_bad: int) -> dict:
    """ACC, final NDCG@10 and the promoted item's HR@10 of one run."""
    with tempfile.TemporaryDirectory(prefix="attack") as tmp:
        state = f"federated.state_dir={tmp}/shops"
        cfg, yaml = compose_config([*DATA, *overrides, f"seed={seed}", state])
        grid = LocalGrid(cfg, N_SHOPS)
        start = time.perf_counter()
        result = run_federated(grid, cfg, None)
        doc = write_report(cfg, result, Path(tmp) / "run", yaml, 1.0)
        shops = run_data(cfg.data, cfg.eval).shops
        hr = promoted_hr(cfg, grid, item, shops[n_bad:])
        trained = [r for r in result.rounds if r.unit == "federated"]
        return {
            "acc": doc["continual"]["acc"],
            "final_ndcg10": doc["final"]["ndcg@10"],
            "promoted_hr10": hr,
            "rejected": sum(r.rejected for r in trained),
            "clipped": sum(r.clipped for r in trained),
            "seconds": round(time.perf_counter() - start, 1),
        }


def mean(values: list[float]) -> float:
    return statistics.mean(values) if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--attackers", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--kinds", nargs="+", default=list(ATTACKS), choices=list(ATTACKS))
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    ap.add_argument("--extra", nargs="*", default=[], help="overrides added to every run")
    ap.add_argument("--out", type=Path, default=Path("outputs/attack_suite"))
    ap.add_argument("--tables-only", action="store_true", help="tabulate the runs in --out")
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # the runs' logs (clipped shops etc.) are in the table
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    args.out.mkdir(parents=True, exist_ok=True)
    item = target_item(args.extra)
    runs: dict[str, dict] = {}
    for name in args.strategies:
        base = [*STRATEGIES[name], *args.extra]
        cases = [("clean", 0, [])]
        cases += [(k, n, ATTACKS[k]) for k in args.kinds for n in args.attackers]
        for kind, n_bad, attack in cases:
            over = [*base, *attack, f"federated.attack.shops={n_bad}"]
            over += [f"federated.attack.item={item}"]
            for seed in args.seeds:
                key = f"{name} | {kind} | {n_bad} | {seed}"
                # One file per run: an interrupted suite resumes, parallel suites share it.
                path = args.out / "runs" / (key.replace(" ", "").replace("|", "_") + ".json")
                if path.is_file():
                    runs[key] = json.loads(path.read_text())
                    continue
                if args.tables_only:
                    continue
                runs[key] = one_run(over, seed, item, n_bad)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(runs[key]))
                print(key, runs[key], flush=True)
    (args.out / "results.json").write_text(json.dumps({"item": item, "runs": runs}, indent=1))
    text = tables(runs, args, item)
    (args.out / "results.md").write_text(text)
    print(text)


def tables(runs: dict[str, dict], args: argparse.Namespace, item: int) -> str:
    """ACC (attacked - clean) per strategy and attack, and the promoted item's HR@10."""

    def fig(name: str, kind: str, n: int, what: str) -> float:
        keys = [f"{name} | {kind} | {n} | {s}" for s in args.seeds]
        return mean([runs[k][what] for k in keys if k in runs])

    def seeds(name: str) -> str:  # seeds whose clean run is there
        return str(sum(f"{name} | clean | 0 | {s}" in runs for s in args.seeds))

    cols = [(k, n) for k in args.kinds for n in args.attackers]
    head = ["strategy", "seeds", "clean ACC", *(f"{k} {n}/10" for k, n in cols)]
    lines = [
        f"ACC (NDCG@10), mean of seeds {args.seeds}; attacked columns: ACC - clean ACC.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name in args.strategies:
        clean = fig(name, "clean", 0, "acc")
        cells = [f"{fig(name, k, n, 'acc') - clean:+.4f}" for k, n in cols]
        lines.append("| " + " | ".join([name, seeds(name), f"{clean:.4f}", *cells]) + " |")
    if "promote" in args.kinds:
        head = ["strategy", "clean HR@10", *(f"promote {n}/10" for n in args.attackers)]
        lines += [
            "",
            f"HR@10 of the promoted item {item} among honest users who never bought it.",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
        ]
        for name in args.strategies:
            cells = [f"{fig(name, 'promote', n, 'promoted_hr10'):.4f}" for n in args.attackers]
            clean = fig(name, "clean", 0, "promoted_hr10")
            lines.append("| " + " | ".join([name, f"{clean:.4f}", *cells]) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

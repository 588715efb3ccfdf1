"""``python -m fedcl.serve.demo DIR``: a small federation on this machine, to try the service.

Writes a synthetic plan and one event log per shop into ``DIR`` (as ``python -m fedcl.plan
--shop-logs`` does), runs the federation in this process (the real server loop and shop
agents, each reading only its own log: the deployment code path without the network), so
that every shop's state directory holds serving snapshots, and prints the command that
serves one shop. Takes well under a minute.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from fedcl.config import Config, load_config
from fedcl.data.plan import export_plan
from fedcl.data.prepare import prepare_cached
from fedcl.federated.local_grid import LocalGrid, own_log_nodes, server_identity
from fedcl.federated.server_loop import run_federated
from fedcl.plan import write_shop_logs

DATA = [
    "data=synthetic", "data.n_shops=3", "data.n_users=600", "data.n_items=200",
    "data.n_periods=4", "data.shops.min_users=5",
]  # fmt: skip


def build(root: Path, overrides: list[str]) -> tuple[Config, dict[str, Path]]:
    """Plan, logs and trained shop states under ``root`` (``overrides`` after the demo's
    data); returns the run's config (reading the plan) and each shop's log."""
    cfg, _ = load_config([*DATA, *overrides])
    data = prepare_cached(cfg.data)[0]
    export_plan(data, root / "plan")
    logs = write_shop_logs(data, root / "logs")
    cfg.federated.plan_dir = str(root / "plan")
    nodes = own_log_nodes(logs, root / "plan", root / "state")
    with server_identity():
        run_federated(LocalGrid(cfg, len(nodes), nodes), cfg, None)
    return cfg, logs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fedcl.serve.demo", description=__doc__)
    parser.add_argument("dir", type=Path, help="where to write the demo (created)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (default: federated EASE)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    overrides = ["model=ease", "continual=naive", "federated.min_shops=3", *args.overrides]
    _, logs = build(args.dir.resolve(), overrides)
    shop, log = next(iter(logs.items()))
    root = args.dir.resolve()
    print(
        f"demo ready in {root}. Serve {shop}:\n\n"
        f"  python -m fedcl.serve --state-dir {root / 'state'} --shop {shop} \\\n"
        f"      --events {log} --plan {root / 'plan'}\n"
    )


if __name__ == "__main__":
    main()

"""``python -m fedcl.plan --out DIR [--shop-logs DIR] [data overrides]``: publish a plan.

Prepares the dataset named by the Hydra overrides (as ``python -m fedcl.prepare`` does;
cached) and writes its public plan into ``--out``: ``windows.parquet`` (window bounds),
``catalog.parquet`` (the product catalogue, without purchase counts) and ``plan.json``
(member shops). Shops read their own event logs against it; the server reads it with
``federated.plan_dir=DIR`` instead of preparing any events.

``--shop-logs DIR`` also splits the prepared events into one log per shop,
``DIR/<shop>.csv`` in the default layout of the ``csv`` source (``event_id, user_id,
item_id, timestamp, shop``), for demos and tests: in a real deployment each shop already has
its own log and the operator never holds them.

Examples::

    python -m fedcl.plan --out plan data=online_retail
    python -m fedcl.plan --out demo/plan --shop-logs demo/logs data=synthetic data.n_shops=3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedcl.cli import friendly_errors
from fedcl.data.dataset import PreparedData
from fedcl.data.plan import export_plan
from fedcl.data.schema import ITEM, ROW, SHOP, TIME, USER
from fedcl.shop.store import safe_name

LOG_COLUMNS = {ROW: "event_id", USER: "user_id", ITEM: "item_id", TIME: "timestamp", SHOP: "shop"}
_RETAIL_README = Path(__file__).resolve().parent / "data" / "online_retail" / "README.md"


def write_shop_logs(data: PreparedData, directory: str | Path) -> dict[str, Path]:
    """One event log per shop, ``<directory>/<shop>.csv`` in time order; returns the paths.

    ``event_id`` is the row of the source input, so the log keeps events apart that only
    differed in columns not written here (validation would see them as duplicates)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ev = data.events.sort_values([TIME, ROW], kind="stable")
    by_shop = {str(shop): rows for shop, rows in ev.groupby(SHOP, observed=True)}
    paths = {}
    for shop in data.shops:
        path = d / f"{safe_name(shop)}.csv"
        by_shop[shop][list(LOG_COLUMNS)].rename(columns=LOG_COLUMNS).to_csv(path, index=False)
        paths[shop] = path
    if data.report.get("source") == "online_retail":
        notice = _RETAIL_README.read_text().split("## License and citation", 1)[-1]
        (d / "NOTICE.md").write_text(
            "These logs are derived from the UCI Online Retail dataset.\n\n"
            f"## License and citation{notice}"
        )
    return paths


def _prepared(overrides: list[str]) -> PreparedData:
    from fedcl.config import load_config
    from fedcl.data.prepare import prepare_cached

    cfg, _ = load_config(overrides)  # the whole config, checked as simulate checks it
    return prepare_cached(cfg.data)[0]


@friendly_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m fedcl.plan",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, help="plan directory to write")
    parser.add_argument("--shop-logs", help="also write one event log per shop here (demos)")
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides of the data (data=..., data.path=...)"
    )
    args = parser.parse_args(argv)
    data = _prepared(args.overrides)
    plan = export_plan(data, args.out)
    print(
        f"plan in {args.out}: {plan.n_windows} windows, {len(plan.catalog)} items, "
        f"{len(plan.shops)} shops, sha256 {plan.digest[:12]}"
    )
    if args.shop_logs:
        for shop, path in write_shop_logs(data, args.shop_logs).items():
            n = data.report["per_shop"][shop]["events"]
            print(f"  {shop:>20}: {n:>7} events  {path}")
    print(
        "server: federated.plan_dir=<plan dir>; shop: deploy/start_shop.sh --events <log>"
        " --plan <plan dir>",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()

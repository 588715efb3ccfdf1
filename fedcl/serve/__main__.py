"""``python -m fedcl.serve --state-dir DIR --shop NAME [...]``: the shop's recommendation service.

Serves the newest serving snapshot the shop agent wrote into ``DIR/<shop>/serving/`` and
follows new ones (:mod:`fedcl.serve.app`). With ``--events LOG --plan PLAN`` the site's events
are checked and purchases appended to the log the agent reads. Listens on 127.0.0.1 by
default; any other address needs a token (``--token-file`` or ``FEDCL_SERVE_TOKEN``).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from pathlib import Path

from fedcl.data.config import ValidationConfig
from fedcl.data.sources.csv import CsvConfig
from fedcl.serve.app import ServeConfig, make_app

TOKEN_ENV = "FEDCL_SERVE_TOKEN"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m fedcl.serve", description=__doc__.splitlines()[0])
    p.add_argument("--state-dir", required=True, type=Path, help="the agent's --state-dir")
    p.add_argument("--shop", required=True, help="this shop's name (as in the plan)")
    p.add_argument("--events", type=Path, help="the shop's event log (purchases go there)")
    p.add_argument("--plan", type=Path, help="the federation's plan directory")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--token-file", type=Path, help=f"file holding the token (or ${TOKEN_ENV})")
    p.add_argument("--poll-s", type=float, default=1.0, help="new-model check interval")
    p.add_argument("--frozen", action="store_true", help="keep the first model, never swap")
    p.add_argument("--sellable", type=Path, help="item ids the shop can sell, one per line")
    p.add_argument(
        "--purchases-logged-elsewhere", action="store_true",
        help="your own pipeline appends purchases to the log: the service does not",
    )  # fmt: skip
    p.add_argument("--user-col", default="user_id")
    p.add_argument("--item-col", default="item_id")
    p.add_argument("--time-col", default="timestamp")
    p.add_argument("--shop-col", default="shop", help="'' for a log without a shop column")
    p.add_argument("--min-time", default="1990-01-01", help="earliest plausible event time")
    return p.parse_args(argv)


def config(args: argparse.Namespace) -> ServeConfig:
    """The service's config; refuses a non-loopback address without a token."""
    token = os.environ.get(TOKEN_ENV)
    if args.token_file is not None:
        token = args.token_file.read_text().strip()
    if token is not None and len(token) < 16:
        raise SystemExit("error: the token must be at least 16 characters")
    if not _loopback(args.host) and token is None:
        raise SystemExit(
            f"error: --host {args.host} is reachable from other machines: give a token "
            f"(--token-file FILE or ${TOKEN_ENV}), or bind 127.0.0.1 behind your own proxy"
        )
    layout = CsvConfig(
        user_col=args.user_col, item_col=args.item_col, time_col=args.time_col,
        shop_col=args.shop_col or None,
    )  # fmt: skip
    return ServeConfig(
        state_dir=args.state_dir,
        shop=args.shop,
        events=args.events,
        plan=args.plan,
        layout=layout,
        validation=ValidationConfig(min_time=args.min_time),
        token=token,
        poll_s=args.poll_s,
        follow=not args.frozen,
        sellable=args.sellable,
        log_purchases=not args.purchases_logged_elsewhere,
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse(argv)
    try:
        app = make_app(config(args))
    except (ValueError, OSError) as e:
        raise SystemExit(f"error: {e}") from e
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="info", ws="none")


if __name__ == "__main__":
    sys.exit(main())

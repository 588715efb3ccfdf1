"""The closed loop, simulated: customers of a synthetic world visit shops, see the live
service's recommendations, buy, and their events flow back through ``POST /events`` into the
shops' logs and the next window's training (``simulations/closed_loop.py`` runs it).

One run (a policy, a seed)::

    world = World(cfg)                       # tastes, seasons, drift, launches (ground truth)
    plan, empty logs, one service per shop   # python -m fedcl.serve's app, real uvicorn
    month 0: organic purchases -> logs       # nothing to recommend yet
    run_federated(LoopGrid, ...)             # the real server loop and ClientApp, in process;
      before window w's first train message (w >= 1):
        wait until each service serves the model evaluated after window w-1
        each visit of month w: GET a slate from its shop's service (batch form)
        the world answers (clicks, a purchase or none), events are POSTed back
      the agents ingest month w from their logs, train, evaluate, write a serving snapshot

The site shows one slate of ``k`` slots per visit: up to ``k // 2`` "buy again" items, then
"discover" items (a customer the shop does not know: "popular"). Policies differ only in the
model and whether the service follows new generations: ``continual`` (the federated model,
swapped after every window), ``frozen`` (the same, but the service keeps the model of window
0), ``popularity`` (``model=pop``: the shop's popularity, with the customer's own history
first).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from fedcl.config import Config
from fedcl.data.sources.synthetic import SyntheticConfig
from fedcl.data.sources.synthetic_world import Outcome, Visits, World
from fedcl.federated.local_grid import LocalGrid, own_log_nodes, server_identity
from fedcl.federated.protocol import read_instruction
from fedcl.federated.server_loop import run_federated
from fedcl.result import RunResult
from fedcl.serve.app import ServeConfig, make_app
from fedcl.serve.local import LocalServer
from fedcl.serve.online import SERVE_DIR, online_metrics
from fedcl.serve.snapshot import SERVING_DIR

log = logging.getLogger("fedcl.serve.loop")
LOG_HEADER = "event_id,user_id,item_id,timestamp,shop\n"
BATCH = 500  # visits per recommendation request, events per POST


@dataclass
class Month:
    """What one month of visits did (one policy, one seed)."""

    month: int
    visits: int
    purchases: int
    from_recs: int
    clicks: int
    slots: int  # slots shown (k x visits, minus empty ones)
    distinct_shown: int  # distinct items shown this month
    launched: int  # items on sale this month
    top10_share: float  # share of the shown slots taken by the month's 10 most shown items
    generation: dict[str, int] = field(default_factory=dict)  # served, per shop
    # per visit, for paired comparisons between policies (same visits in every policy)
    user: np.ndarray | None = None
    bought: np.ndarray | None = None
    from_rec: np.ndarray | None = None


class LoopGrid(LocalGrid):
    """A LocalGrid that calls ``before_window(w)`` once, before window w's first train message."""

    def __init__(self, cfg: Config, nodes: list[dict], before_window: Callable[[int], None]):
        super().__init__(cfg, len(nodes), nodes)
        self.before_window, self.entered = before_window, set()

    def push_messages(self, messages: Iterable) -> Iterable[str]:
        messages = list(messages)
        for msg in messages:
            if msg.metadata.message_type == "train":
                window = read_instruction(msg.content).window
                if window not in self.entered:
                    self.entered.add(window)
                    self.before_window(window)
        return super().push_messages(messages)


class ClosedLoop:
    """One policy, one seed: the world, the shops' logs and services, the months played."""

    def __init__(
        self, cfg: Config, root: Path, follow: bool = True, k: int = 10, rng_stream: int = 11
    ) -> None:
        if not isinstance(cfg.data, SyntheticConfig):
            raise ValueError("the closed loop needs data=synthetic (a world with ground truth)")
        self.cfg, self.root, self.follow, self.k = cfg, Path(root), follow, k
        self.rng_stream = rng_stream
        self.world = World(cfg.data)
        self.plan_dir = self.root / "plan"
        self.plan = self.world.plan(cfg.data.windows.test_fraction)
        self.plan.save(self.plan_dir)
        cfg.federated.plan_dir = str(self.plan_dir)  # the server reads only the public plan
        self.index = {item: i for i, item in enumerate(self.world.item_ids.tolist())}
        self.state = self.root / "state"
        self.logs = {shop: self.root / "logs" / f"{shop}.csv" for shop in self.world.shops}
        for path in self.logs.values():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(LOG_HEADER)
        self.months: list[Month] = []
        self.urls: dict[str, str] = {}

    # --- the run ------------------------------------------------------------------------
    def run(self) -> RunResult:
        self._organic(0)
        nodes = own_log_nodes(self.logs, self.plan_dir, self.state)
        apps = {
            shop: make_app(
                ServeConfig(
                    state_dir=self.state,
                    shop=shop,
                    events=self.logs[shop],
                    plan=self.plan_dir,
                    poll_s=0.05,
                    follow=self.follow,
                )  # fmt: skip
            )
            for shop in self.world.shops
        }
        servers = {shop: LocalServer(app) for shop, app in apps.items()}
        for srv in servers.values():
            srv.__enter__()
        try:
            self.urls = {shop: srv.url for shop, srv in servers.items()}
            with server_identity(), httpx.Client(timeout=60) as self.http:
                return run_federated(LoopGrid(self.cfg, nodes, self._month), self.cfg, None)
        finally:
            for srv in servers.values():
                srv.__exit__(None, None, None)

    def _organic(self, p: int) -> None:
        """Month ``p`` with nothing to recommend: purchases go straight to the logs."""
        visits, outcome = self.world.organic(p)
        bought = outcome.item >= 0
        frame = pd.DataFrame(
            {
                "event_id": [f"o{p}-{v}" for v in np.flatnonzero(bought)],
                "user_id": visits.user_id[bought],
                "item_id": self.world.item_ids[outcome.item[bought]],
                "timestamp": pd.DatetimeIndex(visits.time[bought]).strftime("%Y-%m-%dT%H:%M:%S"),
                "shop": visits.shop[bought],
            }
        )
        for shop, rows in frame.groupby("shop"):
            rows.to_csv(self.logs[str(shop)], mode="a", header=False, index=False)

    def _month(self, w: int) -> None:
        if w == 0:
            return
        served = self._wait_for_models(w - 1)
        visits = self.world.visits(w)
        shown, requests = self._slates(visits)
        rng = np.random.default_rng([self.cfg.data.seed, self.rng_stream, w])
        outcome = self.world.respond(w, visits, shown, rng)
        self._post(w, visits, shown, requests, outcome)
        live = int((self.world.launch <= w).sum())
        filled = shown >= 0
        self.months.append(
            Month(
                month=w,
                visits=len(visits),
                purchases=int((outcome.item >= 0).sum()),
                from_recs=int(outcome.from_rec.sum()),
                clicks=int(outcome.clicked.sum()),
                slots=int(filled.sum()),
                distinct_shown=int(np.unique(shown[filled]).size),
                launched=live,
                top10_share=_top_share(shown[filled], 10),
                generation=served,
                user=visits.user.copy(),
                bought=outcome.item >= 0,
                from_rec=outcome.from_rec.copy(),
            )
        )
        m = self.months[-1]
        log.info(
            "month %d: %d visits, %d purchases, %d from recommendations (%.1f / 1000 visits), "
            "%d distinct items shown of %d", w, m.visits, m.purchases, m.from_recs,
            1000 * m.from_recs / max(m.visits, 1), m.distinct_shown, m.launched,
        )  # fmt: skip

    def _wait_for_models(self, window: int, timeout_s: float = 120) -> dict[str, int]:
        """Each service's generation once it serves the model of ``window`` (frozen: any)."""
        deadline = time.monotonic() + timeout_s
        out = {}
        for shop, url in self.urls.items():
            while True:
                health = self.http.get(url + "/healthz").json()
                ready = health["window"] is not None and (
                    not self.follow or health["window"] >= window
                )
                if ready:
                    out[shop] = int(health["generation"])
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{shop}'s service never served window {window}: {health}")
                time.sleep(0.02)
        return out

    def _slates(self, visits: Visits) -> tuple[np.ndarray, np.ndarray]:
        """(V, k) plan items shown to each visit (-1: empty slot) and its request ids."""
        n, k = len(visits), self.k
        shown = np.full((n, k), -1, dtype=np.int64)
        requests = np.empty(n, dtype=object)
        for shop, url in self.urls.items():
            rows = np.flatnonzero(visits.shop == shop)
            for lo in range(0, len(rows), BATCH):
                part = rows[lo : lo + BATCH]
                body = {"users": visits.user_id[part].tolist(), "k": k}
                reply = self.http.post(url + "/recommendations/batch", json=body)
                reply.raise_for_status()
                for r, result in zip(part.tolist(), reply.json()["results"], strict=True):
                    requests[r] = result["request_id"]
                    slate = self._slate(result["lists"])
                    shown[r, : len(slate)] = slate
        return shown, requests

    def _slate(self, lists: dict) -> list[int]:
        """Up to k // 2 "buy again" items, then "discover" (or "popular") to fill k."""
        again = [x["item"] for x in lists.get("buy_again", [])][: self.k // 2]
        rest = [x["item"] for x in lists.get("discover", lists.get("popular", []))]
        items = again + [i for i in rest if i not in again]
        return [self.index[i] for i in items[: self.k]]

    def _post(
        self, w: int, visits: Visits, shown: np.ndarray, requests: np.ndarray, outcome: Outcome
    ) -> None:
        """The month's clicks and purchases, to each visit's shop service."""
        stamp = pd.DatetimeIndex(visits.time).strftime("%Y-%m-%dT%H:%M:%S.%fZ").to_numpy()
        events: dict[str, list[dict]] = {shop: [] for shop in self.urls}
        ids = self.world.item_ids
        for v in range(len(visits)):
            shop, user, rid = str(visits.shop[v]), str(visits.user_id[v]), str(requests[v])
            for slot in np.flatnonzero(outcome.clicked[v]):
                item = str(ids[shown[v, slot]])
                events[shop].append(
                    {
                        "type": "click",
                        "user": user,
                        "item": item,
                        "time": stamp[v],
                        "request_id": rid,
                    }
                )
            if outcome.item[v] >= 0:
                events[shop].append(
                    {
                        "type": "purchase", "user": user, "item": str(ids[outcome.item[v]]),
                        "time": stamp[v], "event_id": f"m{w}-v{v}",
                        "request_id": rid if outcome.from_rec[v] else None,
                    }
                )  # fmt: skip
        for shop, batch in events.items():
            for lo in range(0, len(batch), BATCH):
                reply = self.http.post(
                    self.urls[shop] + "/events", json={"events": batch[lo : lo + BATCH]}
                )
                if reply.status_code != 200:
                    raise RuntimeError(f"{shop} refused month {w}'s events: {reply.text[:500]}")

    # --- what the agents report --------------------------------------------------------
    def online(self) -> dict[str, dict]:
        """Each shop's online metrics (its agent's ``online.json`` source), by generation."""
        return {shop: online_metrics(self.state / shop / SERVE_DIR) for shop in self.world.shops}

    def generations(self) -> dict[str, int]:
        """Serving generations written per shop (one per evaluated window)."""
        out = {}
        for shop in self.world.shops:
            folder = self.state / shop / SERVING_DIR
            gens = sorted(folder.glob("state-*.npz"))
            out[shop] = int(gens[-1].stem.split("-")[1]) if gens else 0
        return out


def _top_share(items: np.ndarray, n: int) -> float:
    """Share of ``items`` (shown slots) taken by the ``n`` most frequent ones."""
    if not len(items):
        return 0.0
    counts = np.sort(np.bincount(items))[::-1]
    return float(counts[:n].sum() / counts.sum())

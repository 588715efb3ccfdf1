"""The shop's recommendation service over real HTTP: uvicorn on a loopback port, httpx.

One tiny federation (3 shops reading their own logs, EASE) is run once per module; every
test that starts a service works on its own copy of the tree (the service writes its
impressions and feedback into the shop's state, and the tests post events into the log).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from fedcl.data.plan import Plan
from fedcl.federated.client_app import _own_log
from fedcl.federated.protocol import from_record
from fedcl.federated.server_loop import GlobalModel
from fedcl.serve import __main__ as cli
from fedcl.serve.app import ServeConfig, make_app
from fedcl.serve.demo import build
from fedcl.serve.events import FEEDBACK_FILE
from fedcl.serve.local import LocalServer
from fedcl.serve.online import ONLINE_FILE, SERVE_DIR, online_metrics
from fedcl.serve.snapshot import read_snapshot, serving_store
from fedcl.shop.agent import ShopAgent
from fedcl.shop.ingest import HELD, EventLog, ShopIngest

CPU = torch.device("cpu")
SHOP, OTHER = "shop_00", "shop_01"
DATA = [
    "data=synthetic",
    "data.n_shops=3",
    "data.n_users=150",
    "data.n_items=80",
    "data.n_periods=3",
    "data.shops.min_users=5",
]
MADE_UP = "nobody-at-all-42"


# --- the federation, once ------------------------------------------------------------------
@dataclass
class World:
    """Paths of one copy of the federation's files (plan, per-shop logs, shop states)."""

    root: Path
    cfg: object
    n_items: dict[int, int]  # catalogue size known after each window

    @property
    def plan(self) -> Path:
        return self.root / "plan"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def log(self, shop: str = SHOP) -> Path:
        return self.root / "logs" / f"{shop}.csv"

    def shop_dir(self, shop: str = SHOP) -> Path:
        return self.state / shop

    def serve_dir(self, shop: str = SHOP) -> Path:
        return self.shop_dir(shop) / SERVE_DIR

    def serve_cfg(self, shop: str = SHOP, **kw) -> ServeConfig:
        kw.setdefault("poll_s", 0.05)
        return ServeConfig(
            state_dir=self.state, shop=shop, events=self.log(shop), plan=self.plan, **kw
        )

    def generations(self, shop: str = SHOP) -> list[int]:
        return serving_store(self.shop_dir(shop)).generations()

    def log_frame(self, shop: str = SHOP) -> pd.DataFrame:
        return pd.read_csv(self.log(shop), dtype=str)

    def copy(self, dest: Path) -> World:
        shutil.copytree(self.root, dest)
        return World(dest, self.cfg, self.n_items)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    """3 shops on their own logs, federated over 3 windows: each wrote serving snapshots."""
    root = tmp_path_factory.mktemp("serve") / "w"
    fed = ["model=ease", "continual=naive", "federated.min_users=1", "federated.min_shops=3"]
    cfg, _ = build(root, DATA + fed)
    plan = Plan.load(root / "plan")
    n_items = {t: plan.n_items_known(t) for t in range(plan.n_windows)}
    w = World(root, cfg, n_items)
    assert w.generations(SHOP), "the agent wrote no serving snapshot"
    return w


@pytest.fixture
def mine(world, tmp_path) -> World:
    """A copy of the federation this test may change."""
    return world.copy(tmp_path / "w")


# --- a real server ---------------------------------------------------------------------------
@contextmanager
def serving(cfg: ServeConfig, headers: dict | None = None) -> Iterator[httpx.Client]:
    """The service of ``cfg`` on a free loopback port (uvicorn in a thread), and a client."""
    with (
        LocalServer(make_app(cfg)) as srv,
        httpx.Client(base_url=srv.url, headers=headers, timeout=20) as client,
    ):
        yield client
    assert not srv._thread.is_alive(), "uvicorn did not stop"


def wait_for(predicate, timeout: float = 10.0, step: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(step)
    raise AssertionError("condition not met in time")


# --- helpers ---------------------------------------------------------------------------------
def known_user(w: World, shop: str = SHOP, min_items: int = 3) -> str:
    """A customer of ``shop``'s log who bought at least ``min_items`` different items."""
    log = w.log_frame(shop)
    n = log.groupby("user_id")["item_id"].nunique()
    return str(n[n >= min_items].index[0])


def bought(w: World, user: str, shop: str = SHOP) -> set[str]:
    log = w.log_frame(shop)
    return set(log.loc[log["user_id"] == user, "item_id"])


def items_of(lists: dict) -> dict[str, list[str]]:
    return {name: [e["item"] for e in entries] for name, entries in lists.items()}


def model_catalogue(w: World, shop: str = SHOP) -> list[str]:
    """The plan's catalogue prefix the newest served model knows."""
    store = serving_store(w.shop_dir(shop))
    n_items = int(store.read(store.generations()[-1])["n_items"])
    return Plan.load(w.plan).catalog["item_id"].astype(str).tolist()[:n_items]


def last_window_time(w: World, hours_before_end: float = 30) -> pd.Timestamp:
    """A time inside the plan's last window (naive UTC)."""
    end = Plan.load(w.plan).windows["end"].iloc[-1]
    return pd.Timestamp(end) - pd.Timedelta(hours=hours_before_end)


def iso(t: pd.Timestamp) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def sellable_at(w: World, t: pd.Timestamp) -> list[str]:
    """Catalogue items first seen on or before ``t``."""
    cat = Plan.load(w.plan).catalog
    return cat.loc[cat["first_seen"] <= t, "item_id"].astype(str).tolist()


def snapshot_bytes(*paths: Path) -> list[bytes | None]:
    return [p.read_bytes() if p.exists() else None for p in paths]


def metric(text: str, name: str, **labels) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


# --- 1. a known customer ---------------------------------------------------------------------
def test_known_customer_gets_buy_again_from_own_purchases_and_discover_of_new_items(mine):
    user = known_user(mine)
    history = bought(mine, user)
    catalogue = set(model_catalogue(mine))
    with serving(mine.serve_cfg()) as c:
        r = c.get("/recommendations", params={"user": user, "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["known"] is True and body["source"] == "model" and body["user"] == user
    assert body["request_id"]
    assert body["generation"] == max(mine.generations())
    lists = items_of(body["lists"])
    assert set(lists) == {"buy_again", "discover"}
    assert 0 < len(lists["buy_again"]) <= 5 and 0 < len(lists["discover"]) <= 5
    assert set(lists["buy_again"]) <= history
    assert not set(lists["discover"]) & history
    assert set(lists["buy_again"]) | set(lists["discover"]) <= catalogue
    for entries in body["lists"].values():  # best first, each item once
        scores = [e["score"] for e in entries]
        assert scores == sorted(scores, reverse=True)
        assert len({e["item"] for e in entries}) == len(entries)


# --- 2. unknown customers, and another shop's -----------------------------------------------
def test_unknown_and_other_shops_customers_get_the_same_popularity_list(mine):
    stranger = known_user(mine, OTHER)
    assert stranger not in set(mine.log_frame(SHOP)["user_id"])
    with serving(mine.serve_cfg()) as c:
        made_up = c.get("/recommendations", params={"user": MADE_UP, "k": 7}).json()
        other = c.get("/recommendations", params={"user": stranger, "k": 7}).json()
    for body in (made_up, other):
        assert body["known"] is False and body["source"] == "popularity"
        assert list(body["lists"]) == ["popular"]
        assert 0 < len(body["lists"]["popular"]) <= 7
    assert other["user"] == stranger
    # Nothing of shop_01's purchases shapes the answer: the same as for an id nobody has.
    assert other["lists"] == made_up["lists"]
    assert other["generation"] == made_up["generation"]
    assert other["request_id"] != made_up["request_id"]
    # The list is this shop's own recent popularity (purchases, halving per window back).
    expected = own_popularity(mine, SHOP)
    got = {e["item"]: e["score"] for e in made_up["lists"]["popular"]}
    assert got == pytest.approx({i: expected[i] for i in got}, abs=1e-5)
    assert sorted(got.values(), reverse=True) == pytest.approx(
        sorted(expected.values(), reverse=True)[:7], abs=1e-5
    )
    assert own_popularity(mine, OTHER) != expected  # (so the check above can tell them apart)


def own_popularity(w: World, shop: str) -> dict[str, float]:
    """A shop's decayed purchase counts per catalogue item the model knows, from its log."""
    plan = Plan.load(w.plan)
    log = w.log_frame(shop)
    window = plan.window_of(pd.to_datetime(log["timestamp"]).to_numpy())
    weight = 0.5 ** (plan.n_windows - 1 - window)
    known = set(model_catalogue(w, shop))
    totals = pd.Series(weight).groupby(log["item_id"].to_numpy()).sum()
    return {str(i): float(v) for i, v in totals.items() if i in known}


# --- 3. the catalogue filter -----------------------------------------------------------------
def test_items_outside_the_sellable_list_are_never_recommended(mine, tmp_path):
    catalogue = model_catalogue(mine)
    sellable = set(catalogue[::3])
    path = tmp_path / "sellable.txt"
    path.write_text("\n".join(sorted(sellable)) + "\n")
    users = [known_user(mine, min_items=k) for k in (1, 2, 3, 4)] + [MADE_UP]
    users += [known_user(mine, OTHER)]
    with serving(mine.serve_cfg(sellable=path)) as c:
        answers = [c.get("/recommendations", params={"user": u, "k": 100}).json() for u in users]
        batch = c.post("/recommendations/batch", json={"users": users, "k": 100})
    assert batch.status_code == 200
    answers += batch.json()["results"]
    seen: set[str] = set()
    for body in answers:
        for items in items_of(body["lists"]).values():
            assert set(items) <= sellable, set(items) - sellable
            seen |= set(items)
    assert any(a["known"] for a in answers) and any(not a["known"] for a in answers)
    assert len(seen) > 5  # the filter leaves lists, it does not empty them


# --- 4. batch and its limits -----------------------------------------------------------------
def test_batch_answers_in_order_and_limits_name_the_field(mine):
    users = [known_user(mine), MADE_UP, known_user(mine, OTHER)]
    with serving(mine.serve_cfg()) as c:
        ok = c.post("/recommendations/batch", json={"users": users, "k": 3})
        single = [c.get("/recommendations", params={"user": u, "k": 3}).json() for u in users]
        too_many = c.post("/recommendations/batch", json={"users": ["u"] * 1001, "k": 3})
        bad_k = [
            c.post("/recommendations/batch", json={"users": users, "k": 0}),
            c.post("/recommendations/batch", json={"users": users, "k": 101}),
            c.get("/recommendations", params={"user": users[0], "k": 0}),
            c.get("/recommendations", params={"user": users[0], "k": 101}),
        ]
    assert ok.status_code == 200, ok.text
    results = ok.json()["results"]
    assert [r["user"] for r in results] == users
    assert [r["known"] for r in results] == [True, False, False]
    assert [r["lists"] for r in results] == [s["lists"] for s in single]
    assert len({r["request_id"] for r in results}) == 3
    assert too_many.status_code == 422
    assert [p["field"] for p in too_many.json()["problems"]] == ["users"]
    for r in bad_k:
        assert r.status_code == 422, r.text
        (problem,) = r.json()["problems"]
        assert problem["field"] == "k" and "1 to 100" in problem["fix"]


# --- 5. bad events: 422, nothing written -----------------------------------------------------
def test_bad_events_are_refused_whole_with_the_event_field_and_fix(mine):
    user = known_user(mine)
    t = last_window_time(mine)
    item = sellable_at(mine, t)[0]
    cat = Plan.load(mine.plan).catalog
    newest = cat.iloc[-1]  # first seen late: an event before that is not about it
    early = iso(pd.Timestamp(newest["first_seen"]) - pd.Timedelta(days=1))

    def ev(**kw):
        return {"type": "purchase", "user": user, "item": item, "time": iso(t), **kw}

    future = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    cases = {
        "unknown item": ([ev(item="no-such-item")], 0, "item", "unknown_item"),
        "item not yet on sale": (
            [ev(item=str(newest["item_id"]), time=early)],
            0,
            "item",
            "unknown_item",
        ),
        "empty user": ([ev(user="")], 0, "user", None),
        "blank user": ([ev(), ev(user="   ")], 1, "user", None),
        "future time": ([ev(time=future)], 0, "time", "implausible_timestamp"),
        "before 1990": ([ev(time="1989-12-31T23:00:00Z")], 0, "time", "implausible_timestamp"),
        "not a time": ([ev(time="yesterday")], 0, "time", "bad_timestamp"),
        "unknown type": ([ev(type="wishlist")], 0, "type", None),
        "extra field": ([ev(price=9.99)], 0, "price", None),
        "mixed batch": (
            [ev(event_id="g1"), ev(type="click"), ev(item="nope"), ev(event_id="g2")],
            2,
            "item",
            "unknown_item",
        ),
        "control character": ([ev(user="abc\x07def")], 0, "user", None),
        "newline in id": ([ev(), ev(user="abc\ndef")], 1, "user", None),
        "quantity": ([ev(quantity=0)], 0, "quantity", None),
    }
    files = (mine.log(), mine.serve_dir() / FEEDBACK_FILE)
    before = snapshot_bytes(*files)
    with serving(mine.serve_cfg()) as c:
        for name, (events, index, field, reason) in cases.items():
            r = c.post("/events", json={"events": events})
            assert r.status_code == 422, (name, r.text)
            problems = r.json()["problems"]
            assert len(problems) == 1, (name, problems)
            (p,) = problems
            assert (p["event"], p["field"]) == (index, field), (name, p)
            assert p["fix"] and p["reason"], (name, p)
            if reason is not None:
                assert p["reason"] == reason, (name, p)
            assert snapshot_bytes(*files) == before, f"{name}: something was written"
        not_a_batch = c.post("/events", json=[ev()])
        metrics = c.get("/metrics").text
    assert not_a_batch.status_code == 422
    assert snapshot_bytes(*files) == before
    refused = metric(metrics, "fedcl_serve_event_batches_rejected_total")
    assert refused == len(cases) + 1


# --- 6. good events: appended, ingested exactly once -----------------------------------------
def _posted_lines(w: World, before: bytes) -> list[dict]:
    text = w.log().read_bytes()
    assert text.startswith(before)
    header = next(csv.reader(io.StringIO(before.decode())))
    return list(csv.DictReader(io.StringIO(text[len(before) :].decode()), fieldnames=header))


def test_posted_purchases_reach_the_log_and_are_ingested_exactly_once(mine):
    user, newcomer = known_user(mine), 'web "only", customer\u2028é'  # CSV and Unicode
    t = last_window_time(mine)
    items = sellable_at(mine, t)[:3]
    events = [
        {"type": "view", "user": user, "item": items[0], "time": iso(t)},
        {"type": "click", "user": user, "item": items[0], "time": iso(t)},
        {"type": "purchase", "user": user, "item": items[0], "time": iso(t), "event_id": "p-1"},
        {"type": "add_to_basket", "user": newcomer, "item": items[1], "time": iso(t)},
        {
            "type": "purchase",
            "user": newcomer,
            "item": items[1],
            "event_id": "p-2",
            "time": iso(t + pd.Timedelta(minutes=5)),
        },
        {
            "type": "purchase",
            "user": newcomer,
            "item": items[2],
            "event_id": "p-3",
            "time": (t + pd.Timedelta(minutes=6)).strftime("%Y-%m-%dT%H:%M:%S+02:00"),
        },
    ]
    purchases = [e for e in events if e["type"] == "purchase"]
    ingest_dir = mine.shop_dir() / "ingest"
    source = EventLog(mine.log(), mine.plan)
    rows_before = ShopIngest(SHOP, source, ingest_dir).watermark[0]
    log_before = mine.log().read_bytes()
    with serving(mine.serve_cfg()) as c:
        r = c.post("/events", json={"events": events})
        assert r.status_code == 200, r.text
        assert r.json() == {"accepted": 6, "purchases_logged": 3, "duplicates": 0}
        lines = _posted_lines(mine, log_before)
        again = c.post("/events", json={"events": [purchases[0]]})  # a retry of p-1
        assert again.json() == {"accepted": 0, "purchases_logged": 0, "duplicates": 1}
    assert _posted_lines(mine, log_before) == lines  # the retry added nothing
    assert [(x["event_id"], x["user_id"], x["item_id"], x["shop"]) for x in lines] == [
        (e["event_id"], e["user"], e["item"], SHOP) for e in purchases
    ]
    # +02:00 is written as UTC
    assert lines[2]["timestamp"].startswith(
        iso(t + pd.Timedelta(minutes=6) - pd.Timedelta(hours=2))[:-1]
    )
    feedback = (mine.serve_dir() / FEEDBACK_FILE).read_text().splitlines()
    assert len(feedback) == 6

    # The agent reads its log at its next message: the three rows kept once (the learner has
    # entered the plan's last window, so they wait, held, for a plan that covers them).
    agent = ShopAgent(
        mine.cfg,
        SHOP,
        mine.state,
        CPU,
        data=_own_log(mine.cfg, {"shop": SHOP, "events": str(mine.log()), "plan": str(mine.plan)}),
    )
    assert user in set(agent.user_ids) and newcomer in set(agent.user_ids)
    ingest = ShopIngest(SHOP, source, ingest_dir)
    assert ingest.watermark[0] == rows_before + 3
    again = ingest.ingest(agent._open_window())
    assert (again.rows, again.kept) == (0, 0)
    ev = ingest.state["events"]
    new = ev["row"] >= rows_before
    assert int(new.sum()) == 3
    catalog = Plan.load(mine.plan).catalog["item_id"].astype(str).to_numpy()
    got = sorted(zip(ingest.users[ev["user"][new]], catalog[ev["item"][new]], strict=True))
    assert got == sorted((e["user"], e["item"]) for e in purchases)
    assert (ev["window"][new] == HELD).all()

    # A learner that has not entered the last window yet takes them there, each once.
    fresh = ShopIngest(SHOP, source, mine.root / "fresh-ingest")
    last = Plan.load(mine.plan).n_windows - 1
    fresh.ingest(last)
    ev = fresh.state["events"]
    new = ev["row"] >= rows_before
    assert int(new.sum()) == 3 and (ev["window"][new] == last).all()

    # The same line written again behind the service's back is quarantined as a duplicate.
    with mine.log().open("ab") as f:
        f.write(mine.log().read_bytes().splitlines(keepends=True)[-1])
    res = ShopIngest(SHOP, source, ingest_dir).ingest(agent._open_window())
    assert (res.rows, res.kept, res.quarantined) == (1, 0, {"duplicate": 1})


def test_a_retried_event_id_is_not_logged_again_after_a_service_restart(mine):
    user, t = known_user(mine), last_window_time(mine)
    item = sellable_at(mine, t)[0]
    purchase = {"type": "purchase", "user": user, "item": item, "event_id": "retry-1"}
    with serving(mine.serve_cfg()) as c:
        first = c.post("/events", json={"events": [{**purchase, "time": iso(t)}]}).json()
    log_after = mine.log().read_bytes()
    with serving(mine.serve_cfg()) as c:  # restarted: the site retries, without a time
        retry = c.post("/events", json={"events": [purchase]}).json()
    assert first["purchases_logged"] == 1
    assert retry == {"accepted": 0, "purchases_logged": 0, "duplicates": 1}
    assert mine.log().read_bytes() == log_after


# --- 7. hot swap under load ------------------------------------------------------------------
def _next_generation(w: World, top_item: int, tree: dict | None = None) -> int:
    """A new serving generation: ``tree`` (default: the newest one) with the popularity list
    led by item ``top_item``; returns its number."""
    store = serving_store(w.shop_dir())
    tree = store.read(store.generations()[-1]) if tree is None else tree
    pop = np.zeros_like(tree["popularity"])
    pop[top_item] = 1.0
    tree["popularity"], tree["written_at"] = pop, time.time()
    return int(store.save(tree).stem.split("-")[1])


def test_a_new_generation_is_swapped_in_under_concurrent_requests(mine):
    old = max(mine.generations())
    users = [known_user(mine), MADE_UP]
    catalogue = model_catalogue(mine)
    seen: list[list[tuple[int, int, str]]] = [[] for _ in range(4)]
    stop = threading.Event()

    def hammer(k: int, base: str) -> None:
        with httpx.Client(base_url=base, timeout=20) as c:
            i = 0
            while not stop.is_set():
                user = users[(i + k) % 2]
                r = c.get("/recommendations", params={"user": user, "k": 3})
                body = r.json() if r.status_code == 200 else {}
                top = body.get("lists", {}).get("popular", [{"item": ""}])[0]["item"]
                seen[k].append((r.status_code, body.get("generation", -1), top))
                i += 1

    with serving(mine.serve_cfg(poll_s=0.05)) as c:
        base = str(c.base_url)
        before = c.get("/recommendations", params={"user": MADE_UP, "k": 1}).json()
        old_top = before["lists"]["popular"][0]["item"]
        target = next(i for i, item in enumerate(catalogue) if item != old_top)
        threads = [threading.Thread(target=hammer, args=(k, base)) for k in range(4)]
        for th in threads:
            th.start()
        time.sleep(0.7)
        new = _next_generation(mine, target)
        time.sleep(1.3)
        stop.set()
        for th in threads:
            th.join(timeout=20)
        health = c.get("/healthz").json()
        after = c.get("/recommendations", params={"user": MADE_UP, "k": 1}).json()
    assert new == old + 1
    for per_thread in seen:
        assert per_thread and all(status == 200 for status, _, _ in per_thread)
        gens = [g for _, g, _ in per_thread]
        assert gens == sorted(gens), "a client saw the old generation after the new one"
        assert gens[0] == old and gens[-1] == new
        # Each answer is whole: the new popularity comes with the new number only.
        for _, g, top in per_thread:
            if top:
                assert top == (catalogue[target] if g == new else old_top)
    assert health["generation"] == new and health["status"] == "ok"
    assert after["generation"] == new and after["lists"]["popular"][0]["item"] == catalogue[target]


# --- 8. a corrupt generation is refused ------------------------------------------------------
def _write_raw_generation(w: World, payload: bytes, checksum: str) -> int:
    store = serving_store(w.shop_dir())
    gen = store.generations()[-1] + 1
    path = store.dir / f"state-{gen:08d}.npz"
    path.with_suffix(".sha256").write_text(checksum)
    tmp = store.dir / f".{path.name}.tmp-test"
    tmp.write_bytes(payload)
    os.replace(tmp, path)
    return gen


def test_a_corrupt_generation_is_refused_and_the_old_one_kept(mine):
    import hashlib

    store = serving_store(mine.shop_dir())
    old = max(mine.generations())
    newest = (store.dir / f"state-{old:08d}.npz").read_bytes()
    tree = store.read(old)  # saving new generations rotates this one out
    flipped = bytearray(newest)
    flipped[len(flipped) // 2] ^= 0xFF
    with serving(mine.serve_cfg(poll_s=0.05)) as c:
        bad = _write_raw_generation(mine, bytes(flipped), hashlib.sha256(newest).hexdigest())
        wait_for(lambda: bad in c.get("/healthz").json()["refused_generations"])
        answers = [
            c.get("/recommendations", params={"user": u, "k": 3})
            for u in (known_user(mine), MADE_UP)
        ]
        metrics = c.get("/metrics").text
        # A verified file that is not a serving snapshot: a model outside fedcl.models.
        foreign_tree = {**tree, "model_config": '{"_target_": "os.system"}'}
        foreign = int(store.save(foreign_tree).stem.split("-")[1])
        wait_for(lambda: foreign in c.get("/healthz").json()["refused_generations"])
        still = c.get("/recommendations", params={"user": MADE_UP, "k": 3})
        refused_twice = c.get("/metrics").text
        good = _next_generation(mine, 0, tree)
        health = wait_for(lambda: (h := c.get("/healthz").json())["generation"] == good and h)
        final = c.get("/recommendations", params={"user": MADE_UP, "k": 3}).json()
    for r in [*answers, still]:
        assert r.status_code == 200 and r.json()["generation"] == old
    assert metric(metrics, "fedcl_serve_generations_refused_total") == 1.0
    assert metric(metrics, "fedcl_serve_model_generation") == old
    assert metric(refused_twice, "fedcl_serve_generations_refused_total") == 2.0
    assert health["refused_generations"] == [bad, foreign]
    assert good == foreign + 1 and final["generation"] == good


# --- 9. the token, and the CLI's refusal without one -----------------------------------------
def test_a_token_guards_everything_but_healthz(mine):
    token = "x" * 32
    t = last_window_time(mine)
    event = {
        "type": "click",
        "user": known_user(mine),
        "item": sellable_at(mine, t)[0],
        "time": iso(t),
    }
    calls = {
        "recommendations": ("GET", "/recommendations", {"params": {"user": MADE_UP}}),
        "batch": ("POST", "/recommendations/batch", {"json": {"users": [MADE_UP]}}),
        "events": ("POST", "/events", {"json": {"events": [event]}}),
        "metrics": ("GET", "/metrics", {}),
    }
    wrong = [
        None,
        {"Authorization": "Bearer " + "y" * 32},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic " + token},
        {"Authorization": "Bearer " + token[:-1]},
    ]
    right = {"Authorization": f"Bearer {token}"}
    feedback = mine.serve_dir() / FEEDBACK_FILE
    with serving(mine.serve_cfg(token=token)) as c:
        for name, (method, url, kw) in calls.items():
            for headers in wrong:
                r = c.request(method, url, headers=headers, **kw)
                assert r.status_code == 401, (name, headers, r.text)
                assert r.headers.get("www-authenticate") == "Bearer"
        assert not feedback.exists()  # refused events are not written
        for name, (method, url, kw) in calls.items():
            r = c.request(method, url, headers=right, **kw)
            assert r.status_code == 200, (name, r.text)
        assert c.get("/healthz").status_code == 200
    assert len(feedback.read_text().splitlines()) == 1


def test_the_cli_refuses_a_public_address_without_a_token(tmp_path, monkeypatch):
    monkeypatch.delenv(cli.TOKEN_ENV, raising=False)
    base = ["--state-dir", str(tmp_path), "--shop", SHOP]
    with pytest.raises(SystemExit, match="token"):
        cli.config(cli.parse([*base, "--host", "0.0.0.0"]))
    with pytest.raises(SystemExit, match="token"):
        cli.config(cli.parse([*base, "--host", "shop.example.com"]))
    assert cli.config(cli.parse([*base, "--host", "::1"])).token is None
    assert cli.config(cli.parse(base)).token is None

    monkeypatch.setenv(cli.TOKEN_ENV, "z" * 20)
    cfg = cli.config(cli.parse([*base, "--host", "0.0.0.0"]))
    assert cfg.token == "z" * 20 and cfg.shop == SHOP
    monkeypatch.setenv(cli.TOKEN_ENV, "short")
    with pytest.raises(SystemExit, match="16 characters"):
        cli.config(cli.parse([*base, "--host", "0.0.0.0"]))
    token_file = tmp_path / "token"
    token_file.write_text("t" * 24 + "\n")
    cfg = cli.config(cli.parse([*base, "--host", "0.0.0.0", "--token-file", str(token_file)]))
    assert cfg.token == "t" * 24


# --- 10. metrics and health ------------------------------------------------------------------
def test_metrics_report_requests_latency_and_the_served_model(mine):
    gen = max(mine.generations())
    written = float(serving_store(mine.shop_dir()).read(gen)["written_at"])
    with serving(mine.serve_cfg()) as c:
        for u in (known_user(mine), MADE_UP, "x"):
            assert c.get("/recommendations", params={"user": u, "k": 2}).status_code == 200
        assert c.get("/recommendations", params={"user": "x", "k": 0}).status_code == 422
        health = c.get("/healthz")
        text = c.get("/metrics").text
    rec = {"endpoint": "/recommendations"}
    assert metric(text, "fedcl_serve_requests_total", **rec, status="200") == 3
    assert metric(text, "fedcl_serve_requests_total", **rec, status="422") == 1
    assert metric(text, "fedcl_serve_request_seconds_count", **rec) == 4
    assert metric(text, "fedcl_serve_request_seconds_bucket", **rec, le="+Inf") == 4
    assert metric(text, "fedcl_serve_request_seconds_bucket", **rec, le="2.5") is not None
    assert metric(text, "fedcl_serve_model_generation") == gen
    assert metric(text, "fedcl_serve_model_window") == len(mine.n_items) - 1
    trained = metric(text, "fedcl_serve_last_training_timestamp_seconds")
    assert trained == pytest.approx(written) and 0 < trained <= time.time()
    assert health.status_code == 200
    assert health.json() == {
        "status": "ok",
        "shop": SHOP,
        "generation": gen,
        "window": len(mine.n_items) - 1,
        "refused_generations": [],
    }


def test_a_shop_without_a_snapshot_is_unhealthy_until_the_agent_writes_one(world, tmp_path):
    state = tmp_path / "state"
    with serving(ServeConfig(state_dir=state, shop=SHOP, poll_s=0.05)) as c:
        health = c.get("/healthz")
        rec = c.get("/recommendations", params={"user": MADE_UP})
        # The agent's first evaluated window writes one: the service starts answering.
        shutil.copytree(world.shop_dir() / "serving", state / SHOP / "serving")
        wait_for(lambda: c.get("/healthz").status_code == 200)
        later = c.get("/recommendations", params={"user": MADE_UP})
        no_log = c.post("/events", json={"events": [{"type": "view", "user": "u", "item": "i"}]})
    assert no_log.status_code == 503 and "--events" in no_log.json()["detail"]
    assert health.status_code == 503 and health.json()["status"] == "no_model"
    assert health.json()["generation"] is None
    assert rec.status_code == 503
    assert "no model yet" in rec.json()["detail"] and "serving" in rec.json()["detail"]
    assert later.status_code == 200 and later.json()["generation"] == max(world.generations())


# --- 11. online metrics ----------------------------------------------------------------------
def test_clicks_and_purchases_count_for_the_list_and_generation_that_showed_them(mine):
    user, t = known_user(mine), last_window_time(mine)
    gen = max(mine.generations())
    with serving(mine.serve_cfg()) as c:
        shown = c.get("/recommendations", params={"user": user, "k": 5}).json()
        c.get("/recommendations", params={"user": MADE_UP, "k": 5})
        rid = shown["request_id"]
        item = next(
            e["item"] for e in shown["lists"]["discover"] if e["item"] in sellable_at(mine, t)
        )
        events = [
            {"type": "click", "user": user, "item": item, "request_id": rid, "time": iso(t)},
            {
                "type": "purchase",
                "user": user,
                "item": item,
                "request_id": rid,
                "event_id": "o-1",
                "time": iso(t),
            },
            {
                "type": "click",
                "user": user,
                "item": item,
                "request_id": "not-a-request",
                "time": iso(t),
            },
        ]
        assert c.post("/events", json={"events": events}).status_code == 200
        assert c.post("/events", json={"events": events[1:2]}).json()["duplicates"] == 1
    online = online_metrics(mine.serve_dir())
    assert list(online) == [str(gen)]
    by_list = online[str(gen)]
    assert by_list["discover"] == {
        "shown": 1,
        "clicks": 1,
        "purchases": 1,
        "purchased_items": 1,
        "click_through": 1.0,
        "purchase_through": 1.0,
    }
    assert by_list["buy_again"]["shown"] == 1 and by_list["buy_again"]["clicks"] == 0
    assert by_list["popular"]["shown"] == 1 and by_list["popular"]["purchases"] == 0

    # The agent's next evaluated window reports them (online.json) beside a new snapshot.
    last = len(mine.n_items) - 1
    source = _own_log(mine.cfg, {"shop": SHOP, "events": str(mine.log()), "plan": str(mine.plan)})
    agent = ShopAgent(mine.cfg, SHOP, mine.state, CPU, data=source)
    shared = from_record(GlobalModel(mine.cfg, mine.n_items[last]).record())
    agent.evaluate(shared, last, mine.n_items[last])
    import json

    report = json.loads((mine.serve_dir() / ONLINE_FILE).read_text())
    assert report["window"] == last
    assert report["by_generation"][str(gen)]["discover"]["purchases"] == 1
    assert max(mine.generations()) == gen + 1
    assert read_snapshot(serving_store(mine.shop_dir()), gen + 1).window == last


# --- more: robustness of the event sink and the catalogue view -------------------------------
def test_an_event_whose_write_failed_is_taken_when_the_site_retries(mine, monkeypatch):
    from fedcl.serve import events as events_module

    user, t = known_user(mine), last_window_time(mine)
    purchase = {
        "type": "purchase",
        "user": user,
        "item": sellable_at(mine, t)[0],
        "event_id": "disk-full-1",
        "time": iso(t),
    }
    real = events_module._append

    def full(path, text):
        raise OSError(28, "No space left on device")

    before = mine.log().read_bytes()
    with serving(mine.serve_cfg()) as c:
        monkeypatch.setattr(events_module, "_append", full)
        failed = c.post("/events", json={"events": [purchase]})
        monkeypatch.setattr(events_module, "_append", real)
        retry = c.post("/events", json={"events": [purchase]})
    assert failed.status_code == 503
    assert "not written" in failed.json()["detail"] and "again" in failed.json()["detail"]
    assert retry.json() == {"accepted": 1, "purchases_logged": 1, "duplicates": 0}
    assert mine.log().read_bytes().count(b"disk-full-1") == 1
    assert mine.log().read_bytes().startswith(before)


def test_a_purchase_is_not_glued_to_a_log_line_without_its_newline(mine):
    user, t = known_user(mine), last_window_time(mine)
    items = sellable_at(mine, t)
    ingest_dir = mine.shop_dir() / "ingest"
    source = EventLog(mine.log(), mine.plan)
    open_window = len(mine.n_items)
    ShopIngest(SHOP, source, ingest_dir).ingest(open_window)
    # Another of the shop's systems appended a last line without its newline.
    with mine.log().open("a") as f:
        f.write(f"till-1,{user},{items[1]},{iso(t)},{SHOP}")
    purchase = {
        "type": "purchase",
        "user": user,
        "item": items[0],
        "event_id": "web-1",
        "time": iso(t),
    }
    with serving(mine.serve_cfg()) as c:
        assert c.post("/events", json={"events": [purchase]}).json()["purchases_logged"] == 1
    res = ShopIngest(SHOP, source, ingest_dir).ingest(open_window)
    assert (res.rows, res.kept, res.quarantined) == (2, 2, {})


def test_a_changed_sellable_list_is_applied_without_a_metrics_scrape(mine, tmp_path):
    catalogue = model_catalogue(mine)
    path = tmp_path / "sellable.txt"
    path.write_text("\n".join(catalogue[:40]) + "\n")
    with serving(mine.serve_cfg(sellable=path, poll_s=0.05)) as c:
        first = items_of(
            c.get("/recommendations", params={"user": MADE_UP, "k": 100}).json()["lists"]
        )
        path.write_text("\n".join(catalogue[40:]) + "\n")
        stamp = path.stat().st_mtime + 5
        os.utime(path, (stamp, stamp))

        def moved():
            r = c.get("/recommendations", params={"user": MADE_UP, "k": 100}).json()
            return set(items_of(r["lists"])["popular"]) <= set(catalogue[40:]) and r

        later = wait_for(moved, timeout=5)
        path.unlink()  # a file briefly missing keeps the current view
        time.sleep(0.2)
        still = c.get("/recommendations", params={"user": MADE_UP, "k": 100})
        metrics = c.get("/metrics")
        # A new generation arriving while the list cannot be read is not refused for it:
        path.mkdir()  # (unreadable as a file, even for root)
        gen = _next_generation(mine, 0)
        time.sleep(0.3)
        path.rmdir()
        path.write_text("\n".join(catalogue[:40]) + "\n")
        health = wait_for(lambda: (h := c.get("/healthz").json())["generation"] == gen and h)
        final = c.get("/recommendations", params={"user": MADE_UP, "k": 100}).json()
    assert set(first["popular"]) <= set(catalogue[:40])
    assert items_of(later["lists"])["popular"]
    assert still.status_code == 200 and metrics.status_code == 200
    assert items_of(still.json()["lists"]) == items_of(later["lists"])
    assert health["refused_generations"] == []
    assert set(items_of(final["lists"])["popular"]) <= set(catalogue[:40])


def test_a_purchase_in_the_log_but_not_in_feedback_is_a_duplicate_after_a_restart(mine):
    """A crash between the log's write and the feedback file's: the retry is not logged."""
    user, item = known_user(mine), model_catalogue(mine)[0]
    with open(mine.log(), "a") as f:  # what the crashed service had written to the log
        f.write(f"crash-1,{user},{item},2023-03-20T10:00:00Z,{SHOP}\n")
    before = mine.log().read_bytes()
    with serving(mine.serve_cfg()) as c:
        event = {"type": "purchase", "user": user, "item": item, "event_id": "crash-1"}
        r = c.post("/events", json={"events": [event]})
    assert r.status_code == 200 and r.json()["duplicates"] == 1, r.text
    assert mine.log().read_bytes() == before


def test_batch_user_ids_are_checked_like_the_single_form(mine):
    with serving(mine.serve_cfg()) as c:
        for bad in ("", "x" * 257):
            r = c.post("/recommendations/batch", json={"users": ["a", bad], "k": 3})
            assert r.status_code == 422, (bad, r.text)
            assert r.json()["problems"][0]["field"] == "users"


def test_model_rows_without_a_customer_id_do_not_break_serving(mine):
    """Rows the model has beyond the id map are padded with "" (several of them)."""
    store = serving_store(mine.shop_dir())
    tree = store.read(store.generations()[-1])
    users = np.asarray(tree["users"], dtype=str).copy()
    users[-3:] = ""
    tree["users"] = users
    store.save(tree)
    with serving(mine.serve_cfg()) as c:
        r = c.get("/recommendations", params={"user": known_user(mine), "k": 3})
        assert r.status_code == 200 and r.json()["generation"] == store.generations()[-1]
        r = c.get("/recommendations", params={"user": "", "k": 3})
        assert r.status_code == 422  # an empty id is never a customer

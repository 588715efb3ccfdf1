"""Load of the recommendation service (``python -m fedcl.serve``) on loopback, against a bare
in-process top-k of the same scores.

Run: ``python benchmarks/bench_serve.py`` (see ``--help``; the defaults take ~3-4 min on a
2-core VM). For each model and catalogue size a serving snapshot is written directly (no
federation): ``--users`` customers with ``--purchases`` purchases each, items drawn Zipf(1)
over the catalogue, spread over ``--windows`` windows; item-kNN / EASE learn the way a shop's
learner does (``observe`` per window, then ``fit`` on the unit's own Gram), MF keeps its
random initial weights (latency does not depend on what it learned). EASE inverts a dense
I x I matrix (4 I^2 bytes: 40 GB at 100k items), so above ``--ease-max-items`` item-kNN
(``model=itemitem``, ``k=--knn-k``) runs instead, and the output says so.

The real service then runs in a separate process (its own GIL: the client threads here do
not slow its scoring except through the shared cores), on a free 127.0.0.1 port, with a
frozen model. After a warm-up, ``--concurrency`` client threads (httpx, keep-alive, one
connection each) send at most ``--requests`` requests (``--batch-requests`` for the batch
form), for at most ``--duration-s`` seconds per cell (less when the whole run would pass
``--budget-s``), in two forms:

* ``single``: ``GET /recommendations?user=..&k=10``, a share ``--unknown`` of unknown
  customers (they get the popularity list);
* ``batch``: ``POST /recommendations/batch`` with ``--batch`` customers (same share).

Reference, measured in this process on the same snapshot and the same requests' known
users, interleaved call by call: the bare top-k (``model.score_all`` + ``torch.topk(k)``;
for item-kNN / EASE the model's ``scorer()``, its sparse matrices built once, as the
service does) and ``Recommender.recommend`` (the service's code without HTTP). Reported per
(model, items, form, concurrency): p50 / p99 latency in ms, requests/s (users/s for batch),
the service / bare ratios, and the CPU time per request of the service process and of the
clients (from /proc: where the two cores go). The aim: single requests at 4k items with
p99 < 20 ms.

Latencies are end to end at the client, on a machine the client shares with the server
(and other jobs: the load average is printed); no wall-clock assert, the figures are for
reading. ``--server-threads 1`` runs the service (and the reference) with one torch thread.
Results as a markdown table and as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, from any directory
import _common  # noqa: F401  (puts the checkout first on sys.path)
from _common import ROOT, markdown_table  # noqa: E402

from fedcl.config import load_config  # noqa: E402
from fedcl.data.interactions import Interactions  # noqa: E402
from fedcl.data.schema import ITEM, ITEM_IDX, SHOP, TIME, USER_IDX, WINDOW  # noqa: E402
from fedcl.learner import build_model  # noqa: E402
from fedcl.serve.recommend import Recommender  # noqa: E402
from fedcl.serve.snapshot import read_snapshot, serving_store, write_snapshot  # noqa: E402

SHOP_NAME = "bench"
AIM_MS, AIM_ITEMS = 20.0, 4000
T0 = 1_650_000_000  # unix s of the first purchase
WINDOW_S = 30 * 86400


# --- the snapshot --------------------------------------------------------------------------
def make_events(n_users: int, n_items: int, purchases: int, windows: int, seed: int):
    """``purchases`` per user, items Zipf(1) over a shuffled catalogue, times spread over
    ``windows`` windows of 30 days (sorted by time)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_items + 1)
    items = rng.permutation(n_items)[rng.choice(n_items, n_users * purchases, p=p / p.sum())]
    users = np.repeat(np.arange(n_users), purchases)
    times = rng.integers(T0, T0 + windows * WINDOW_S, n_users * purchases)
    order = np.argsort(times, kind="stable")
    users, items, times = users[order], items[order], times[order]
    return pd.DataFrame(
        {
            SHOP: SHOP_NAME,
            USER_IDX: users,
            ITEM_IDX: items,
            TIME: pd.to_datetime(times, unit="s"),
            WINDOW: (times - T0) // WINDOW_S,
        }
    )


def fitted_model(name: str, n_items: int, n_users: int, events: pd.DataFrame, args):
    """The model (eval mode), its config, a label and why it is not ``name`` (or "")."""
    overrides, note = [f"model={name}"], ""
    if name == "ease" and n_items > args.ease_max_items:
        overrides = ["model=itemitem", f"model.k={args.knn_k}"]
        gb = 4 * n_items**2 / 1e9
        note = (
            f"ease at {n_items:,} items: its dense solve needs 4 I^2 = {gb:,.0f} GB, so "
            f"item-kNN (model=itemitem, k={args.knn_k}) ran instead"
        )
    cfg = load_config(overrides)[0].model
    torch.manual_seed(args.seed)
    model = build_model(cfg, n_users, n_items, torch.device("cpu"))
    t0 = time.perf_counter()
    if not model.trainable:  # learns from the history: per window, as a shop's learner
        solve = getattr(model, "local_solve", None)
        if solve is not None:
            model.local_solve = False  # solve once, after the last window (same result)
        for _, part in events.groupby(WINDOW, sort=True):
            model.observe(
                Interactions(
                    torch.tensor(part[USER_IDX].to_numpy(np.int64)),
                    torch.tensor(part[ITEM_IDX].to_numpy(np.int64)),
                    torch.tensor(part[TIME].to_numpy("datetime64[s]").astype(np.int64)),
                    n_users,
                    n_items,
                )
            )
        if solve is not None:
            model.local_solve = solve
            model.fit(model.statistics())
    fit_s = time.perf_counter() - t0
    model.eval()
    label = name if not note else f"ease->knn(k={args.knn_k})"
    if name in ("itemitem", "knn"):
        label = f"knn(k={cfg.k})"
    return model, cfg, label, note, fit_s


def write_state(state: Path, model, cfg, events: pd.DataFrame, n_items: int, users) -> None:
    """A serving snapshot of ``model`` in ``state/<shop>/serving`` (window = the last one)."""
    data = SimpleNamespace(events=events, catalog=pd.DataFrame({ITEM: item_ids(n_items)}))
    store = serving_store(state / SHOP_NAME)
    write_snapshot(store, SHOP_NAME, int(events[WINDOW].max()), model, cfg, data, users)


def user_ids(n: int) -> np.ndarray:
    return np.asarray([f"c{i:07d}" for i in range(n)])


def item_ids(n: int) -> np.ndarray:
    return np.asarray([f"sku{i:07d}" for i in range(n)])


# --- the service ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """``python -m fedcl.serve`` in a child process, frozen on the snapshot."""

    def __init__(self, state: Path, log: Path, threads: int | None) -> None:
        self.state, self.log, self.threads = state, log, threads

    def __enter__(self) -> Service:
        import httpx

        for _ in range(3):  # a port taken between free_port() and the bind: try another
            self.port = free_port()
            cmd = [sys.executable, "-m", "fedcl.serve", "--state-dir", str(self.state),
                   "--shop", SHOP_NAME, "--port", str(self.port), "--frozen",
                   "--poll-s", "3600"]  # fmt: skip
            path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
            env = {**os.environ, "PYTHONPATH": path}
            if self.threads:  # torch's intra-op threads in the service (read at import)
                env["OMP_NUM_THREADS"] = str(self.threads)
            self.out = self.log.open("w")
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.out, stderr=self.out)
            self.url = f"http://127.0.0.1:{self.port}"
            deadline = time.monotonic() + 120
            while self.proc.poll() is None and time.monotonic() < deadline:
                try:
                    if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            self.__exit__()
        raise SystemExit(f"the service did not start:\n{self.log.read_text()[-3000:]}")

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()


@dataclass
class Load:
    latencies: list[float] = field(default_factory=list)  # s, in completion order
    known: list[bool] = field(default_factory=list)  # single: was the user known
    errors: int = 0
    wall: float = 0.0
    server_cpu: float = float("nan")  # s of CPU the service process used meanwhile
    client_cpu: float = float("nan")  # s of CPU this process (the clients) used meanwhile


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc; nan elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drive(url: str, form: str, requests: list, known: list[bool], concurrency: int,
          duration: float, k: int, pid: int = 0) -> Load:  # fmt: skip
    """Send ``requests`` (at most, for at most ``duration`` s) from ``concurrency`` threads
    (``pid``: the service's process, whose CPU time is measured)."""
    import httpx

    clients = [httpx.Client(base_url=url, timeout=60) for _ in range(concurrency)]
    for c in clients:  # open each keep-alive connection before the clock starts
        c.get("/healthz")
    load, lock, nxt = Load(), threading.Lock(), iter(range(len(requests)))
    start = threading.Barrier(concurrency + 1)

    def worker(client: httpx.Client) -> None:
        mine: list[tuple[float, bool]] = []
        errors = 0
        start.wait()
        while time.perf_counter() < deadline:
            with lock:
                i = next(nxt, None)
            if i is None:
                break
            t0 = time.perf_counter()
            if form == "single":
                r = client.get("/recommendations", params={"user": requests[i], "k": k})
            else:
                r = client.post("/recommendations/batch", json={"users": requests[i], "k": k})
            r.read()
            mine.append((time.perf_counter() - t0, known[i]))
            errors += r.status_code != 200
        with lock:
            load.latencies += [t for t, _ in mine]
            load.known += [kn for _, kn in mine]
            load.errors += errors

    threads = [threading.Thread(target=worker, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    deadline = time.perf_counter() + duration
    server0, client0 = cpu_seconds(pid) if pid else float("nan"), time.process_time()
    t0 = time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    load.wall = time.perf_counter() - t0
    load.client_cpu = time.process_time() - client0
    load.server_cpu = (cpu_seconds(pid) if pid else float("nan")) - server0
    for c in clients:
        c.close()
    return load


# --- the in-process reference --------------------------------------------------------------
def reference(rec: Recommender, rows: list[np.ndarray], users: list[list[str]], k: int,
              budget_s: float) -> dict[str, list[float]]:  # fmt: skip
    """Per call, interleaved: bare ``score_all`` + ``topk`` of the known ``rows``, and
    ``Recommender.recommend`` of the same request's ``users`` (at most ``budget_s`` s)."""
    model, out = rec.snap.model, {"bare": [], "recommend": []}
    scorer = getattr(model, "scorer", None)  # ItemItem: its matrices built once, as served
    score_all = scorer() if callable(scorer) else model.score_all
    stop = time.perf_counter() + budget_s
    for r, u in zip(rows, users, strict=True):
        if time.perf_counter() > stop:
            break
        if len(r):
            t0 = time.perf_counter()
            with torch.inference_mode():
                torch.topk(score_all(torch.as_tensor(r, dtype=torch.long)), k, dim=1)
            out["bare"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        rec.recommend(u, k)
        out["recommend"].append(time.perf_counter() - t0)
    return out


def stats(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {"n": 0, "p50_ms": float("nan"), "p99_ms": float("nan"), "per_s": float("nan")}
    a = np.asarray(latencies) * 1e3
    return {
        "n": len(a),
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
        "per_s": float(1e3 / a.mean()),  # calls/s of one caller, back to back
    }


# --- one (model, items) --------------------------------------------------------------------
@dataclass
class Budget:
    """The run's time limit, shared out over the load cells still to run."""

    end: float  # perf_counter() deadline of the whole run
    cells: int  # load cells left
    cases: int  # (model, items) cases left, each with fixed costs (fit, start, reference)
    case_s: float  # those fixed costs, estimated

    def cell_s(self, cap: float) -> float:
        left = self.end - time.perf_counter() - self.cases * self.case_s
        return max(2.0, min(cap, left / max(self.cells, 1)))


def run_case(name: str, n_items: int, args, tmp: Path, notes: list[str],
             budget: Budget) -> list[dict]:  # fmt: skip
    events = make_events(args.users, n_items, args.purchases, args.windows, args.seed)
    model, cfg, label, note, fit_s = fitted_model(name, n_items, args.users, events, args)
    if note:
        notes.append(note)
        print(f"  note: {note}")
    state = tmp / f"{name}-{n_items}"
    ids = user_ids(args.users)
    write_state(state, model, cfg, events, n_items, ids)
    print(f"  {label} at {n_items:,} items: fitted in {fit_s:.1f} s, snapshot written")
    snap = read_snapshot(serving_store(state / SHOP_NAME), 1)
    rec = Recommender(snap)  # what the service builds from the same generation

    rng = np.random.default_rng(args.seed + n_items)
    n_req = {"single": args.requests, "batch": args.batch_requests}

    def draw(n: int) -> tuple[list[str], np.ndarray]:
        rows = rng.integers(0, args.users, n)
        unknown = rng.random(n) < args.unknown
        pairs = zip(rows, unknown, strict=True)
        names = [f"new{rng.integers(1e9):09d}" if u else ids[r] for r, u in pairs]
        return names, np.where(unknown, -1, rows)

    single = [draw(1) for _ in range(n_req["single"])]
    batch = [draw(args.batch) for _ in range(n_req["batch"])]
    forms = {
        "single": ([s[0][0] for s in single], [s[1] for s in single]),
        "batch": ([b[0] for b in batch], [b[1] for b in batch]),
    }

    rows_out = []
    with Service(state, tmp / f"{name}-{n_items}.log", args.server_threads) as svc:
        check(svc.url, rec, ids, args.k)
        for form, (reqs, _) in forms.items():  # warm-up: imports, threadpool, caches
            drive(svc.url, form, reqs[: args.warmup], [True] * args.warmup, 2, 30, args.k)
        for form, (reqs, rows) in forms.items():
            users = [[r] if form == "single" else r for r in reqs]
            known_rows = [r[r >= 0] for r in rows]
            ref = reference(rec, known_rows, users, args.k, args.ref_budget_s)
            bare, inproc = stats(ref["bare"]), stats(ref["recommend"])
            for conc in args.concurrency:
                known = [bool(r[0] >= 0) if form == "single" else True for r in rows]
                cap = budget.cell_s(args.duration_s)
                load = drive(svc.url, form, reqs, known, conc, cap, args.k, svc.proc.pid)
                budget.cells -= 1
                s = stats(load.latencies)
                kn = stats([t for t, x in zip(load.latencies, load.known, strict=True) if x])
                per_req = args.batch if form == "batch" else 1
                row = {
                    "model": name,
                    "ran": label,
                    "items": n_items,
                    "form": form,
                    "batch": per_req,
                    "concurrency": conc,
                    "requests": s["n"],
                    "errors": load.errors,
                    "wall_s": load.wall,
                    "duration_cap_s": cap,
                    "p50_ms": s["p50_ms"],
                    "p99_ms": s["p99_ms"],
                    "p99_known_ms": kn["p99_ms"],
                    "req_per_s": s["n"] / load.wall,
                    "users_per_s": s["n"] * per_req / load.wall,
                    "server_cpu_ms_per_req": load.server_cpu / max(s["n"], 1) * 1e3,
                    "client_cpu_ms_per_req": load.client_cpu / max(s["n"], 1) * 1e3,
                    "bare": bare,
                    "recommend": inproc,
                    "p50_ratio": s["p50_ms"] / bare["p50_ms"],
                    "p99_ratio": s["p99_ms"] / bare["p99_ms"],
                    "fit_s": fit_s,
                }
                if form == "single" and n_items == AIM_ITEMS:
                    row["aim_met"] = bool(s["p99_ms"] < AIM_MS)
                rows_out.append(row)
                print(
                    f"  {form:6s} x{conc}: {s['n']:5d} req in {load.wall:5.1f} s, "
                    f"p50 {s['p50_ms']:6.2f} ms, p99 {s['p99_ms']:6.2f} ms, "
                    f"{row['req_per_s']:7.1f} req/s | bare p50 {bare['p50_ms']:.2f} "
                    f"p99 {bare['p99_ms']:.2f} | recommend p50 {inproc['p50_ms']:.2f} "
                    f"p99 {inproc['p99_ms']:.2f} | CPU ms/req server "
                    f"{row['server_cpu_ms_per_req']:.2f} client {row['client_cpu_ms_per_req']:.2f}"
                    + (f" | {load.errors} errors" if load.errors else "")
                )  # fmt: skip
    return rows_out


def check(url: str, rec: Recommender, ids: np.ndarray, k: int) -> None:
    """The service answers a known user with the lists the in-process Recommender gives."""
    import httpx

    body = httpx.get(f"{url}/recommendations", params={"user": ids[0], "k": k}).json()
    (mine,) = rec.recommend([str(ids[0])], k)
    for name, items in mine.lists.items():
        got = [e["item"] for e in body["lists"][name]]
        if got != [i for i, _ in items]:
            raise SystemExit(f"service and in-process Recommender disagree on {name}: {got}")


# --- report --------------------------------------------------------------------------------
def table(rows: list[dict]) -> str:
    head = ["model", "items", "form", "conc", "requests", "p50 / p99 ms", "req/s", "users/s",
            "bare p50 / p99 ms", "bare calls/s", "recommend p50 / p99 ms",
            "service/bare p50 / p99", "CPU ms/req server / client"]  # fmt: skip
    body = []
    for r in rows:
        b, i = r["bare"], r["recommend"]
        aim = ("" if r["aim_met"] else " (aim missed)") if "aim_met" in r else ""
        form = r["form"] if r["form"] == "single" else f"batch {r['batch']}"
        body.append([
            r["ran"], f"{r['items']:,}", form, str(r["concurrency"]), str(r["requests"]),
            f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f}{aim}",
            f"{r['req_per_s']:,.0f}", f"{r['users_per_s']:,.0f}",
            f"{b['p50_ms']:.2f} / {b['p99_ms']:.2f}", f"{b['per_s']:,.0f}",
            f"{i['p50_ms']:.2f} / {i['p99_ms']:.2f}",
            f"{r['p50_ratio']:.1f}x / {r['p99_ratio']:.1f}x",
            f"{r['server_cpu_ms_per_req']:.2f} / {r['client_cpu_ms_per_req']:.2f}",
        ])  # fmt: skip
    return markdown_table(head, body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["mf", "ease"], help="conf/model names")
    ap.add_argument("--items", nargs="+", type=int, default=[4000, 100_000])
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--purchases", type=int, default=20, help="per user (Zipf over items)")
    ap.add_argument("--windows", type=int, default=3)
    ap.add_argument("--requests", type=int, default=2000, help="single: per cell, at most")
    ap.add_argument("--batch-requests", type=int, default=500, help="batch: per cell, at most")
    ap.add_argument("--duration-s", type=float, default=20.0, help="per cell, at most")
    ap.add_argument(
        "--budget-s", type=float, default=240.0,
        help="the whole run, roughly: the cells' durations shrink to fit it",
    )  # fmt: skip
    ap.add_argument("--concurrency", nargs="+", type=int, default=[1, 4])
    ap.add_argument("--batch", type=int, default=32, help="users per batch request")
    ap.add_argument("--unknown", type=float, default=0.1, help="share of unknown users")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=30, help="requests per form before timing")
    ap.add_argument("--ref-budget-s", type=float, default=4.0, help="in-process reference")
    ap.add_argument(
        "--server-threads", type=int, default=0,
        help="torch threads in the service (OMP_NUM_THREADS) and the in-process reference "
        "(0: torch's default, as the service ships)",
    )  # fmt: skip
    ap.add_argument("--ease-max-items", type=int, default=20_000)
    ap.add_argument("--knn-k", type=int, default=100, help="neighbours when kNN replaces EASE")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_serve.json")
    args = ap.parse_args()
    if args.server_threads:
        torch.set_num_threads(args.server_threads)

    load0 = os.getloadavg()
    t_start = time.perf_counter()
    cases = len(args.items) * len(args.models)
    budget = Budget(t_start + args.budget_s, cases * 2 * len(args.concurrency), cases,
                    case_s=2 * args.ref_budget_s + 10)  # fmt: skip
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s), "
        f"{os.cpu_count()} CPU(s), load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} "
        "(a shared machine: other jobs may run at the same time; client and server share "
        "the cores)"
    )  # fmt: skip
    rows: list[dict] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        for n_items in args.items:
            for name in args.models:
                print(f"{name} @ {n_items:,} items")
                budget.cases -= 1  # its fixed costs are being paid now
                rows += run_case(name, n_items, args, Path(tmp), notes, budget)
    total = time.perf_counter() - t_start
    load1 = os.getloadavg()

    print()
    print(table(rows))
    print()
    for n in notes:
        print(f"note: {n}")
    aim = [r for r in rows if "aim_met" in r]
    verdict = "met" if aim and all(r["aim_met"] for r in aim) else "MISSED"
    if not aim:
        verdict = "not measured (no single-request run at 4,000 items)"
    print(f"aim: p99 < {AIM_MS:.0f} ms for single requests (k={args.k}) at {AIM_ITEMS:,} items "
          f"on {os.cpu_count()} cores: {verdict}")  # fmt: skip
    for r in aim:
        server = r["req_per_s"] * r["server_cpu_ms_per_req"] / 1e3
        client = r["req_per_s"] * r["client_cpu_ms_per_req"] / 1e3
        print(
            f"  {r['ran']} x{r['concurrency']}: p99 {r['p99_ms']:.2f} ms "
            f"({'met' if r['aim_met'] else 'missed'}); the service used {server:.2f} cores "
            f"({r['server_cpu_ms_per_req']:.2f} ms CPU per request), the clients {client:.2f}"
        )  # fmt: skip
    if any(not r["aim_met"] for r in aim) and all(
        r["aim_met"] for r in aim if r["concurrency"] == 1
    ):
        print(
            "  missed only with concurrent clients: the service process (one Python process, "
            "so ~1 core of Python at a time) tops out near 1000 / (its CPU ms per request) "
            "requests/s; closed-loop clients without think time queue behind it"
        )  # fmt: skip
    print(f"total {total:.0f} s; load average at the end {load1[0]:.2f} {load1[1]:.2f}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": {
            "cpus": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "loadavg_start": load0, "loadavg_end": load1,
        },
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "aim": {"p99_ms": AIM_MS, "items": AIM_ITEMS, "form": "single", "verdict": verdict},
        "notes": notes,
        "total_s": total,
        "rows": rows,
    }  # fmt: skip
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

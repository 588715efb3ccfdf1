"""Real Flower deployment on loopback: one SuperLink with TLS and SuperNode authentication,
listening on loopback only, behind the nginx Fleet gateway that shops reach
(``deploy/start_server.sh``); shop SuperNodes started by ``deploy/start_shop.sh``, each
reading its own event log against the operator's public plan (``python -m fedcl.plan``); runs
submitted with ``flwr run`` on the operator's connection (the SuperLink's own port).

Scenarios (they share the SuperLink, the plan and the registered keys; each starts its own
three SuperNodes with fresh state directories and stops them at its end, so they stay
independent):

- an unregistered node is refused;
- an outsider holding only ca.crt, at the gateway, can neither register its node key nor
  start a run of its own app (``flwr supernode register`` / ``flwr run``: 404);
- a shop started with ``--trusted-entities`` refuses an unsigned app bundle (its ClientApp
  never runs);
- the server's files (database, logs, keys) are 600 / 700, and after a run so are the
  ServerApp's out-dir and checkpoint and the shops' state;
- a run of 2 windows x 2 rounds finishes and writes its metrics; neither the server nor the
  shops prepare the dataset (their caches stay empty);
- one shop's SuperNode is SIGKILLed while it trains a round: the round completes with the
  two others once the SuperLink notices the dead node (heartbeats, about a minute), the shop
  is restarted with the same state directory and key, rejoins, and continues from its state;
- the ServerApp is stopped (``flwr stop``) once round 1 is checkpointed, while the shops
  train round 2; the same run submitted again with the same out-dir resumes at round 2 and
  ends with every round once and a full R matrix.

Slow (~6-8 min on 2 cores): ``python -m pytest -m deployment tests/deployment -s``. Every
process is started in its own session (process group); groups are ended by their id at the
end of each scenario and in the module teardown, also on failure, and the teardown checks
that no process of ours is left.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = [pytest.mark.deployment, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent
CONN = "fedcl"
SHOPS = ["shop_00", "shop_01", "shop_02"]
DATA = (
    "data=synthetic data.n_shops=3 data.n_users=150 data.n_items=80 data.n_periods=2 "
    "data.shops.min_users=5"
)
TRAIN = (
    "model=mf model.dim=8 continual=replay train.epochs=1 train.batch_size=256 federated.rounds=2 "
    "federated.min_users=1 federated.min_shops=3"
)
SCHEDULE = [(0, 1), (0, 2), (1, 1), (1, 2)]  # (window, round) of 2 windows x 2 rounds
RUN_TIMEOUT_S = 600
#: The SuperLink marks a SuperNode offline 2 heartbeat intervals (2 x 30 s) after its last
#: heartbeat; only then does a round waiting for a dead node get its error reply.
DEAD_NODE_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _missing_tools() -> list[str]:
    tools = ["openssl", "ssh-keygen", "curl", "setsid", "ps"]
    missing = [t for t in tools if shutil.which(t) is None]
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        missing.append("nginx (the Fleet gateway: apt-get install nginx-light)")
    missing += [
        t for t in ("flower-superlink", "flower-supernode", "flwr") if not (BIN / t).exists()
    ]
    return missing


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _kill_pid(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, process group, state letter) of every process we can see."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        table[int(entry.name)] = (int(fields[1]), int(fields[2]), fields[0])
    return table


def _live(pids: set[int], pgids: set[int]) -> list[int]:
    """Live (not zombie: PID 1 reaps them late here) processes among ``pids`` or in
    the groups ``pgids``."""
    return [
        pid
        for pid, (_, pgid, state) in _table().items()
        if state != "Z" and (pid in pids or pgid in pgids)
    ]


def _group_alive(pgid: int) -> bool:
    return bool(_live(set(), {pgid}))


def _tree(pgids: list[int]) -> tuple[set[int], set[int]]:
    """The processes of ``pgids`` and all their descendants (pids), and the groups among
    them (pgids): flower-superlink starts flower-superexec in a session of its own, so a
    SuperLink's ServerApps are outside its group."""
    table = _table()
    pids = {pid for pid, (_, pgid, _) in table.items() if pgid in pgids} | set(pgids)
    grew = True
    while grew:
        more = {pid for pid, (ppid, _, _) in table.items() if ppid in pids} - pids
        pids |= more
        grew = bool(more)
    groups = set(pgids) | {table[p][1] for p in pids if p in table and table[p][1] in pids}
    return pids, groups


def _stop_tree(pgids: list[int], sig: int = signal.SIGTERM, grace: float = 20) -> list[int]:
    """Send ``sig`` to the groups and every descendant, wait up to ``grace`` s until all are
    gone, SIGKILL the rest and wait again (bounded, 15 s). Returns what is still alive."""
    pids, groups = _tree(pgids)
    table = _table()
    for pgid in groups:
        _kill_group(pgid, sig)
    # Once only: a second SIGTERM cuts a SuperNode's clean exit short (it then does not
    # leave the federation, and its restart is refused for a minute).
    for pid in pids:
        if pid not in table or table[pid][1] not in groups:
            _kill_pid(pid, sig)
    deadline = time.monotonic() + grace
    while _live(pids, groups) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _live(pids, groups):
        for pgid in groups:
            _kill_group(pgid, signal.SIGKILL)
        for pid in _live(pids, groups):
            _kill_pid(pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while _live(pids, groups) and time.monotonic() < deadline:
            time.sleep(0.2)
    return _live(pids, groups)


def _processes() -> Iterator[tuple[int, str, str]]:
    """(pid, state letter, command line) of every process we can see, but this one."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state = stat.rsplit(")", 1)[-1].split()[0]
        yield int(entry.name), state, raw.replace(b"\0", b" ").decode(errors="replace")


def _our_processes(markers: list[str]) -> list[str]:
    """Live Flower processes that mention one of ``markers`` (paths, ports)."""
    return [
        f"{pid}: {cmd}"
        for pid, state, cmd in _processes()
        if state != "Z" and ("flower" in cmd or "flwr" in cmd) and any(m in cmd for m in markers)
    ]


def _not_private(top: Path) -> list[str]:
    """Entries under ``top`` (itself included) that group or others may read or enter."""
    return [
        f"{oct(p.stat().st_mode & 0o777)} {p}"
        for p in [top, *top.rglob("*")]
        if not p.is_symlink() and p.stat().st_mode & 0o077
    ]


#: An outsider's Flower app: its ClientApp would read a shop's node config and list its
#: state directory (what the observed attack returned), and leave a mark there.
ROGUE_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "rogue"
version = "1.0.0"
description = "not fedcl"
license = "Apache-2.0"
dependencies = ["flwr"]

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "rogue"

[tool.flwr.app.components]
serverapp = "rogue_app:server"
clientapp = "rogue_app:client"

[tool.flwr.app.config]
"""
ROGUE_APP = """\
import os
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

client = ClientApp()
server = ServerApp()


@client.query()
def spy(msg: Message, context: Context) -> Message:
    loot = {k: str(v) for k, v in context.node_config.items()}
    state = Path(str(context.node_config.get("state-dir", ".")))
    loot["listing"] = " ".join(sorted(os.listdir(state)))
    (state / "PWNED").write_text("rogue code ran here")
    return Message(RecordDict({"loot": ConfigRecord(loot)}), reply_to=msg)


@server.main()
def main(grid: Grid, context: Context) -> None:
    nodes = list(grid.get_node_ids())
    msgs = [Message(RecordDict(), dst_node_id=n, message_type="query") for n in nodes]
    for reply in grid.send_and_receive(msgs, timeout=120):
        print("ROGUE REPLY", reply.error if reply.has_error() else reply.content)
"""


def _rogue_app(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pyproject.toml").write_text(ROGUE_PYPROJECT)
    (directory / "rogue_app.py").write_text(ROGUE_APP)
    return directory


def _generations(directory: Path) -> list[int]:
    """Numbers of the state generations in a state store directory."""
    return sorted(int(p.stem.split("-")[1]) for p in directory.glob("state-*.npz"))


def _load_state(directory: Path) -> dict:
    from fedcl.shop.store import GenerationStore

    state = GenerationStore(directory).load()
    assert state is not None, f"no state in {directory}"
    return state


def _find(tree: dict, key: str) -> dict | None:
    """The first sub-tree stored under ``key`` (the replay buffer in a method's state)."""
    for k, v in tree.items():
        if isinstance(v, dict):
            if k == key:
                return v
            if (found := _find(v, key)) is not None:
                return found
    return None


@dataclass
class Shop:
    """One shop's SuperNode as started by ``start_shop.sh``."""

    name: str
    key: Path
    port: int
    dir: Path  # supernode.pid, supernode.log
    state: Path  # --state-dir
    cache: Path  # --cache (FEDCL_CACHE): stays empty when the shop reads its own log
    pgid: int | None = None

    @property
    def store(self) -> Path:
        """The learner's state store (``<state-dir>/<shop>``)."""
        return self.state / self.name

    @property
    def log(self) -> str:
        return (self.dir / "supernode.log").read_text(errors="replace")


@dataclass
class Link:
    """A running SuperLink, its environment, and every process group started for it."""

    root: Path
    port: int  # the Fleet gateway (what shops and outsiders reach)
    control_port: int  # the SuperLink itself, on loopback: the operator's `flwr` connection
    env: dict[str, str]
    groups: list[int] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    runs: set[str] = field(default_factory=set)  # submitted, not seen finished

    @property
    def address(self) -> str:
        """The shops' address: the Fleet gateway."""
        return f"127.0.0.1:{self.port}"

    @property
    def plan(self) -> Path:
        return self.root / "plan"

    def overrides(self) -> str:
        """The run's Hydra overrides: the server reads only the plan."""
        return f"{DATA} {TRAIN} federated.plan_dir={self.plan}"

    def sh(self, *args: str | Path, timeout: float = 120, check: bool = True, cwd=None):
        """Run a command to completion (in its own session, killed on timeout)."""
        proc = subprocess.Popen(
            [str(a) for a in args], env=self.env, cwd=cwd or self.root, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        self.groups.append(proc.pid)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise AssertionError(f"timed out after {timeout} s: {args}\n{out}\n{err}") from None
        finally:
            if proc.poll() is not None:
                self.groups.remove(proc.pid)  # ended: its group id may be reused
        if check and proc.returncode != 0:
            raise AssertionError(f"exit {proc.returncode}: {args}\n{out}\n{err}")
        return subprocess.CompletedProcess(args, proc.returncode, out, err)

    def flwr_json(self, *args: str, timeout: float = 60) -> dict:
        out = self.sh(BIN / "flwr", *args, "--format", "json", timeout=timeout, cwd=REPO).stdout
        return json.loads(out[out.index("{") :])

    def adopt(self, pidfile: Path) -> int:
        """Track the process group a deploy script started (its pid is the group id)."""
        pid = int(pidfile.read_text().strip())
        self.groups.append(pid)
        return pid

    def stop_groups(self, pgids: list[int], sig: int = signal.SIGTERM, grace: float = 20):
        """End process groups we started and every process they started (SIGKILL after
        ``grace`` s), wait until they are gone, and forget them."""
        left = _stop_tree(pgids, sig, grace)
        for pgid in pgids:
            if not _group_alive(pgid) and pgid in self.groups:
                self.groups.remove(pgid)
        return left

    # --- shops ------------------------------------------------------------------------
    def shop(self, name: str, scenario: str, *, key: Path | None = None) -> Shop:
        port = _free_port()
        self.ports.append(port)
        base = self.root / scenario
        return Shop(
            name=name,
            key=key or self.root / "keys" / name,
            port=port,
            dir=base / "shops" / name,
            state=base / "state" / name,
            cache=base / "cache" / name,
        )

    def start_shop(
        self, shop: Shop, *, check: bool = True, own_log: bool = True, extra: tuple = ()
    ):
        args: list[str | Path] = [
            DEPLOY / "start_shop.sh", "--shop", shop.name, "--superlink", self.address,
            "--ca", self.root / "certs" / "ca.crt", "--key", shop.key,
            "--port", str(shop.port), "--dir", shop.dir, "--state-dir", shop.state,
            "--cache", shop.cache, "--wait", "60",
        ]  # fmt: skip
        args += list(extra)
        if own_log:
            args += ["--events", self.root / "logs" / f"{shop.name}.csv", "--plan", self.plan]
        res = self.sh(*args, timeout=90, check=check)
        if (shop.dir / "supernode.pid").exists():
            shop.pgid = self.adopt(shop.dir / "supernode.pid")
        return res

    def start_shop_retrying(self, shop: Shop, timeout: float = 150):
        """Start a shop; while the SuperLink refuses its key (exit code 305: a SuperNode of
        the same key that died abnormally, e.g. in a scenario that failed, still counts as
        online until its heartbeats lapse, about a minute), try again."""
        t0 = time.monotonic()
        while (res := self.start_shop(shop, check=False)).returncode != 0:
            assert "305" in res.stderr, res.stderr
            assert time.monotonic() - t0 < timeout, f"{shop.name} refused for {timeout} s"
            time.sleep(3)
        return res

    @contextlib.contextmanager
    def fleet(self, scenario: str) -> Iterator[dict[str, Shop]]:
        """The three shops with fresh state, started in parallel; stopped (SIGTERM: they
        leave the federation at once) at the end, also on failure."""
        shops = {name: self.shop(name, scenario) for name in SHOPS}
        try:
            t0 = time.monotonic()
            with ThreadPoolExecutor(len(shops)) as pool:
                list(pool.map(self.start_shop_retrying, shops.values()))
            self.timings[f"{scenario}_shops_start_s"] = time.monotonic() - t0
            yield shops
        finally:
            self.stop_groups([s.pgid for s in shops.values() if s.pgid is not None])

    def online(self) -> int:
        nodes = self.flwr_json("supernode", "ls", CONN)["nodes"]
        return sum(n["status"] == "online" for n in nodes)

    # --- runs -------------------------------------------------------------------------
    def submit(self, out_dir: Path) -> str:
        run_config = f'overrides="{self.overrides()}" out-dir="{out_dir}"'
        sub = self.flwr_json("run", ".", CONN, "--run-config", run_config, timeout=120)
        assert sub["success"], sub
        run_id = str(sub["run-id"])
        self.runs.add(run_id)
        return run_id

    def status(self, run_id: str) -> str:
        status = self.flwr_json("ls", CONN, "--run-id", run_id)["runs"][0]["status"]
        if status.startswith("finished"):
            self.runs.discard(run_id)
        return status

    def wait_run(self, run_id: str, out_dir: Path, timeout: float = RUN_TIMEOUT_S) -> str:
        """The run's final status. The ServerApp writes metrics.json near its end: watch
        for it and for the ServerApp's exit (cheap), and ask the SuperLink (a CLI start
        costs seconds of CPU on a small machine) only every 30 s and at the end."""
        status = ""
        deadline = time.monotonic() + timeout
        next_ask = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = (out_dir / "metrics.json").exists()
            if done:
                self.wait_no_serverapp()
            if done or time.monotonic() > next_ask:
                status = self.status(run_id)
                if status.startswith("finished"):
                    break
                next_ask = time.monotonic() + (2 if done else 30)
            time.sleep(1)
        return status

    def server_log(self, run_id: str) -> str:
        """The end of the ServerApp's log (for failure messages)."""
        res = self.sh(BIN / "flwr", "log", run_id, CONN, "--show", timeout=60, check=False)
        return (res.stdout + res.stderr)[-4000:]

    def stop_runs(self) -> None:
        """Stop every run submitted and not seen finished (a scenario that failed must not
        leave a ServerApp sending to the next scenario's shops)."""
        for run_id in list(self.runs):
            self.sh(BIN / "flwr", "stop", run_id, CONN, timeout=60, check=False, cwd=REPO)
            self.runs.discard(run_id)
        self.wait_no_serverapp()

    def serverapp_alive(self) -> bool:
        """Whether a ServerApp process of this SuperLink runs (scenarios run one at a time)."""
        mark = f"--runtime-api-address 127.0.0.1:{self.control_port}"
        return any(
            s != "Z" and "flwr-serverapp" in cmd and mark in cmd for _, s, cmd in _processes()
        )

    def wait_no_serverapp(self, timeout: float = 60) -> None:
        """Until no ServerApp of this SuperLink is alive (a stopped one exits in seconds)."""
        deadline = time.monotonic() + timeout
        while self.serverapp_alive():
            assert time.monotonic() < deadline, "a ServerApp did not exit after its run stopped"
            time.sleep(0.5)


def _stop_all(link: Link) -> list[str]:
    """Stop every group we started and their descendants (SIGKILL after 20 s); wait (bounded,
    60 s: a loaded machine is slow to end Python processes) until no Flower process that
    names our paths or ports is left; returns the leftovers."""
    left_pids = link.stop_groups(list(reversed(link.groups)))
    markers = [str(link.root)] + [f":{p}" for p in [link.port, link.control_port, *link.ports]]
    deadline = time.monotonic() + 60
    while (left := _our_processes(markers)) and time.monotonic() < deadline:
        time.sleep(0.5)
    left += [f"pid {p} (a descendant, alive after SIGKILL)" for p in left_pids]
    left += [f"process group {g}" for g in link.groups if _group_alive(g)]
    return left


@pytest.fixture(scope="module")
def link(request):
    """The SuperLink (TLS, node authentication), the operator's plan with one event log per
    shop, and the shops' keys, registered."""
    if missing := _missing_tools():
        pytest.skip(f"deployment test needs {', '.join(missing)}")
    # Not under pytest's tmp_path: another pytest session on the machine deletes all but its
    # three latest base directories, which pulled the out-dir from under a running ServerApp.
    # Removed at the end when every scenario passed and no process is left; kept otherwise.
    root = Path(tempfile.mkdtemp(prefix="fedcl-deploy-"))
    failed_before = request.session.testsfailed
    port, control_port = _free_port(), _free_port()
    while control_port == port:
        control_port = _free_port()
    env = dict(os.environ)
    env.update(
        FLWR_HOME=str(root / "flwr"),
        # The ServerApp inherits the SuperLink's environment: with a plan it prepares no
        # data, so this cache stays empty (checked by the run scenario).
        FEDCL_CACHE=str(root / "server-cache"),
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
    )
    (root / "flwr").mkdir()
    (root / "flwr" / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONN}"\n\n[superlink.{CONN}]\n'
        f'address = "127.0.0.1:{control_port}"\nroot-certificates = "{root / "certs" / "ca.crt"}"\n'
    )
    lk = Link(root=root, port=port, control_port=control_port, env=env)
    t_all = time.monotonic()
    try:
        t0 = time.monotonic()
        lk.sh(DEPLOY / "make_certs.sh", root / "certs")
        lk.sh(
            DEPLOY / "start_server.sh", "--certs", root / "certs", "--port", str(port),
            "--control-port", str(control_port), "--dir", root / "superlink",
            "--timeout", "60", timeout=120,
        )  # fmt: skip
        lk.adopt(root / "superlink" / "superlink.pid")
        lk.adopt(root / "superlink" / "fleet-gateway.pid")
        lk.timings["superlink_start_s"] = time.monotonic() - t0

        t0 = time.monotonic()
        plan_env = {**env, "FEDCL_CACHE": str(root / "operator-cache")}
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(lk, "env", plan_env)
            lk.sh(
                sys.executable, "-m", "fedcl.plan", "--out", lk.plan,
                "--shop-logs", root / "logs", *DATA.split(), timeout=180,
            )  # fmt: skip
        assert sorted(p.stem for p in (root / "logs").glob("*.csv")) == SHOPS
        for shop in SHOPS:
            lk.sh(DEPLOY / "make_node_key.sh", shop, root / "keys")

        # `flwr supernode register` takes seconds each (CLI start-up): in parallel.
        def register(shop: str) -> None:
            pub = root / "keys" / f"{shop}.pub"
            lk.sh(BIN / "flwr", "supernode", "register", pub, CONN, "--name", shop)

        with ThreadPoolExecutor(len(SHOPS)) as pool:
            list(pool.map(register, SHOPS))
        lk.timings["plan_keys_register_s"] = time.monotonic() - t0
        yield lk
    finally:
        with contextlib.suppress(Exception):
            lk.stop_runs()
        left = _stop_all(lk)
        lk.timings["module_s"] = time.monotonic() - t_all
        print("\ndeployment timings (s):", {k: round(v, 1) for k, v in lk.timings.items()})
        if left or request.session.testsfailed != failed_before:
            print(f"kept {root} for inspection")
        else:
            shutil.rmtree(root, ignore_errors=True)
        assert not left, f"Flower processes left behind: {left}"


@pytest.fixture
def scenario(link, request):
    """Times a scenario; stops any run it left unfinished (also on failure)."""
    t0 = time.monotonic()
    try:
        yield
    finally:
        link.stop_runs()
        link.timings[request.node.name] = time.monotonic() - t0
        print(f"\n{request.node.name}: {time.monotonic() - t0:.0f} s")


def _assert_complete(doc: dict) -> None:
    assert doc["mode"] == "federated"
    r = doc["r_matrix"]
    assert len(r) == 2 and all(len(row) == 2 for row in r), r
    assert all(v is not None for row in r for v in row), r
    assert sorted(doc["per_shop"]) == SHOPS


def _federated_rounds(out_dir: Path) -> list[dict]:
    """The run's rounds log (``rounds.csv``, values as text), training rounds only."""
    with (out_dir / "rounds.csv").open() as f:
        return [row for row in csv.DictReader(f) if row["unit"] == "federated"]


@functools.cache
def _run_config(overrides: str):
    from fedcl.config import config_from_run

    return config_from_run({"overrides": overrides})


def _checkpoint_position(link: Link, out_dir: Path) -> tuple[int, int] | None:
    """(window, round) the server continues at, from its checkpoint (None: none yet). Read
    without the checkpoint's configuration check: this process's fedcl may differ from the
    bundle's when fedcl/ is edited while the module runs (seen: a changed default)."""
    from fedcl.federated.checkpoint import ServerCheckpoint, checkpoint_dir

    cfg = _run_config(link.overrides())
    tree = ServerCheckpoint(checkpoint_dir(cfg, out_dir), cfg).store.load()
    if tree is None:
        return None
    return int(tree["position"]["window"]), int(tree["position"]["round"])


def _wait_position(link: Link, out_dir: Path, at_least: tuple[int, int], timeout: float):
    deadline = time.monotonic() + timeout
    while (pos := _checkpoint_position(link, out_dir)) is None or pos < at_least:
        assert time.monotonic() < deadline, f"server checkpoint at {pos}, waited for {at_least}"
        time.sleep(0.5)
    return pos


# --- scenarios -------------------------------------------------------------------------------
def test_unregistered_shop_is_refused(link, scenario):
    key_dir = link.root / "intruder-keys"
    link.sh(DEPLOY / "make_node_key.sh", "intruder", key_dir)
    shop = link.shop("shop_00", "intruder", key=key_dir / "intruder")
    res = link.start_shop(shop, check=False)
    assert res.returncode != 0
    assert "refused" in res.stderr and "305" in res.stderr
    assert "Exit Code: 305" in shop.log
    assert not (shop.dir / "supernode.pid").exists()
    assert link.online() == 0


def test_outsider_with_the_ca_cert_cannot_register_or_start_runs(link, scenario):
    """The observed attack, from someone who holds only ca.crt and reaches what shops reach
    (the Fleet gateway): registering its own node key and submitting its own app are both
    refused (the gateway forwards no Control API path), and nothing changed on the
    SuperLink."""
    home = link.root / "outsider"
    (home / "flwr").mkdir(parents=True)
    (home / "flwr" / "config.toml").write_text(
        '[superlink]\ndefault = "target"\n\n[superlink.target]\n'
        f'address = "{link.address}"\nroot-certificates = "{link.root / "certs" / "ca.crt"}"\n'
    )
    link.sh(DEPLOY / "make_node_key.sh", "rogue", home)
    app = _rogue_app(home / "app")
    nodes_before = link.flwr_json("supernode", "ls", CONN)["nodes"]
    runs_before = {r["run-id"] for r in link.flwr_json("ls", CONN)["runs"]}

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(link, "env", {**link.env, "FLWR_HOME": str(home / "flwr")})
        register = link.sh(
            BIN / "flwr", "supernode", "register", "rogue.pub", "target", check=False, cwd=home
        )
        run = link.sh(BIN / "flwr", "run", ".", "target", check=False, cwd=app)
    for what, res in (("flwr supernode register rogue.pub target", register),
                      ("flwr run . target", run)):  # fmt: skip
        print(f"\n$ {what}\nexit {res.returncode}\n{res.stdout}{res.stderr}")
    out = register.stdout + register.stderr
    assert register.returncode != 0 and "registered successfully" not in out, out
    assert "404 Not Found" in out and "/v1/control/register-node" in out, out
    out = run.stdout + run.stderr
    assert run.returncode != 0 and "404 Not Found" in out and "/v1/control/start-run" in out

    # Nothing but the Fleet API answers on the gateway, however the path is spelled.
    ca = link.root / "certs" / "ca.crt"
    for path in ("/v1/control/register-node", "/v1/control/start-run", "/v1/control/list-runs",
                 "/v1/runtime/pull-messages", "/v1/fleet/../control/register-node",
                 "/v1/fleet/%2e%2e/control/register-node", "/v1/fleet/..%2Fcontrol/list-nodes",
                 "//v1/control/list-nodes", "/docs", "/openapi.json"):  # fmt: skip
        code = link.sh(
            "curl", "-s", "--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", "--cacert",
            ca, "-X", "POST", "-H", "Content-Type: application/json", "-d", "{}",
            f"https://{link.address}{path}", check=False,
        ).stdout  # fmt: skip
        assert code in ("400", "404"), (path, code)
    # The Fleet API itself answers (a SuperNode's request without a valid signature: 401).
    code = link.sh(
        "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", ca, "-X", "POST",
        "-H", "Content-Type: application/protobuf", "--data-binary", "",
        f"https://{link.address}/v1/fleet/send-node-heartbeat", check=False,
    ).stdout  # fmt: skip
    assert code not in ("404", "000"), code

    nodes_after = link.flwr_json("supernode", "ls", CONN)["nodes"]
    assert sorted(n["node-id"] for n in nodes_after) == sorted(n["node-id"] for n in nodes_before)
    assert {r["run-id"] for r in link.flwr_json("ls", CONN)["runs"]} == runs_before


def test_shop_with_trusted_entities_refuses_an_unsigned_bundle(link, scenario):
    """A shop started with --trusted-entities refuses an app bundle nobody it trusts signed,
    even one the SuperLink accepted (here submitted on the operator's connection): its
    ClientApp never runs. (Flower 1.42 verifies only Flower Hub signatures, so fedcl's own
    locally built bundle is refused the same way: see OPERATOR_GUIDE.md, threat model.)"""
    base = link.root / "trusted"
    base.mkdir()
    link.sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", base / "operator_ed25519")
    pub = (base / "operator_ed25519.pub").read_text().strip()
    (base / "trusted.yaml").write_text(f"fpk_operator: '{pub}'\n")
    shop = link.shop("shop_00", "trusted")
    run_id = ""
    try:
        link.start_shop(shop, own_log=False, extra=("--trusted-entities", base / "trusted.yaml"))
        app = _rogue_app(base / "app")
        sub = link.flwr_json("run", str(app), CONN, timeout=120)
        assert sub["success"], sub
        run_id = str(sub["run-id"])
        link.runs.add(run_id)
        deadline = time.monotonic() + 180
        while "The FAB could not be verified" not in shop.log:
            assert time.monotonic() < deadline, shop.log[-3000:]
            time.sleep(0.5)
        link.wait_no_serverapp(timeout=180)  # it got the shop's error reply and ended
        print("\n" + "\n".join(
            line for line in shop.log.splitlines() if "verif" in line or "Receiving" in line
        ))  # fmt: skip
    finally:
        if shop.pgid is not None:
            link.stop_groups([shop.pgid])
    # The shop answered with an error reply (Flower's FAB verification error), not with loot.
    server_log = link.server_log(run_id)
    print(server_log[-1500:])
    assert "listing" not in server_log and "state-dir" not in server_log
    assert not (shop.state / "PWNED").exists()
    assert not [c for _, _, c in _processes() if "flwr-clientapp" in c and str(shop.port) in c]


def test_server_files_are_private(link, scenario):
    """The deploy scripts' umask 077: the SuperLink's database, logs, pid files and gateway
    files, the keys and the CA key are 600 (directories 700); only the certificates are
    world-readable."""
    superlink = link.root / "superlink"
    assert (superlink / "superlink.db").exists()
    assert _not_private(superlink) == []
    assert _not_private(link.root / "keys") == []
    certs = link.root / "certs"
    assert certs.stat().st_mode & 0o777 == 0o700
    for key in ("ca.key", "server.key"):
        assert (certs / key).stat().st_mode & 0o777 == 0o600, key


def test_federated_run_with_tls_and_node_auth(link, scenario):
    with link.fleet("run") as shops:
        out_dir = link.root / "run" / "out"
        t0 = time.monotonic()
        run_id = link.submit(out_dir)
        status = link.wait_run(run_id, out_dir)
        link.timings["run_submit_to_finished_s"] = time.monotonic() - t0
        assert status == "finished:completed", (status, link.server_log(run_id))

    doc = json.loads((out_dir / "metrics.json").read_text())
    _assert_complete(doc)
    assert doc["resumed_from"] == [] and doc["rejected_replies"] == []
    # What the ServerApp wrote (metrics, checkpoint) and each shop's state are private.
    assert (out_dir / "checkpoint").is_dir()
    assert _not_private(out_dir) == []
    for shop in shops.values():
        assert _not_private(shop.state) == [], shop.name
        assert _not_private(shop.dir) == [], shop.name
    assert _not_private(link.root / "superlink") == []
    rounds = _federated_rounds(out_dir)
    assert [(int(r["window"]), int(r["round"])) for r in rounds] == SCHEDULE
    assert all(r["ok"] == r["shops"] == "3" for r in rounds), rounds
    # The plan's digest, not a prepared dataset's, identifies the data.
    from fedcl.data.plan import Plan

    assert doc["provenance"]["data_sha256"] == Plan.load(link.plan).digest
    # Nobody but the operator's plan command prepared the dataset: each shop read only its
    # own log (all of it, once), the server only the plan.
    assert not list((link.root / "server-cache").rglob("*.parquet"))
    for shop in shops.values():
        assert not list(shop.cache.rglob("*.parquet")), shop.name
        ingest = _load_state(shop.store / "ingest")
        rows = len((link.root / "logs" / f"{shop.name}.csv").read_text().splitlines()) - 1
        assert int(ingest["log"]["rows"]) == rows, shop.name
        assert _generations(shop.store), shop.name
        # ...and froze the model it evaluated after each window for its service.
        from fedcl.serve.recommend import Recommender
        from fedcl.serve.snapshot import read_snapshot, serving_store

        serving = serving_store(shop.store)
        assert serving.generations() == [1, 2], shop.name  # windows 0 and 1
        snap = read_snapshot(serving, 2)
        assert snap.window == 1 and snap.model_name == "MF", shop.name
        (rec,) = Recommender(snap).recommend([str(snap.users[0])], 5)
        assert rec.known and len(rec.lists["discover"]) == 5, shop.name


def test_shop_killed_mid_round_rejoins_from_its_state(link, scenario):
    with link.fleet("kill") as shops:
        victim = shops["shop_02"]
        out_dir = link.root / "kill" / "out"
        run_id = link.submit(out_dir)

        # The kill point: the victim's SuperNode has received its 2nd train message (window
        # 0, round 2; round 1 left it a learner state) and has not sent its reply yet (its
        # ClientApp process needs seconds of imports before it trains and saves).
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            log = victim.log
            got, sent = log.count("Receiving: train message"), log.count("Sending: train message")
            assert sent < 2, "the victim replied to round 2 before it could be killed"
            if got == 2:
                break
            assert time.monotonic() < deadline, "the victim never got round 2"
            time.sleep(0.1)
        assert victim.pgid is not None
        link.stop_groups([victim.pgid], signal.SIGKILL)
        t_kill = time.monotonic()
        assert victim.log.count("Sending: train message") == 1
        gen_at_kill = max(_generations(victim.store))
        ingest_at_kill = _load_state(victim.store / "ingest")
        ingest_gens_at_kill = _generations(victim.store / "ingest")
        assert gen_at_kill >= 1, "the victim had no learner state to resume from"

        # Round 2 completes without the victim once the SuperLink notices it is gone.
        _wait_position(link, out_dir, (0, 3), DEAD_NODE_S)
        link.timings["kill_to_round_done_s"] = time.monotonic() - t_kill

        # Restart it with the same state dir, key and port. The SuperLink refuses the key
        # (exit code 305) while it still counts the node online: retry for a while.
        t0 = time.monotonic()
        while (res := link.start_shop(victim, check=False)).returncode != 0:
            assert "305" in res.stderr, res.stderr
            assert time.monotonic() - t0 < 120, "the restarted shop was refused for 2 min"
            time.sleep(3)
        link.timings["kill_restart_s"] = time.monotonic() - t0

        status = link.wait_run(run_id, out_dir)
        assert status == "finished:completed", (status, link.server_log(run_id))
        trained_after = victim.log.count("Sending: train message")  # log of the restart

    doc = json.loads((out_dir / "metrics.json").read_text())
    _assert_complete(doc)
    rounds = _federated_rounds(out_dir)
    assert [(int(r["window"]), int(r["round"])) for r in rounds] == SCHEDULE
    by_step = {(int(r["window"]), int(r["round"])): r for r in rounds}
    # The round of the kill: sent to 3, aggregated from 2; the SuperLink's error reply for
    # the dead node is rejected.
    killed = by_step[(0, 2)]
    assert (killed["shops"], killed["ok"], killed["rejected"]) == ("3", "2", "1"), killed
    why = [r["why"] for r in doc["rejected_replies"]]
    assert len(why) == 1 and "Node Unavailable" in why[0], doc["rejected_replies"]
    # ... and charged to the dead shop's node, not to the SuperLink (node 1) that sent it.
    assert doc["rejected_replies"][0]["node"] != 1, doc["rejected_replies"]
    assert by_step[(0, 1)]["ok"] == "3"
    # Every other round trained with every shop online; the victim rejoined for at least
    # one (window 1's first round trains with 2 if it was not back yet).
    assert all(r["ok"] == r["shops"] for r in rounds if r is not killed), rounds
    assert trained_after >= 1, rounds
    # It evaluated the last window (it missed window 0's evaluation only if it was down).
    assert all(v is not None for v in doc["per_shop"]["shop_02"]["r_matrix"][-1])

    # It resumed from its state: generations continue (a lost state would restart at 1),
    # the ingest watermark did not move (the whole log was consumed before the kill, no
    # row was read again), no row is learned twice, and its replay buffer survived.
    assert max(_generations(victim.store)) >= gen_at_kill + trained_after
    ingest = _load_state(victim.store / "ingest")
    rows = len((link.root / "logs" / "shop_02.csv").read_text().splitlines()) - 1
    assert int(ingest_at_kill["log"]["rows"]) == int(ingest["log"]["rows"]) == rows
    assert ingest["log"]["sha256"] == ingest_at_kill["log"]["sha256"]
    assert _generations(victim.store / "ingest") == ingest_gens_at_kill
    row_ids = ingest["events"]["row"]
    assert len(set(row_ids.tolist())) == len(row_ids)
    learner = _load_state(victim.store)["learner"]
    assert int(learner["window"]) == 1
    buffer = _find(learner["method"], "buffer")
    assert buffer is not None and len(buffer["users"]) > 0


#: What a Flower 1.42 SuperNode logs when a run stops while it receives one of its messages:
#: it then stays one reply behind until restarted (OPERATOR_GUIDE.md, section 7).
STOP_WHILE_RECEIVING = "status. Ignoring message"


def _received_whole(shop: Shop, n_train: int) -> bool:
    """Whether ``shop`` has received its ``n_train``-th train message, and every message
    it began to receive is received in full (none is in flight)."""
    log = shop.log
    receiving = log.count("Receiving: ")
    done = log.count("Received successfully") + log.count(STOP_WHILE_RECEIVING)
    return log.count("Receiving: train message") >= n_train and receiving == done


def test_serverapp_restarted_resumes_after_its_last_round(link, scenario):
    with link.fleet("resume") as shops:
        out_dir = link.root / "resume" / "out"
        first = link.submit(out_dir)
        _wait_position(link, out_dir, (0, 2), RUN_TIMEOUT_S)  # round 1 checkpointed
        # Stop while the shops train round 2, when none is receiving a message (see
        # STOP_WHILE_RECEIVING); a round trains for seconds, so the stop lands in it.
        deadline = time.monotonic() + 120
        while not all(_received_whole(shop, 2) for shop in shops.values()):
            assert time.monotonic() < deadline, "the shops did not all receive round 2"
            time.sleep(0.1)
        t0 = time.monotonic()
        stop = link.flwr_json("stop", first, CONN)
        assert stop["success"], stop
        link.wait_no_serverapp()
        assert link.status(first) == "finished:stopped"
        link.timings["resume_stop_s"] = time.monotonic() - t0
        stopped_at = _checkpoint_position(link, out_dir)
        assert stopped_at is not None and (0, 2) <= stopped_at < (2, 1), stopped_at
        assert not (out_dir / "metrics.json").exists()
        # The operator's workaround, should the stop have landed while a shop received a
        # message after all: restart that shop (a clean stop and start keeps its state).
        for shop in shops.values():
            if STOP_WHILE_RECEIVING in shop.log:
                print(f"{shop.name} received a message while the run stopped: restarted")
                assert shop.pgid is not None
                link.stop_groups([shop.pgid])
                link.start_shop(shop)

        t0 = time.monotonic()
        second = link.submit(out_dir)
        status = link.wait_run(second, out_dir)
        link.timings["resume_second_run_s"] = time.monotonic() - t0
        assert status == "finished:completed", (status, link.server_log(second))

    doc = json.loads((out_dir / "metrics.json").read_text())
    _assert_complete(doc)
    resumed = doc["resumed_from"]
    assert [(r["window"], r["round"]) for r in resumed] == [stopped_at], resumed
    print(f"stopped after (window, round) {stopped_at}; resumed there")
    rounds = _federated_rounds(out_dir)
    assert [(int(r["window"]), int(r["round"])) for r in rounds] == SCHEDULE
    assert all(r["ok"] == r["shops"] == "3" for r in rounds), rounds
    assert _checkpoint_position(link, out_dir) == (2, 1)  # the end of the schedule

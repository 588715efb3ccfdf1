"""Real Flower deployment on loopback: a SuperLink with TLS and SuperNode authentication,
shop SuperNodes started by ``deploy/start_shop.sh``, a run submitted with ``flwr run``.

Slow (a few minutes): run with ``python -m pytest -m deployment tests/deployment -s``.
Every process is started in its own session (process group) and its group is ended in the
teardown, also on failure; the teardown checks that no process of ours is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
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
OVERRIDES = (
    "data=synthetic data.n_shops=3 data.n_users=150 data.n_items=80 data.n_periods=2 "
    "data.shops.min_users=5 model.dim=8 train.epochs=1 train.batch_size=256 "
    "federated.rounds=2 federated.min_users=1 federated.min_shops=3"
)
RUN_TIMEOUT_S = 600


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _missing_tools() -> list[str]:
    tools = ["openssl", "ssh-keygen", "curl", "setsid"]
    missing = [t for t in tools if shutil.which(t) is None]
    missing += [
        t for t in ("flower-superlink", "flower-supernode", "flwr") if not (BIN / t).exists()
    ]
    return missing


@dataclass
class Link:
    """A running SuperLink, its environment, and every process group started for it."""

    root: Path
    port: int
    env: dict[str, str]
    groups: list[int] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def sh(self, *args: str | Path, timeout: float = 120, check: bool = True, cwd=None):
        """Run a command to completion (in its own session, killed on timeout)."""
        proc = subprocess.Popen(
            [str(a) for a in args], env=self.env, cwd=cwd or self.root, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise AssertionError(f"timed out after {timeout} s: {args}\n{out}\n{err}") from None
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

    def start_shop(self, shop: str, key: Path, *, check: bool = True):
        port = _free_port()
        self.ports.append(port)
        shop_dir = self.root / "shops" / shop
        res = self.sh(
            DEPLOY / "start_shop.sh", "--shop", shop, "--superlink", self.address,
            "--ca", self.root / "certs" / "ca.crt", "--key", key, "--port", str(port),
            "--dir", shop_dir, "--state-dir", self.root / "state" / shop,
            "--cache", self.root / "cache", "--wait", "30",
            timeout=60, check=check,
        )  # fmt: skip
        if (shop_dir / "supernode.pid").exists():
            self.adopt(shop_dir / "supernode.pid")
        return res

    def online(self) -> int:
        nodes = self.flwr_json("supernode", "ls", CONN)["nodes"]
        return sum(n["status"] == "online" for n in nodes)


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _our_processes(markers: list[str]) -> list[str]:
    """Command lines of live processes that mention one of ``markers`` (paths, ports)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        cmd = raw.replace(b"\0", b" ").decode(errors="replace")
        if ("flower" in cmd or "flwr" in cmd) and any(m in cmd for m in markers):
            found.append(f"{entry.name}: {cmd}")
    return found


def _stop_all(link: Link) -> list[str]:
    """SIGTERM every group we started, SIGKILL what is left after 20 s; returns leftovers."""
    for pgid in reversed(link.groups):
        _kill_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_group_alive(g) for g in link.groups):
        time.sleep(0.5)
    for pgid in link.groups:
        if _group_alive(pgid):
            _kill_group(pgid, signal.SIGKILL)
    time.sleep(1)
    markers = [str(link.root)] + [f":{p}" for p in [link.port, *link.ports]]
    left = _our_processes(markers)
    left += [f"process group {g}" for g in link.groups if _group_alive(g)]
    return left


@pytest.fixture(scope="module")
def link(tmp_path_factory):
    if missing := _missing_tools():
        pytest.skip(f"deployment test needs {', '.join(missing)}")
    root = tmp_path_factory.mktemp("deploy")
    port = _free_port()
    env = dict(os.environ)
    env.update(
        FLWR_HOME=str(root / "flwr"),
        FEDCL_CACHE=str(root / "cache"),
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
    )
    (root / "flwr").mkdir()
    (root / "flwr" / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONN}"\n\n[superlink.{CONN}]\n'
        f'address = "127.0.0.1:{port}"\nroot-certificates = "{root / "certs" / "ca.crt"}"\n'
    )
    lk = Link(root=root, port=port, env=env)
    try:
        t0 = time.monotonic()
        lk.sh(DEPLOY / "make_certs.sh", root / "certs")
        lk.sh(
            DEPLOY / "start_server.sh", "--certs", root / "certs", "--port", str(port),
            "--dir", root / "superlink", "--timeout", "60", timeout=90,
        )  # fmt: skip
        lk.adopt(root / "superlink" / "superlink.pid")
        lk.timings["superlink_start_s"] = time.monotonic() - t0
        yield lk
    finally:
        left = _stop_all(lk)
        print("deployment timings (s):", {k: round(v, 1) for k, v in lk.timings.items()})
        assert not left, f"Flower processes left behind: {left}"


def _prepare_data(link: Link) -> None:
    """Prepare the synthetic data once into the shared cache (the nodes then only read it)."""
    code = (
        "from fedcl.config import config_from_run\n"
        "from fedcl.federated.shop import shop_data\n"
        f"print(shop_data(config_from_run({{'overrides': {OVERRIDES!r}}})).shops)\n"
    )
    out = link.sh(sys.executable, "-c", code, timeout=120).stdout
    assert out.strip() == str(SHOPS)


def test_unregistered_shop_is_refused(link):
    key_dir = link.root / "keys"
    link.sh(DEPLOY / "make_node_key.sh", "intruder", key_dir)
    res = link.start_shop("shop_00", key_dir / "intruder", check=False)
    assert res.returncode != 0
    assert "refused" in res.stderr and "305" in res.stderr
    log = (link.root / "shops" / "shop_00" / "supernode.log").read_text()
    assert "Exit Code: 305" in log
    assert not (link.root / "shops" / "shop_00" / "supernode.pid").exists()
    assert link.online() == 0


def test_federated_run_with_tls_and_node_auth(link):
    t0 = time.monotonic()
    _prepare_data(link)
    key_dir = link.root / "keys"
    for shop in SHOPS:
        link.sh(DEPLOY / "make_node_key.sh", shop, key_dir)
    # `flwr supernode register` takes ~5 s each (CLI start-up): register in parallel.
    procs = [
        subprocess.Popen(
            [BIN / "flwr", "supernode", "register", key_dir / f"{s}.pub", CONN, "--name", s],
            env=link.env,
            cwd=link.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )  # fmt: skip
        for s in SHOPS
    ]
    link.groups += [p.pid for p in procs]
    for p in procs:
        out, _ = p.communicate(timeout=120)
        link.groups.remove(p.pid)  # finished: its group id may be reused
        assert p.returncode == 0, out
    link.timings["register_s"] = time.monotonic() - t0

    t0 = time.monotonic()
    with ThreadPoolExecutor(len(SHOPS)) as pool:
        list(pool.map(lambda s: link.start_shop(s, key_dir / s), SHOPS))
    deadline = time.monotonic() + 60
    while link.online() < len(SHOPS):
        assert time.monotonic() < deadline, "shops did not come online"
        time.sleep(1)
    link.timings["shops_online_s"] = time.monotonic() - t0

    out_dir = link.root / "run"
    t0 = time.monotonic()
    run_config = f'overrides="{OVERRIDES}" out-dir="{out_dir}"'
    sub = link.flwr_json("run", ".", CONN, "--run-config", run_config, timeout=120)
    assert sub["success"], sub
    run_id = str(sub["run-id"])
    # The ServerApp writes metrics.json last: watch for it (cheap) and ask the SuperLink
    # (a CLI start costs seconds of CPU on a small machine) only every 30 s and at the end.
    status = ""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    next_ask = time.monotonic() + 30
    while time.monotonic() < deadline:
        done = (out_dir / "metrics.json").exists()
        if done or time.monotonic() > next_ask:
            status = link.flwr_json("ls", CONN, "--run-id", run_id)["runs"][0]["status"]
            if status.startswith("finished"):
                break
            next_ask = time.monotonic() + (2 if done else 30)
        time.sleep(1)
    link.timings["run_s"] = time.monotonic() - t0
    assert status == "finished:completed", status

    doc = json.loads((out_dir / "metrics.json").read_text())
    assert doc["mode"] == "federated"
    r = doc["r_matrix"]
    assert len(r) == 2 and all(len(row) == 2 for row in r)
    assert all(v is not None for row in r for v in row)
    # Each shop kept its learning state on its own side.
    for shop in SHOPS:
        assert list((link.root / "state" / shop).rglob("state-*.npz")), shop

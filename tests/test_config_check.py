"""The whole config is checked once, at start, before any data load or Ray/Flower process:
a bad value anywhere ends in one line naming the key; a refused rerun changes nothing."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fedcl.federated.simulation
import fedcl.simulate
from fedcl.config import config_from_run, load_config
from fedcl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

#: (override(s), the key the message must name): one or more bad values per config group.
BAD = [
    # data
    (["data=synthetic", "data.windows.test_fraction=1.5"], "data.windows.test_fraction"),
    (["data=synthetic", "data.shops.min_users=0"], "data.shops.min_users"),
    (["+data.shops.bogus=1"], "data.shops.bogus"),
    # model
    (["model.dim=0"], "model.dim"),
    (["model=sasrec", "model.n_heads=3"], "model.n_heads"),
    (["+model.bogus=1"], "model.bogus"),
    # continual
    (["continual.replay.policy=reservior"], "continual.replay.policy"),
    (["train.optimizer=sparse_adam", "continual=ewc"], "train.optimizer"),
    (["continual.ewc.gamma=2"], "continual.ewc.gamma"),
    # strategy
    (["strategy.name=fedfoo"], "strategy.name"),
    (["strategy.fraction_train=0"], "strategy.fraction_train"),
    (["strategy=fedadam", "+strategy.kwargs.etaa=0.1"], "strategy.kwargs.etaa"),
    # federated
    (["federated.rounds=0"], "federated.rounds"),
    (["federated.rounds=-1"], "federated.rounds"),
    (["federated.min_users=0"], "federated.min_users"),
    (["federated.round_timeout_s=0"], "federated.round_timeout_s"),
    # train
    (["train.epochs=0"], "train.epochs"),
    (["train.epochs=-3"], "train.epochs"),
    (["train.optimizer=adamm"], "train.optimizer"),
    # eval
    (["eval.ks=[5]"], "eval.ks"),
    (["eval.metric=ndcg@7"], "eval.metric"),
    (["eval.val_fraction=0"], "eval.val_fraction"),
    # top level
    (["mode=fedrated"], "mode"),
    (["device=gpu"], "device"),
    (["seed=-1"], "seed"),
    (["threads=-1"], "threads"),
    (["+bogus=1"], "bogus"),
]


@pytest.fixture
def nothing_may_start(monkeypatch):
    """Fail the test if the run reaches a data load or the Flower simulation."""

    def forbidden(*args, **kwargs):
        pytest.fail("reached a data load or Ray/Flower before the config was refused")

    monkeypatch.setattr(fedcl.federated.simulation, "run_in_simulation", forbidden)
    monkeypatch.setattr(fedcl.simulate, "prepare_cached", forbidden)


@pytest.mark.parametrize(("overrides", "key"), BAD, ids=[" ".join(o) for o, _ in BAD])
def test_a_bad_value_is_refused_at_start_in_one_line(tmp_path, nothing_may_start, overrides, key):
    with pytest.raises(ConfigError) as err:
        cfg, yaml = load_config(["mode=federated", *overrides])  # what simulate's main does
        fedcl.simulate.run(cfg, yaml, tmp_path)

    message = str(err.value)
    assert key in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_the_default_config_passes():
    load_config([])


def test_the_flower_apps_check_the_same_way():
    with pytest.raises(ConfigError, match="federated.rounds"):
        config_from_run({"overrides": "data=synthetic federated.rounds=0"})


def test_plan_checks_the_same_way(tmp_path, capsys):
    from fedcl.plan import main

    with pytest.raises(SystemExit) as exit_:
        main(["--out", str(tmp_path / "plan"), "data=synthetic", "train.epochs=0"])

    assert exit_.value.code == 2
    assert "train.epochs" in capsys.readouterr().err
    assert not (tmp_path / "plan").exists()


def _python(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    ("entry", "override", "line"),
    [
        ("fedcl.simulate", "federated.rounds=0", "error: federated.rounds must be >= 1; got 0"),
        ("fedcl.prepare", "train.epochs=-3", "error: train.epochs must be >= 1; got -3"),
        ("fedcl.simulate", "model.optimizer=sparse_adam", "model.optimizer"),  # Hydra's refusal
    ],
)
def test_the_command_ends_in_one_line_with_status_2(tmp_path, entry, override, line):
    start = time.perf_counter()

    done = _python("-m", entry, override, f"hydra.run.dir={tmp_path / 'run'}")

    assert done.returncode == 2, done.stderr
    [only] = done.stderr.strip().splitlines()
    assert only.startswith("error: ") and line in only
    assert time.perf_counter() - start < 20
    assert list(tmp_path.iterdir()) == []  # no run directory, nothing in it


def _files(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _interrupt_after_first_round(overrides: list[str]) -> tuple[int, str, float]:
    """Run ``python -m fedcl.simulate`` and send one SIGINT after its first round's log line;
    returns the exit status, stderr and the seconds from the signal to the exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedcl.simulate", *overrides],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        for line in proc.stdout:  # fedcl's log lines (Hydra's console handler: stdout)
            if "window " in line and "round " in line:
                break
        sent = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, stderr, time.perf_counter() - sent


@pytest.mark.simulation
def test_ctrl_c_stops_the_run_and_a_changed_rerun_is_refused_unchanged(tmp_path, tiny_overrides):
    out = tmp_path / "run"
    # Enough rounds that the run is still going when the Ctrl-C comes.
    run = [*tiny_overrides, "mode=federated", "federated.min_users=1", "federated.rounds=30"]

    status, stderr, seconds = _interrupt_after_first_round([*run, f"hydra.run.dir={out}"])

    assert status == 130, stderr[-3000:]
    # The last line (Flower may have warned before: its run_simulation is deprecated).
    assert stderr.strip().splitlines()[-1] == (
        "interrupted; rerun the same command (same hydra.run.dir) to resume from "
        f"{out / 'checkpoint'}"
    )
    assert "Traceback" not in stderr
    assert seconds < 20
    assert (out / "checkpoint").is_dir() and (out / ".hydra" / "config.yaml").is_file()

    before = _files(out)
    done = _python("-m", "fedcl.simulate", *run, "train.epochs=2", f"hydra.run.dir={out}")

    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "written by another configuration" in line and "train.epochs" in line
    assert _files(out) == before

"""The server checkpoint: a server stopped at any step resumes to the results of a run that
was never stopped; another configuration's checkpoint is refused; a corrupt one falls back."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, MessageType
from flwr.serverapp.strategy import FedAdam, FedAvgM

from fedcl.errors import ConfigError
from fedcl.federated.checkpoint import (
    ServerCheckpoint,
    config_fingerprint,
    load_strategy_state,
    strategy_state,
)
from fedcl.federated.local_grid import LocalGrid
from fedcl.federated.server_loop import run_federated, write_report
from fedcl.shop.store import CorruptState, GenerationStore

N_SHOPS = 3
#: Steps of a 2-window x 2-round run, one grid call each: the untrained baseline, then
#: train w0r1, train w0r2, evaluate w0, train w1r1, train w1r2, evaluate w1.
STEPS = ["baseline", "w0r1", "w0r2", "eval0", "w1r1", "w1r2", "eval1"]
TIMINGS = ("round_s", "train_s", "train_cpu_s", "eval_s")  # measured times in the rounds log


pytestmark = pytest.mark.usefixtures("server_identity")


class Crash(Exception):
    """The server process dies."""


class CrashingGrid(LocalGrid):
    """Dies when the server makes its ``at``-th grid call (1 = the baseline evaluation),
    before any shop sees that call's messages."""

    def __init__(self, cfg, n_shops: int, at: int) -> None:
        super().__init__(cfg, n_shops)
        self.calls, self.at = 0, at

    def send_and_receive(self, messages, *, timeout=None):
        self.calls += 1
        if self.calls == self.at:
            raise Crash(f"stopped at step {STEPS[self.at - 1]}")
        return super().send_and_receive(messages, timeout=timeout)


def _cfg(tiny_cfg, tmp_path, name: str, *overrides: str):
    """2 windows x 2 rounds; 2 of 3 shops sampled per round, so the `random` state matters.
    Each run gets its own shop state directory."""
    cfg = tiny_cfg(
        "data.n_periods=2", "federated.rounds=2", "strategy.fraction_train=0.67", *overrides
    )
    fed = dataclasses.replace(cfg.federated, state_dir=str(tmp_path / name / "shops"))
    return dataclasses.replace(cfg, federated=fed)


def _log(result) -> list[dict]:
    rows = [dataclasses.asdict(r) for r in result.rounds]
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in rows]


def _assert_same_state(a, b) -> None:
    """Two snapshots hold identical parameters and strategy arrays, bit for bit."""
    assert a.shared.keys() == b.shared.keys()
    for k in a.shared:
        assert torch.equal(a.shared[k], b.shared[k]), k
    flat_a, flat_b = _arrays(a.strategy), _arrays(b.strategy)
    assert flat_a.keys() == flat_b.keys()
    for k in flat_a:
        assert np.array_equal(flat_a[k], flat_b[k]), k


def _arrays(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_arrays(v, f"{prefix}{k}/"))
        elif isinstance(v, np.ndarray):
            out[prefix + k] = v
    return out


@pytest.mark.parametrize(
    ("strategy", "crash_at", "resume_at"),
    [
        ("fedavg", 3, "resuming at window 0 round 2"),
        ("fedavg", 4, "resuming at window 0 evaluation"),
        ("fedavg", 5, "resuming at window 1 round 1"),  # the catalogue grows after resuming
        ("fedadam", 6, "resuming at window 1 round 2"),  # moments of 3 rounds restored
    ],
)
def test_resumed_run_equals_uninterrupted_run(
    tiny_cfg, tmp_path, caplog, strategy, crash_at, resume_at
):
    whole = _cfg(tiny_cfg, tmp_path, "whole", f"strategy={strategy}")
    broken = _cfg(tiny_cfg, tmp_path, "broken", f"strategy={strategy}")
    expected = run_federated(LocalGrid(whole, N_SHOPS), whole, tmp_path / "whole" / "ckpt")
    ckpt = tmp_path / "broken" / "ckpt"
    with pytest.raises(Crash):
        run_federated(CrashingGrid(broken, N_SHOPS, crash_at), broken, ckpt)

    with caplog.at_level(logging.INFO, logger="fedcl"):
        resumed = run_federated(LocalGrid(broken, N_SHOPS), broken, ckpt)

    assert f"{resume_at} from {ckpt}" in caplog.text
    # Bitwise equal, not just close: the resumed server restores the exact bytes of the
    # parameters, the strategy's arrays and the generator states, so it samples the same
    # shops in the same order and every sum runs in the same order as without the crash.
    _assert_same_state(
        ServerCheckpoint(ckpt, broken).load(),
        ServerCheckpoint(tmp_path / "whole" / "ckpt", whole).load(),
    )
    assert _log(resumed) == _log(expected)
    units = [r.unit for r in resumed.rounds]
    assert units.count("federated") == 4 and units.count("evaluate") == 3  # baseline + 2
    assert resumed.cells == expected.cells and len(resumed.cells["new"]) == 2
    assert resumed.baseline == expected.baseline
    for key in ("bytes_up", "bytes_down", "rejected"):
        assert getattr(resumed, key) == getattr(expected, key), key
    assert len(resumed.resumed_from) == 1 and expected.resumed_from == []


def test_fedadam_moments_are_restored(tiny_cfg, tmp_path):
    cfg = _cfg(tiny_cfg, tmp_path, "run", "strategy=fedadam")
    ckpt = tmp_path / "run" / "ckpt"
    with pytest.raises(Crash):
        run_federated(CrashingGrid(cfg, N_SHOPS, 4), cfg, ckpt)  # after 2 rounds

    saved = ServerCheckpoint(ckpt, cfg).load().strategy

    assert {"m_t", "v_t", "current_arrays"} <= saved.keys()
    m_t = _arrays(saved["m_t"])
    assert m_t and any(np.abs(v).sum() > 0 for v in m_t.values())  # real momentum, not zeros


def test_a_finished_run_resumes_to_its_report_without_training(tiny_cfg, tmp_path):
    cfg = _cfg(tiny_cfg, tmp_path, "run")
    ckpt = tmp_path / "run" / "ckpt"
    first = run_federated(LocalGrid(cfg, N_SHOPS), cfg, ckpt)
    grid = LocalGrid(cfg, N_SHOPS)

    again = run_federated(grid, cfg, ckpt)

    assert grid.sent == []
    assert again.cells == first.cells and _log(again) == _log(first)
    doc = write_report(cfg, again, tmp_path / "report", "mode: federated\n", 1.0)
    assert doc["resumed_from"] == [{"window": 2, "round": 1, "server_round": 4}]
    assert len(doc["r_matrix"]) == 2


def test_checkpoint_of_another_configuration_is_refused(tiny_cfg, tmp_path):
    old = _cfg(tiny_cfg, tmp_path, "run")
    new = _cfg(tiny_cfg, tmp_path, "run", "federated.rounds=3")
    ckpt = tmp_path / "run" / "ckpt"
    with pytest.raises(Crash):
        run_federated(CrashingGrid(old, N_SHOPS, 2), old, ckpt)  # checkpointed the baseline
    grid = LocalGrid(new, N_SHOPS)

    with pytest.raises(ConfigError) as err:
        run_federated(grid, new, ckpt)

    message = str(err.value)
    assert str(ckpt) in message and "federated.rounds" in message
    assert "federated.resume=false" in message
    assert grid.sent == []  # refused before anything was sent


def test_resume_false_starts_over(tiny_cfg, tmp_path):
    old = _cfg(tiny_cfg, tmp_path, "run")
    ckpt = tmp_path / "run" / "ckpt"
    with pytest.raises(Crash):
        run_federated(CrashingGrid(old, N_SHOPS, 3), old, ckpt)
    new = _cfg(tiny_cfg, tmp_path, "run", "federated.rounds=3", "federated.resume=false")
    grid = CrashingGrid(new, N_SHOPS, 2)

    with pytest.raises(Crash):  # no ConfigError: it ran the baseline again
        run_federated(grid, new, ckpt)

    assert {m.metadata.message_type for m in grid.sent} == {MessageType.EVALUATE}
    assert ServerCheckpoint(ckpt, new).load().server_round == 0  # its own checkpoint now


def test_volatile_settings_do_not_change_the_fingerprint(tiny_cfg, tmp_path):
    base = config_fingerprint(_cfg(tiny_cfg, tmp_path, "a"))
    timeouts = _cfg(tiny_cfg, tmp_path, "a", "federated.round_timeout_s=5", "note=again")
    rounds = _cfg(tiny_cfg, tmp_path, "a", "federated.rounds=3")

    assert config_fingerprint(timeouts) == base
    assert config_fingerprint(rounds) != base
    assert base["federated.rounds"] == 2


def test_corrupt_newest_generation_falls_back_to_the_previous(tiny_cfg, tmp_path, caplog):
    cfg = _cfg(tiny_cfg, tmp_path, "run")
    ckpt = tmp_path / "run" / "ckpt"
    with pytest.raises(Crash):
        run_federated(CrashingGrid(cfg, N_SHOPS, 4), cfg, ckpt)  # saved after w0r1, w0r2
    newest = max(ckpt.glob("state-*.npz"))
    payload = bytearray(newest.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    newest.write_bytes(bytes(payload))

    snap = ServerCheckpoint(ckpt, cfg).load()
    with caplog.at_level(logging.INFO, logger="fedcl"):
        resumed = run_federated(LocalGrid(cfg, N_SHOPS), cfg, ckpt)

    assert (snap.window, snap.round, snap.server_round) == (0, 2, 1)  # after w0r1
    assert f"resuming at window 0 round 2 from {ckpt}" in caplog.text
    # Round w0r2 ran again (the shops trained it twice); the schedule is still complete.
    assert [(r.window, r.round) for r in resumed.rounds if r.unit == "federated"] == [
        (0, 1), (0, 2), (1, 1), (1, 2),
    ]  # fmt: skip
    assert len(resumed.cells["new"]) == 2


@pytest.mark.parametrize("cls", [FedAvgM, FedAdam])
def test_strategy_state_round_trips_through_the_store(cls, tmp_path):
    """Every kind of state attribute: ArrayRecord, list and dict of arrays, None, scalars."""
    kwargs = {"server_momentum": 0.9} if cls is FedAvgM else {}
    strategy = cls(**kwargs)
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2, np.float32)}
    strategy.current_arrays = ArrayRecord({k: Array(v) for k, v in arrays.items()})
    if cls is FedAvgM:
        strategy.momentum_vector = [v * 0.5 for v in arrays.values()]
    else:
        strategy.current_arrays = dict(arrays)
        strategy.m_t = {k: v + 1 for k, v in arrays.items()}
        # v_t stays None
    store = GenerationStore(tmp_path)
    store.save({"strategy": strategy_state(strategy)})
    fresh = cls(**kwargs)

    load_strategy_state(fresh, store.load()["strategy"])

    if cls is FedAvgM:
        assert fresh.server_momentum == 0.9
        assert isinstance(fresh.current_arrays, ArrayRecord)
        assert list(fresh.current_arrays.keys()) == ["w", "b"]  # order kept: momentum zips it
        for a, b in zip(fresh.current_arrays.to_numpy_ndarrays(), arrays.values(), strict=True):
            assert np.array_equal(a, b) and a.dtype == b.dtype
        assert all(
            np.array_equal(a, b)
            for a, b in zip(fresh.momentum_vector, strategy.momentum_vector, strict=True)
        )
    else:
        assert fresh.v_t is None
        assert fresh.m_t.keys() == strategy.m_t.keys()
        assert all(np.array_equal(fresh.m_t[k], strategy.m_t[k]) for k in arrays)
        assert all(np.array_equal(fresh.current_arrays[k], arrays[k]) for k in arrays)


def test_a_checkpoint_with_no_good_generation_stops_the_server(tiny_cfg, tmp_path):
    cfg = _cfg(tiny_cfg, tmp_path, "run")
    ckpt = tmp_path / "run" / "ckpt"
    with pytest.raises(Crash):
        run_federated(CrashingGrid(cfg, N_SHOPS, 4), cfg, ckpt)
    for gen in ckpt.glob("state-*.npz"):
        gen.write_bytes(gen.read_bytes()[:-10] + b"x" * 10)
    grid = LocalGrid(cfg, N_SHOPS)

    with pytest.raises(CorruptState, match=r"server checkpoint.*reset_corrupt_state=true"):
        run_federated(grid, cfg, ckpt)

    assert grid.sent == []  # stopped before asking any shop anything


def test_the_explicit_reset_starts_the_server_over(tiny_cfg, tmp_path):
    cfg = _cfg(tiny_cfg, tmp_path, "run", "federated.reset_corrupt_state=true")
    ckpt = tmp_path / "run" / "ckpt"
    with pytest.raises(Crash):
        run_federated(CrashingGrid(cfg, N_SHOPS, 4), cfg, ckpt)
    for gen in ckpt.glob("state-*.npz"):
        gen.write_bytes(gen.read_bytes()[:-10] + b"x" * 10)
    fresh = _cfg(tiny_cfg, tmp_path, "fresh", "federated.reset_corrupt_state=true")

    result = run_federated(LocalGrid(fresh, N_SHOPS), cfg, ckpt)

    assert result.resumed_from == [] and len(result.cells["new"]) == 2
    assert len(list(ckpt.glob("corrupt-*/state-*.npz"))) >= 1


@pytest.mark.parametrize(
    ("crash_at", "resume_at"),
    [(3, "resuming at window 0 evaluation"), (4, "resuming at window 1 round 1")],
)
def test_a_statistics_model_resumes_to_the_same_weights(
    tiny_cfg, tiny_overrides, tmp_path, caplog, crash_at, resume_at
):
    tiny_overrides.remove("model.dim=8")  # an MF setting
    model = ("model=ease", "continual=naive")
    whole, broken = (_cfg(tiny_cfg, tmp_path, name, *model) for name in ("whole", "broken"))
    expected = run_federated(LocalGrid(whole, N_SHOPS), whole, tmp_path / "whole" / "ckpt")
    ckpt = tmp_path / "broken" / "ckpt"
    with pytest.raises(Crash):
        run_federated(CrashingGrid(broken, N_SHOPS, crash_at), broken, ckpt)

    with caplog.at_level(logging.INFO, logger="fedcl"):
        resumed = run_federated(LocalGrid(broken, N_SHOPS), broken, ckpt)

    assert f"{resume_at} from {ckpt}" in caplog.text
    _assert_same_state(
        ServerCheckpoint(ckpt, broken).load(),
        ServerCheckpoint(tmp_path / "whole" / "ckpt", whole).load(),
    )
    units = [r.unit for r in resumed.rounds]
    assert units.count("federated") == 2  # one statistics round a window, not federated.rounds
    assert resumed.cells == expected.cells and resumed.forward == expected.forward

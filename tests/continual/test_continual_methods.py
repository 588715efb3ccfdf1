"""Replay, EWC, distillation, joint training and their composition, on a tiny MF."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from continual_fixtures import a_batch, events, flatten_state, savez_round_trip, stream

from fedcl.continual.buffer import ReplayBuffer
from fedcl.continual.compose import Continual
from fedcl.continual.config import (
    ContinualConfig,
    DistillConfig,
    EWCConfig,
    ReplayConfig,
    build_continual,
)
from fedcl.continual.distill import Distill
from fedcl.continual.ewc import EWC
from fedcl.continual.herding import item_features
from fedcl.continual.joint import Joint, JointConfig
from fedcl.continual.replay import Replay
from fedcl.errors import ConfigError
from fedcl.models.mf import MF
from fedcl.models.neumf import NeuMF
from fedcl.models.pop import Pop
from fedcl.models.sasrec import SASRec
from fedcl.train import TrainConfig, train_window

N_USERS, N_ITEMS = 12, 20


def mf(seed: int = 0) -> MF:
    torch.manual_seed(seed)
    return MF(N_USERS, N_ITEMS, dim=8, init_std=0.3)


def run(method, model, windows, epochs: int = 1) -> None:
    """The runner protocol of fedcl/continual/base.py, windows in order."""
    gen = torch.Generator().manual_seed(0)
    for t, new in enumerate(windows):
        model.observe(new)
        data = method.training_data(model, new, t)
        train_window(model, data, TrainConfig(epochs=epochs, batch_size=32), gen, method.penalty)
        method.after_window(model, new, t)


def sorted_events(data) -> list[tuple[int, int, int]]:
    return sorted(zip(data.users.tolist(), data.items.tolist(), data.times.tolist(), strict=True))


# --- replay ---------------------------------------------------------------------------
def test_replay_mixes_the_buffer_into_the_new_events_and_stores_only_new_ones():
    w0, w1 = stream([60, 40], N_USERS, N_ITEMS)
    replay = Replay(ReplayBuffer("reservoir"), budget=10)
    model = mf()
    replay.after_window(model, w0, 0)
    data = replay.training_data(model, w1, 1)
    assert len(data) == 50 and (data.n_users, data.n_items) == (N_USERS, N_ITEMS)
    assert data.times.tolist() == sorted(data.times.tolist())
    assert set(w1.times.tolist()) <= set(data.times.tolist())
    replay.after_window(model, w1, 1)  # offered w1 only, not the replayed events
    assert replay.buffer.seen == 100 and len(replay.buffer) == 10
    half = Replay(ReplayBuffer("reservoir"), budget=10, mix=0.5)
    half.after_window(model, w0, 0)
    assert len(half.training_data(model, w1, 1)) == 45
    more = Replay(ReplayBuffer("reservoir"), budget=10, mix=2.5)  # 2 copies + a half
    more.after_window(model, w0, 0)
    data = more.training_data(model, w1, 1)
    assert len(data) == 65 and data.times.tolist() == sorted(data.times.tolist())
    pairs = Counter(zip(data.users.tolist(), data.items.tolist(), data.times.tolist(), strict=True))
    ev = more.buffer.events()
    buffered = set(zip(ev.users.tolist(), ev.items.tolist(), ev.times.tolist(), strict=True))
    assert all(pairs[e] >= 2 for e in buffered)  # every buffered event at least twice
    with pytest.raises(ValueError, match="mix"):
        Replay(ReplayBuffer("reservoir"), mix=11.0)


def test_replay_budget_fraction_grows_with_the_stream():
    replay = Replay(ReplayBuffer("window"), budget_fraction=0.2)
    for t, new in enumerate(stream([50, 50, 100], N_USERS, N_ITEMS)):
        replay.after_window(mf(), new, t)
        assert len(replay.buffer) == round(0.2 * replay.buffer.seen)
    assert replay.memory_bytes() == 40 * 40


# --- EWC ------------------------------------------------------------------------------
def test_ewc_penalty_is_zero_at_its_anchor_and_positive_away_from_it():
    (w0,) = stream([80], N_USERS, N_ITEMS)
    model, ewc = mf(), EWC(lam=10.0, fisher_batches=4, fisher_batch_size=16)
    batch = a_batch(model, w0)
    assert ewc.penalty(model, batch) is None  # nothing anchored yet
    ewc.after_window(model, w0, 0)
    assert set(ewc.anchor) == {"item_emb.weight", "item_bias.weight"}  # shared only
    assert ewc.penalty(model, batch).item() == 0.0
    with torch.no_grad():
        model.user_emb.weight.add_(1.0)  # private: not penalised
    assert ewc.penalty(model, batch).item() == 0.0
    with torch.no_grad():
        model.item_emb.weight.add_(0.1)
    away = ewc.penalty(model, batch)
    assert away.item() > 0
    away.backward()
    assert model.item_emb.weight.grad.abs().sum() > 0


def test_ewc_penalises_only_the_anchored_rows_of_a_grown_table():
    (w0,) = stream([80], N_USERS, N_ITEMS)
    model, ewc = mf(), EWC(lam=10.0, fisher_batches=4, fisher_batch_size=16)
    ewc.after_window(model, w0, 0)
    model.grow(N_USERS + 3, N_ITEMS + 5)
    batch = a_batch(model, w0)
    assert ewc.penalty(model, batch).item() == 0.0
    with torch.no_grad():
        model.item_emb.weight[N_ITEMS:].add_(1.0)  # new rows: no anchor
    assert ewc.penalty(model, batch).item() == 0.0
    with torch.no_grad():
        model.item_emb.weight[:N_ITEMS].add_(0.1)
    assert ewc.penalty(model, batch).item() > 0


def test_ewc_fisher_is_combined_online():
    w0, w1 = stream([80, 80], N_USERS, N_ITEMS)
    model = mf()
    online, fresh = (EWC(1.0, gamma=g, fisher_batches=4, fisher_batch_size=16) for g in (0.9, 0))
    online.after_window(model, w0, 0)
    first = {k: v.clone() for k, v in online.fisher.items()}
    model.grow(N_USERS, N_ITEMS + 4)
    online.after_window(model, w1, 1)
    fresh.after_window(model, w1, 1)  # same seed and window: the same batches
    f, old = online.fisher["item_emb.weight"], first["item_emb.weight"]
    assert f.shape == (N_ITEMS + 4, 8) and old.abs().sum() > 0
    expected = fresh.fisher["item_emb.weight"].clone()
    expected[:N_ITEMS] += 0.9 * old
    torch.testing.assert_close(f, expected)


# --- distillation ---------------------------------------------------------------------
def test_distill_loss_is_zero_when_the_model_equals_its_snapshot():
    (w0,) = stream([80], N_USERS, N_ITEMS)
    model, distill = mf(), Distill(weight=1.0, top_n=5)
    batch = a_batch(model, w0)
    assert distill.penalty(model, batch) is None  # no snapshot yet
    distill.after_window(model, w0, 0)
    assert distill.items.shape == (len(np.unique(w0.users.numpy())), 5)
    assert abs(distill.penalty(model, batch).item()) < 1e-7
    with torch.no_grad():
        model.item_emb.weight.mul_(-1.0)  # reverses every ranking
    moved = distill.penalty(model, batch)
    assert moved.item() > 1e-3
    moved.backward()
    assert model.item_emb.weight.grad.abs().sum() > 0


def test_distill_skips_users_without_a_snapshot():
    model, distill = mf(), Distill(weight=1.0, top_n=5)
    distill.after_window(model, events([0, 1], [2, 3], [0, 1], N_USERS, N_ITEMS), 0)
    others = events([5, 6, 7], [1, 2, 3], [2, 3, 4], N_USERS, N_ITEMS)
    assert distill.penalty(model, a_batch(model, others)) is None


# --- herding features ------------------------------------------------------------------
def test_item_features_come_from_the_shared_item_tables():
    f = item_features(SASRec(N_USERS, N_ITEMS, dim=8))  # padding row 0 dropped
    assert f.shape == (N_ITEMS, 8)
    assert np.allclose(np.linalg.norm(f, axis=1), 1.0)
    assert item_features(NeuMF(N_USERS, N_ITEMS, dim_gmf=4, dim_mlp=6)).shape == (N_ITEMS, 10)
    with pytest.raises(ConfigError, match="herding"):
        item_features(Pop(N_USERS, N_ITEMS))


# --- joint ----------------------------------------------------------------------------
def test_joint_trains_on_every_event_seen_from_a_fresh_model():
    windows = stream([30, 20, 25], N_USERS, N_ITEMS)
    joint, model = Joint(), mf()
    assert joint.reset_model
    for t, new in enumerate(windows):
        data = joint.training_data(model, new, t)
        joint.after_window(model, new, t)
    everything = windows[0].concat(windows[1]).concat(windows[2])
    assert sorted_events(data) == sorted_events(everything)
    assert data.times.tolist() == sorted(data.times.tolist())
    assert joint.memory_bytes() == 75 * 3 * 8


# --- composition and persistence -------------------------------------------------------
def test_replay_plus_distill_gives_both_effects():
    cfg = ContinualConfig(
        replay=ReplayConfig(enabled=True, budget=20),
        distill=DistillConfig(enabled=True, top_n=5, users="replay"),
    )
    method, model = build_continual(cfg, seed=1), mf()
    windows = stream([60, 40, 40], N_USERS, N_ITEMS)
    run(method, model, windows[:2])
    replay, distill = method.parts["replay"], method.parts["distill"]
    assert list(method.parts) == ["replay", "distill"] and not method.reset_model
    assert np.array_equal(distill.users, np.unique(replay.buffer.users))  # replayed users
    assert len(method.training_data(model, windows[2], 2)) == 40 + 20  # replay's effect
    batch = a_batch(model, replay.buffer.events(N_USERS, N_ITEMS))
    assert abs(method.penalty(model, batch).item()) < 1e-6
    with torch.no_grad():
        model.item_emb.weight.mul_(-1.0)
    assert method.penalty(model, batch).item() > 1e-3  # distillation's effect
    assert set(method.state_dict()) == {"replay", "distill"}
    assert method.memory_bytes() == replay.memory_bytes() + distill.memory_bytes() > 0


def test_naive_has_no_parts_and_a_zero_penalty():
    method, model = build_continual(ContinualConfig()), mf()
    (w0,) = stream([30], N_USERS, N_ITEMS)
    assert method.training_data(model, w0, 0) is w0
    assert method.penalty(model, a_batch(model, w0)).item() == 0.0
    assert method.state_dict() == {} and method.memory_bytes() == 0
    assert build_continual(ContinualConfig(joint=JointConfig(enabled=True))).reset_model


@pytest.mark.parametrize("policy", ["reservoir", "herding"])
def test_composed_state_restores_exactly_through_savez(policy):
    cfg = ContinualConfig(
        replay=ReplayConfig(enabled=True, budget=25, mix=0.6, policy=policy),
        ewc=EWCConfig(enabled=True, lam=5.0, fisher_batches=2, fisher_batch_size=16),
        distill=DistillConfig(enabled=True, top_n=4),
    )
    windows = stream([50, 50, 50], N_USERS, N_ITEMS)
    method, model = build_continual(cfg, seed=3), mf()
    run(method, model, windows[:2])
    restored = build_continual(cfg, seed=3)
    restored.load_state_dict(savez_round_trip(method.state_dict()))
    a = method.training_data(model, windows[2], 2)
    b = restored.training_data(model, windows[2], 2)
    assert sorted_events(a) == sorted_events(b) and len(a) == 50 + 15
    batch = a_batch(model, a)
    with torch.no_grad():
        model.item_emb.weight.add_(0.05)
    assert method.penalty(model, batch).item() == restored.penalty(model, batch).item() > 0
    for m in (method, restored):
        m.after_window(model, windows[2], 2)
    sa, sb = flatten_state(method.state_dict()), flatten_state(restored.state_dict())
    assert sa.keys() == sb.keys() and len(sa) > 10
    for key in sa:
        assert np.array_equal(sa[key], sb[key]), key
    assert method.memory_bytes() == restored.memory_bytes()


def test_loading_a_state_of_another_composition_fails():
    with pytest.raises(KeyError, match="ewc"):
        Continual({}).load_state_dict({"ewc": {}})

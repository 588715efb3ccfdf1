"""Simulated attacks (research option ``federated.attack``) do what they say, only in
simulation and only for the first shops; on the in-process grid a sign-flipping shop ruins
plain FedAvg without bounds, and the default bounds hold."""

from __future__ import annotations

import pytest
import torch

from fedcl.federated.attacks import attack, is_attacker, promote
from fedcl.federated.config import AttackConfig
from fedcl.federated.local_grid import LocalGrid
from fedcl.federated.server_loop import run_federated, write_report
from fedcl.run_data import run_data
from fedcl.shop.replies import TrainReply

SENT = {"item_emb.weight": torch.ones(6, 3)}
TRAINED = {"item_emb.weight": torch.ones(6, 3) + 0.1 * torch.arange(18.0).reshape(6, 3)}


def _reply() -> TrainReply:
    return TrainReply("shop_00", dict(TRAINED), 40, 0.5, 10, 1.0, 1.0)


def _update(reply: TrainReply) -> torch.Tensor:
    return reply.arrays["item_emb.weight"] - SENT["item_emb.weight"]


@pytest.mark.parametrize("kind,factor", [("scale", 100.0), ("sign_flip", -10.0)])
def test_scale_and_sign_flip_multiply_the_update(kind, factor):
    cfg = AttackConfig(kind=kind, shops=1, factor=abs(factor))

    out = attack(_reply(), SENT, cfg)

    assert torch.allclose(_update(out), factor * _update(_reply()))


def test_noise_has_factor_times_the_updates_norm():
    out = attack(_reply(), SENT, AttackConfig(kind="noise", shops=1, factor=100.0), seed=3)

    assert float(_update(out).norm()) == pytest.approx(
        100 * float(_update(_reply()).norm()), rel=1e-4
    )


def test_weight_claims_factor_examples():
    out = attack(_reply(), SENT, AttackConfig(kind="weight", shops=1, factor=9.9e7))

    assert out.num_examples == 99_000_000 and out.arrays == _reply().arrays


def test_promote_moves_only_the_target_item():
    arrays = {"item_emb.weight": TRAINED["item_emb.weight"], "item_bias.weight": torch.zeros(6, 1)}

    out = promote(arrays, item=2, factor=10.0)

    emb = out["item_emb.weight"]
    assert torch.equal(emb[[0, 1, 3, 4, 5]], arrays["item_emb.weight"][[0, 1, 3, 4, 5]])
    assert emb[2].norm() > 5 * arrays["item_emb.weight"].norm(dim=1).mean()
    assert out["item_bias.weight"][2] >= out["item_bias.weight"].max()


def test_only_the_first_shops_of_a_simulation_attack():
    cfg = AttackConfig(kind="scale", shops=2)

    assert is_attacker(cfg, {"partition-id": 1}) and not is_attacker(cfg, {"partition-id": 2})
    assert not is_attacker(cfg, {"shop": "shop_00"})  # a deployed shop: never
    assert not is_attacker(AttackConfig(kind="none", shops=2), {"partition-id": 0})


PLAIN = [  # plain FedAvg (every shared parameter averaged, no fine-tuning): what attacks hit
    "data.n_shops=5",
    "data.n_users=250",
    "data.n_periods=2",
    "federated.rounds=2",
    "federated.model_local_keys=false",
    "federated.finetune_epochs=0",
]


@pytest.mark.usefixtures("server_identity")
def test_a_sign_flipping_shop_ruins_fedavg_without_bounds_and_the_default_holds(tiny_cfg, tmp_path):
    bad = ["federated.attack.kind=sign_flip", "federated.attack.factor=10"]
    bad += ["federated.attack.shops=1"]

    def acc(*overrides: str):
        run = tmp_path / str(len(list(tmp_path.iterdir())))
        cfg = tiny_cfg(*PLAIN, f"federated.state_dir={run / 'shops'}", *overrides)
        result = run_federated(LocalGrid(cfg, 5), cfg, None)
        doc = write_report(cfg, result, run / "out", "", 1.0)
        return doc["continual"]["acc"], result, run_data(cfg.data, cfg.eval).shops[0]

    clean, _, _ = acc()
    unbounded, _, _ = acc(*bad, "federated.bounds.enabled=false")
    bounded, result, attacker = acc(*bad)

    assert unbounded < clean - 0.03  # the positive control: the attack works
    assert bounded >= clean - 0.02  # the default bounds hold
    assert {r.shop for r in result.rejected} == {attacker}  # partition 0, by name
    assert all("norm" in r.why for r in result.rejected)

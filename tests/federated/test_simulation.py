"""One real Flower simulation (Ray): 2 shops x 2 windows x 1 round, end to end."""

from __future__ import annotations

import json

import pytest

from fedcl.simulate import run


@pytest.mark.simulation
def test_federated_simulation_writes_metrics(tiny_cfg, tmp_path):
    cfg = tiny_cfg("data.n_shops=2", "data.n_periods=2", "continual=replay")

    doc = run(cfg, "mode: federated\n", tmp_path / "run")

    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert on_disk["mode"] == "federated" == doc["mode"]
    assert len(on_disk["r_matrix"]) == 2 and all(len(r) == 2 for r in on_disk["r_matrix"])
    assert on_disk["comm"]["bytes_up"] > 0 and on_disk["comm"]["bytes_down"] > 0
    assert set(on_disk["per_shop"]) == {"shop_00", "shop_01"}
    assert on_disk["final"]["n_users"] > 0 and on_disk["final"]["ndcg@10"] is not None
    assert not on_disk["rejected_replies"]

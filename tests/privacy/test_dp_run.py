"""A federated run with ``federated.dp``: the ledger's epsilon per round and in total in
metrics.json and the summary, the budget stop, and the settings DP refuses."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fedcl.config import check
from fedcl.errors import ConfigError
from fedcl.federated.server_loop import run_federated, write_report
from fedcl.privacy.accountant import epsilon
from fedcl.report import summary_table

sys.path.insert(0, str(Path(__file__).parents[1] / "federated"))
from fedcl.federated.local_grid import LocalGrid  # noqa: E402

pytestmark = pytest.mark.usefixtures("server_identity")

DP = ["continual=naive", "federated.dp.enabled=true", "federated.rounds=2"]


def test_the_budget_stops_training_and_the_run_still_evaluates_and_reports(tiny_cfg, tmp_path):
    # 3 windows x 2 rounds planned; a budget between 3 and 4 rounds' epsilon.
    three, four = (epsilon(0.5, 1.0, 4, r, 1e-5) for r in (3, 4))
    cfg = tiny_cfg(
        *DP,
        "federated.dp.noise_multiplier=1.0",
        f"federated.dp.epsilon_budget={(three + four) / 2}",
    )

    result = run_federated(LocalGrid(cfg, 3), cfg, tmp_path / "ckpt")
    doc = write_report(cfg, result, tmp_path / "run", "", 1.0)

    trained = [r for r in result.rounds if r.unit == "federated"]
    assert [round(r.epsilon, 6) for r in trained] == [
        round(epsilon(0.5, 1.0, 4, k, 1e-5), 6) for k in (1, 2, 3)
    ]
    assert len(result.cells["new"]) == 3  # every window still evaluated
    privacy = json.loads((tmp_path / "run" / "metrics.json").read_text())["privacy"]
    assert privacy == doc["privacy"]
    assert privacy["rounds_trained"] == 3 and privacy["rounds_planned"] == 6
    assert privacy["epsilon"] == pytest.approx(three) and privacy["epsilon"] <= (three + four) / 2
    assert privacy["stopped_at"] == {"window": 1, "round": 2}
    assert privacy["delta"] == 1e-5 and privacy["accountant"].startswith("dp-accounting")
    assert "stopped training at window 1 round 2" in summary_table(doc, tmp_path / "run")


def test_a_budget_alone_calibrates_the_noise_to_spend_it_over_the_planned_rounds(
    tiny_cfg, tmp_path
):
    cfg = tiny_cfg(*DP, "federated.dp.epsilon_budget=8")

    result = run_federated(LocalGrid(cfg, 3), cfg, tmp_path / "ckpt")

    assert result.privacy["rounds_trained"] == 6 and result.privacy["stopped_at"] is None
    assert 7.9 < result.privacy["epsilon"] <= 8.0


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["federated.dp.enabled=true"], "epsilon_budget"),
        (["continual=replay", "federated.dp.enabled=true", "federated.dp.epsilon_budget=8"],
         "replay"),
        ([*DP, "federated.dp.epsilon_budget=8", "train.negatives=popularity"], "uniform"),
        ([*DP, "federated.dp.epsilon_budget=8", "model=sasrec"], "pairwise"),
        ([*DP, "federated.dp.epsilon_budget=8", "mode=centralized"], "mode=federated"),
        ([*DP, "federated.dp.user_rate=0"], "user_rate"),
    ],
)  # fmt: skip
def test_settings_under_which_one_users_bound_would_not_hold_are_refused(
    tiny_cfg, overrides, match
):
    with pytest.raises(ConfigError, match=match):
        check(tiny_cfg(*overrides))

"""The simulate entry point end to end on a tiny synthetic stream: the run-dir contract."""

from __future__ import annotations

import importlib
import json
import math

import pytest

from fedcl.config import CONF_DIR, Config, compose_config, load_config, schema_of
from fedcl.simulate import run


def _compose(overrides: list[str]) -> tuple[Config, str]:
    return compose_config(overrides)


@pytest.fixture
def tiny(tiny_overrides) -> list[str]:
    return ["mode=centralized", *tiny_overrides]


@pytest.mark.parametrize("mode", ["centralized", "local"])
def test_run_writes_the_contract(tmp_path, tiny, mode):
    cfg, yaml = _compose([*tiny, f"mode={mode}"])

    doc = run(cfg, yaml, tmp_path)

    files = {p.name for p in tmp_path.iterdir()}
    assert {"config.yaml", "metrics.json", "r_matrix.csv", "rounds.csv", "plots"} <= files
    assert (tmp_path / "plots" / "r_matrix.png").stat().st_size > 0
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(doc))
    w = len(doc["r_matrix"])
    assert w == 3 and all(len(row) == w for row in doc["r_matrix"])
    assert len(doc["n_users"]) == w
    for row, counts in zip(doc["r_matrix"], doc["n_users"], strict=True):
        for value, n in zip(row, counts, strict=True):
            assert (value is None) == (n == 0)
            assert value is None or (math.isfinite(value) and 0.0 <= value <= 1.0)
    assert set(doc["final"]) == {"hr@10", "ndcg@10", "recall@20", "mrr", "n_users"}
    assert set(doc["continual"]) == {"acc", "bwt", "fwt", "forward"}
    assert {"r_matrix_repeat", "continual_repeat", "final_repeat"} <= set(doc)
    assert set(doc["per_shop"]) == {"shop_00", "shop_01", "shop_02"}
    assert doc["mode"] == mode and doc["metric"] == "ndcg@10"
    assert doc["comm"] == {"bytes_up": 0, "bytes_down": 0}
    assert len(doc["provenance"]["data_sha256"]) == 64


def test_same_seed_same_metrics(tmp_path, tiny):
    cfg, yaml = _compose(tiny)

    a = run(cfg, yaml, tmp_path / "a")
    b = run(cfg, yaml, tmp_path / "b")

    assert a["r_matrix"] == b["r_matrix"] and a["final"] == b["final"]


@pytest.mark.parametrize("group", ["data", "model"])
def test_every_group_option_composes_to_its_targets_schema(group):
    options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
    assert options
    for option in options:
        cfg, _ = load_config([f"{group}={option}"])  # and passes the start checks
        node = getattr(cfg, group)
        module = importlib.import_module(node._target_.rsplit(".", 1)[0])
        assert type(node) is module.SCHEMA is schema_of(group, option)


@pytest.mark.parametrize("group", ["continual", "strategy", "experiment"])
def test_every_yaml_of_a_group_composes(group):
    options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
    assert options
    for option in options:
        cfg, _ = load_config([f"{group}={option}"])  # and passes the start checks
        if group != "experiment":
            assert getattr(cfg, group).name == option


def test_misspelt_key_fails_at_start():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="bogus"):
        _compose(["model.bogus=1"])

"""Every strategy option builds, and its state follows a growing catalogue."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from fedcl.config import compose_config
from fedcl.errors import ConfigError
from fedcl.federated.growth import grow_strategy_state
from fedcl.federated.strategies import build_strategy

NAMES = ["fedavg", "fedprox", "fedadam", "fedyogi", "fedavgm", "fedmedian", "fedtrimmedavg",
         "multikrum"]  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_every_strategy_builds(name):
    cfg, _ = compose_config([f"strategy={name}"])

    strategy = build_strategy(cfg.strategy, cfg.federated)

    assert type(strategy).__name__.lower() == name


def test_unknown_argument_is_a_config_error():
    cfg, _ = compose_config(["strategy=fedadam", "+strategy.kwargs.etaa=0.1"])

    with pytest.raises(ConfigError, match="fedadam"):
        build_strategy(cfg.strategy, cfg.federated)


def test_strategy_state_is_padded_when_the_catalogue_grows():
    cfg, _ = compose_config(["strategy=fedadam"])
    strategy = build_strategy(cfg.strategy, cfg.federated)
    strategy.m_t = {"item": np.ones((3, 2), np.float32)}
    strategy.v_t = {"item": np.ones((3, 2), np.float32)}
    strategy.current_arrays = {"item": np.ones((3, 2), np.float32)}
    grown = ArrayRecord({"item": Array(np.zeros((5, 2), np.float32))})

    grow_strategy_state(strategy, grown)

    assert strategy.m_t["item"].shape == (5, 2) and strategy.v_t["item"].shape == (5, 2)
    assert (strategy.m_t["item"][:3] == 1).all() and (strategy.m_t["item"][3:] == 0).all()
    assert strategy.current_arrays["item"].shape == (5, 2)

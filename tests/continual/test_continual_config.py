"""Every conf/continual YAML composes against the schema and builds the parts it names."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import ConfigCompositionException
from hydra.utils import get_class
from omegaconf import OmegaConf

from fedcl.continual.base import BuildContext
from fedcl.continual.config import (
    ContinualConfig,
    DistillConfig,
    EWCConfig,
    ReplayConfig,
    build_continual,
)
from fedcl.continual.joint import JointConfig
from fedcl.errors import ConfigError

CONF = Path(__file__).resolve().parents[2] / "conf"
PARTS = {
    "naive": [],
    "replay": ["replay"],
    "ewc": ["ewc"],
    "distill": ["distill"],
    "replay_distill": ["replay", "distill"],
    "joint": ["joint"],
}


def compose_option(name: str, overrides: list[str] | None = None):
    """``continual=<name>`` composed under a root that has only that group."""
    cs = ConfigStore.instance()
    # Registered as fedcl.config registers it: group "continual", name "continual_schema".
    cs.store(group="continual", name="continual_schema", node=ContinualConfig)
    cs.store(name="continual_test_root", node={"defaults": ["_self_", {"continual": "naive"}]})
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose("continual_test_root", overrides=[f"continual={name}", *(overrides or [])])
    return cfg.continual


def test_every_option_has_a_yaml():
    assert {p.stem for p in (CONF / "continual").glob("*.yaml")} == set(PARTS)


@pytest.mark.parametrize("name", PARTS)
def test_yaml_composes_and_builds_its_parts(name):
    node = compose_option(name)
    typed = OmegaConf.to_object(node)
    assert isinstance(typed, ContinualConfig) and typed.name == name
    assert list(build_continual(node).parts) == PARTS[name]  # DictConfig works as well
    assert list(build_continual(typed).parts) == PARTS[name]


def test_a_misspelt_key_fails_at_composition():
    with pytest.raises(ConfigCompositionException, match="budjet"):
        compose_option("replay", ["continual.replay.budjet=5"])


def test_bad_values_fail_with_the_key_and_the_fix():
    bad_policy = ContinualConfig(replay=ReplayConfig(enabled=True, policy="fifo"))
    with pytest.raises(ConfigError, match="continual.replay.policy"):
        build_continual(bad_policy)
    no_groups = ContinualConfig(replay=ReplayConfig(enabled=True, policy="category"))
    with pytest.raises(ConfigError, match="category column"):
        build_continual(no_groups)
    build_continual(no_groups, item_groups=[0, 1, 0])
    with pytest.raises(ConfigError, match="continual.distill.users"):
        build_continual(ContinualConfig(distill=DistillConfig(enabled=True, users="all")))
    ewc = ContinualConfig(ewc=EWCConfig(enabled=True))
    with pytest.raises(ConfigError, match="train.optimizer=adam"):
        build_continual(ewc, optimizer="sparse_adam")
    build_continual(ewc, optimizer="adam")
    with pytest.raises(ConfigError, match="joint"):
        build_continual(
            ContinualConfig(joint=JointConfig(enabled=True), replay=ReplayConfig(enabled=True))
        )


def test_yaml_defaults_are_the_dataclass_defaults():
    cfg = OmegaConf.to_object(compose_option("replay_distill"))
    expected = ContinualConfig(name="replay_distill")
    expected.replay.enabled = expected.distill.enabled = True
    assert dataclasses.asdict(cfg) == dataclasses.asdict(expected)


def test_every_part_is_registered_by_its_target():
    """The one way to register a continual method: a ``_target_`` class with from_config."""
    parts = ContinualConfig().parts()

    assert list(parts) == ["joint", "replay", "ewc", "distill"]  # the composition order
    for name, part in parts.items():
        cls = get_class(part._target_)
        assert cls.__module__ == f"fedcl.continual.{name}"
        assert type(cls.from_config(part, BuildContext())).__name__ == cls.__name__


def test_a_bad_target_is_a_config_error():
    bad = ContinualConfig(ewc=EWCConfig(enabled=True, _target_="fedcl.continual.ewc.Nope"))

    with pytest.raises(ConfigError, match="continual.ewc._target_"):
        build_continual(bad)

"""Typed configuration: the schema Hydra composes ``conf/`` into, and its one start-up check.

A YAML with ``_target_`` is the registration of a component: the schema of the option
``conf/<group>/<name>.yaml`` (groups ``data`` and ``model``) is the module-level ``SCHEMA`` of
the module its ``_target_`` lives in, stored as ``<name>_schema`` (the YAML's ``defaults``).
Adding a model is one module (with ``SCHEMA``) and one YAML; there is no lookup table.

:func:`to_config` turns a composed config into a :class:`Config` and checks all of it, before
any data is read or any Ray/Flower process starts: a key that no dataclass field reads, a value
out of range or a name that selects nothing ends in one :class:`ConfigError` naming the key,
the value and what is allowed. Every entry point (``simulate``, ``prepare``, ``plan`` and the
Flower apps through :func:`config_from_run`) goes through it. It checks values only: whether a
file or a device exists is for the machine that uses it to say (in deployment, not this one).
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from fedcl.checks import at_least, one_of
from fedcl.continual.config import ContinualConfig
from fedcl.continual.config import check as check_continual
from fedcl.data.config import DataConfig
from fedcl.errors import ConfigError
from fedcl.evaluation import EvalConfig
from fedcl.federated.config import FederatedConfig, StrategyConfig
from fedcl.models.base import ModelConfig
from fedcl.privacy.config import check_fits as check_dp_fits
from fedcl.train import TrainConfig

MODES = ("federated", "centralized", "local")
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
#: Groups whose options are registered from their YAML's ``_target_`` (module ``SCHEMA``).
TARGET_GROUPS = ("data", "model")


@dataclass
class Config:
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    continual: ContinualConfig = field(default_factory=ContinualConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    federated: FederatedConfig = field(default_factory=FederatedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    #: "federated" (Flower) | "centralized" (all shops pooled) | "local" (each shop alone).
    mode: str = "federated"
    #: "auto" (cuda, then mps, then cpu) | "cpu" | "cuda" | "cuda:1" | "mps"
    device: str = "auto"
    #: torch CPU threads (0 = torch's default).
    threads: int = 0
    seed: int = 0
    #: Free-form note for the run directory and sweep tables.
    note: str = ""


# --- registration ------------------------------------------------------------------------


def options(group: str) -> list[str]:
    """The options of a config group: the stems of ``conf/<group>/*.yaml``."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def schema_of(group: str, name: str) -> type:
    """The schema of ``conf/<group>/<name>.yaml``: ``SCHEMA`` of its ``_target_``'s module."""
    path = CONF_DIR / group / f"{name}.yaml"
    target = OmegaConf.load(path).get("_target_")
    if not target:
        raise ConfigError(f"{path} needs a _target_ (the component it registers)")
    module_name = str(target).rsplit(".", 1)[0]
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"{path}: _target_ {target!r} names no importable module: {e}") from e
    schema = getattr(module, "SCHEMA", None)
    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        raise ConfigError(f"{path}: module {module_name} has no SCHEMA (its config dataclass)")
    return schema


_registered = False


def register() -> None:
    """Register the schemas with Hydra's ConfigStore (idempotent)."""
    global _registered
    if _registered:
        return
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="continual", name="continual_schema", node=ContinualConfig)
    cs.store(group="strategy", name="strategy_schema", node=StrategyConfig)
    for group in TARGET_GROUPS:
        for name in options(group):
            cs.store(group=group, name=f"{name}_schema", node=schema_of(group, name))
    _registered = True


# --- the start-up check ------------------------------------------------------------------


def unknown_keys(node: DictConfig, key: str = "") -> list[str]:
    """Dotted keys of ``node`` that no dataclass field reads (e.g. added with ``+``)."""
    found = []
    schema = OmegaConf.get_type(node)
    names = (
        {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
    )
    for k in node:
        path = f"{key}.{k}" if key else str(k)
        if names is not None and k not in names:
            found.append(f"{path} ({schema.__name__} in {schema.__module__} has no such field)")
            continue
        child = node._get_node(k)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            found += unknown_keys(child, path)
    return found


def check_keys(dcfg: DictConfig) -> None:
    """Refuse keys that nothing reads; the message names them and where the settings are."""
    found = unknown_keys(dcfg)
    if found:
        raise ConfigError(f"unknown key {'; '.join(found)}: remove it or fix its spelling")


def check(cfg: Config) -> None:
    """Check every value of ``cfg`` that Hydra's types cannot; names the key and the fix."""
    one_of("mode", cfg.mode, MODES)
    _check_device(cfg.device)
    at_least("threads", cfg.threads, 0)
    at_least("seed", cfg.seed, 0)
    cfg.data.check("data")
    cfg.model.check("model")
    check_continual(cfg.continual, cfg.train.optimizer)
    cfg.train.check("train")
    _check_sparse(cfg)
    cfg.eval.check("eval")
    cfg.strategy.check("strategy", options("strategy"))
    cfg.federated.check("federated")
    check_dp_fits(cfg)


def to_config(dcfg: DictConfig) -> Config:
    """The typed, checked :class:`Config` of a composed config (see :func:`check`)."""
    check_keys(dcfg)
    cfg = OmegaConf.to_object(dcfg)
    check(cfg)
    return cfg


#: Device names (whether the device exists is for the machine that uses it to say).
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _check_device(name: str) -> None:
    if not DEVICE.fullmatch(name):
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:<index> or mps; got {name!r}")


def _check_sparse(cfg: Config) -> None:
    sparse = bool(getattr(cfg.model, "sparse", False))
    if cfg.train.optimizer == "sparse_adam" and not sparse:
        raise ConfigError(
            "train.optimizer=sparse_adam needs sparse gradients (model=mf model.sparse=true); "
            "use train.optimizer=adam"
        )
    if sparse and cfg.train.optimizer in ("adam", "adamw"):
        raise ConfigError(
            f"model.sparse=true gives sparse gradients, which train.optimizer="
            f"{cfg.train.optimizer} cannot take: use sparse_adam, sgd or adagrad"
        )


# --- composing ---------------------------------------------------------------------------


def _compose(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir

    register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(config_name="config", overrides=overrides)


def compose_config(overrides: list[str]) -> tuple[Config, str]:
    """The typed config for Hydra ``overrides`` (as on the command line) and its YAML,
    unchecked (tests build configs that later stages must refuse); see :func:`load_config`."""
    dcfg = _compose(overrides)
    return OmegaConf.to_object(dcfg), OmegaConf.to_yaml(dcfg, resolve=True)


def load_config(overrides: list[str]) -> tuple[Config, str]:
    """The typed, checked config for Hydra ``overrides`` and its YAML (entry points).

    A bad override (a key Hydra cannot place) is a ConfigError too."""
    from hydra.errors import HydraException

    try:
        dcfg = _compose(overrides)
    except HydraException as e:
        why = str(e).strip() + (f" {str(e.__cause__).splitlines()[0]}" if e.__cause__ else "")
        raise ConfigError(f"bad override: {' '.join(why.split())}") from e
    return to_config(dcfg), OmegaConf.to_yaml(dcfg, resolve=True)


def config_from_run(run_config: dict) -> Config:
    """The bridge from Flower's flat ``run_config`` (``flwr run --run-config``): the key
    ``overrides`` holds Hydra overrides separated by spaces, e.g.
    ``overrides="data=synthetic continual=replay federated.rounds=3"``."""
    overrides = str(run_config.get("overrides", "")).split()
    return load_config(["mode=federated", *overrides])[0]

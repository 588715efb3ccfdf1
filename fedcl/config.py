"""Typed configuration: the schema Hydra composes ``conf/`` into.

Every group option has a dataclass schema registered here, so a misspelt key fails at
start-up with Hydra's "Key 'x' not in 'Y'" message instead of an hour into a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from fedcl.continual.config import ContinualConfig
from fedcl.data.sources.csv import CsvConfig
from fedcl.data.sources.movielens import MovieLensConfig
from fedcl.data.sources.online_retail import OnlineRetailConfig
from fedcl.data.sources.synthetic import SyntheticConfig
from fedcl.errors import ConfigError
from fedcl.evaluation import EvalConfig
from fedcl.federated.config import FederatedConfig, StrategyConfig
from fedcl.models.history import HistoryConfig
from fedcl.models.mf import MFConfig
from fedcl.models.neumf import NeuMFConfig
from fedcl.models.pop import PopConfig
from fedcl.models.sasrec import SASRecConfig
from fedcl.train import TrainConfig

MODES = ("federated", "centralized", "local")


@dataclass
class Config:
    data: Any = MISSING
    model: Any = MISSING
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


SCHEMAS: dict[str, dict[str, type]] = {
    "data": {
        "online_retail": OnlineRetailConfig,
        "movielens": MovieLensConfig,
        "csv": CsvConfig,
        "synthetic": SyntheticConfig,
    },
    "model": {
        "pop": PopConfig,
        "history": HistoryConfig,
        "mf": MFConfig,
        "neumf": NeuMFConfig,
        "sasrec": SASRecConfig,
    },
}


def register() -> None:
    """Register the schemas with Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="continual", name="continual_schema", node=ContinualConfig)
    cs.store(group="strategy", name="strategy_schema", node=StrategyConfig)
    for group, options in SCHEMAS.items():
        for name, node in options.items():
            cs.store(group=group, name=f"{name}_schema", node=node)


def check(cfg: Config) -> None:
    """Value checks Hydra's types cannot express; a clear error names the fix."""
    if cfg.mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}; got {cfg.mode!r}")
    if cfg.eval.on not in ("test", "validation"):
        raise ConfigError(f"eval.on must be 'test' or 'validation'; got {cfg.eval.on!r}")
    for v in cfg.eval.variants:
        if v not in ("new", "repeat"):
            raise ConfigError(f"eval.variants may hold 'new' and 'repeat'; got {v!r}")
    if "new" not in cfg.eval.variants:
        raise ConfigError("eval.variants must include 'new' (the R-matrix variant)")


CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def compose_config(overrides: list[str]) -> tuple[Config, str]:
    """The typed config for Hydra ``overrides`` (as on the command line) and its YAML."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        dcfg = compose(config_name="config", overrides=overrides)
    return OmegaConf.to_object(dcfg), OmegaConf.to_yaml(dcfg, resolve=True)


def config_from_run(run_config: dict) -> Config:
    """The bridge from Flower's flat ``run_config`` (``flwr run --run-config``): the key
    ``overrides`` holds Hydra overrides separated by spaces, e.g.
    ``overrides="data=synthetic continual=replay federated.rounds=3"``."""
    overrides = str(run_config.get("overrides", "")).split()
    return compose_config(["mode=federated", *overrides])[0]

"""The YAML of each model mirrors its config dataclass and builds it with Hydra."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fedcl.models.history import History, HistoryConfig
from fedcl.models.mf import MF, MFConfig
from fedcl.models.neumf import NeuMF, NeuMFConfig
from fedcl.models.pop import Pop, PopConfig
from fedcl.models.sasrec import SASRec, SASRecConfig

CONF = Path(__file__).resolve().parents[2] / "conf" / "model"
MODELS = {
    "pop": (PopConfig, Pop),
    "history": (HistoryConfig, History),
    "mf": (MFConfig, MF),
    "neumf": (NeuMFConfig, NeuMF),
    "sasrec": (SASRecConfig, SASRec),
}


@pytest.mark.parametrize("name", MODELS)
def test_yaml_mirrors_the_dataclass(name):
    config_cls, _ = MODELS[name]
    yaml = OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"))
    assert yaml.pop("defaults", [f"{name}_schema"]) == [f"{name}_schema"]  # fedcl.config
    assert yaml == dataclasses.asdict(config_cls())


@pytest.mark.parametrize("name", MODELS)
def test_constructor_takes_the_config_fields_with_the_same_defaults(name):
    config_cls, model_cls = MODELS[name]
    params = inspect.signature(model_cls.__init__).parameters
    fields = {f.name: getattr(config_cls(), f.name) for f in dataclasses.fields(config_cls)}
    assert fields.pop("_target_") == f"{model_cls.__module__}.{model_cls.__name__}"
    assert set(params) - {"self"} == {"n_users", "n_items", *fields}
    for key, value in fields.items():
        default = params[key].default
        assert (list(default) if isinstance(default, tuple) else default) == value, key


@pytest.mark.parametrize("name", MODELS)
def test_hydra_instantiates_the_model(name):
    config_cls, model_cls = MODELS[name]
    cfg = OmegaConf.structured(config_cls)
    model = instantiate(cfg, n_users=5, n_items=9)
    assert isinstance(model, model_cls)
    assert (model.n_users, model.n_items) == (5, 9)

"""A model's defaults live in its config dataclass only: the YAML registers the model
(``_target_``) and holds what differs, the constructor reads the rest from the dataclass."""

from __future__ import annotations

import dataclasses
import importlib

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fedcl.config import CONF_DIR, schema_of
from fedcl.errors import ConfigError
from fedcl.models.als import ALS, ALSConfig
from fedcl.models.base import ModelConfig
from fedcl.models.history import History, HistoryConfig
from fedcl.models.itemitem import ItemItem, ItemItemConfig
from fedcl.models.mf import MF, MFConfig
from fedcl.models.neumf import NeuMF, NeuMFConfig
from fedcl.models.peers_als import ImplicitALS, ImplicitALSConfig
from fedcl.models.peers_knn import ImplicitItemKNN, ImplicitItemKNNConfig
from fedcl.models.pop import Pop, PopConfig
from fedcl.models.sasrec import SASRec, SASRecConfig

CONF = CONF_DIR / "model"
MODELS = {
    "pop": (PopConfig, Pop),
    "history": (HistoryConfig, History),
    "mf": (MFConfig, MF),
    "neumf": (NeuMFConfig, NeuMF),
    "sasrec": (SASRecConfig, SASRec),
    "itemitem": (ItemItemConfig, ItemItem),
    "ease": (ItemItemConfig, ItemItem),
    "implicit_als": (ImplicitALSConfig, ImplicitALS),
    "implicit_itemknn": (ImplicitItemKNNConfig, ImplicitItemKNN),
    "als": (ALSConfig, ALS),
}


def test_every_yaml_is_a_listed_model():
    assert sorted(p.stem for p in CONF.glob("*.yaml")) == sorted(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_yaml_registers_the_model_and_holds_only_what_differs(name):
    config_cls, model_cls = MODELS[name]
    yaml = OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"))
    defaults = config_cls()

    assert yaml.pop("defaults") == [f"{name}_schema"]  # fedcl.config.register
    assert (
        yaml.pop("_target_") == defaults._target_ == f"{model_cls.__module__}.{model_cls.__name__}"
    )
    names = {f.name for f in dataclasses.fields(config_cls)}
    for key, value in yaml.items():
        assert key in names, key
        assert value != getattr(defaults, key), f"{key} repeats the dataclass default"


@pytest.mark.parametrize("name", MODELS)
def test_the_schema_is_the_modules_schema(name):
    config_cls, model_cls = MODELS[name]

    assert issubclass(config_cls, ModelConfig)
    assert importlib.import_module(model_cls.__module__).SCHEMA is config_cls
    assert schema_of("model", name) is config_cls


@pytest.mark.parametrize("name", MODELS)
def test_constructor_takes_the_config_fields_without_repeating_defaults(name):
    config_cls, model_cls = MODELS[name]
    fields = [f.name for f in dataclasses.fields(config_cls) if f.name != "_target_"]

    plain = model_cls(5, 9)
    every = model_cls(5, 9, **{k: getattr(config_cls(), k) for k in fields})

    assert plain.state_dict().keys() == every.state_dict().keys()
    with pytest.raises(TypeError, match="bogus"):
        model_cls(5, 9, bogus=1)


def test_a_field_given_to_the_constructor_is_used():
    assert MF(5, 9, dim=3).item_emb.weight.shape == (9, 3)
    assert MF(5, 9).item_emb.weight.shape == (9, MFConfig().dim)


@pytest.mark.parametrize("name", MODELS)
def test_hydra_instantiates_the_model(name):
    config_cls, model_cls = MODELS[name]
    cfg = OmegaConf.structured(config_cls)
    model = instantiate(cfg, n_users=5, n_items=9)
    assert isinstance(model, model_cls)
    assert (model.n_users, model.n_items) == (5, 9)


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        (MFConfig(dim=0), "model.dim"),
        (MFConfig(init_std=0.0), "model.init_std"),
        (NeuMFConfig(layers=[]), "model.layers"),
        (NeuMFConfig(dropout=1.0), "model.dropout"),
        (PopConfig(decay=1.5), "model.decay"),
        (HistoryConfig(recency=-1.0), "model.recency"),
        (SASRecConfig(dim=64, n_heads=3), "model.n_heads"),
        (SASRecConfig(max_len=0), "model.max_len"),
    ],
)
def test_check_names_the_bad_field(cfg, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        cfg.check("model")


@pytest.mark.parametrize("name", MODELS)
def test_defaults_pass_the_check(name):
    MODELS[name][0]().check("model")

"""Each ``conf/data/<name>.yaml`` names its source's read function; the schema is the
``SCHEMA`` of that function's module, and the dataclass holds every default."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from pathlib import Path

import pytest
from hydra.utils import get_method
from omegaconf import OmegaConf

import fedcl.data.sources as sources
from fedcl.data.config import DataConfig
from fedcl.data.prepare import load_source
from fedcl.data.sources.csv import CsvConfig
from fedcl.errors import ConfigError

CONF = Path(__file__).resolve().parents[2] / "conf" / "data"
NAMES = sorted(p.stem for p in CONF.glob("*.yaml"))


def _yaml(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"))


def _schema(target: str) -> type:
    return importlib.import_module(get_method(target).__module__).SCHEMA


def test_every_source_module_with_a_schema_has_a_yaml():
    names = [m.name for m in pkgutil.iter_modules(sources.__path__)]
    modules = [importlib.import_module(f"{sources.__name__}.{n}") for n in names]
    with_schema = sorted(m.__name__.rsplit(".", 1)[1] for m in modules if hasattr(m, "SCHEMA"))
    assert with_schema == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_yaml_names_the_read_function_and_schema(name):
    yaml = _yaml(name)
    assert yaml.pop("defaults") == [f"{name}_schema"]
    target = yaml.pop("_target_")
    assert target == f"fedcl.data.sources.{name}.read"
    schema = _schema(target)
    assert dataclasses.is_dataclass(schema) and issubclass(schema, DataConfig)
    assert schema()._target_ == target and schema().name == name


@pytest.mark.parametrize("name", NAMES)
def test_yaml_holds_only_values_that_differ_from_the_dataclass(name):
    yaml = _yaml(name)
    yaml.pop("defaults")
    yaml.pop("_target_")
    defaults = dataclasses.asdict(_schema(f"fedcl.data.sources.{name}.read")())
    restated = {k: v for k, v in yaml.items() if defaults.get(k) == v}
    assert not restated


@pytest.mark.parametrize("name", NAMES)
def test_yaml_merges_into_its_schema(name):
    yaml = _yaml(name)
    yaml.pop("defaults")
    schema = _schema(yaml["_target_"])
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), yaml))
    assert type(cfg) is schema and isinstance(cfg, DataConfig)


def test_unknown_target_is_a_config_error(tmp_path):
    cfg = CsvConfig(path=str(tmp_path / "ev.csv"), _target_="fedcl.data.sources.nope.read")
    with pytest.raises(ConfigError, match="data._target_.*nope"):
        load_source(cfg)

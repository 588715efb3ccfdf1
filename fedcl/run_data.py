"""The run's prepared data, once per process: what centralized and local runs train on, what
simulated shops read their own part of, and what a simulated server reads the public parts
(windows, catalogue) of."""

from __future__ import annotations

import dataclasses
import json

from fedcl.data.config import DataConfig
from fedcl.data.dataset import PreparedData
from fedcl.data.prepare import prepare_cached
from fedcl.evaluation import EvalConfig

_DATA: dict[str, PreparedData] = {}


def run_data(data_cfg: DataConfig, eval_cfg: EvalConfig) -> PreparedData:
    """The prepared data (prepared once, then read from the cache); with ``eval.on=validation``
    its validation view, so every mode, the server and the shops agree on the shortened train
    parts and the catalogue they know."""
    key = json.dumps(dataclasses.asdict(data_cfg), sort_keys=True, default=str)
    key += f"|{eval_cfg.on}|{eval_cfg.val_fraction}"
    if key not in _DATA:
        data = prepare_cached(data_cfg)[0]
        if eval_cfg.on == "validation":
            data = data.validation_view(eval_cfg.val_fraction)
        _DATA[key] = data
    return _DATA[key]


def is_run_data(data: PreparedData) -> bool:
    """Whether ``data`` is one of this process's cached run data (not a shop's own log)."""
    return any(data is d for d in _DATA.values())

"""``python -m fedcl.simulate [overrides]``: run one experiment and write its run directory.

Modes: ``centralized`` (all shops pooled) and ``local`` (each shop alone). The run directory
(``hydra.run.dir=DIR``) gets ``config.yaml``, ``metrics.json``, ``r_matrix.csv``,
``rounds.csv`` and ``plots/*.png`` (ARCHITECTURE.md); a summary table is printed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from fedcl.cli import friendly_errors
from fedcl.config import Config, check, register
from fedcl.data.prepare import prepare_cached
from fedcl.device import resolve_device, set_threads
from fedcl.evaluation import Evaluator
from fedcl.modes import run_centralized, run_local
from fedcl.report import build_metrics, summary_table, write_run_dir

log = logging.getLogger("fedcl")
register()
RUNNERS = {"centralized": run_centralized, "local": run_local}


def run(cfg: Config, config_yaml: str, out: Path) -> dict:
    """Run ``cfg`` and write ``out``; returns the metrics document."""
    check(cfg)
    if cfg.mode == "federated":
        return run_federated_simulation(cfg, out)
    start = time.perf_counter()
    set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    data, digest = prepare_cached(cfg.data)
    if cfg.eval.on == "validation":
        data = data.validation_view(cfg.eval.val_fraction)
    log.info(
        "%s: %d shops, %d windows, %d events; mode %s, model %s, device %s",
        cfg.data.name, len(data.shops), data.n_windows, len(data.events), cfg.mode,
        type(cfg.model).__name__.removesuffix("Config"), device,
    )  # fmt: skip
    evaluator = Evaluator(data, cfg.eval, device)
    result = RUNNERS[cfg.mode](data, cfg, evaluator, device)
    doc = build_metrics(
        mode=cfg.mode,
        metric=cfg.eval.metric,
        seed=cfg.seed,
        wall_s=time.perf_counter() - start,
        cells=result.cells,
        baseline=result.baseline,
        shops=data.shops,
        data_sha256=digest,
        config_yaml=config_yaml,
    )
    doc["eval_on"] = cfg.eval.on
    write_run_dir(out, doc, result.rounds, config_yaml)
    return doc


def run_federated_simulation(cfg: Config, out: Path) -> dict:
    """Federated mode on Flower's simulation engine: one virtual SuperNode per shop."""
    from fedcl.federated.simulation import run_in_simulation

    data, _ = prepare_cached(cfg.data)  # prepared once here; shops read it from the cache
    fed = dataclasses.replace(
        cfg.federated,
        state_dir=cfg.federated.state_dir or str(out / "shops"),
        min_shops=min(cfg.federated.min_shops, len(data.shops)),
    )
    cfg = dataclasses.replace(cfg, federated=fed)
    log.info(
        "%s: %d shops, %d windows; federated, %d rounds/window, strategy %s, continual %s",
        cfg.data.name, len(data.shops), data.n_windows, cfg.federated.rounds,
        cfg.strategy.name, cfg.continual.name,
    )  # fmt: skip
    run_in_simulation(cfg, out, len(data.shops))
    metrics = out / "metrics.json"
    if not metrics.is_file():
        raise RuntimeError(f"the federated run wrote no {metrics}; see the log above")
    return json.loads(metrics.read_text())


@hydra.main(version_base=None, config_path="../conf", config_name="config")
@friendly_errors
def main(dcfg: DictConfig) -> None:
    config_yaml = OmegaConf.to_yaml(dcfg, resolve=True)
    cfg: Config = OmegaConf.to_object(dcfg)
    out = Path(HydraConfig.get().runtime.output_dir)
    doc = run(cfg, config_yaml, out)
    print(summary_table(doc, out))


if __name__ == "__main__":
    main()

"""``python -m fedcl.simulate [overrides]``: run one experiment and write its run directory.

Modes: ``federated`` (Flower's simulation engine), ``centralized`` (all shops pooled) and
``local`` (each shop alone). The run directory (``hydra.run.dir=DIR``) gets ``config.yaml``,
``metrics.json``, ``r_matrix.csv``, ``rounds.csv`` and ``plots/*.png`` (ARCHITECTURE.md); a
summary table is printed.

The whole config is checked first (:func:`fedcl.config.to_config`), then a federated rerun
into the same directory is matched against the server checkpoint there; only an accepted run
writes into the directory. Ctrl-C stops a federated run within seconds with one line saying
how to resume it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from fedcl.cli import PendingRunDir, check_command_line, exit_on_interrupt, friendly_errors
from fedcl.config import Config, check, register, to_config
from fedcl.continual.config import check_item_groups
from fedcl.data.prepare import prepare_cached
from fedcl.device import resolve_device, set_threads
from fedcl.errors import ConfigError
from fedcl.evaluation import Evaluator
from fedcl.models.base import training_note
from fedcl.modes import run_centralized, run_local
from fedcl.report import summary_table, write_report

log = logging.getLogger("fedcl")
register()
RUNNERS = {"centralized": run_centralized, "local": run_local}


def run(
    cfg: Config, config_yaml: str, out: Path, accepted: Callable[[], None] | None = None
) -> dict:
    """Run ``cfg`` and write ``out``; returns the metrics document.

    ``accepted`` is called once the run may write into ``out`` (after every check that can
    refuse it)."""
    check(cfg)
    try:  # this machine runs every shop: its device must exist here
        resolve_device(cfg.device)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    if cfg.mode == "federated":
        return run_federated_simulation(cfg, out, accepted)
    if accepted is not None:
        accepted()
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
    per_user: list = []
    result = RUNNERS[cfg.mode](data, cfg, evaluator, device, per_user)
    return write_report(
        out,
        result,
        mode=cfg.mode,
        eval_cfg=cfg.eval,
        seed=cfg.seed,
        shops=data.shops,
        data_sha256=digest,
        config_yaml=config_yaml,
        wall_s=time.perf_counter() - start,
        per_user=per_user,
        training=_training(cfg),
    )


def _training(cfg: Config) -> dict:
    """What a centralized or local window's training was, for the report."""
    note = training_note(cfg.model)
    return (
        {"epochs_per_window": 0, "solved": note}
        if note
        else {"epochs_per_window": cfg.train.epochs}
    )


def run_federated_simulation(
    cfg: Config, out: Path, accepted: Callable[[], None] | None = None
) -> dict:
    """Federated mode on Flower's simulation engine: one virtual SuperNode per shop."""
    from fedcl.federated.simulation import run_in_simulation

    data, _ = prepare_cached(cfg.data)  # prepared once here; shops read it from the cache
    # The check each shop makes when it builds its continual method, before Ray starts:
    check_item_groups(cfg.continual, data.catalog.get("category"))
    fed = dataclasses.replace(
        cfg.federated,
        state_dir=cfg.federated.state_dir or str(out / "shops"),
        min_shops=min(cfg.federated.min_shops, len(data.shops)),
    )
    cfg = dataclasses.replace(cfg, federated=fed)
    checkpoint = refuse_foreign_checkpoint(cfg, out)
    if accepted is not None:
        accepted()
    note = training_note(cfg.model)
    log.info(
        "%s: %d shops, %d windows; federated, %s, strategy %s, continual %s",
        cfg.data.name, len(data.shops), data.n_windows,
        note or f"{cfg.federated.rounds} rounds/window", cfg.strategy.name, cfg.continual.name,
    )  # fmt: skip
    resume = f"interrupted; rerun the same command (same hydra.run.dir) to resume from {checkpoint}"
    with exit_on_interrupt(resume):
        run_in_simulation(cfg, out, len(data.shops))
    metrics = out / "metrics.json"
    if not metrics.is_file():
        raise RuntimeError(f"the federated run wrote no {metrics}; see the log above")
    return json.loads(metrics.read_text())


def refuse_foreign_checkpoint(cfg: Config, out: Path) -> Path:
    """The server checkpoint directory of ``cfg``; a ConfigError when a checkpoint there
    was written by another configuration and the run would resume (read-only: the server
    makes the same check, but only after Ray, Flower and the run directory's writes)."""
    from fedcl.federated.checkpoint import ServerCheckpoint, checkpoint_dir

    directory = checkpoint_dir(cfg, out)
    if cfg.federated.resume and directory.is_dir():
        ServerCheckpoint(directory, cfg).load()
    return directory


@hydra.main(version_base=None, config_path="../conf", config_name="config")
@friendly_errors
def main(dcfg: DictConfig) -> None:
    pending = PendingRunDir(dcfg)
    cfg = to_config(dcfg)
    config_yaml = OmegaConf.to_yaml(dcfg, resolve=True)
    out = Path(HydraConfig.get().runtime.output_dir)
    doc = run(cfg, config_yaml, out, pending.accept)
    print(summary_table(doc, out))


if __name__ == "__main__":
    check_command_line(sys.argv[1:])
    main()

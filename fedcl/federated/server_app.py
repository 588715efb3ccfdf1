"""The Flower ServerApp (thin): the schedule lives in :mod:`fedcl.federated.server_loop`."""

from __future__ import annotations

import time
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from omegaconf import OmegaConf

from fedcl.config import Config, config_from_run
from fedcl.federated.checkpoint import checkpoint_dir
from fedcl.federated.server_loop import run_federated, write_report


def make_server_app(cfg: Config | None = None, out_dir: Path | None = None) -> ServerApp:
    """A ServerApp for ``cfg`` writing its run directory to ``out_dir``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_cfg = cfg if cfg is not None else config_from_run(context.run_config)
        out = out_dir or Path(str(context.run_config.get("out-dir", "outputs/flwr-run")))
        start = time.perf_counter()
        result = run_federated(grid, run_cfg, checkpoint_dir(run_cfg, out))
        yaml = OmegaConf.to_yaml(OmegaConf.structured(run_cfg))
        write_report(run_cfg, result, out, yaml, time.perf_counter() - start)

    return app

"""The one adapter around Flower's simulation engine (its API moves: change it here only)."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch

from fedcl.config import Config


def run_in_simulation(cfg: Config, out_dir: Path, n_shops: int) -> None:
    """Run the ServerApp and one ClientApp per shop on Ray; the server writes ``out_dir``."""
    from flwr.simulation import run_simulation

    from fedcl.federated.client_app import make_client_app
    from fedcl.federated.server_app import make_server_app

    gpus = cfg.federated.gpus_per_shop if torch.cuda.is_available() else 0.0
    backend_config = {
        "client_resources": {"num_cpus": cfg.federated.cpus_per_shop, "num_gpus": gpus},
        "init_args": {"num_cpus": cfg.federated.sim_cpus, "logging_level": "ERROR"},
    }
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    # fedcl prints its own progress lines; Flower's per-round INFO lines would drown them.
    quiet = not logging.getLogger("fedcl").isEnabledFor(logging.DEBUG)
    if quiet:
        for name in ("flwr", "alembic"):  # alembic: Flower's state database migrations
            logging.getLogger(name).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        run_simulation(
            server_app=make_server_app(cfg, out_dir),
            client_app=make_client_app(cfg),
            num_supernodes=n_shops,
            backend_config=backend_config,
            verbose_logging=not quiet,
        )

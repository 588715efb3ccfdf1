"""``python -m fedcl.prepare data=<source> [overrides]``: prepare a dataset into the run dir.

Writes ``events.parquet``, ``catalog.parquet``, ``windows.parquet``, ``quarantine.parquet``
and ``report.json`` into the Hydra run directory (``hydra.run.dir=DIR``) and prints a
shops x windows table.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from fedcl.cli import PendingRunDir, check_command_line, friendly_errors
from fedcl.config import register, to_config
from fedcl.data.prepare import data_digest, prepare
from fedcl.data.tables import shop_window_table

log = logging.getLogger("fedcl.prepare")
register()


@hydra.main(version_base=None, config_path="../conf", config_name="config")
@friendly_errors
def main(dcfg: DictConfig) -> None:
    pending = PendingRunDir(dcfg)
    cfg = to_config(dcfg)  # the whole config, as simulate checks it
    pending.accept()
    out = Path(HydraConfig.get().runtime.output_dir)
    data, quarantine = prepare(cfg.data, quarantine_dir=out)
    data.report["data_sha256"] = data_digest(cfg.data)
    data.save(out)
    quarantine.to_parquet(out / "quarantine.parquet", index=False)
    r = data.report
    print(shop_window_table(r))
    print(
        f"\nrows_in {r['rows_in']}  kept {r['rows_kept']}  quarantined "
        f"{sum(r['quarantined'].values())} {r['quarantined']}"
    )
    print(f"shops {r['shops']}  windows {r['windows']}  users {r['users']}  items {r['items']}")
    print(f"prepared dataset and report.json in {out}")


if __name__ == "__main__":
    check_command_line(sys.argv[1:])
    main()

"""Shared command-line behaviour: expected mistakes end in one clear line, not a traceback.

- :func:`friendly_errors`: a :class:`~fedcl.errors.FedclError` prints one line and exits 2;
  a Ctrl-C prints one line and exits 130.
- :func:`check_command_line`: the overrides of a Hydra command are composed and checked
  before Hydra runs, so a key Hydra cannot place ends in one line too (not Hydra's report).
- :class:`PendingRunDir`: nothing is written into a run directory until the run is accepted
  (its config checked, a resumed checkpoint matched), so a refused rerun leaves it unchanged.
- :func:`exit_on_interrupt`: one Ctrl-C stops a run whose threads would not stop by
  themselves (Flower's simulation engine), within seconds and with one line.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from logging.handlers import MemoryHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedcl.errors import FedclError

if TYPE_CHECKING:
    from omegaconf import DictConfig

#: Exit status of a run stopped by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130
#: Seconds the shutdown of Ray may take after a Ctrl-C before the process exits regardless.
GRACE_S = 5.0


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Print a FedclError's message to stderr and exit with status 2 (Ctrl-C: 130)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FedclError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(INTERRUPTED)

    return wrapper


def check_command_line(argv: list[str]) -> None:
    """Compose and check the Hydra overrides in ``argv`` (exit 2 with one line if bad).

    Hydra's own flags (``-m``, ``--cfg``, ...) are left to Hydra; ``hydra.*`` overrides
    (the run directory) are not part of the config and are skipped here."""
    from fedcl.config import load_config

    if any(a.startswith("-") for a in argv):
        return
    overrides = [a for a in argv if not a.lstrip("+~").startswith(("hydra.", "hydra/"))]
    friendly_errors(load_config)(overrides)


class PendingRunDir:
    """Holds back every write into a Hydra run directory until :meth:`accept`.

    Hydra is told to write nothing there (``conf/config.yaml``: ``hydra.output_subdir: null``
    and a console-only job log); until the run is accepted, log records are kept in memory.
    :meth:`accept` then writes what Hydra would have written (``.hydra/config.yaml``,
    ``hydra.yaml``, ``overrides.yaml``) and the log file ``<job name>.log`` (appended to, so
    a resumed run continues its log), starting with the held records.
    """

    FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's default

    def __init__(self, task_cfg: DictConfig) -> None:
        self.task_cfg = task_cfg  # the composed config Hydra passed to the task (unresolved)
        self.held = MemoryHandler(capacity=1 << 20, flushLevel=logging.CRITICAL + 1)
        logging.getLogger().addHandler(self.held)
        self.accepted = False

    def accept(self) -> None:
        """Write Hydra's files and start the log file (once)."""
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        if self.accepted:
            return
        self.accepted = True
        hc = HydraConfig.get()
        out = Path(hc.runtime.output_dir)
        meta = out / ".hydra"
        meta.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.task_cfg, meta / "config.yaml")
        OmegaConf.save({"hydra": hc}, meta / "hydra.yaml")
        OmegaConf.save(OmegaConf.create(list(hc.overrides.task)), meta / "overrides.yaml")
        file = logging.FileHandler(out / f"{hc.job.name}.log")
        file.setFormatter(logging.Formatter(self.FORMAT))
        root = logging.getLogger()
        self.held.setTarget(file)
        self.held.flush()
        root.removeHandler(self.held)
        root.addHandler(file)


def _stop_ray() -> None:
    """Stop the Ray processes this driver started (they also share its fate on exit).

    Not ``ray.shutdown()``: with Flower's threads still calling Ray, Ray's core worker then
    ends the process itself, with status 1 and a line of its own."""
    worker = sys.modules.get("ray._private.worker")  # never import Ray here
    node = getattr(worker, "_global_node", None) if worker is not None else None
    if node is not None:
        node.kill_all_processes(check_alive=False, allow_graceful=True)


@contextlib.contextmanager
def exit_on_interrupt(message: str, grace_s: float = GRACE_S) -> Iterator[None]:
    """While inside, one Ctrl-C (SIGINT) prints ``message``, stops Ray and exits with
    status 130; if that shutdown hangs, the process exits hard after ``grace_s`` seconds.

    For code whose own threads do not stop on KeyboardInterrupt (Flower's simulation
    engine): what must survive is already on disk (the server checkpoints every round)."""

    def stop(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, lambda *_: os._exit(INTERRUPTED))  # a 2nd Ctrl-C: now
        print(message, file=sys.stderr, flush=True)
        logging.disable(logging.CRITICAL)  # the threads' last words would bury the one line
        timer = threading.Timer(grace_s, os._exit, args=(INTERRUPTED,))
        timer.daemon = True
        timer.start()
        with contextlib.suppress(Exception):
            _stop_ray()
        logging.shutdown()
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(INTERRUPTED)

    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set in the main thread
        return
    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)

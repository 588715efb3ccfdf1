"""The server's checkpoint: a restarted ServerApp continues where the last one stopped.

After the untrained baseline, after every round and after every window's evaluation the server
writes one generation to a :class:`~fedcl.shop.store.GenerationStore` (atomic, sha256
checked, falling back to the previous good generation): the global shared parameters, the
strategy's own state, the next step of the schedule, the ``random`` and ``torch`` generator
states, and the results so far (a :class:`~fedcl.result.RunResult`, versioned). A new run
with the same configuration and checkpoint directory continues at the next step and ends with
the same results as an uninterrupted run; a checkpoint of another configuration is refused at
start.

Shops keep their own state (``federated.state_dir``), so a resumed server re-sends the step that
was in flight when it stopped: a shop that had already trained that round trains it once more
on the same window. Nothing is ingested twice (a shop's window watermark is durable), but the
model then differs slightly from an uninterrupted run. Steps finished before the last checkpoint
are never re-sent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord
from flwr.serverapp.strategy import Strategy
from omegaconf import OmegaConf

from fedcl.config import Config
from fedcl.errors import ConfigError
from fedcl.models.base import Recommender
from fedcl.result import RunResult
from fedcl.shop.store import GenerationStore, Tree

log = logging.getLogger("fedcl")

FORMAT = 2  # 2: the results as a versioned RunResult
#: Settings that cannot change a run's results: a resumed run may change them.
VOLATILE = frozenset(
    {
        "note",
        "device",
        "threads",
        "federated.resume",
        "federated.reset_corrupt_state",
        "federated.checkpoint_dir",
        "federated.wait_timeout_s",
        "federated.round_timeout_s",
        "federated.sim_cpus",
        "federated.cpus_per_shop",
        "federated.gpus_per_shop",
    }
)


def checkpoint_dir(cfg: Config, out_dir: Path) -> Path:
    """``federated.checkpoint_dir``, or ``<out_dir>/checkpoint`` when it is empty."""
    return Path(cfg.federated.checkpoint_dir or Path(out_dir) / "checkpoint")


def config_fingerprint(cfg: Config) -> dict[str, Any]:
    """The configuration as ``{dotted key: value}``, without :data:`VOLATILE` keys."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            flat[prefix[:-1]] = node

    walk(OmegaConf.to_container(OmegaConf.create(cfg), resolve=True), "")
    return {k: v for k, v in sorted(flat.items()) if k not in VOLATILE}


# --- a strategy's own state ----------------------------------------------------------------
# Flower keeps server-side optimiser state in plain attributes: FedAdam/FedYogi/FedAdagrad
# ``m_t``/``v_t`` and ``current_arrays`` (dicts of arrays), FedAvgM ``momentum_vector`` (a list)
# and ``current_arrays`` (an ArrayRecord), adaptive clipping's ``clipping_norm`` (a float),
# and a wrapper's inner ``strategy``. Every attribute of those kinds is saved, so a new
# strategy's state is covered without a list here; callables and other objects are not.


def _arrays(values: list[np.ndarray]) -> Tree:
    return {str(i): np.asarray(v) for i, v in enumerate(values)}


def _values(tree: Tree) -> list[np.ndarray]:
    return [tree[str(i)] for i in range(len(tree))]


def _encode(value: Any) -> Tree | None:
    """A tree for one attribute, or None for a kind that is not state."""
    if value is None:
        return {"kind": "none"}
    if type(value) in (bool, int, float, str):
        return {"kind": "scalar", "value": value}
    if isinstance(value, np.ndarray):
        return {"kind": "ndarray", "value": value}
    if isinstance(value, Strategy):
        return {"kind": "strategy", "state": strategy_state(value)}
    if isinstance(value, ArrayRecord):
        keys = list(value.keys())
        values = [value[k].numpy() for k in keys]
        return {"kind": "record", "keys": json.dumps(keys), "values": _arrays(values)}
    if isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in value.items()
    ):
        keys = list(value)
        values = [value[k] for k in keys]
        return {"kind": "dict", "keys": json.dumps(keys), "values": _arrays(values)}
    if isinstance(value, list) and all(isinstance(v, np.ndarray) for v in value):
        return {"kind": "list", "values": _arrays(value)}
    return None


def _decode(tree: Tree, current: Any) -> Any:
    kind = tree["kind"]
    if kind == "none":
        return None
    if kind in ("scalar", "ndarray"):
        return tree["value"]
    if kind == "strategy":
        load_strategy_state(current, tree["state"])
        return current
    values = _values(tree.get("values", {}))
    if kind == "list":
        return values
    keys = json.loads(tree["keys"])
    if kind == "record":
        return ArrayRecord({k: Array(v) for k, v in zip(keys, values, strict=True)})
    return dict(zip(keys, values, strict=True))


def strategy_state(strategy: Strategy) -> Tree:
    """Every attribute of ``strategy`` that holds state (see the comment above)."""
    state = {}
    for name, value in vars(strategy).items():
        encoded = _encode(value)
        if encoded is not None:
            state[name] = encoded
    return state


def load_strategy_state(strategy: Strategy, state: Tree) -> None:
    """Set the attributes saved by :func:`strategy_state` on a freshly built ``strategy``."""
    for name, tree in state.items():
        setattr(strategy, name, _decode(tree, getattr(strategy, name, None)))


# --- the checkpoint ------------------------------------------------------------------------
def _text(obj: Any) -> np.ndarray:
    """JSON as a byte array: lists of dicts (the rounds log) are no state-store tree."""
    return np.frombuffer(json.dumps(obj, default=str).encode(), dtype=np.uint8).copy()


def _untext(array: np.ndarray) -> Any:
    return json.loads(array.tobytes().decode())


@dataclass
class Snapshot:
    """The server after one step: continue at round ``round`` of window ``window``
    (``round == rounds + 1``: that window's evaluation is next)."""

    window: int
    round: int
    #: Flower's running round number of the last round done.
    server_round: int
    #: Results so far: rounds log, bytes, rejected replies, baseline and R-matrix rows.
    result: RunResult
    #: The global model's catalogue size and shared parameters.
    n_items: int
    shared: dict[str, torch.Tensor]
    strategy: Tree
    py_random: Any
    torch_random: torch.Tensor

    @classmethod
    def take(
        cls,
        window: int,
        round: int,
        server_round: int,
        result: RunResult,
        model: Recommender,
        strategy: Strategy,
    ) -> Snapshot:
        """The server's state now (``model``: the global :class:`Recommender`)."""
        return cls(
            window=window,
            round=round,
            server_round=server_round,
            result=result,
            n_items=int(model.n_items),
            shared={k: v.detach().cpu().clone() for k, v in model.shared_state().items()},
            strategy=strategy_state(strategy),
            py_random=random.getstate(),
            torch_random=torch.get_rng_state(),
        )

    def restore(self, model: Recommender, strategy: Strategy) -> None:
        """Load the shared parameters into ``model`` (built with ``n_items`` items), the
        strategy's state into ``strategy``, and the generator states."""
        model.load_shared_state(self.shared)
        load_strategy_state(strategy, self.strategy)
        version, internal, gauss = self.py_random
        random.setstate((version, tuple(internal), gauss))
        torch.set_rng_state(self.torch_random)


class ServerCheckpoint:
    """Snapshots of the server in ``directory``, tied to one configuration."""

    def __init__(self, directory: str | Path, cfg: Config) -> None:
        self.dir = Path(directory)
        self.store = GenerationStore(
            self.dir,
            what="server checkpoint",
            reset_hint="federated.reset_corrupt_state=true (the shops are then ahead of the "
            "server: also reset them, or use federated.resume=false with fresh shop states)",
            reset_corrupt=cfg.federated.reset_corrupt_state,
        )
        self.config = config_fingerprint(cfg)
        self.digest = hashlib.sha256(json.dumps(self.config, default=str).encode()).hexdigest()

    def save(self, snap: Snapshot) -> None:
        """Write ``snap`` as a new generation (atomically)."""
        self.store.save(
            {
                "format": FORMAT,
                "config_sha256": self.digest,
                "config": _text(self.config),
                "position": {
                    "window": snap.window,
                    "round": snap.round,
                    "server_round": snap.server_round,
                },
                "result": _text(snap.result.to_json()),
                "model": {"n_items": snap.n_items, "shared": snap.shared},
                "strategy": snap.strategy,
                "random": {"python": _text(snap.py_random), "torch": snap.torch_random},
            }
        )

    def load(self) -> Snapshot | None:
        """The newest good snapshot, or None when there is none.

        Raises ConfigError when it was written by another configuration."""
        tree = self.store.load()
        if tree is None:
            return None
        if tree.get("format") != FORMAT or tree.get("config_sha256") != self.digest:
            theirs = _untext(tree["config"]) if "config" in tree else {}
            keys = sorted(
                k for k in self.config.keys() | theirs.keys() if self.config.get(k) != theirs.get(k)
            )
            raise ConfigError(
                f"the server checkpoint in {self.dir} was written by another configuration "
                f"(differs in: {', '.join(keys) or 'format'}); use another output directory, "
                f"delete {self.dir}, or set federated.resume=false to start over"
            )
        pos, model = tree["position"], tree["model"]
        return Snapshot(
            window=int(pos["window"]),
            round=int(pos["round"]),
            server_round=int(pos["server_round"]),
            result=RunResult.from_json(_untext(tree["result"])),
            n_items=int(model["n_items"]),
            shared=dict(model.get("shared", {})),
            strategy=tree.get("strategy", {}),
            py_random=_untext(tree["random"]["python"]),
            torch_random=tree["random"]["torch"],
        )

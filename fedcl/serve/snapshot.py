"""What a shop serves: the model its evaluation uses, frozen into one checksummed generation.

After each evaluated window the shop agent (:class:`~fedcl.shop.agent.ShopAgent`, reading its
own log) writes a **serving snapshot** into ``<state-dir>/<shop>/serving/``, a
:class:`~fedcl.shop.store.GenerationStore` of its own (atomic write, sha256, the newest two
kept). The recommendation service (:mod:`fedcl.serve.app`) watches that directory and swaps to
a new generation between requests.

A snapshot is self-contained, so the service needs neither Flower nor the agent's learner:

* ``model_config`` (JSON, ``_target_`` must be a ``fedcl.models`` class) and ``model`` (the
  full state dict: the global shared part the shop last received plus its private part);
* ``users``: the shop's customer ids in order of their private index (its ingest map);
* ``items``: the catalogue ids the model knows (the plan's catalogue prefix);
* ``history``: each customer's purchases (CSR: ``ptr``, ``items``, ``count``, ``last``), all
  splits of every window so far, for the "buy again" list;
* ``popularity``: the shop's recent popularity (purchases, weight halving per window back),
  what an unknown customer is shown;
* ``window``, ``written_at`` (unix seconds: the "last training" time the service reports).

Everything in it is the shop's own and stays on its machine (directory 0700, files 0600).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from fedcl.data.dataset import PreparedData
from fedcl.data.schema import ITEM, ITEM_IDX, SHOP, TIME, USER_IDX, WINDOW
from fedcl.models.base import ModelConfig, Recommender
from fedcl.shop.store import GenerationStore

FORMAT = 1
SERVING_DIR = "serving"
#: Weight of a window's purchases in the popularity list, per window back.
POPULARITY_DECAY = 0.5
_MODELS = "fedcl.models."


def serving_store(shop_dir: str | Path) -> GenerationStore:
    """The serving snapshots of one shop (``shop_dir``: ``<state-dir>/<shop>``)."""
    return GenerationStore(Path(shop_dir) / SERVING_DIR, what="serving snapshot")


def model_config_json(model_cfg: ModelConfig | Any) -> str:
    """The model's config as JSON (a structured config, a dataclass or a plain dict)."""
    if OmegaConf.is_config(model_cfg):
        data = OmegaConf.to_container(model_cfg, resolve=True)
    else:
        data = OmegaConf.to_container(OmegaConf.structured(model_cfg), resolve=True)
    return json.dumps(data, sort_keys=True)


def write_snapshot(
    store: GenerationStore,
    shop: str,
    window: int,
    model: Recommender,
    model_cfg: ModelConfig | Any,
    data: PreparedData,
    user_ids: np.ndarray,
) -> Path:
    """Freeze ``model`` (the one the shop evaluates at ``window``) with what serving needs."""
    n_items = int(model.n_items)
    events = data.events
    mine = events[(events[SHOP] == shop) & (events[WINDOW] <= window)]
    users = np.asarray(user_ids, dtype=str)
    if len(users) < model.n_users:  # rows the model has beyond the map: nameless, unusable
        users = np.concatenate([users, np.full(model.n_users - len(users), "", dtype=str)])
    tree = {
        "format": FORMAT,
        "shop": shop,
        "window": int(window),
        "written_at": time.time(),
        "model_config": model_config_json(model_cfg),
        "n_users": int(model.n_users),
        "n_items": n_items,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "users": users[: model.n_users],
        "items": data.catalog[ITEM].astype(str).to_numpy()[:n_items].astype(str),
        "history": _history(mine, int(model.n_users), n_items),
        "popularity": _popularity(mine, window, n_items),
    }
    return store.save(tree)


def _history(events: pd.DataFrame, n_users: int, n_items: int) -> dict[str, np.ndarray]:
    """Per customer: the items bought, how often, and when last (unix s); CSR by user."""
    ok = (events[USER_IDX] < n_users) & (events[ITEM_IDX] < n_items)
    frame = pd.DataFrame(
        {
            "user": events.loc[ok, USER_IDX].to_numpy(np.int64),
            "item": events.loc[ok, ITEM_IDX].to_numpy(np.int64),
            "time": events.loc[ok, TIME].to_numpy("datetime64[s]").astype(np.int64),
        }
    )
    grouped = frame.groupby(["user", "item"], sort=True)["time"].agg(["size", "max"])
    user = grouped.index.get_level_values(0).to_numpy(np.int64)
    return {
        "ptr": np.concatenate([[0], np.cumsum(np.bincount(user, minlength=n_users))]),
        "items": grouped.index.get_level_values(1).to_numpy(np.int64),
        "count": grouped["size"].to_numpy(np.int64),
        "last": grouped["max"].to_numpy(np.int64),
    }


def _popularity(events: pd.DataFrame, window: int, n_items: int) -> np.ndarray:
    """(n_items,) purchases weighted by ``POPULARITY_DECAY ** (window - w)``."""
    items = events[ITEM_IDX].to_numpy(np.int64)
    age = window - events[WINDOW].to_numpy(np.int64)
    keep = items < n_items
    weight = POPULARITY_DECAY ** age[keep].astype(np.float64)
    return np.bincount(items[keep], weights=weight, minlength=n_items).astype(np.float32)


@dataclass
class Snapshot:
    """A verified snapshot, with its model rebuilt (CPU, eval mode)."""

    generation: int
    shop: str
    window: int
    written_at: float
    model_name: str
    model: Recommender
    users: np.ndarray  # (U,) str
    items: np.ndarray  # (I,) str
    history: dict[str, np.ndarray]
    popularity: np.ndarray  # (I,) float32


class BadSnapshot(ValueError):
    """A generation verifies but is not a serving snapshot this code can serve."""


def read_snapshot(store: GenerationStore, generation: int) -> Snapshot:
    """Generation ``generation`` of ``store``, verified and rebuilt.

    Raises :class:`~fedcl.shop.store.CorruptState` (checksum), :class:`BadSnapshot`
    (content) or ``FileNotFoundError`` (rotated out meanwhile)."""
    from fedcl.learner import build_model

    tree = store.read(generation)
    if tree.get("format") != FORMAT:
        raise BadSnapshot(f"generation {generation}: format {tree.get('format')!r}, want {FORMAT}")
    try:
        config = json.loads(tree["model_config"])
        target = str(config.get("_target_", ""))
        if not target.startswith(_MODELS):
            raise BadSnapshot(f"generation {generation}: model {target!r} is not a fedcl model")
        model = build_model(
            OmegaConf.create(config), tree["n_users"], tree["n_items"], torch.device("cpu")
        )
        model.load_state_dict(tree["model"])
    except (KeyError, RuntimeError, TypeError) as e:
        raise BadSnapshot(f"generation {generation}: {type(e).__name__}: {e}") from e
    model.eval()
    return Snapshot(
        generation=generation,
        shop=str(tree["shop"]),
        window=int(tree["window"]),
        written_at=float(tree["written_at"]),
        model_name=target.rsplit(".", 1)[-1],
        model=model,
        users=np.asarray(tree["users"], dtype=str),
        items=np.asarray(tree["items"], dtype=str),
        history={k: np.asarray(v) for k, v in tree["history"].items()},
        popularity=np.asarray(tree["popularity"], dtype=np.float32),
    )

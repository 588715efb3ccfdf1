"""Flower strategies from config: ``_target_`` names the class, ``kwargs`` its arguments."""

from __future__ import annotations

from flwr.serverapp.strategy import Strategy
from hydra.utils import get_class

from fedcl.errors import ConfigError
from fedcl.federated.config import FederatedConfig, StrategyConfig


def build_strategy(cfg: StrategyConfig, fed: FederatedConfig) -> Strategy:
    """The configured strategy; a wrong argument is a ConfigError naming the strategy."""
    try:
        cls = get_class(cfg._target_)
    except Exception as e:  # hydra raises several kinds for a bad path
        raise ConfigError(f"strategy._target_ {cfg._target_!r} is not a class: {e}") from e
    kwargs = dict(cfg.kwargs)
    if cfg.proximal_mu > 0 and "proximal_mu" in cls.__init__.__code__.co_varnames:
        kwargs["proximal_mu"] = cfg.proximal_mu
    try:
        return cls(
            fraction_train=cfg.fraction_train,
            fraction_evaluate=1.0,  # unused: fedcl runs its own evaluation after each window
            min_train_nodes=min(cfg.min_train_nodes, fed.min_shops),
            # Only the start waits for federated.min_shops (server_loop.wait_for_shops): a
            # round trains with the shops online, so a dead shop is skipped, not waited for.
            min_available_nodes=min(cfg.min_train_nodes, fed.min_shops),
            **kwargs,
        )
    except TypeError as e:
        raise ConfigError(f"strategy {cfg.name!r} ({cfg._target_}): {e}") from e

"""Range checks of config values, shared by every config node's ``check(key)``.

Each failure is one :class:`~fedcl.errors.ConfigError` that names the key (its full dotted
path), the value and what is allowed, so a bad override ends at start in one line.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fedcl.errors import ConfigError


def one_of(key: str, value: Any, allowed: Iterable[Any]) -> None:
    """``value`` must be one of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        names = ", ".join(str(a) for a in allowed)
        raise ConfigError(f"{key} must be one of {names}; got {value!r}")


def at_least(key: str, value: float, low: float) -> None:
    """``value >= low``."""
    if not value >= low:
        raise ConfigError(f"{key} must be >= {low:g}; got {value!r}")


def above(key: str, value: float, low: float) -> None:
    """``value > low``."""
    if not value > low:
        raise ConfigError(f"{key} must be > {low:g}; got {value!r}")


def within(key: str, value: float, low: float, high: float, *, open_low: bool = False) -> None:
    """``low <= value <= high`` (``low < value`` when ``open_low``)."""
    ok = (value > low if open_low else value >= low) and value <= high
    if not ok:
        left = "(" if open_low else "["
        raise ConfigError(f"{key} must lie in {left}{low:g}, {high:g}]; got {value!r}")

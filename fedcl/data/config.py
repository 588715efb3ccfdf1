"""Typed configuration of the data layer (the Hydra group ``data``).

A source is one module under ``fedcl/data/sources/`` and one YAML under ``conf/data/``.
The module has a ``read(cfg) -> SourceFrame`` function and a config dataclass that
subclasses :class:`DataConfig`, exported as the module-level name ``SCHEMA``; the YAML
names the function, e.g. ``_target_: fedcl.data.sources.csv.read``, so the schema of
an option is ``SCHEMA`` of the module its ``_target_`` lives in. Defaults live in the
dataclass only; the YAML holds ``_target_`` and what differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fedcl.checks import at_least, one_of, within


@dataclass
class ShopsConfig:
    """How the shop column becomes clients."""

    #: A shop needs at least this many distinct users (and events) to stand alone;
    #: smaller ones are merged into ``other_name`` or dropped (``small``).
    min_users: int = 10
    min_events: int = 100
    small: str = "merge"  # "merge" | "drop"
    other_name: str = "other"
    #: Shop values that mean "unknown" (quarantined as ``unknown_shop``).
    unknown: list[str] = field(default_factory=lambda: ["Unspecified", ""])


@dataclass
class WindowsConfig:
    """Time windows, the same boundaries for every shop."""

    period: str = "month"  # "week" | "month" | "quarter" | "count"
    #: Number of equal-count windows when ``period == "count"``.
    count: int = 10
    #: Each window's last ``test_fraction`` of its (data-clipped) time span is its test part.
    test_fraction: float = 0.2


@dataclass
class ValidationConfig:
    """Plausibility bounds for rows."""

    min_time: str = "1990-01-01"
    #: Timestamps after this are implausible; ``None`` means "after now".
    max_time: str | None = None


@dataclass
class DataConfig:
    """What every source config has; ``data_cfg: DataConfig`` accepts any of them."""

    name: str = "base"
    #: Dotted path of the function that reads the input into a SourceFrame
    #: (resolved with ``hydra.utils.get_method``), e.g. "fedcl.data.sources.csv.read".
    _target_: str = ""
    #: Input file; ``None`` uses the source's default (e.g. the shipped Online Retail file).
    path: str | None = None
    shops: ShopsConfig = field(default_factory=ShopsConfig)
    windows: WindowsConfig = field(default_factory=WindowsConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    #: Reuse a prepared dataset cached by input hash + config (``~/.cache/fedcl``).
    cache: bool = True

    def check(self, key: str = "data") -> None:
        """Value checks of the settings every source shares (a source adds its own)."""
        at_least(f"{key}.shops.min_users", self.shops.min_users, 1)
        at_least(f"{key}.shops.min_events", self.shops.min_events, 0)
        one_of(f"{key}.shops.small", self.shops.small, ("merge", "drop"))
        one_of(f"{key}.windows.period", self.windows.period, ("week", "month", "quarter", "count"))
        at_least(f"{key}.windows.count", self.windows.count, 1)
        within(f"{key}.windows.test_fraction", self.windows.test_fraction, 0, 0.9, open_low=True)

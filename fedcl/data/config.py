"""Typed configuration of the data layer (the Hydra group ``data``).

Each source module subclasses :class:`DataConfig` with its own options; the YAML in
``conf/data/<name>.yaml`` picks the schema and sets ``reader`` to the function that
maps the input to a :class:`fedcl.data.schema.SourceFrame`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
    name: str = "base"
    #: "module.path:function" that reads the input into a SourceFrame.
    reader: str = ""
    #: Input file; ``None`` uses the source's default (e.g. the shipped Online Retail file).
    path: str | None = None
    shops: ShopsConfig = field(default_factory=ShopsConfig)
    windows: WindowsConfig = field(default_factory=WindowsConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    #: Reuse a prepared dataset cached by input hash + config (``~/.cache/fedcl``).
    cache: bool = True

"""Shared command-line behaviour: expected mistakes end in one clear line, not a traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from fedcl.errors import FedclError


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Print a FedclError's message to stderr and exit with status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FedclError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapper

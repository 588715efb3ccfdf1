"""Where models run: device choice, CPU threads, mixed precision."""

from __future__ import annotations

import contextlib

import torch


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for ``name``: ``auto`` (CUDA, then MPS, then CPU), or an explicit
    one such as ``cpu``, ``cuda``, ``cuda:1``, ``mps``.

    Raises ``ValueError`` when the name is not a device or the device is not available.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device={name!r} is not a device name; use auto, cpu, cuda, cuda:<index> or mps"
        ) from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = (
                "this torch has no CUDA support"
                if torch.version.cuda is None
                else ("no CUDA GPU is visible")
            )
            raise ValueError(f"device={name!r} requested but {why}; use device=auto or cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"device={name!r} requested but only {count} CUDA device(s) exist "
                f"(indices 0..{count - 1})"
            )
    elif device.type == "mps" and not _mps_available():
        raise ValueError(f"device={name!r} requested but MPS is not available; use auto or cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device={name!r} is not supported; use auto, cpu, cuda or mps")
    return device


def set_threads(n: int | None) -> None:
    """Use ``n`` intra-op CPU threads; ``None`` or 0 leaves torch's default.

    Several simulated shops sharing a machine should each get a few threads, not all.
    """
    if not n:
        return
    if n < 0:
        raise ValueError(f"threads must be a positive number (or 0/None for the default), got {n}")
    torch.set_num_threads(n)


def autocast(device: torch.device | str, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``enabled``; a no-op context otherwise (CPU, MPS)."""
    device = torch.device(device)
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()

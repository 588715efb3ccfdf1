"""Durable state in atomic, checksummed generations: a shop's private parameters, continual
state and watermarks (:mod:`fedcl.shop.agent`, :mod:`fedcl.shop.ingest`), and the server's
checkpoint (:mod:`fedcl.federated.checkpoint`).

The same store serves simulation and deployment. A state is a nested dict whose leaves are
tensors, numpy arrays or plain scalars/strings. Each save writes a new generation atomically
(write to a temporary file, fsync, rename, fsync the directory) next to its sha256; loading
takes the newest generation whose checksum matches, so a crash mid-write or a corrupt file
falls back to the previous good state instead of losing the shop's history.

**Corruption is an error, never a reset.** When generations exist and none verifies, loading
raises :class:`CorruptState` naming the files and the two ways out: restore them, or start
over with the store's reset option, which first moves the corrupt files aside (into
``corrupt-<time>/`` in the same directory). **Private files**: the directory is 0700 and
every file 0600 (a shop's state holds its customers' data). Temporary files left by a killed
writer are removed by the store's first save (a store that only reads changes nothing).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedcl.errors import FedclError

log = logging.getLogger("fedcl.shop")
Tree = dict[str, Any]
_SEP = "/"
_GEN = re.compile(r"^state-(\d{8})\.npz$")
_TMP = re.compile(r"^\..+\.tmp\d+$")  # what _atomic_write leaves when killed mid-write
DIR_MODE, FILE_MODE = 0o700, 0o600


def safe_name(shop: str) -> str:
    """A shop name as a file name (how shop state directories and logs are spelled)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in shop)


class CorruptState(FedclError):
    """Generations exist and none verifies: restore them, or reset explicitly."""


def flatten(tree: Tree, prefix: str = "") -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Leaves as numpy arrays keyed by path, and each leaf's kind for exact restore."""
    arrays: dict[str, np.ndarray] = {}
    kinds: dict[str, str] = {}
    for key, value in tree.items():
        if _SEP in key:
            raise ValueError(f"state keys may not contain {_SEP!r}: {key!r}")
        path = prefix + key
        if isinstance(value, dict):
            if not value:
                kinds[path] = "empty"
            sub_a, sub_k = flatten(value, path + _SEP)
            arrays.update(sub_a)
            kinds.update(sub_k)
        elif isinstance(value, torch.Tensor):
            arrays[path] = value.detach().cpu().numpy()
            kinds[path] = "tensor"
        elif isinstance(value, np.ndarray):
            arrays[path] = value
            kinds[path] = "ndarray"
        elif value is None:
            kinds[path] = "none"
        elif isinstance(value, (bool, int, float, str)):
            arrays[path] = np.asarray(value)
            kinds[path] = type(value).__name__
        else:
            raise TypeError(f"cannot store {type(value).__name__} at {path!r}")
    return arrays, kinds


def unflatten(arrays: dict[str, np.ndarray], kinds: dict[str, str]) -> Tree:
    casts = {"bool": bool, "int": int, "float": float, "str": str}
    tree: Tree = {}
    for path, kind in kinds.items():
        *parents, leaf = path.split(_SEP)
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        if kind == "empty":
            node[leaf] = {}
        elif kind == "none":
            node[leaf] = None
        elif kind == "tensor":
            node[leaf] = torch.from_numpy(np.array(arrays[path]))
        elif kind == "ndarray":
            node[leaf] = np.array(arrays[path])
        else:
            node[leaf] = casts[kind](arrays[path].item())
    return tree


class GenerationStore:
    """Generations of one state in ``directory`` (keeps the newest ``keep``).

    ``what`` names the state in messages; ``reset_hint`` is the option that starts it over
    (shown in the :class:`CorruptState` message); ``reset_corrupt=True`` is that option:
    corrupt generations are moved aside and loading starts from nothing."""

    def __init__(
        self,
        directory: str | Path,
        keep: int = 2,
        *,
        what: str = "state",
        reset_hint: str = "the reset option",
        reset_corrupt: bool = False,
    ) -> None:
        self.dir = Path(directory)
        self.keep = max(keep, 2)
        self.what, self.reset_hint, self.reset_corrupt = what, reset_hint, reset_corrupt
        self._swept = False  # leftovers of a killed writer are removed by the first save

    def _generations(self) -> list[int]:
        if not self.dir.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.dir.iterdir() if (m := _GEN.match(p.name)))

    def generations(self) -> list[int]:
        """Numbers of the generations on disk, oldest first (verified or not)."""
        return self._generations()

    def read(self, gen: int) -> Tree:
        """Generation ``gen`` exactly, verified: :class:`CorruptState` when its checksum
        fails or it cannot be read, ``FileNotFoundError`` when it is gone (rotated out).
        Unlike :meth:`load`, never falls back to another generation (a reader that already
        holds an older one, e.g. the recommendation service, keeps it instead)."""
        path = self.dir / f"state-{gen:08d}.npz"
        payload = path.read_bytes()
        want = path.with_suffix(".sha256").read_text().strip()
        if hashlib.sha256(payload).hexdigest() != want:
            raise CorruptState(f"{self.what} {path} fails its sha256")
        try:
            with np.load(io.BytesIO(payload), allow_pickle=False) as z:
                kinds = json.loads(str(z["__kinds__"]))
                arrays = {k: z[k] for k in z.files if k != "__kinds__"}
        except (ValueError, KeyError, OSError) as e:  # verified bytes, yet not a state
            raise CorruptState(f"{self.what} {path} cannot be read ({e})") from e
        return unflatten(arrays, kinds)

    def save(self, state: Tree) -> Path:
        """Write a new generation atomically; returns its path."""
        _private_dir(self.dir)
        if not self._swept:
            self._remove_leftovers()
        arrays, kinds = flatten(state)
        buf = io.BytesIO()
        np.savez(buf, __kinds__=np.asarray(json.dumps(kinds)), **arrays)
        payload = buf.getvalue()
        gens = self._generations()
        gen = (gens[-1] + 1) if gens else 1
        path = self.dir / f"state-{gen:08d}.npz"
        _atomic_write(path.with_suffix(".sha256"), hashlib.sha256(payload).hexdigest().encode())
        _atomic_write(path, payload)
        for old in gens[: max(0, len(gens) + 1 - self.keep)]:
            for suffix in (".npz", ".sha256"):
                (self.dir / f"state-{old:08d}{suffix}").unlink(missing_ok=True)
        return path

    def load(self) -> Tree | None:
        """The newest state whose checksum matches; None when there is no state yet.

        Raises :class:`CorruptState` when generations exist and none verifies (unless
        ``reset_corrupt``: then they are moved aside and None is returned)."""
        problems = []
        for gen in reversed(self._generations()):
            path = self.dir / f"state-{gen:08d}.npz"
            try:
                payload = path.read_bytes()
                want = path.with_suffix(".sha256").read_text().strip()
            except OSError as e:
                problems.append(f"{path.name}: unreadable ({e.strerror or e})")
                log.warning("%s %s unreadable (%s); trying the previous one", self.what, path, e)
                continue
            if hashlib.sha256(payload).hexdigest() != want:
                problems.append(f"{path.name}: fails its sha256")
                log.warning("%s %s fails its checksum; using the previous one", self.what, path)
                continue
            with np.load(io.BytesIO(payload), allow_pickle=False) as z:
                kinds = json.loads(str(z["__kinds__"]))
                arrays = {k: z[k] for k in z.files if k != "__kinds__"}
            return unflatten(arrays, kinds)
        if not problems:
            return None
        if self.reset_corrupt:
            aside = self._move_aside()
            log.warning("%s in %s was corrupt: moved to %s, starting over", self.what, self.dir,
                        aside)  # fmt: skip
            return None
        raise CorruptState(
            f"no generation of the {self.what} in {self.dir} verifies ({'; '.join(problems)}): "
            f"restore these files from a backup, or start over with {self.reset_hint} "
            "(which first moves them aside)"
        )

    def _remove_leftovers(self) -> None:
        """Temporary files of a writer that was killed mid-write. Only a store that writes
        removes them: reading (e.g. a rerun refused for another configuration) changes
        nothing in the directory."""
        for p in self.dir.iterdir():
            if _TMP.match(p.name):
                log.warning("removing %s, left by a writer that was stopped mid-write", p)
                p.unlink(missing_ok=True)
        self._swept = True

    def _move_aside(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        aside = self.dir / f"corrupt-{stamp}"
        _private_dir(aside)
        for p in self.dir.iterdir():
            if p.is_file() and p.name.startswith("state-"):
                p.rename(aside / p.name)
        return aside


def _private_dir(path: Path) -> None:
    """``path`` (and missing parents) as a directory only its owner can enter."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    os.chmod(path, DIR_MODE)


def _atomic_write(path: Path, payload: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

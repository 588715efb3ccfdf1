"""What was shown, and what customers did with it: impressions and the online metrics.

The service appends one line per answered customer to ``impressions.jsonl`` (request id,
time, customer, model generation and window, and each list's item ids in order); the
site's events land in ``feedback.jsonl`` (:mod:`fedcl.serve.events`). Both stay at the shop
(``<state-dir>/<shop>/serve/``, files 0600).

:func:`online_metrics` joins them on the request id: an event counts for a list when its
item was in that list of that request. Per model generation and list:

* ``shown``: lists shown; ``clicks``/``purchases``: lists with at least one click/purchase
  of one of their items (an event id counts once);
* ``click_through`` = clicks / shown, ``purchase_through`` = purchases / shown;
* ``purchased_items``: purchase events of shown items (a list can sell several).

The shop agent computes them at every evaluated window and writes ``online.json`` next to
its state, beside the offline figures of its evaluation.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import defaultdict
from pathlib import Path

IMPRESSIONS_FILE = "impressions.jsonl"
ONLINE_FILE = "online.json"
SERVE_DIR = "serve"


class ImpressionLog:
    """Appends impressions (buffered by the OS; flushed per request, fsynced on close)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = folder / IMPRESSIONS_FILE
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._file = os.fdopen(fd, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, records: list[dict]) -> None:
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        with self._lock:
            self._file.write(text)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()


def impression(request_id: str, user: str, generation: int, window: int, lists: dict) -> dict:
    """One line of ``impressions.jsonl``."""
    return {
        "request_id": request_id,
        "time": time.time(),
        "user": user,
        "generation": generation,
        "window": window,
        "lists": {name: [item for item, _ in items] for name, items in lists.items()},
    }


def _read_jsonl(path: Path) -> list[dict]:
    """Complete lines of a JSONL file (a last line still being written is skipped)."""
    if not path.exists():
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def online_metrics(folder: Path) -> dict:
    """Per generation and list: shown, clicks, purchases and their rates (module docstring)."""
    by_request: dict[str, tuple[int, dict[str, set]]] = {}
    counts: dict[tuple[int, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for imp in _read_jsonl(folder / IMPRESSIONS_FILE):
        gen = int(imp["generation"])
        lists = {name: set(items) for name, items in imp["lists"].items()}
        by_request[imp["request_id"]] = (gen, lists)
        for name in lists:
            counts[(gen, name)]["shown"] += 1
    hit: dict[str, set] = {"click": set(), "purchase": set()}
    seen_events: set[str] = set()
    for ev in _read_jsonl(folder / "feedback.jsonl"):
        kind, req = ev.get("type"), ev.get("request_id")
        if kind not in hit or req not in by_request:
            continue
        eid = ev.get("event_id")
        if eid:
            if eid in seen_events:
                continue
            seen_events.add(eid)
        gen, lists = by_request[req]
        for name, items in lists.items():
            if ev["item"] in items:
                hit[kind].add((req, name))
                if kind == "purchase":
                    counts[(gen, name)]["purchased_items"] += 1
    for kind, key in (("click", "clicks"), ("purchase", "purchases")):
        for req, name in hit[kind]:
            counts[(by_request[req][0], name)][key] += 1
    out: dict[str, dict[str, dict]] = {}
    for (gen, name), c in sorted(counts.items()):
        n = c["shown"]
        out.setdefault(str(gen), {})[name] = {
            "shown": n,
            "clicks": c["clicks"],
            "purchases": c["purchases"],
            "purchased_items": c["purchased_items"],
            "click_through": c["clicks"] / n if n else None,
            "purchase_through": c["purchases"] / n if n else None,
        }
    return out


def write_online(folder: Path, window: int) -> dict | None:
    """Compute the online metrics of ``folder`` and write them to ``online.json``."""
    if not (folder / IMPRESSIONS_FILE).exists():
        return None
    report = {"window": window, "computed_at": time.time(), "by_generation": online_metrics(folder)}
    tmp = folder / f".{ONLINE_FILE}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)
    os.replace(tmp, folder / ONLINE_FILE)
    return report

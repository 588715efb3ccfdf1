"""Hot model swap: the service follows the agent's serving snapshots between requests.

:class:`ModelHolder` keeps the :class:`~fedcl.serve.recommend.Recommender` in use. A watcher
thread (:meth:`ModelHolder.start`) looks for a newer generation every ``poll_s`` seconds and
builds it completely *before* publishing it with one reference assignment, so a request (which
reads ``holder.current`` once) sees either the old model or the new one, never a half-loaded
one. A generation that fails its checksum or cannot be rebuilt is **refused**: logged with the
reason, counted, never tried again, and the service keeps what it serves. A generation that
vanished meanwhile (the agent keeps the newest two) is simply looked for again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from fedcl.serve.recommend import Recommender
from fedcl.serve.snapshot import BadSnapshot, read_snapshot, serving_store
from fedcl.shop.store import CorruptState

log = logging.getLogger("fedcl.serve")


class ModelHolder:
    """The model a service answers with, and how it moves to the agent's next one.

    ``follow=False`` loads the newest good generation once and never swaps (a frozen model).
    ``sellable``: a callable giving the item ids the shop can sell now (None: all);
    ``on_poll``: called by the watcher after each look (the service checks that list)."""

    def __init__(
        self,
        shop_dir: str | Path,
        sellable: Callable[[], set[str] | None] = lambda: None,
        follow: bool = True,
        on_swap: Callable[[Recommender], None] | None = None,
        on_refuse: Callable[[int, str], None] | None = None,
        on_poll: Callable[[], None] | None = None,
    ) -> None:
        self.store = serving_store(shop_dir)
        self.sellable, self.follow = sellable, follow
        self.on_swap, self.on_refuse, self.on_poll = on_swap, on_refuse, on_poll
        self.current: Recommender | None = None
        self.refused: dict[int, str] = {}  # generation -> why
        self._lock = threading.Lock()  # one refresh at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """Swap to the newest generation not served or refused yet; True when it swapped."""
        with self._lock:
            if self.current is not None and not self.follow:
                return False
            served = -1 if self.current is None else self.current.generation
            for gen in reversed(self.store.generations()):
                if gen <= served:
                    return False
                if gen in self.refused:
                    continue
                try:
                    snap = read_snapshot(self.store, gen)
                except FileNotFoundError:  # rotated out while we looked: look again later
                    continue
                except (CorruptState, BadSnapshot, OSError) as e:
                    self._refuse(gen, str(e))
                    continue
                # Outside the try: an unreadable sellable list is no fault of the generation
                # (the error reaches the caller; the watcher tries again at its next poll).
                model = Recommender(snap, self.sellable())
                self.current = model  # one assignment: requests see old or new, whole
                log.info("serving generation %d (window %d)", gen, model.window)
                if self.on_swap is not None:
                    self.on_swap(model)
                return True
            return False

    def reload_sellable(self) -> None:
        """Rebuild the current model's catalogue view (the sellable list changed)."""
        with self._lock:
            if self.current is not None:
                self.current = Recommender(self.current.snap, self.sellable())

    def _refuse(self, gen: int, why: str) -> None:
        self.refused[gen] = why
        log.error(
            "refusing serving generation %d (%s); still serving generation %s", gen, why,
            None if self.current is None else self.current.generation,
        )  # fmt: skip
        if self.on_refuse is not None:
            self.on_refuse(gen, why)

    # --- the watcher ---------------------------------------------------------------------
    def start(self, poll_s: float) -> None:
        """Watch for new generations every ``poll_s`` seconds in a daemon thread."""
        if self._thread is not None:
            return

        def watch() -> None:
            while not self._stop.wait(poll_s):
                try:
                    self.refresh()
                    if self.on_poll is not None:
                        self.on_poll()
                except Exception:  # the watcher must outlive any one bad generation
                    log.exception("looking for a new serving generation failed")

        self._thread = threading.Thread(target=watch, name="fedcl-serve-swap", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

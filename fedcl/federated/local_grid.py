"""An in-process Grid: every message goes straight to the ClientApp (server tests, and the
closed-loop simulation, which needs to act between windows).

No Ray, no SuperLink: node ``FIRST_NODE + p`` is shop partition ``p``, served by
``make_client_app(cfg)`` called as ``app(message, context)`` with one Context per node (its
``node_config`` holds ``partition-id``, as in simulation, plus ``node_configs[p]`` when given:
e.g. ``shop``, ``events``, ``plan``, ``state-dir`` for a shop reading its own log). A ClientApp
that raises answers with an error reply, as Flower's runtime does. Messages are built with
Flower's task identity set (:func:`server_identity`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from fedcl.config import Config
from fedcl.federated.client_app import make_client_app

FIRST_NODE = 10


@contextmanager
def server_identity() -> Iterator[None]:
    """Build messages as the ServerApp would (Flower reads its task identity)."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    try:
        yield
    finally:
        TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None


def own_log_nodes(
    logs: dict[str, Path], plan_dir: str | Path, state_dir: str | Path
) -> list[dict[str, str]]:
    """Node configs of shops each reading its own log (``logs``: shop -> log file)."""
    return [
        {"shop": s, "events": str(p), "plan": str(plan_dir), "state-dir": str(state_dir)}
        for s, p in logs.items()
    ]


class LocalGrid(Grid):
    """``n_shops`` shops of ``cfg`` as nodes of this process."""

    def __init__(
        self, cfg: Config, n_shops: int, node_configs: list[dict[str, Any]] | None = None
    ) -> None:
        self.app = make_client_app(cfg)
        extra = node_configs or [{} for _ in range(n_shops)]
        self.contexts = {
            FIRST_NODE + p: Context(
                run_id=1,
                node_id=FIRST_NODE + p,
                node_config={"partition-id": p, "num-partitions": n_shops, **extra[p]},
                state=RecordDict(),
                run_config={},
            )
            for p in range(n_shops)
        }
        self._run = Run.create_empty(run_id=1)
        self._replies: dict[str, Message] = {}
        #: Every message pushed, in order (tests inspect what the server sent).
        self.sent: list[Message] = []

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            # uuid4 draws from os.urandom, not from the `random` module the server seeds.
            msg.metadata.__dict__["_message_id"] = msg_id = str(uuid.uuid4())
            self.sent.append(msg)
            self._replies[msg_id] = self._handle(msg)
            ids.append(msg_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))

    def _handle(self, msg: Message) -> Message:
        try:
            return self.app(msg, self.contexts[msg.metadata.dst_node_id])
        except Exception as e:  # the runtime turns a ClientApp exception into an error reply
            error = Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, f"{type(e).__name__}: {e}")
            return Message(error, reply_to=msg)

"""The server's schedule when shops go away: a clear error instead of an endless wait."""

from __future__ import annotations

import pytest

from fedcl.federated.local_grid import LocalGrid
from fedcl.federated.server_loop import NotEnoughShops, run_federated

pytestmark = pytest.mark.usefixtures("server_identity")


class ShrinkingGrid(LocalGrid):
    """All shops answer the first evaluation (the untrained baseline); then all but one
    disconnect for good."""

    def __init__(self, cfg, n_shops: int) -> None:
        super().__init__(cfg, n_shops)
        self.calls = 0

    def get_node_ids(self):
        nodes = list(super().get_node_ids())
        return nodes if self.calls == 0 else nodes[:1]

    def send_and_receive(self, messages, *, timeout=None):
        replies = super().send_and_receive(messages, timeout=timeout)
        self.calls += 1
        return replies


def test_too_few_shops_left_for_a_round_is_a_clear_error(tiny_cfg, tmp_path):
    cfg = tiny_cfg(
        "federated.min_shops=2", "strategy.min_train_nodes=2", "federated.wait_timeout_s=1"
    )

    with pytest.raises(NotEnoughShops, match=r"only 1 shop\(s\).*strategy.min_train_nodes=2"):
        run_federated(ShrinkingGrid(cfg, 3), cfg, tmp_path / "ckpt")


def test_a_round_trains_with_the_shops_still_online(tiny_cfg, tmp_path):
    cfg = tiny_cfg("federated.min_shops=3", "strategy.min_train_nodes=1")

    out = run_federated(ShrinkingGrid(cfg, 3), cfg, tmp_path / "ckpt")

    trained = [r for r in out.rounds if r.unit == "federated"]
    assert trained and all(r.shops == 1 and r.ok == 1 for r in trained)

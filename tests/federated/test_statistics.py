"""Exact federation of item-item models: a shop's sparse Gram is checked before it is summed,
and the federated model equals the centralized one on the same stream."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from flwr.app import Array, ArrayRecord

from fedcl.evaluation import Evaluator
from fedcl.federated.local_grid import LocalGrid
from fedcl.federated.protocol import Rejected
from fedcl.federated.server_loop import run_federated
from fedcl.federated.statistics import (
    COL,
    ROW,
    VAL,
    bound_statistics,
    check_gram,
    decode_gram,
    encode_gram,
)
from fedcl.models.itemitem import ItemItem
from fedcl.modes import run_centralized
from fedcl.run_data import run_data
from fedcl.shop.replies import TrainReply

G = sp.csr_matrix(np.array([[2.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 1.0]]))


def _record(**change) -> ArrayRecord:
    arrays = {k: v.clone() for k, v in encode_gram(G).items()}
    arrays.update(change)
    return ArrayRecord(arrays)


def test_a_gram_travels_as_its_upper_triangle_and_comes_back_whole():
    arrays = encode_gram(G)

    assert len(arrays[VAL]) == 5  # 3 diagonal + 2 pairs, not 9
    check_gram(ArrayRecord(arrays), 3)
    assert np.array_equal(decode_gram(ArrayRecord(arrays), 3).toarray(), G.toarray())


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"extra": torch.zeros(1)}, "expected"),
        ({VAL: torch.tensor([2.0, 1.0, 3.0, -0.5, 1.0], dtype=torch.float64)}, ">= 0"),
        ({VAL: torch.tensor([2.0, 1.0, 3.0, float("nan"), 1.0], dtype=torch.float64)}, "finite"),
        ({COL: torch.tensor([0, 1, 1, 2, 7], dtype=torch.int32)}, "outside"),
        ({ROW: torch.tensor([0, 0, 1, 2, 2], dtype=torch.int32),
          COL: torch.tensor([0, 1, 1, 1, 2], dtype=torch.int32)}, "outside"),  # (2, 1): lower
        ({COL: torch.tensor([0, 1, 1, 1, 2], dtype=torch.int32)}, "twice"),
        ({VAL: torch.tensor([2.0, 1.0, 3.0, 0.5, 1.0], dtype=torch.float32)}, "dtypes"),
        ({ROW: torch.tensor([0, 0, 1, 1], dtype=torch.int32)}, "one length"),
    ],
)  # fmt: skip
def test_a_malformed_gram_is_rejected_with_the_reason(change, why):
    with pytest.raises(Rejected, match=why):
        check_gram(_record(**change), 3)


def test_a_pair_of_an_item_nobody_bought_is_rejected():
    arrays = encode_gram(sp.csr_matrix(np.array([[0.0, 1.0], [1.0, 2.0]])))

    with pytest.raises(Rejected, match="diagonal"):
        check_gram(ArrayRecord(arrays), 2)


@pytest.mark.parametrize(
    "model",
    [
        ["model=itemitem", "model.kind=knn", "model.repeat=1.0"],
        ["model=itemitem", "model.kind=ease", "model.repeat=1.0"],
        ["model=als", "model.factors=4", "model.iterations=2"],  # 2 rounds a window
    ],
    ids=["knn", "ease", "als"],
)
@pytest.mark.usefixtures("server_identity")
def test_the_federated_model_equals_the_centralized_one(tiny_cfg, tiny_overrides, model):
    tiny_overrides.remove("model.dim=8")  # an MF setting
    cfg = tiny_cfg(*model, "continual=naive")
    data = run_data(cfg.data, cfg.eval)

    federated = run_federated(LocalGrid(cfg, 3), cfg, None)
    cpu = torch.device("cpu")
    central = run_centralized(data, cfg, Evaluator(data, cfg.eval, cpu), cpu)

    compared = 0
    for variant in cfg.eval.variants:
        pairs = [(federated.forward[variant], central.forward[variant])]
        pairs += list(zip(federated.cells[variant], central.cells[variant], strict=True))
        for fed_row, central_row in pairs:
            for fed_cells, central_cells in zip(fed_row, central_row, strict=True):
                for shop, cell in fed_cells.items():
                    for metric in ("ndcg@10", "hr@10", "mrr", "n_users"):
                        assert cell[metric] == pytest.approx(
                            central_cells[shop][metric], abs=1e-4
                        ), (variant, shop, metric)
                    compared += 1
    assert compared >= 3 * 3 * 2  # every shop, window and variant


def _gram_reply(shop: str, scale: float, users: int = 10) -> TrainReply:
    arrays = {k: v.clone() for k, v in encode_gram(G * scale).items()}
    return TrainReply(shop, ArrayRecord(arrays), users, 0.0, 1, 0.1, 0.1)


def test_a_shop_inflating_its_counts_is_rejected_and_honest_spread_is_kept():
    honest = [_gram_reply(f"shop_{i}", s) for i, s in enumerate([0.1, 0.5, 1.0, 2.0, 12.0])]
    model = ItemItem(1, 3)

    kept, rejected = bound_statistics(model, [*honest, _gram_reply("mallory", 1e6)], 20.0, 3)

    assert kept == honest
    assert [shop for shop, _ in rejected] == ["mallory"] and "mass per user" in rejected[0][1]


class InflatingGrid(LocalGrid):
    """shop_00 multiplies its Gram by 1e6 (or claims 1e6 users) in every statistics reply."""

    def __init__(self, cfg, n_shops: int, how: str) -> None:
        super().__init__(cfg, n_shops)
        self.how = how

    def send_and_receive(self, messages, *, timeout=None):
        replies = list(super().send_and_receive(messages, timeout=timeout))
        for msg in replies:
            content = msg.content
            if msg.has_error() or "arrays" not in content.array_records:
                continue
            arrays = content.array_records["arrays"]
            if VAL not in arrays or content.config_records["shop"]["shop"] != "shop_00":
                continue
            if self.how == "inflate":
                arrays[VAL] = Array(arrays[VAL].numpy() * 1e6)
            else:
                content.metric_records["metrics"]["num-examples"] = 10**6  # < max_examples
        return replies


@pytest.mark.parametrize(("how", "why"), [("inflate", "mass per user"), ("users", "users")])
@pytest.mark.usefixtures("server_identity")
def test_the_inflating_shop_is_rejected_by_name_and_the_run_completes(
    tiny_cfg, tiny_overrides, how, why
):
    tiny_overrides.remove("model.dim=8")  # an MF setting
    cfg = tiny_cfg("model=ease", "continual=naive")

    result = run_federated(InflatingGrid(cfg, 3, how), cfg, None)

    trains = [r for r in result.rejected if r.kind == "train"]
    assert {r.shop for r in trains} == {"shop_00"} and len(trains) == 3  # every window
    assert all(why in r.why for r in trains)
    assert len(result.cells["new"]) == 3

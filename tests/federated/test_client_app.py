"""The ClientApp called directly with real Messages: what leaves a shop, and what it keeps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

from fedcl.errors import ConfigError
from fedcl.federated.client_app import make_client_app
from fedcl.federated.local_grid import LocalGrid
from fedcl.federated.protocol import (
    ARRAYS,
    CONFIG,
    FINETUNE_CPU_S,
    FINETUNE_EXAMPLES,
    FINETUNE_S,
    METRICS,
    SHOP,
    Spec,
    decode_train_reply,
)
from fedcl.federated.server_loop import GlobalModel
from fedcl.federated.strategies import build_strategy
from fedcl.run_data import run_data
from fedcl.shop.store import CorruptState


def shop_data(cfg):
    return run_data(cfg.data, cfg.eval)


pytestmark = pytest.mark.usefixtures("server_identity")


def _context(partition: int) -> Context:
    return Context(
        run_id=1,
        node_id=partition + 10,
        node_config={"partition-id": partition, "num-partitions": 3},
        state=RecordDict(),
        run_config={},
    )


def _message(kind: str, arrays: ArrayRecord, window: int, n_items: int) -> Message:
    conf = ConfigRecord({"window": window, "round": 1, "n-items": n_items})
    return Message(
        content=RecordDict({ARRAYS: arrays, CONFIG: conf}), message_type=kind, dst_node_id=10
    )


def _global(cfg, window: int):
    data = shop_data(cfg)
    glob = GlobalModel(cfg, data.n_items_known(window))
    return glob.record(), data.n_items_known(window), data


def test_train_reply_holds_exactly_the_shared_arrays(tiny_cfg):
    cfg = tiny_cfg()
    arrays, n_items, data = _global(cfg, 0)
    app = make_client_app(cfg)

    reply = app(_message(MessageType.TRAIN, arrays, 0, n_items), _context(0))

    content = reply.content
    assert decode_train_reply(content, Spec.of(arrays), 1e8).shop == data.shops[0]
    sent = content.array_records[ARRAYS]
    assert set(sent.keys()) == set(arrays.keys())
    n_users = data.n_users_known(data.shops[0], 0)
    for a in sent.values():
        assert n_users not in a.shape  # nothing sized by the shop's user count
    # Only aggregate metrics, none naming or indexing a user.
    assert set(content.metric_records[METRICS]) == {
        "num-examples",
        "train-loss",
        "new-events",
        "train-s",
        "train-cpu-s",
    }
    assert {k: dict(v) for k, v in content.config_records.items()} == {SHOP: {SHOP: data.shops[0]}}


def test_training_changes_shared_arrays_and_persists_private_state(tiny_cfg, tmp_path):
    cfg = tiny_cfg()
    arrays, n_items, data = _global(cfg, 0)
    app = make_client_app(cfg)

    reply = app(_message(MessageType.TRAIN, arrays, 0, n_items), _context(1))

    before = arrays["item_emb.weight"].numpy()
    after = reply.content.array_records[ARRAYS]["item_emb.weight"].numpy()
    assert not np.allclose(before, after)
    store = tmp_path / "shops" / data.shops[1]
    assert list(store.glob("state-*.npz"))


def test_evaluate_reply_is_aggregate_and_respects_min_users(tiny_cfg):
    cfg = tiny_cfg("federated.min_users=1000")
    arrays, n_items, data = _global(cfg, 0)
    app = make_client_app(cfg)

    reply = app(_message(MessageType.EVALUATE, arrays, 0, n_items), _context(0))

    metrics = dict(reply.content.metric_records[METRICS])
    # Every cell rests on fewer than 1000 users: all withheld, only zero counts and the
    # "withheld" mark of a cell that had users leave (besides the cost of the shop's
    # fine-tuning: examples and seconds, no user data).
    cost = {FINETUNE_EXAMPLES, FINETUNE_S, FINETUNE_CPU_S}
    cells = {k: v for k, v in metrics.items() if k not in cost}
    counts = {k: v for k, v in cells.items() if k.split("/")[1] == "n_users"}
    marks = {k: v for k, v in cells.items() if k.split("/")[1] == "withheld"}
    assert counts and all(v == 0 for v in counts.values())
    assert marks and all(v == 1 for v in marks.values())
    assert set(cells) == set(counts) | set(marks)
    assert set(metrics) - set(cells) <= cost
    assert reply.content.config_records["shop"]["shop"] == data.shops[0]


def test_evaluate_reports_cells_for_enough_users(tiny_cfg):
    cfg = tiny_cfg()
    arrays, n_items, data = _global(cfg, 0)
    app = make_client_app(cfg)

    reply = app(_message(MessageType.EVALUATE, arrays, 0, n_items), _context(0))

    metrics = dict(reply.content.metric_records[METRICS])
    counts = {k: v for k, v in metrics.items() if "/n_users/" in k}
    # new + repeat: every window's test part, and all of the next window (forward, "fwd").
    assert len(counts) == 2 * (data.n_windows + 1)
    assert {k.split("/")[2] for k in counts} == {*map(str, range(data.n_windows)), "fwd"}
    assert any(v > 0 for v in counts.values())
    for key, n in counts.items():
        variant, _, i = key.split("/")
        assert (f"{variant}/ndcg@10/{i}" in metrics) == (n > 0)
        # Replicate sums (200 each) travel for the headline variant's cells only.
        boot = metrics.get(f"{variant}/boot_sum/{i}")
        assert (boot is not None) == (n > 0 and variant == "new")
        assert boot is None or len(boot) == cfg.eval.n_boot


def test_catalogue_growth_keeps_shapes_consistent(tiny_cfg):
    cfg = tiny_cfg()
    data = shop_data(cfg)
    glob = GlobalModel(cfg, data.n_items_known(0))
    glob.grow(data.n_items_known(2))
    arrays = glob.record()
    app = make_client_app(cfg)

    first = app(_message(MessageType.TRAIN, arrays, 2, data.n_items_known(2)), _context(2))

    assert decode_train_reply(first.content, Spec.of(arrays), 1e8).num_examples > 0
    assert first.content.array_records[ARRAYS]["item_emb.weight"].shape[0] == (
        data.n_items_known(2)
    )
    assert torch.isfinite(
        torch.from_numpy(first.content.array_records[ARRAYS]["item_emb.weight"].numpy())
    ).all()


def test_local_keys_stay_at_the_shop(tiny_cfg):
    cfg = tiny_cfg("federated.local_keys=[item_bias]")
    arrays, n_items, _ = _global(cfg, 0)
    app = make_client_app(cfg)

    reply = app(_message(MessageType.TRAIN, arrays, 0, n_items), _context(0))

    assert "item_bias.weight" not in arrays
    assert set(reply.content.array_records[ARRAYS].keys()) == set(arrays.keys())


def test_unknown_local_key_is_a_config_error(tiny_cfg):
    with pytest.raises(ConfigError, match="item_bias_typo"):
        GlobalModel(tiny_cfg("federated.local_keys=[item_bias_typo]"), 10)


def _state_files(root) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.rglob("state-*.npz"))}


def test_finetuning_personalises_evaluation_and_keeps_no_copy(tiny_cfg, tmp_path):
    plain = tiny_cfg()
    tuned = tiny_cfg("federated.finetune_epochs=3")
    arrays, n_items, _ = _global(plain, 0)
    app_plain, app_tuned = make_client_app(plain), make_client_app(tuned)
    app_plain(_message(MessageType.TRAIN, arrays, 0, n_items), _context(0))
    saved = _state_files(tmp_path / "shops")

    def ndcg(app) -> dict[str, float]:
        reply = app(_message(MessageType.EVALUATE, arrays, 0, n_items), _context(0))
        return {k: v for k, v in reply.content.metric_records[METRICS].items() if "ndcg" in k}

    base, personal = ndcg(app_plain), ndcg(app_tuned)

    assert base.keys() == personal.keys() and base
    assert base != personal  # the shop served its fine-tuned copy
    assert _state_files(tmp_path / "shops") == saved  # ... and did not keep it
    assert ndcg(app_tuned) == personal  # deterministic: rebuilt from the same state


def test_shops_tune_on_the_validation_view_like_the_other_modes(tiny_cfg):
    full, val = shop_data(tiny_cfg()), shop_data(tiny_cfg("eval.on=validation"))

    # The real test parts are hidden; held-out train events play the test part.
    assert (val.events["split"] == "test").any()
    assert len(val.events) == (full.events["split"] == "train").sum()
    held_out = val.events[val.events["split"] == "test"]
    assert (
        held_out["timestamp"].isin(full.events[full.events["split"] == "train"]["timestamp"]).all()
    )


def test_mf_item_biases_stay_local_by_default(tiny_cfg):
    default = GlobalModel(tiny_cfg(), 10).record()
    pooled = GlobalModel(tiny_cfg("federated.model_local_keys=false"), 10).record()

    assert "item_bias.weight" not in default and "item_emb.weight" in default
    assert set(pooled.keys()) == set(default.keys()) | {"item_bias.weight"}


def test_finetuning_cost_is_reported_with_the_evaluation(tiny_cfg):
    cfg = tiny_cfg("federated.finetune_epochs=2")
    arrays, n_items, _ = _global(cfg, 0)
    app = make_client_app(cfg)
    app(_message(MessageType.TRAIN, arrays, 0, n_items), _context(0))

    reply = app(_message(MessageType.EVALUATE, arrays, 0, n_items), _context(0))

    metrics = reply.content.metric_records[METRICS]
    trained = app(_message(MessageType.TRAIN, arrays, 0, n_items), _context(0))
    per_epoch = trained.content.metric_records[METRICS]["num-examples"] / cfg.train.epochs
    assert metrics[FINETUNE_EXAMPLES] == 2 * per_epoch  # 2 epochs over the same window
    assert metrics[FINETUNE_S] > 0 and metrics[FINETUNE_CPU_S] > 0


def test_fedprox_mu_is_read_from_the_message_as_flowers_fedprox_sends_it(tiny_cfg, tmp_path):
    overrides = ("strategy=fedprox", "strategy.proximal_mu=100.0", "train.batch_size=16")
    cfg = tiny_cfg(*overrides)
    strategy = build_strategy(cfg.strategy, cfg.federated)
    arrays, n_items, _ = _global(cfg, 0)
    plain = {"window": 0, "round": 1, "n-items": n_items}
    sent = next(iter(strategy.configure_train(1, arrays, ConfigRecord(plain), LocalGrid(cfg, 3))))

    def trained(config: ConfigRecord, run: str) -> np.ndarray:
        """Shop 0's first round with ``config``, from a fresh state directory."""
        fresh = tiny_cfg(*overrides, f"federated.state_dir={tmp_path / run}")
        msg = Message(
            content=RecordDict({ARRAYS: arrays, CONFIG: config}),
            message_type=MessageType.TRAIN,
            dst_node_id=10,
        )
        reply = make_client_app(fresh)(msg, _context(0))
        return reply.content.array_records[ARRAYS]["item_emb.weight"].numpy()

    with_mu, again = trained(sent.content[CONFIG], "a"), trained(sent.content[CONFIG], "b")
    without = trained(ConfigRecord(plain), "c")
    doubled = trained(ConfigRecord({**dict(sent.content[CONFIG]), "proximal-mu": 200.0}), "d")

    assert sent.content[CONFIG]["proximal-mu"] == 100.0
    assert np.array_equal(with_mu, again)  # deterministic from the same state
    assert not np.array_equal(with_mu, without)  # the shop applied the proximal term ...
    assert not np.array_equal(with_mu, doubled)  # ... with the mu the message carried


def test_a_shop_whose_state_is_all_corrupt_refuses_to_train_until_told(tiny_cfg, tmp_path):
    cfg = tiny_cfg()
    arrays, n_items, data = _global(cfg, 0)
    app = make_client_app(cfg)
    app(_message(MessageType.TRAIN, arrays, 0, n_items), _context(0))
    store = tmp_path / "shops" / data.shops[0]
    for gen in store.glob("state-*.npz"):
        gen.write_bytes(gen.read_bytes()[:-10] + b"x" * 10)

    with pytest.raises(CorruptState, match="reset-corrupt-state=true"):
        app(_message(MessageType.TRAIN, arrays, 0, n_items), _context(0))

    told = _context(0)
    told.node_config["reset-corrupt-state"] = "true"
    reply = app(_message(MessageType.TRAIN, arrays, 0, n_items), told)
    assert reply.content.metric_records[METRICS]["new-events"] > 0  # learned from scratch
    assert list(store.glob("corrupt-*/state-*.npz"))  # the corrupt files were kept aside

"""A shop reads only its own event log: plan, watermark, quarantine, windows, restart."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

from fedcl.data.plan import Plan, export_plan
from fedcl.data.schema import DataError
from fedcl.errors import ConfigError
from fedcl.federated.client_app import make_client_app
from fedcl.federated.protocol import ARRAYS, CONFIG, METRICS, from_record
from fedcl.federated.server_loop import GlobalModel, server_plan
from fedcl.plan import write_shop_logs
from fedcl.report import listed_shops
from fedcl.result import RunResult
from fedcl.run_data import run_data
from fedcl.shop.agent import ShopAgent
from fedcl.shop.ingest import EventLog, LogRewritten, ShopIngest
from fedcl.shop.store import CorruptState

CPU = torch.device("cpu")
SHOP = "shop_01"


@pytest.fixture
def world(tiny_cfg, tmp_path):
    """The tiny federation's prepared data, its published plan and one log per shop."""
    cfg = tiny_cfg()
    data = run_data(cfg.data, cfg.eval)
    export_plan(data, tmp_path / "plan")
    logs = write_shop_logs(data, tmp_path / "logs")
    lines = logs[SHOP].read_text().splitlines(keepends=True)
    ref = data.events[data.events["shop"] == SHOP].sort_values(["timestamp", "row"])
    return {
        "cfg": cfg,
        "data": data,
        "plan": tmp_path / "plan",
        "log": tmp_path / f"{SHOP}.csv",  # the shop's live log, written by each test
        "header": lines[0],
        "lines": lines[1:],  # in time order, as ``ref``
        "ref": ref.reset_index(drop=True),
        "state": tmp_path / "state",
    }


def _write(world, lines, mode="w") -> None:
    with world["log"].open(mode) as f:
        if mode == "w":
            f.write(world["header"])
        f.writelines(lines)


def _source(world) -> EventLog:
    return EventLog(world["log"], world["plan"])


def _ingest(world) -> ShopIngest:
    return ShopIngest(SHOP, _source(world), world["state"] / SHOP / "ingest")


def _agent_call(world, kind: str, window: int):
    """A fresh agent (as for every message) trains or evaluates at ``window``."""
    n_items = world["data"].n_items_known(window)
    agent = ShopAgent(world["cfg"], SHOP, world["state"], CPU, data=_source(world))
    shared = from_record(GlobalModel(world["cfg"], n_items).record())
    return getattr(agent, kind)(shared, window, n_items)


def _train(world, window: int) -> int:
    """Train at ``window``; returns the events the learner observed (``new-events``)."""
    return _agent_call(world, "train", window).new_events


def _train_rows(ref: pd.DataFrame, window: int) -> int:
    return int(((ref["window"] == window) & (ref["split"] == "train")).sum())


# --- the plan -----------------------------------------------------------------------------
def test_plan_round_trip_matches_the_prepared_data(world):
    data = world["data"]

    plan = Plan.load(world["plan"])

    assert plan.n_windows == data.n_windows
    assert [plan.n_items_known(t) for t in range(3)] == [data.n_items_known(t) for t in range(3)]
    np.testing.assert_array_equal(plan.window_of(data.events["timestamp"]), data.events["window"])
    np.testing.assert_array_equal(
        plan.item_indices(data.catalog["item_id"]), np.arange(len(data.catalog))
    )
    assert plan.item_indices(["no-such-item"]).tolist() == [-1]
    assert "events" not in plan.catalog  # purchase counts are not public
    assert plan.shops == data.shops and len(plan.digest) == 64


def test_plan_missing_file_names_it_and_the_fix(world):
    (world["plan"] / "catalog.parquet").unlink()

    with pytest.raises(DataError, match=r"no catalog\.parquet.*python -m fedcl\.plan"):
        Plan.load(world["plan"])


def test_server_reads_the_plan_when_plan_dir_is_set(tiny_cfg, world):
    cfg = tiny_cfg(f"federated.plan_dir={world['plan']}")

    plan = server_plan(cfg)

    assert isinstance(plan, Plan)
    assert plan.n_items_known(1) == world["data"].n_items_known(1)
    row = {"new": [{"shop_09": {}}, {SHOP: {}}]}
    result = RunResult(baseline=row)
    result.add_row(row)
    assert listed_shops(plan.shops, result) == [*plan.shops, "shop_09"]


# --- ingest -------------------------------------------------------------------------------
def test_ingested_log_equals_the_shops_prepared_events(world):
    _write(world, world["lines"])
    ingest = _ingest(world)

    result = ingest.ingest(open_window=0)
    events = ingest.prepared().events

    n = len(world["ref"])
    assert (result.rows, result.kept, result.late, result.held) == (n, n, 0, 0)
    for col in ("timestamp", "item_idx", "user_idx", "window", "split"):
        np.testing.assert_array_equal(events[col].to_numpy(), world["ref"][col].to_numpy())
    assert ingest.ingest(open_window=0).rows == 0  # nothing new: nothing read again


def test_two_appends_each_row_is_learned_exactly_once(world):
    ref, lines = world["ref"], world["lines"]
    split = int(np.searchsorted(ref["window"].to_numpy(), 1)) + 20  # inside window 1
    _write(world, lines[:split])

    first = _train(world, 0)
    _write(world, lines[split:], mode="a")
    assert _agent_call(world, "evaluate", 0)  # ingests the append first
    seen = [first, _train(world, 1), _train(world, 2)]

    assert seen == [_train_rows(ref, t) for t in range(3)]
    assert sum(seen) == int((ref["split"] == "train").sum())


def test_late_rows_go_to_the_open_window_in_the_train_split(world):
    ref, lines = world["ref"], world["lines"]
    in_w0 = np.flatnonzero(ref["window"] == 0)
    late = [int(in_w0[3]), int(in_w0[-1])]  # a train row and (last of window 0) a test row
    assert ref["split"].iloc[late].tolist() == ["train", "test"]
    first = [ln for i, ln in enumerate(lines[: len(in_w0)]) if i not in late]
    _write(world, first)

    seen0 = _train(world, 0)
    _write(world, [lines[i] for i in late] + lines[len(in_w0) :], mode="a")
    seen1 = _train(world, 1)

    assert seen0 == _train_rows(ref, 0) - 1
    assert seen1 == _train_rows(ref, 1) + 2
    events = _ingest(world).prepared().events
    moved = events[events["row"].isin([len(first), len(first) + 1])]  # rows of the log
    assert moved["window"].tolist() == [1, 1] and moved["split"].tolist() == ["train", "train"]


def test_bad_rows_are_quarantined_locally_with_their_reason(world):
    lines = world["lines"]
    _write(world, lines[:50])
    ingest = _ingest(world)
    ingest.ingest(0)
    before = len(ingest.prepared().events)
    good = lines[50]
    event_id, user, item, when, shop = good.strip().split(",")
    bad = [
        f"{event_id}x,,{item},{when},{shop}\n",  # no user
        f"{event_id}y,{user},{item},not-a-time,{shop}\n",
        f"{event_id}z,{user},NO-SUCH-ITEM,{when},{shop}\n",
        lines[7],  # the same line again, appended later
        f"{event_id}w,{user},{item},{when},shop_02\n",  # another shop's row
    ]
    _write(world, bad, mode="a")

    result = _ingest(world).ingest(0)

    expected = {
        "missing_user": 1,
        "bad_timestamp": 1,
        "unknown_item": 1,
        "duplicate": 1,
        "other_shop": 1,
    }
    assert result.quarantined == expected and result.kept == 0
    again = _ingest(world)
    assert len(again.prepared().events) == before
    q = again.quarantine()
    assert sorted(q["reason"]) == sorted(expected)
    assert sorted(q["row"]) == [50, 51, 52, 53, 54]  # rows of the log (0-based data rows)
    assert q.loc[q["reason"] == "unknown_item", "item_id"].tolist() == ["NO-SUCH-ITEM"]
    assert again.prepared().report["quarantined"] == expected
    view = pd.read_csv(world["state"] / SHOP / "ingest" / "quarantine.csv")
    assert len(view) == 5


def test_a_line_without_its_newline_waits(world):
    lines = world["lines"]
    _write(world, lines[:10] + [lines[10].rstrip("\n")])
    ingest = _ingest(world)

    assert ingest.ingest(0).rows == 10
    _write(world, ["\n"], mode="a")
    assert _ingest(world).ingest(0).rows == 1


@pytest.mark.parametrize("change", ["rewrite", "truncate"])
def test_rewritten_or_truncated_log_is_a_clear_error(world, change):
    lines = world["lines"]
    _write(world, lines[:40])
    _ingest(world).ingest(0)
    if change == "rewrite":  # same length, one character changed in an ingested line
        edited = lines[5].replace("shop_01", "shop_0X")
        _write(world, lines[:5] + [edited] + lines[6:60])
    else:
        _write(world, lines[:30])

    with pytest.raises(LogRewritten, match=r"truncated or rewritten.*new --state-dir") as e:
        _ingest(world).ingest(0)
    assert str(world["log"]) in str(e.value)


def test_restart_keeps_watermark_and_user_map(world):
    lines = world["lines"]
    _write(world, lines[:100])
    first = _ingest(world)
    first.ingest(0)
    users = first.users.copy()

    restarted = _ingest(world)
    assert restarted.watermark == first.watermark
    np.testing.assert_array_equal(restarted.users, users)
    assert restarted.ingest(0).rows == 0
    _write(world, lines[100:], mode="a")
    restarted.ingest(1)
    assert restarted.users[: len(users)].tolist() == users.tolist()  # old users keep indices
    assert len(restarted.users) == world["ref"]["user_idx"].nunique()


def test_crash_between_ingest_and_training_loses_nothing(world):
    ref, lines = world["ref"], world["lines"]
    n0 = int((ref["window"] == 0).sum())
    _write(world, lines[:n0])
    ShopAgent(world["cfg"], SHOP, world["state"], CPU, data=_source(world))  # then "crash"
    _write(world, lines[n0:], mode="a")

    assert _train(world, 0) == _train_rows(ref, 0)
    assert _train(world, 1) == _train_rows(ref, 1)


def test_rows_after_the_plan_are_held_until_a_plan_covers_them(world, tmp_path):
    full = Plan.load(world["plan"])
    short = Plan(full.windows.iloc[:2].copy(), full.catalog, full.shops)
    short.save(tmp_path / "short")
    _write(world, world["lines"])
    early = ShopIngest(SHOP, EventLog(world["log"], tmp_path / "short"), world["state"])

    held = early.ingest(0).held
    assert held == int((world["ref"]["window"] == 2).sum()) and held > 0
    assert (early.prepared().events["window"] < 2).all()
    later = ShopIngest(SHOP, EventLog(world["log"], world["plan"]), world["state"])
    assert later.ingest(0).held == 0
    assert int((later.prepared().events["window"] == 2).sum()) == held


def test_parquet_log_without_shop_column_rewritten_whole_with_appended_rows(world):
    log = world["log"].with_suffix(".parquet")
    _write(world, world["lines"])
    table = pd.read_csv(world["log"], dtype=str).drop(columns="shop")
    table.iloc[:200].to_parquet(log, index=False)
    ingest = ShopIngest(SHOP, EventLog(log, world["plan"]), world["state"])
    assert ingest.ingest(0).kept == 200

    table.to_parquet(log, index=False)
    assert ShopIngest(SHOP, EventLog(log, world["plan"]), world["state"]).ingest(0).kept == (
        len(table) - 200
    )
    changed = table.copy()
    changed.loc[3, "item_id"] = changed.loc[4, "item_id"]
    changed.to_parquet(log, index=False)
    with pytest.raises(LogRewritten, match="first"):
        ShopIngest(SHOP, EventLog(log, world["plan"]), world["state"]).ingest(0)


# --- the ClientApp with node config {shop, events, plan, state-dir} -------------------------
def _context(node_config: dict) -> Context:
    return Context(run_id=1, node_id=11, node_config=node_config, state=RecordDict(), run_config={})


def _message(kind: str, arrays, window: int, n_items: int) -> Message:
    conf = ConfigRecord({"window": window, "round": 1, "n-items": n_items})
    return Message(
        content=RecordDict({ARRAYS: arrays, CONFIG: conf}), message_type=kind, dst_node_id=11
    )


@pytest.mark.usefixtures("server_identity")
def test_client_app_on_its_own_log_replies_with_exactly_the_global_arrays(world):
    _write(world, world["lines"])
    cfg, n_items = world["cfg"], world["data"].n_items_known(0)
    arrays = GlobalModel(cfg, n_items).record()
    node = {"shop": SHOP, "events": str(world["log"]), "plan": str(world["plan"])}
    node["state-dir"] = str(world["state"])
    app = make_client_app(cfg)

    reply = app(_message(MessageType.TRAIN, arrays, 0, n_items), _context(node))
    evaluated = app(_message(MessageType.EVALUATE, arrays, 0, n_items), _context(node))

    sent = reply.content.array_records[ARRAYS]
    assert {k: tuple(v.shape) for k, v in sent.items()} == {
        k: tuple(v.shape) for k, v in arrays.items()
    }
    assert reply.content.metric_records[METRICS]["new-events"] == _train_rows(world["ref"], 0)
    assert evaluated.content.config_records["shop"]["shop"] == SHOP
    assert (world["state"] / SHOP / "ingest").is_dir()


def test_client_app_needs_events_and_plan_together(world):
    from fedcl.federated.client_app import _own_log

    with pytest.raises(ConfigError, match="plan=<plan dir>"):
        _own_log(world["cfg"], {"shop": SHOP, "events": str(world["log"])})


def test_a_corrupt_ingest_state_stops_the_shop_instead_of_reading_the_log_again(world):
    _write(world, world["lines"])
    _ingest(world).ingest(0)
    ingest_dir = world["state"] / SHOP / "ingest"
    for gen in ingest_dir.glob("state-*.npz"):
        gen.write_bytes(gen.read_bytes()[:-10] + b"x" * 10)

    with pytest.raises(CorruptState, match=r"ingest state.*reset-corrupt-state=true"):
        _ingest(world)

    fresh = ShopIngest(SHOP, _source(world), ingest_dir, reset_corrupt=True)
    assert fresh.ingest(0).kept == len(world["lines"])  # read again, on explicit request only
    assert list(ingest_dir.glob("corrupt-*/state-*.npz"))

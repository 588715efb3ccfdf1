"""Ingest never loses a row: a malformed line costs itself only, a huge line is known by
reference, a crash or a kill -9 leaves nothing duplicated behind."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny import TINY as BASE

from fedcl.config import compose_config
from fedcl.data.plan import export_plan
from fedcl.data.schema import DataError
from fedcl.federated.protocol import from_record
from fedcl.federated.server_loop import GlobalModel
from fedcl.plan import write_shop_logs
from fedcl.run_data import run_data
from fedcl.shop.agent import ShopAgent
from fedcl.shop.ingest import EventLog, ShopIngest
from fedcl.shop.log_reader import LogReader
from fedcl.shop.quarantine_file import NAME as QUARANTINE_FILE
from fedcl.shop.store import GenerationStore

SHOP = "shop_01"
LIMIT = 1024  # max_line_bytes of these tests: a "huge" line needs only a few KiB
TINY = [*BASE, "federated.rounds=1", "federated.min_users=1"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The tiny federation's data, its plan, and shop_01's log lines (header apart)."""
    root = tmp_path_factory.mktemp("robust")
    cfg, _ = compose_config([*TINY, f"federated.state_dir={root / 'shops'}"])
    data = run_data(cfg.data, cfg.eval)
    export_plan(data, root / "plan")
    lines = write_shop_logs(data, root / "logs")[SHOP].read_bytes().splitlines(keepends=True)
    return {"cfg": cfg, "data": data, "plan": root / "plan", "header": lines[0], "lines": lines[1:]}


class Shop:
    """A shop's live log and ingest state under one directory."""

    def __init__(self, base: dict, root: Path, limit: int = LIMIT) -> None:
        self.base, self.root = base, root
        self.log, self.state = root / f"{SHOP}.csv", root / "state"
        self.source = EventLog(self.log, base["plan"], max_line_bytes=limit)
        root.mkdir(parents=True, exist_ok=True)
        self.log.write_bytes(base["header"])

    def append(self, *chunks: bytes) -> int:
        """Append bytes; returns the log's size before them (the first one's offset)."""
        at = self.log.stat().st_size
        with self.log.open("ab") as f:
            f.write(b"".join(chunks))
        return at

    def ingest(self, open_window: int = 0):
        return ShopIngest(SHOP, self.source, self.state / SHOP / "ingest").ingest(open_window)

    def opened(self) -> ShopIngest:
        return ShopIngest(SHOP, self.source, self.state / SHOP / "ingest")

    @property
    def dir(self) -> Path:
        return self.state / SHOP / "ingest"

    def generation_bytes(self) -> int:
        return max(p.stat().st_size for p in self.dir.glob("state-*.npz"))


@pytest.fixture
def shop(base, tmp_path) -> Shop:
    return Shop(base, tmp_path)


def _extra_field(line: bytes) -> bytes:
    return line.rstrip(b"\n") + b",extra\n"


BAD = {
    "extra_field": (_extra_field, "field_count"),
    "missing_field": (lambda ln: ln.rsplit(b",", 1)[0] + b"\n", "field_count"),
    "unbalanced_quote": (lambda ln: ln.replace(b",", b',"', 1).replace(b",", b",,", 1), None),
    "nul_bytes": (lambda ln: ln.replace(b",", b",\x00\x00", 1), "nul_byte"),
    "undecodable": (lambda ln: ln.replace(b",", b",\xff\xfe", 1), "bad_encoding"),
}


def _events_rows(ingest: ShopIngest) -> list[int]:
    return sorted(ingest.state["events"]["row"].tolist())


# --- one malformed line -------------------------------------------------------------------
def test_extra_field_on_the_first_appended_line_costs_that_line_only(shop, base):
    lines = base["lines"]
    shop.append(*lines[:20])
    shop.ingest()
    at = shop.append(_extra_field(lines[20]), *lines[21:31])

    result = shop.ingest()

    assert (result.rows, result.kept, result.quarantined) == (11, 10, {"field_count": 1})
    ingest = shop.opened()
    assert _events_rows(ingest) == [*range(20), *range(21, 31)]
    q = ingest.quarantine()
    assert q[["row", "reason", "offset"]].values.tolist() == [[20, "field_count", at]]
    assert q["length"].tolist() == [len(_extra_field(lines[20]))]


@pytest.mark.parametrize("kind", sorted(BAD))
def test_a_malformed_line_mid_batch_is_quarantined_and_later_rows_are_kept(shop, base, kind):
    lines = base["lines"]
    make, reason = BAD[kind]
    bad = make(lines[5])
    bad_at = shop.append(*lines[:5]) + sum(map(len, lines[:5]))
    shop.append(bad, *lines[6:15])

    first = shop.ingest()
    shop.append(*lines[15:20])
    second = shop.ingest()

    assert (first.rows, first.kept, second.rows, second.kept) == (15, 14, 5, 5)
    assert sum(first.quarantined.values()) == 1
    assert shop.ingest().rows == 0  # nothing left behind, no error at the next message
    ingest = shop.opened()
    assert _events_rows(ingest) == [r for r in range(20) if r != 5]
    entry = ingest.quarantine().iloc[0]
    assert (entry["row"], entry["offset"], entry["length"]) == (5, bad_at, len(bad))
    assert entry["sha256"] == hashlib.sha256(bad).hexdigest()
    assert entry["reason"] == (reason or "unbalanced_quote")
    assert entry["raw"] == bad.decode("utf-8", errors="backslashreplace")


def test_a_quoted_field_holding_a_newline_is_one_row_and_crlf_lines_are_read(shop, base):
    lines = base["lines"]
    event_id, rest = lines[1].split(b",", 1)
    quoted = b'"' + event_id + b"\nsecond line" + b'",' + rest
    crlf = [ln.rstrip(b"\n") + b"\r\n" for ln in lines[2:6]]
    shop.append(lines[0], quoted, *crlf, b"\n", lines[6])

    result = shop.ingest()

    assert (result.rows, result.kept, result.quarantined) == (7, 7, {})
    events = shop.opened().prepared().events
    assert len(events) == 7 and events["item_idx"].notna().all()


def test_an_unbalanced_quote_does_not_swallow_the_rows_after_it(shop, base):
    lines = base["lines"]
    opened = lines[0].replace(b",", b',"', 1)  # opens a quote that no later line closes
    # An odd quote that could close it as CSV, but rows lie in between; alone, its quote is
    # inside an unquoted field: a character, as every CSV reader takes it.
    closing = lines[9].replace(b",", b'",', 1)
    shop.append(opened, *lines[1:9], closing, *lines[10:12])

    result = shop.ingest()

    assert result.kept == 11 and result.quarantined == {"unbalanced_quote": 1}
    assert _events_rows(shop.opened()) == [*range(1, 12)]


# --- a huge line --------------------------------------------------------------------------
def test_a_line_over_the_limit_is_quarantined_by_reference_and_the_state_stays_small(shop, base):
    lines = base["lines"]
    huge = b"x" * (200 * LIMIT) + b"\n"
    shop.append(*lines[:10])
    shop.ingest()
    small = shop.generation_bytes()
    at = shop.append(huge, *lines[10:20])

    result = shop.ingest()
    shop.append(huge.replace(b"x", b"y"), b"1,2\n", b"3,4\n")  # one more huge, two short bad
    again = shop.ingest()

    assert (result.rows, result.kept, result.quarantined) == (11, 10, {"line_too_long": 1})
    assert again.quarantined == {"line_too_long": 1, "field_count": 2}
    entry = shop.opened().quarantine().iloc[0]
    assert (entry["offset"], entry["length"]) == (at, len(huge))
    assert entry["sha256"] == hashlib.sha256(huge).hexdigest() and pd.isna(entry["raw"])
    assert shop.generation_bytes() < small + 4 * LIMIT  # follows the 10 kept rows only
    assert (shop.dir / QUARANTINE_FILE).stat().st_size < 2 * LIMIT
    assert b"xxxx" not in (shop.dir / "quarantine.csv").read_bytes()


def test_an_unterminated_last_line_waits_even_when_huge_and_is_not_copied(shop, base):
    lines = base["lines"]
    head = b"y" * (50 * LIMIT)
    shop.append(*lines[:10], head)

    first = shop.ingest()
    scanned = shop.opened().state["log"]["scan"]
    gens = sorted(shop.dir.glob("state-*.npz"))
    waiting = shop.ingest()  # nothing new: nothing read, no new generation
    unchanged = sorted(shop.dir.glob("state-*.npz")) == gens
    shop.append(b"z" * 10, b"\n", lines[10])
    done = shop.ingest()

    assert (first.rows, first.kept, waiting.rows) == (10, 10, 0)
    assert scanned == shop.log.stat().st_size - len(b"z" * 10 + b"\n" + lines[10])
    assert unchanged
    assert (done.rows, done.kept, done.quarantined) == (2, 1, {"line_too_long": 1})
    entry = shop.opened().quarantine().iloc[0]
    assert entry["sha256"] == hashlib.sha256(head + b"z" * 10 + b"\n").hexdigest()
    assert entry["length"] == len(head) + 11
    assert shop.opened().state["log"]["scan"] == 0


# --- a kill -9, a crash -------------------------------------------------------------------
def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temp_files_left_by_a_killed_process_are_removed_at_start(shop, base):
    shop.append(*base["lines"][:10])
    shop.ingest()
    pid = _dead_pid()
    left = [
        f".state-00000009.npz.tmp{pid}",
        f".state-00000009.sha256.tmp{pid}",
        f".quarantine.csv.tmp{pid}",
        f".incoming-{pid}.csv",
    ]
    for name in left:
        (shop.dir / name).write_bytes(b"half-written" * 1000)
    kept = {p.name for p in shop.dir.iterdir() if p.name not in left}

    shop.opened()

    assert {p.name for p in shop.dir.iterdir()} == kept


def test_a_crash_between_quarantine_append_and_commit_duplicates_no_entry(shop, base, monkeypatch):
    lines = base["lines"]
    shop.append(*lines[:10])
    shop.ingest()
    shop.append(_extra_field(lines[10]), b"\x00\n", *lines[11:15])

    def crash(self, state):
        raise KeyboardInterrupt("killed before the commit")

    with monkeypatch.context() as m:
        m.setattr(GenerationStore, "save", crash)
        with pytest.raises(KeyboardInterrupt):
            shop.ingest()
    assert len((shop.dir / QUARANTINE_FILE).read_bytes().splitlines()) == 2  # written, then
    result = shop.ingest()

    assert result.quarantined == {"field_count": 1, "nul_byte": 1} and result.kept == 4
    entries = (shop.dir / QUARANTINE_FILE).read_bytes().splitlines()
    assert [json.loads(e)["row"] for e in entries] == [10, 11]
    ingest = shop.opened()
    assert ingest.prepared().report["quarantined"] == {"field_count": 1, "nul_byte": 1}
    assert int(ingest.state["quarantine"]["bytes"]) == (shop.dir / QUARANTINE_FILE).stat().st_size
    for name in (QUARANTINE_FILE, "quarantine.csv"):  # rows name customers: owner only
        assert (shop.dir / name).stat().st_mode & 0o077 == 0


def test_a_header_alone_or_an_unfinished_header_reads_nothing(base, tmp_path):
    shop = Shop(base, tmp_path)
    shop.log.write_bytes(base["header"][:-3])
    assert shop.ingest().rows == 0
    shop.log.write_bytes(base["header"])
    assert shop.ingest().rows == 0
    with pytest.raises(DataError, match="no usable event"):
        shop.opened().prepared()


# --- property: every row kept or quarantined, each good row exactly once --------------------
def _bad_line(kind: int, line: bytes) -> bytes:
    # Unbalanced quotes here open a field that no later line can close into a record of the
    # header's field count (see log_reader: such a join would be legal CSV).
    makers = [
        _extra_field,
        lambda ln: ln.rsplit(b",", 1)[0] + b"\n",
        lambda ln: b'"' + ln.replace(b",", b",,,,", 1),
        lambda ln: ln.replace(b",", b",\x00", 1),
        lambda ln: ln.replace(b",", b",\xc3(", 1),
        lambda ln: ln.rstrip(b"\n") + b"q" * (LIMIT + 10) + b"\n",
    ]
    return makers[kind](line)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    n_good=st.integers(1, 60),
    bad=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 5)), max_size=8),
    cuts=st.lists(st.floats(0, 1), max_size=5),
    crlf=st.booleans(),
)
def test_every_appended_line_is_kept_or_quarantined_and_good_rows_once(
    base, tmp_path_factory, n_good, bad, cuts, crlf
):
    good = base["lines"][:n_good]
    stream: list[tuple[bool, bytes]] = [(True, ln) for ln in good]
    for at, kind in sorted(bad, reverse=True):
        stream.insert(min(at, len(stream)), (False, _bad_line(kind, good[at % n_good])))
    if crlf:
        stream = [(ok, ln[:-1] + b"\r\n") for ok, ln in stream]
    data = b"".join(ln for _, ln in stream)
    shop = Shop(base, tmp_path_factory.mktemp("prop"))
    points = sorted({0, len(data), *(int(c * len(data)) for c in cuts)})

    total = {"rows": 0, "kept": 0, "quarantined": 0}
    for lo, hi in zip(points[:-1], points[1:], strict=True):  # batches cut anywhere
        shop.append(data[lo:hi])
        result = shop.ingest()
        total["rows"] += result.rows
        total["kept"] += result.kept
        total["quarantined"] += sum(result.quarantined.values())

    n_bad = len(stream) - n_good
    assert total == {"rows": len(stream), "kept": n_good, "quarantined": n_bad}
    ingest = shop.opened()
    good_rows = [i for i, (ok, _) in enumerate(stream) if ok]
    assert _events_rows(ingest) == good_rows  # each good row exactly once
    q = ingest.quarantine()
    assert sorted(q["row"]) == [i for i, (ok, _) in enumerate(stream) if not ok]
    assert sum(ingest.prepared().report["quarantined"].values()) == n_bad


def test_the_agent_trains_each_good_row_exactly_once_around_bad_lines(base, tmp_path):
    lines, data, cfg = base["lines"], base["data"], base["cfg"]
    ref = data.events[data.events["shop"] == SHOP].sort_values(["timestamp", "row"])
    shop = Shop(base, tmp_path)
    n0 = int((ref["window"] == 0).sum())
    shop.append(_extra_field(lines[0]), *lines[:n0], b'"x,\n', b"\x00\n")

    def train(window: int) -> int:
        n_items = data.n_items_known(window)
        agent = ShopAgent(cfg, SHOP, shop.state, torch.device("cpu"), data=shop.source)
        shared = from_record(GlobalModel(cfg, n_items).record())
        return agent.train(shared, window, n_items).new_events

    seen = [train(0)]
    shop.append(b"1,2,3\n", *lines[n0:], _extra_field(lines[-1]))
    seen += [train(1), train(2)]

    expected = [int(((ref["window"] == t) & (ref["split"] == "train")).sum()) for t in range(3)]
    assert seen == expected
    assert np.sum(seen) == int((ref["split"] == "train").sum())


# --- compatibility ------------------------------------------------------------------------
def test_rows_the_bulk_reader_cannot_read_are_read_by_the_csv_module(shop, base, monkeypatch):
    lines = base["lines"]
    shop.append(*lines[:10])

    def refuse(self, path, where):
        raise DataError(f"Cannot read '{where}': the bulk reader refused")

    monkeypatch.setattr(LogReader, "read_table", refuse)
    result = shop.ingest()

    assert (result.rows, result.kept, result.quarantined) == (10, 10, {})
    monkeypatch.undo()
    reference = Shop(base, shop.root / "reference")
    reference.append(*lines[:10])
    reference.ingest()
    for key in ("row", "user", "item", "time"):
        assert shop.opened().state["events"][key].tolist() == (
            reference.opened().state["events"][key].tolist()
        )


def test_a_state_of_the_previous_format_moves_its_quarantine_to_the_file(shop, base):
    lines = base["lines"]
    shop.append(*lines[:10])
    shop.ingest()
    store = GenerationStore(shop.dir)
    old = store.load()
    old["format"] = 1
    old["log"].pop("scan")
    old["quarantine"] = {
        "row": np.array([3, 7]),
        "reason": np.array(["duplicate", "unknown_item"]),
        "line": np.array(['{"item_id":"A"}', '{"item_id":"B"}']),
    }
    store.save(old)

    ingest = shop.opened()

    q = ingest.quarantine()
    assert q[["row", "reason", "item_id"]].values.tolist() == [
        [3, "duplicate", "A"],
        [7, "unknown_item", "B"],
    ]
    assert ingest.prepared().report["quarantined"] == {"duplicate": 1, "unknown_item": 1}
    shop.append(_extra_field(lines[10]))
    assert shop.ingest().quarantined == {"field_count": 1}
    assert len(shop.opened().quarantine()) == 3


def test_a_parquet_log_quarantines_rows_by_their_fields(base, tmp_path):
    lines = [ln.decode().rstrip("\n").split(",") for ln in base["lines"][:30]]
    names = base["header"].decode().strip().split(",")
    table = pd.DataFrame(lines, columns=names)
    table.loc[4, "user_id"] = ""
    log = tmp_path / "log.parquet"
    table.to_parquet(log, index=False)
    ingest = ShopIngest(SHOP, EventLog(log, base["plan"]), tmp_path / "state")

    result = ingest.ingest(0)

    assert (result.rows, result.kept, result.quarantined) == (30, 29, {"missing_user": 1})
    q = ingest.quarantine()
    assert q[["row", "reason", "item_id"]].values.tolist() == [[4, "missing_user", lines[4][2]]]
    assert pd.isna(q["offset"].iloc[0]) and len(q["sha256"].iloc[0]) == 64

"""The state store: exact round trip, atomic private generations, a corrupt newest one
survived, every one corrupt an error (or an explicit reset), leftovers cleaned."""

from __future__ import annotations

import stat

import numpy as np
import pytest
import torch

from fedcl.shop.store import CorruptState, GenerationStore


def _state(step: int) -> dict:
    return {
        "learner": {
            "window": step,
            "private": {"user_emb.weight": torch.full((3, 2), float(step))},
            "method": {"replay": {"items": np.arange(step), "seen": step, "policy": "window"}},
            "empty": {},
            "none": None,
        },
        "flag": True,
        "rate": 0.5,
    }


def test_round_trip_is_exact(tmp_path):
    store = GenerationStore(tmp_path)

    store.save(_state(4))
    back = store.load()

    assert back["learner"]["window"] == 4 and isinstance(back["learner"]["window"], int)
    assert torch.equal(back["learner"]["private"]["user_emb.weight"], torch.full((3, 2), 4.0))
    np.testing.assert_array_equal(back["learner"]["method"]["replay"]["items"], np.arange(4))
    assert back["learner"]["method"]["replay"]["policy"] == "window"
    assert back["learner"]["empty"] == {} and back["learner"]["none"] is None
    assert back["flag"] is True and back["rate"] == 0.5


def test_newest_generation_wins_and_old_ones_are_pruned(tmp_path):
    store = GenerationStore(tmp_path, keep=2)

    for step in range(5):
        store.save(_state(step))

    assert store.load()["learner"]["window"] == 4
    assert len(list(tmp_path.glob("state-*.npz"))) == 2


def test_corrupt_newest_falls_back_to_previous(tmp_path):
    store = GenerationStore(tmp_path)
    store.save(_state(1))
    newest = store.save(_state(2))

    newest.write_bytes(newest.read_bytes()[:-20] + b"x" * 20)  # bit rot / torn write

    assert store.load()["learner"]["window"] == 1


def test_half_written_file_is_ignored(tmp_path):
    store = GenerationStore(tmp_path)
    store.save(_state(1))
    (tmp_path / ".state-00000002.npz.tmp123").write_bytes(b"partial")

    assert store.load()["learner"]["window"] == 1
    assert store.save(_state(2)).name == "state-00000002.npz"


def test_no_state_is_none(tmp_path):
    assert GenerationStore(tmp_path / "nothing").load() is None


def _rot(path) -> None:
    path.write_bytes(path.read_bytes()[:-20] + b"x" * 20)


def test_every_generation_corrupt_is_an_error_naming_the_files_and_the_ways_out(tmp_path):
    store = GenerationStore(tmp_path, what="state of shop a", reset_hint="reset-corrupt-state")
    for step in (1, 2):
        _rot(store.save(_state(step)))

    with pytest.raises(CorruptState) as err:
        store.load()

    message = str(err.value)
    assert "state-00000001.npz" in message and "state-00000002.npz" in message
    assert "restore" in message and "reset-corrupt-state" in message
    assert len(list(tmp_path.glob("state-*.npz"))) == 2  # nothing was touched


def test_a_deleted_checksum_is_corruption_too(tmp_path):
    store = GenerationStore(tmp_path)
    store.save(_state(1)).with_suffix(".sha256").unlink()

    with pytest.raises(CorruptState, match="unreadable"):
        store.load()


def test_the_explicit_reset_moves_the_corrupt_files_aside_first(tmp_path):
    _rot(GenerationStore(tmp_path).save(_state(1)))

    state = GenerationStore(tmp_path, reset_corrupt=True).load()

    assert state is None
    aside = list(tmp_path.glob("corrupt-*/state-00000001.npz"))
    assert len(aside) == 1 and not list(tmp_path.glob("state-*"))


def test_state_files_are_private(tmp_path):
    store = GenerationStore(tmp_path / "shop")

    path = store.save(_state(1))

    assert stat.S_IMODE((tmp_path / "shop").stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.with_suffix(".sha256").stat().st_mode) == 0o600


def test_leftover_temporary_files_are_removed_by_the_first_save_not_by_reading(tmp_path):
    GenerationStore(tmp_path).save(_state(1))
    left = tmp_path / ".state-00000002.npz.tmp4242"
    left.write_bytes(b"x" * 1000)
    store = GenerationStore(tmp_path)

    store.load()
    assert left.exists()  # a reader changes nothing (e.g. a refused rerun)
    store.save(_state(2))

    assert not left.exists()

"""The shop state store: exact round trip, atomic generations, corrupt files survived."""

from __future__ import annotations

import numpy as np
import torch

from fedcl.shop.store import GenerationStore


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

"""Fixtures of the model tests (helpers live in ``model_fixtures``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from model_fixtures import shared_purchases

from fedcl.data.interactions import Interactions


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from threads, and on a busy machine OpenMP spin-waits
    make them 10x slower; one thread keeps these tests fast and deterministic."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def data() -> Interactions:
    return shared_purchases()

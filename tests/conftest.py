"""Test-wide settings: caches and Ray/Flower homes live in a temporary folder."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_caches(tmp_path_factory):
    root = tmp_path_factory.mktemp("fedcl-home")
    os.environ["FEDCL_CACHE"] = str(root / "cache")
    os.environ.setdefault("RAY_TMPDIR", str(root / "ray"))
    os.environ["FLWR_HOME"] = str(root / "flwr")
    yield

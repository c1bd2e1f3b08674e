"""Shared test setup: a clean environment for every test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _clean_correlator_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's own CORRELATOR_* variables."""
    for key in list(os.environ):
        if key.startswith("CORRELATOR_"):
            monkeypatch.delenv(key, raising=False)
    yield

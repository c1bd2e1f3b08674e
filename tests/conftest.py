"""Shared test setup: a clean environment for every test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def _parse_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One parse cache for the whole run, never the user's ``~/.cache``."""
    return str(tmp_path_factory.mktemp("parse-cache"))


@pytest.fixture(autouse=True)
def _clean_correlator_env(monkeypatch: pytest.MonkeyPatch, _parse_cache_dir: str) -> Iterator[None]:
    """No test sees the developer's own CORRELATOR_* variables; the parse cache is private."""
    for key in list(os.environ):
        if key.startswith("CORRELATOR_"):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("CORRELATOR_CACHE_DIR", _parse_cache_dir)
    yield


@pytest.fixture(scope="module")
def postgres() -> Iterator[object]:
    """A private PostgreSQL cluster on 127.0.0.1 for one test module (skipped without the
    Debian package, except in CI where its absence is a failure)."""
    from service_support import PostgresCluster

    try:
        cluster = PostgresCluster()
    except FileNotFoundError as err:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(err))
    yield cluster
    cluster.stop()

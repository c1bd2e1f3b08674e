"""Session-scoped fixtures that run real servers from :mod:`correlator.lab`.

Use from a test module or conftest with ``pytest_plugins = ["tests.servers"]``.

* ``prometheus_server(path)``: a factory; starts (once per path per session) a
  Prometheus backfilled from a bundle folder or an ``.om[.gz]`` file and
  returns its :class:`~correlator.lab.Server`.
* ``alertmanager_server``: one Alertmanager for the session.
* ``victoria_metrics_server(path)``: a factory like ``prometheus_server`` for
  VictoriaMetrics (skipped when ``/usr/bin/victoria-metrics`` is missing).

Servers stop when the session ends.

For stand-ins of a Prometheus HTTP API (hanging, half answering...):
``loopback(handler_class)`` serves a handler on 127.0.0.1 and yields its URL;
``send_matrix(handler, result)`` answers a ``query_range`` with a matrix.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from correlator import lab

ServerFactory = Callable[[str | Path], lab.Server]


def _skip_without(binary: str, package: str) -> None:
    if not Path(binary).exists():
        pytest.skip(f"{binary} missing (apt-get install -y {package})")


@pytest.fixture(scope="session")
def prometheus_server() -> Iterator[ServerFactory]:
    """Factory: a real Prometheus backfilled from ``path`` (cached per path)."""
    _skip_without(lab.PROMETHEUS_BIN, "prometheus")
    started: dict[Path, lab.Server] = {}
    with contextlib.ExitStack() as stack:

        def start(path: str | Path) -> lab.Server:
            key = Path(path).resolve()
            if key not in started:
                started[key] = stack.enter_context(lab.prometheus(key))
            return started[key]

        yield start


@pytest.fixture(scope="session")
def alertmanager_server() -> Iterator[lab.Server]:
    """A real Alertmanager for the session (null receiver, loopback only)."""
    _skip_without(lab.ALERTMANAGER_BIN, "prometheus-alertmanager")
    with lab.alertmanager() as server:
        yield server


@pytest.fixture(scope="session")
def victoria_metrics_server() -> Iterator[ServerFactory]:
    """Factory: a real VictoriaMetrics with ``path`` imported (one server per path)."""
    _skip_without(lab.VICTORIA_METRICS_BIN, "victoria-metrics")
    started: dict[Path, lab.Server] = {}
    with contextlib.ExitStack() as stack:

        def start(path: str | Path) -> lab.Server:
            key = Path(path).resolve()
            if key not in started:
                server = stack.enter_context(lab.victoria_metrics())
                lab.import_victoria_metrics(server.url, key)
                started[key] = server
            return started[key]

        yield start


@contextlib.contextmanager
def loopback(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on 127.0.0.1 (a free port) for the block; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def send_matrix(handler: BaseHTTPRequestHandler, result: list[dict[str, Any]]) -> None:
    """Answer a Prometheus ``query_range`` with this matrix ``result``."""
    data = json.dumps(
        {"status": "success", "data": {"resultType": "matrix", "result": result}}
    ).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)

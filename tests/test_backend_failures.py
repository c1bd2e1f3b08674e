"""A backend that is down, failing or hanging becomes a gap, never a crash or a stall.

Real sockets on 127.0.0.1: a closed port (connection refused), an HTTP server
that answers 500 to everything, and one that accepts connections and never
answers. The rest of the data comes from a shipped bundle, so the
investigation has something to find. Every run uses a small
``source_timeout``/``deadline`` and must finish within the deadline (plus a
margin for thread start-up), name the failed backend and why in
``Investigation.gaps`` and ``to_json()["gaps"]``, and still rank findings
from the sources that answered.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from correlator.adapters.bundle import BundleBackend, default_library
from correlator.adapters.loki import LokiAdapter
from correlator.adapters.prometheus import PrometheusAdapter

from correlator.bundle import find_bundles
from correlator.catalog import default_catalog
from correlator.config import Settings
from correlator.engine import investigate
from correlator.http import HttpSettings
from correlator.model import Alert, Investigation
from correlator.sources import Sources
from servers import loopback, send_matrix

SETTINGS = Settings(source_timeout=2.0, deadline=8.0)
#: Thread start-up and the stages after collection; far below the deadline itself.
MARGIN = 2.0


# --------------------------------------------------------------------------- servers


def _closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Failing(BaseHTTPRequestHandler):
    requests = 0

    def _fail(self) -> None:
        type(self).requests += 1
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = b'{"status":"error","errorType":"internal","error":"storage is on fire"}'
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _fail
    do_POST = _fail

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def failing_url() -> Iterator[tuple[str, type[_Failing]]]:
    """An HTTP server answering 500 to every request; yields its URL and handler class."""
    handler = type("Failing", (_Failing,), {"requests": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@dataclass
class _Hang:
    url: str
    accepted: list[socket.socket]


@pytest.fixture
def hanging() -> Iterator[_Hang]:
    """A server that accepts connections, reads nothing and never answers.

    Closing the sockets at teardown releases any client still waiting.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield _Hang(f"http://127.0.0.1:{listener.getsockname()[1]}", accepted)
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in accepted:
            conn.close()
        listener.close()


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Case:
    """A shipped bundle's alert and its bundle backend bound to it."""

    alert: Alert
    bundle: BundleBackend
    baseline: Investigation
    """The investigation with every source answering."""


@pytest.fixture(scope="module")
def case() -> Case:
    """The first shipped bundle whose alert yields findings from the bundle alone."""
    for path in find_bundles(default_library()):
        backend = BundleBackend(path)
        alert = backend.alerts()[0]
        bound = backend.bind(alert)
        inv = investigate(alert, Sources.from_backends(bound), SETTINGS, default_catalog())
        if inv.findings and not inv.gaps:
            return Case(alert, bound, inv)
    pytest.fail("no shipped bundle yields findings; the library is broken")


def _sources(
    case: Case, metrics: list[Any] | None = None, logs: list[Any] | None = None
) -> Sources:
    """The case's bundle for everything, except the metric and log sources under test."""
    return Sources(
        metrics=metrics if metrics is not None else [case.bundle],
        logs=logs if logs is not None else [case.bundle],
        traces=[case.bundle],
        topology=[case.bundle],
        alerts=[case.bundle],
    )


def _run(
    case: Case, sources: Sources, settings: Settings = SETTINGS
) -> tuple[Investigation, float]:
    t0 = time.monotonic()
    inv = investigate(case.alert, sources, settings, default_catalog())
    return inv, time.monotonic() - t0


def _gap(inv: Investigation, source: str) -> str:
    """The reason of the one gap naming ``source``; also checks the JSON report."""
    reasons = [g.why for g in inv.gaps if g.source == source]
    assert len(reasons) == 1, f"expected one gap for {source}, got {inv.gaps}"
    assert {"source": source, "why": reasons[0]} in inv.to_json()["gaps"]
    return reasons[0]


def _settings(name: str, url: str, **kw: float) -> HttpSettings:
    return HttpSettings(name=name, url=url, **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- tests


def test_loki_down_is_a_gap_and_metrics_and_traces_still_rank(case: Case) -> None:
    loki = LokiAdapter(_settings("loki", f"http://127.0.0.1:{_closed_port()}", backoff=0.1))
    sources = _sources(case, logs=[loki])
    try:
        inv, elapsed = _run(case, sources)
    finally:
        loki.close()
    assert elapsed < SETTINGS.deadline + MARGIN
    why = _gap(inv, "loki")
    assert why.startswith("logs: ")
    assert "cannot connect" in why and "CORRELATOR_LOKI_URL" in why
    assert inv.telemetry.logs.empty
    assert inv.findings, "metrics and traces still answer"
    top = (inv.findings[0].service, inv.findings[0].cause)
    assert top == (case.baseline.findings[0].service, case.baseline.findings[0].cause)


def test_prometheus_answering_500_is_a_gap_after_retries(
    case: Case, failing_url: tuple[str, type[_Failing]]
) -> None:
    url, handler = failing_url
    prom = PrometheusAdapter(_settings("prometheus", url, retries=2, backoff=0.1))
    sources = _sources(case, metrics=[prom])
    try:
        inv, elapsed = _run(case, sources)
    finally:
        prom.close()
    assert elapsed < SETTINGS.deadline + MARGIN
    why = _gap(inv, "prometheus")
    assert why.startswith("metrics: ")
    assert "500" in why and "storage is on fire" in why and "after 3 attempts" in why
    # The sample-interval and label-name probes are tried (three attempts each; their
    # failure only leaves the interval and labels unknown), then the first `concurrency`
    # queries go out at once; each is retried twice and fails; no further query is sent
    # once one has failed.
    assert handler.requests == 6 + 3 * prom.concurrency
    assert inv.telemetry.signals.empty
    assert len(inv.telemetry.logs) and len(inv.telemetry.spans), "logs and traces were read"
    assert inv.findings, "traces and logs still point somewhere"
    # Without metrics the patterns that need them say so rather than guessing.
    assert inv.not_evaluated


def test_prometheus_hanging_is_cut_at_the_source_timeout(case: Case, hanging: _Hang) -> None:
    # The adapter's own timeout is long: the engine's source_timeout must cut it.
    prom = PrometheusAdapter(_settings("prometheus", hanging.url, timeout=30.0))
    sources = _sources(case, metrics=[prom])
    inv, elapsed = _run(case, sources)
    assert elapsed < SETTINGS.deadline + MARGIN
    # The adapter is handed the engine's budget and gives up just before it.
    assert elapsed >= SETTINGS.source_timeout - 0.5, "the engine waited for the source's budget"
    assert hanging.accepted, "the adapter did connect: the server hung, it was not down"
    why = _gap(inv, "prometheus")
    assert why.startswith("metrics: ") and ("no answer" in why or "abandoned" in why), why
    assert len(inv.telemetry.logs) and len(inv.telemetry.spans)
    assert inv.findings, "traces and logs still point somewhere"
    prom.close()


def test_the_deadline_bounds_the_run_even_when_the_source_timeout_is_longer(
    case: Case, hanging: _Hang
) -> None:
    settings = Settings(source_timeout=30.0, deadline=3.0)
    prom = PrometheusAdapter(_settings("prometheus", hanging.url, timeout=60.0))
    sources = _sources(case, metrics=[prom])
    inv, elapsed = _run(case, sources, settings)
    assert elapsed < settings.deadline + MARGIN
    assert "unanswered at the deadline" in _gap(inv, "prometheus")
    prom.close()


def test_every_backend_failing_at_once_still_reports_each(
    case: Case, hanging: _Hang, failing_url: tuple[str, type[_Failing]]
) -> None:
    prom = PrometheusAdapter(_settings("prometheus", hanging.url, timeout=30.0))
    loki = LokiAdapter(_settings("loki", f"http://127.0.0.1:{_closed_port()}", backoff=0.1))
    broken = PrometheusAdapter(_settings("prometheus", failing_url[0], retries=0), name="thanos")
    sources = _sources(case, metrics=[prom, broken], logs=[loki])
    inv, elapsed = _run(case, sources)
    assert elapsed < SETTINGS.deadline + MARGIN
    assert "unanswered at the deadline" in _gap(inv, "prometheus")
    assert "500" in _gap(inv, "thanos")
    assert "cannot connect" in _gap(inv, "loki")
    assert len(inv.telemetry.spans), "traces still answered"
    for adapter in (prom, loki, broken):
        adapter.close()


@pytest.fixture
def half_hanging() -> Iterator[str]:
    """A Prometheus API that answers every query except histogram ones, which hang."""
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            from urllib.parse import parse_qs

            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            form = {k: v[0] for k, v in parse_qs(body).items()}
            if "_bucket" in form["query"]:
                release.wait(30)
                return
            start = float(form["start"])
            values = [[start + 60 * i, "1"] for i in range(10)]
            send_matrix(self, [{"metric": {"service_name": "checkout"}, "values": values}])

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    try:
        with loopback(Handler) as url:
            yield url
    finally:
        release.set()


def test_slow_queries_are_abandoned_and_the_rest_reaches_the_engine(
    case: Case, half_hanging: str
) -> None:
    # The adapter's budget (90% of its 2 s timeout) ends before the engine's
    # source_timeout (2 s): the engine gets what answered, and a gap for the rest.
    prom = PrometheusAdapter(_settings("prometheus", half_hanging, timeout=2.0))
    sources = _sources(case, metrics=[prom])
    inv, elapsed = _run(case, sources)
    prom.close()
    assert elapsed < SETTINGS.deadline + MARGIN
    # What answered reaches the engine; what did not is a gap that names it.
    gaps = [g.why for g in inv.gaps if g.source == "prometheus"]
    assert len(gaps) == 1 and "latency (" in gaps[0] and "abandoned" in gaps[0], inv.gaps
    roles = set(inv.telemetry.signals["role"])
    assert "request_rate" in roles and "latency" not in roles
    # The engine's deadline (just under its source_timeout) came before the adapter's own
    # budget (90% of its timeout), so the warning names the deadline.
    assert "abandoned, unanswered at the" in gaps[0]
    assert "latency (" in gaps[0] and "edge_latency (" in gaps[0]

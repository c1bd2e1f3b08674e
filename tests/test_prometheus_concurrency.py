"""PrometheusAdapter runs its queries concurrently, bounded, within a time budget.

A small HTTP server on 127.0.0.1 speaks enough of the Prometheus API: it
answers every ``query_range`` with one series for service ``checkout``, except
queries naming a metric listed in ``hang``, which it holds until the test
ends. It records how many requests were in flight at once and the form of each.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs

import pytest
from correlator.adapters.prometheus import DEFAULT_CONCURRENCY, PrometheusAdapter

from correlator.catalog import Catalog, SignalSpec
from correlator.http import HttpSettings
from correlator.model import Window
from correlator.sources import SourceError
from servers import loopback, send_matrix

WINDOW = Window(start=1_000_600.0, end=1_001_200.0, baseline_start=1_000_000.0)
#: Thread start-up and HTTP round trips on a loaded machine.
MARGIN = 2.0


@dataclass
class FakeProm:
    """What the server saw, and how it should behave."""

    url: str = ""
    hang: set[str] = field(default_factory=set)
    barrier: threading.Barrier | None = None
    forms: list[dict[str, str]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def fake() -> Iterator[FakeProm]:
    state = FakeProm()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            form = {k: v[0] for k, v in parse_qs(body).items()}
            with state.lock:
                state.forms.append(form)
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
            try:
                if any(metric in form["query"] for metric in state.hang):
                    state.release.wait(30)
                    return
                if state.barrier is not None:
                    state.barrier.wait(timeout=10)  # BrokenBarrierError: not concurrent
                self._answer(form)
            finally:
                with state.lock:
                    state.in_flight -= 1

        def _answer(self, form: dict[str, str]) -> None:
            ts = float(form["start"])
            send_matrix(self, [{"metric": {"service_name": "checkout"}, "values": [[ts, "1.5"]]}])

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    try:
        with loopback(Handler) as url:
            state.url = url
            yield state
    finally:
        state.release.set()


def _catalog(*metrics: str) -> Catalog:
    """One role per metric, each with one counter alternative."""
    return Catalog(
        {f"role_{m}": (SignalSpec(f"role_{m}", m, "counter", service_labels=("service_name",)),)
         for m in metrics}
    )  # fmt: skip


def _adapter(fake: FakeProm, **kw: float) -> PrometheusAdapter:
    # No probes and no uncatalogued-series queries: only the catalog's queries are sent.
    kw = {"interval": 60.0, "generic": False, "probe": False, **kw}
    return PrometheusAdapter(HttpSettings(name="prometheus", url=fake.url, timeout=30.0), **kw)  # type: ignore[arg-type]


def test_queries_run_concurrently_and_never_more_than_the_bound(fake: FakeProm) -> None:
    metrics = [f"m{i}" for i in range(12)]
    fake.barrier = threading.Barrier(3)  # every request waits for two others
    adapter = _adapter(fake, concurrency=3)
    result = adapter.signals(_catalog(*metrics), WINDOW, 60)
    adapter.close()
    assert fake.max_in_flight == 3
    assert len(fake.forms) == len(metrics), "one request per spec"
    assert set(result.frame.role) == {f"role_{m}" for m in metrics}
    assert result.warnings == ()


def test_default_concurrency_is_bounded(fake: FakeProm) -> None:
    adapter = _adapter(fake)
    adapter.signals(_catalog(*[f"m{i}" for i in range(20)]), WINDOW, 60)
    adapter.close()
    assert adapter.concurrency == DEFAULT_CONCURRENCY
    assert 1 <= fake.max_in_flight <= DEFAULT_CONCURRENCY


def test_a_query_past_the_budget_is_abandoned_and_reported(fake: FakeProm) -> None:
    fake.hang = {"slow_metric"}
    adapter = _adapter(fake, budget=1.0, concurrency=2)
    t0 = time.monotonic()
    result = adapter.signals(_catalog("fast_a", "slow_metric", "fast_b"), WINDOW, 60)
    elapsed = time.monotonic() - t0
    assert elapsed < 1.0 + MARGIN, "not waited on beyond the budget"
    assert set(result.frame.role) == {"role_fast_a", "role_fast_b"}, "what answered is kept"
    assert len(result.warnings) == 1
    assert result.warnings[0].startswith("1 of 3 queries abandoned, unanswered at the 1s budget")
    assert "role_slow_metric (slow_metric)" in result.warnings[0]
    # The server was told how long the caller would wait.
    slow = [f for f in fake.forms if "slow_metric" in f["query"]]
    assert slow and slow[0]["timeout"] == "1s"
    adapter.close()


def test_a_deadline_sooner_than_the_budget_wins(fake: FakeProm) -> None:
    fake.hang = {"slow_metric"}
    adapter = _adapter(fake, budget=60.0)
    t0 = time.monotonic()
    result = adapter.signals(
        _catalog("fast_a", "slow_metric"), WINDOW, 60, deadline=time.monotonic() + 0.5
    )
    assert time.monotonic() - t0 < 0.5 + MARGIN
    assert set(result.frame.role) == {"role_fast_a"}
    assert "unanswered at the deadline" in result.warnings[0]
    adapter.close()


def test_queries_not_started_at_the_budget_are_never_sent(fake: FakeProm) -> None:
    fake.hang = {"slow"}
    adapter = _adapter(fake, budget=0.5, concurrency=1)
    result = adapter.signals(_catalog("slow_1", "slow_2", "slow_3"), WINDOW, 60)
    adapter.close()
    assert len(fake.forms) == 1, "only the first query was in flight"
    assert result.warnings[0].startswith("3 of 3 queries abandoned")


def test_the_default_budget_leaves_room_before_the_source_timeout() -> None:
    adapter = PrometheusAdapter(HttpSettings(name="prometheus", url="http://127.0.0.1:1"))
    assert adapter.budget == pytest.approx(9.0), "90% of the 10 s timeout"
    with pytest.raises(ValueError, match="concurrency"):
        PrometheusAdapter("http://127.0.0.1:1", concurrency=0)


def test_a_query_cut_at_the_calls_own_limit_is_abandoned_not_raised(
    fake: FakeProm, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The request's cut at the budget can land a moment before the pool's wait ends:
    # it is the same abandonment, not a backend failure.
    adapter = _adapter(fake, budget=5.0, concurrency=1)

    def cut(*_args: object, **_kw: object) -> None:
        err = SourceError("Prometheus: cut after 5s")
        err.cut_at = time.monotonic() + 60  # type: ignore[attr-defined]  # the budget's end
        raise err

    monkeypatch.setattr(adapter, "_fetch", cut)
    result = adapter.signals(_catalog("m1"), WINDOW, 60)
    assert result.warnings[0].startswith("1 of 1 queries abandoned")

    def timed_out(*_args: object, **_kw: object) -> None:
        err = SourceError("Prometheus: cut after 1s (the backend's timeout)")
        err.cut_at = time.monotonic()  # type: ignore[attr-defined]  # before the budget's end
        raise err

    monkeypatch.setattr(adapter, "_fetch", timed_out)
    with pytest.raises(SourceError, match="backend's timeout"):
        adapter.signals(_catalog("m1"), WINDOW, 60)
    adapter.close()

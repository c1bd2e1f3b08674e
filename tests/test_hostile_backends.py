"""Backends that trickle, hang, echo our headers, redirect elsewhere or answer 100 MB.

Every backend here is a real HTTP server on 127.0.0.1 in a process of its own
(tests/hostile_server.py), so that the threads and sockets counted are the
client's alone. What must hold (issue #14):

- a request is cut whole at its limit (the backend's timeout or what is left of
  the investigation), however slowly the bytes come, and the gap names the
  limit that cut it;
- after an investigation nothing it started is left: no thread, no socket;
- an answer past ``max_bytes`` is cut while it streams (memory stays bounded),
  with a gap that says so and how to raise it;
- a redirect to another origin carries no credential and no configured header;
- no message, report or log line quotes a header value or a configured secret.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from correlator.adapters.jaeger import JaegerAdapter
from correlator.adapters.loki import LokiAdapter
from correlator.adapters.prometheus import PrometheusAdapter
from correlator.adapters.tempo import TempoAdapter

from correlator.config import Settings, load_settings
from correlator.engine import investigate
from correlator.errors import ConfigError
from correlator.http import HttpBackend, HttpSettings
from correlator.model import Alert, Investigation
from correlator.sources import SourceError, Sources
from hostile_server import hostile, resources

NOW = time.time()
ALERT = Alert(
    fingerprint="f00d",
    labels={"alertname": "HighErrorRate", "service": "checkout"},
    starts_at=NOW - 600,
)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with hostile(trickle=0.1) as url:
        yield url


@pytest.fixture(scope="module")
def other() -> Iterator[str]:
    """A second server: another origin (another port)."""
    with hostile(trickle=0.1) as url:
        yield url


def _settle(baseline: tuple[int, int, int], seconds: float = 5.0) -> tuple[int, int, int]:
    """Threads, fds and sockets once they are back at ``baseline`` (or after ``seconds``)."""
    stop = time.monotonic() + seconds
    while True:
        now = resources()
        if now <= baseline or time.monotonic() > stop:
            return now
        time.sleep(0.05)


def _hostile_sources(url: str, **kw: Any) -> Sources:
    """Every kind of telemetry from a backend that trickles, hangs or never ends its headers."""
    prom = PrometheusAdapter(HttpSettings(name="prometheus", url=f"{url}/trickle", **kw))
    loki = LokiAdapter(HttpSettings(name="loki", url=f"{url}/trickle-head", **kw))
    tempo = TempoAdapter(HttpSettings(name="tempo", url=f"{url}/hang", **kw))
    jaeger = JaegerAdapter(HttpSettings(name="jaeger", url=f"{url}/trickle", **kw), api="legacy")
    return Sources(metrics=[prom], logs=[loki], traces=[tempo], topology=[jaeger])


def _gaps(inv: Investigation) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for g in inv.gaps:
        out.setdefault(g.source, []).append(g.why)
    return out


# --------------------------------------------------------------------------- deadlines


def test_a_trickling_answer_is_cut_at_the_investigation_deadline(server: str) -> None:
    # The backends' own timeout and source_timeout are long: the 2 s deadline must cut.
    sources = _hostile_sources(server, timeout=30.0, retries=0)
    settings = Settings(source_timeout=30.0, deadline=2.0)
    t0 = time.monotonic()
    try:
        inv = investigate(ALERT, sources, settings)
    finally:
        sources.close()
    elapsed = time.monotonic() - t0
    assert elapsed < settings.deadline + 1.0, elapsed
    gaps = _gaps(inv)
    # Each source names the real limit: the deadline, not the 30 s it was configured with.
    for source in ("loki", "tempo"):
        assert any("cut after 2s (the investigation's deadline)" in w for w in gaps[source]), gaps
    assert any("unanswered at the deadline" in w for w in gaps["prometheus"]), gaps
    text = json.dumps(inv.to_json()["gaps"])
    assert "30s" not in text and "source_timeout" not in text, text


def test_the_backend_timeout_cuts_a_trickle_whole_not_per_read(server: str) -> None:
    # One byte every 0.1 s: a per-read timeout of 1 s would never fire.
    backend = HttpBackend(HttpSettings(name="loki", url=f"{server}/trickle", timeout=1.0))
    t0 = time.monotonic()
    with pytest.raises(SourceError) as info:
        backend.get_json("/loki/api/v1/labels")
    backend.close()
    assert 0.9 < time.monotonic() - t0 < 2.0
    assert "cut after 1s (the backend's timeout)" in str(info.value)
    assert "CORRELATOR_LOKI_TIMEOUT" in str(info.value)


def test_source_timeout_is_named_when_it_cuts_first(server: str) -> None:
    sources = _hostile_sources(server, timeout=30.0, retries=0)
    try:
        inv = investigate(ALERT, sources, Settings(source_timeout=1.0, deadline=20.0))
    finally:
        sources.close()
    assert any("cut after 1s (source_timeout)" in w for w in _gaps(inv)["loki"]), inv.gaps


def test_no_thread_or_socket_outlives_40_investigations(server: str) -> None:
    sources = _hostile_sources(server, timeout=30.0, retries=0)
    settings = Settings(source_timeout=30.0, deadline=0.6)
    baseline = resources()
    # Four at a time, as the service's workers run them.
    with cf.ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda _: investigate(ALERT, sources, settings), range(40)))
    after = _settle(baseline)
    sources.close()
    assert all(r.gaps for r in runs)
    assert after <= baseline, f"threads, fds, sockets before {baseline}, after {after}"


# --------------------------------------------------------------------------- answer size


def test_an_answer_announced_past_max_bytes_is_refused_unread(server: str) -> None:
    settings = HttpSettings(name="prometheus", url=f"{server}/big/104857600", max_bytes=1 << 20)
    backend = HttpBackend(settings)
    t0 = time.monotonic()
    with pytest.raises(SourceError) as info:
        backend.get_json("/api/v1/query")
    backend.close()
    msg = str(info.value)
    assert time.monotonic() - t0 < 2.0
    assert "announced 100 MiB, past the 1 MiB limit" in msg
    assert "backends.prometheus.max_bytes (CORRELATOR_PROMETHEUS_MAX_BYTES)" in msg


def test_a_streamed_answer_is_cut_at_max_bytes_and_memory_stays_bounded(server: str) -> None:
    cap = 1 << 20
    settings = HttpSettings(name="loki", url=f"{server}/big-stream/20000000", max_bytes=cap)
    backend = HttpBackend(settings)
    tracemalloc.start()
    try:
        with pytest.raises(SourceError, match=r"sent more than 1 MiB, past the 1 MiB limit"):
            backend.get_json("/x")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        backend.close()
    assert peak < 4 * cap, f"peak {peak} bytes for a {cap}-byte cap"
    # Under the cap the same answer is read and parsed.
    small = HttpBackend(settings.with_(url=f"{server}/big-stream/500000"))
    assert small.get_json("/x")["status"] == "success"
    small.close()


def test_max_bytes_from_the_config_file_and_the_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("backends:\n  prometheus: {url: http://p:9090, max_bytes: 1000}\n")
    assert load_settings(cfg, env={}).backends["prometheus"].settings.max_bytes == 1000
    env = {"CORRELATOR_PROMETHEUS_MAX_BYTES": "2048"}
    assert load_settings(cfg, env=env).backends["prometheus"].settings.max_bytes == 2048
    default = load_settings(None, env={"CORRELATOR_LOKI_URL": "http://l:3100"})
    assert default.backends["loki"].settings.max_bytes == 64 * 1024 * 1024
    bad = {"CORRELATOR_PROMETHEUS_URL": "http://p", "CORRELATOR_PROMETHEUS_MAX_BYTES": "lots"}
    with pytest.raises(ConfigError, match=r"backends\.prometheus\.max_bytes"):
        load_settings(None, env=bad)


# --------------------------------------------------------------------------- redirects

SECRET_HEADERS = {"X-Api-Key": "key-0f9e8d7c", "X-Custom-Auth": "custom-5a4b3c"}


def _secret_backend(url: str, **kw: Any) -> HttpBackend:
    kw = {"token": "tok-1a2b3c4d", "tenant": "tenant-77", "headers": SECRET_HEADERS, **kw}
    return HttpBackend(HttpSettings(name="tempo", url=url, **kw))


def test_a_redirect_to_another_origin_carries_no_credential(server: str, other: str) -> None:
    port = other.rsplit(":", 1)[1]
    backend = _secret_backend(f"{server}/redirect/302/{port}")
    seen = backend.get_json("/headers/api/search")["data"]
    backend.close()
    sent = {k.lower(): v for k, v in seen["headers"].items()}
    assert seen["path"] == "/headers/api/search"
    for name in ("authorization", "x-api-key", "x-scope-orgid", "x-custom-auth"):
        assert name not in sent, sent
    assert not {"tok-1a2b3c4d", "key-0f9e8d7c", "custom-5a4b3c"} & set(sent.values())


def test_basic_auth_and_url_user_info_stay_home_too(server: str, other: str) -> None:
    port = other.rsplit(":", 1)[1]
    base = server.replace("http://", "http://me:pw-9a8b7c@") + f"/redirect/307/{port}"
    backend = HttpBackend(HttpSettings(name="prometheus", url=base))
    seen = backend.post_json("/headers/api/v1/query", data={"query": "up"})["data"]
    backend.close()
    assert "authorization" not in {k.lower() for k in seen["headers"]}
    assert seen["body"] == "query=up", "a 307 keeps the method and the body"


def test_a_redirect_within_the_origin_keeps_the_credentials(server: str) -> None:
    backend = _secret_backend(f"{server}/redirect/301/self")
    seen = backend.get_json("/headers/api/search")["data"]
    backend.close()
    sent = {k.lower(): v for k, v in seen["headers"].items()}
    assert sent["authorization"] == "Bearer tok-1a2b3c4d"
    assert sent["x-api-key"] == "key-0f9e8d7c" and sent["x-scope-orgid"] == "tenant-77"


def test_redirects_are_bounded(server: str) -> None:
    backend = _secret_backend(server + "/redirect/302/self" * 7)
    with pytest.raises(SourceError, match="more than 5 redirects; point CORRELATOR_TEMPO_URL"):
        backend.get_json("/headers/x")
    assert backend.requests == 6
    backend.close()


# --------------------------------------------------------------------------- echoes


@pytest.mark.parametrize("path", ["echo", "echo-json"])
def test_an_echoed_request_never_puts_a_header_value_in_the_error(server: str, path: str) -> None:
    backend = _secret_backend(f"{server}/{path}", retries=0)
    with pytest.raises(SourceError) as info:
        backend.get_json("/api/search")
    backend.close()
    msg = str(info.value)
    assert "500 Internal Server Error" in msg
    for value in ("tok-1a2b3c4d", "key-0f9e8d7c", "custom-5a4b3c", "tenant-77"):
        assert value not in msg, msg
    # A sanitized first line at most: one line, bounded.
    assert "\n" not in msg and len(msg) < 500, msg


def test_echoing_backends_leave_no_secret_in_the_reports(server: str) -> None:
    from correlator.report import render

    kw: dict[str, Any] = {"token": "tok-1a2b3c4d", "headers": SECRET_HEADERS, "retries": 0}
    prom = PrometheusAdapter(HttpSettings(name="prometheus", url=f"{server}/echo-json", **kw))
    tempo = TempoAdapter(HttpSettings(name="tempo", url=f"{server}/echo", **kw))
    loki = LokiAdapter(HttpSettings(name="loki", url=f"{server}/echo", tenant="tenant-77"))
    sources = Sources(metrics=[prom], logs=[loki], traces=[tempo])
    try:
        inv = investigate(ALERT, sources, Settings(source_timeout=5, deadline=10))
    finally:
        sources.close()
    assert {"prometheus", "tempo", "loki"} <= set(_gaps(inv)), inv.gaps
    for fmt in ("json", "html", "text", "markdown"):
        out = render(inv, fmt)
        for value in ("tok-1a2b3c4d", "key-0f9e8d7c", "custom-5a4b3c", "tenant-77"):
            assert value not in out, (fmt, value)

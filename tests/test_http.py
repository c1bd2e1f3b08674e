"""HTTP settings, secrets, retries and error messages, for every adapter."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from correlator.adapters.alertmanager import AlertmanagerAdapter
from correlator.adapters.jaeger import JaegerAdapter
from correlator.adapters.loki import LokiAdapter
from correlator.adapters.prometheus import PrometheusAdapter
from correlator.adapters.tempo import TempoAdapter

from correlator.errors import ConfigError
from correlator.http import HttpBackend, HttpSettings, redact_url
from correlator.sources import SourceAuthError, SourceError

OK_BODIES: dict[str, Any] = {
    "prometheus": {"status": "success", "data": {"resultType": "vector", "result": []}},
    "loki": {"status": "success", "data": ["service_name"]},
    "tempo": {"traces": []},
    "jaeger": {"data": ["payment"], "errors": None, "total": 1},
    "alertmanager": [],
}
NAMES = {"prometheus": "Prometheus", "loki": "Loki", "tempo": "Tempo", "jaeger": "Jaeger",
         "alertmanager": "Alertmanager"}  # fmt: skip


def make(kind: str, settings: HttpSettings, client: httpx.Client) -> tuple[Any, Callable[[], Any]]:
    """An adapter of ``kind`` and a call that makes one request."""
    if kind == "prometheus":
        p = PrometheusAdapter(settings, client)
        return p, lambda: p.instant("up")
    if kind == "loki":
        lk = LokiAdapter(settings, client)
        return lk, lambda: lk.labels(0, 1)
    if kind == "tempo":
        t = TempoAdapter(settings, client)
        return t, lambda: t.search("{ }", 0, 1)
    if kind == "jaeger":
        j = JaegerAdapter(settings, client, api="legacy")
        return j, j.services
    a = AlertmanagerAdapter(settings, client)
    return a, a.alerts


def run(
    kind: str, handler: Callable[[httpx.Request], httpx.Response], **kw: Any
) -> tuple[Any, list[float]]:
    settings = HttpSettings(name=kind, url=f"http://{kind}.example:1234/base", **kw)
    sleeps: list[float] = []
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        adapter, call = make(kind, settings, client)
        adapter.http._sleep = sleeps.append
        return call(), sleeps


KINDS = list(OK_BODIES)


@pytest.mark.parametrize("kind", KINDS)
def test_401_names_backend_url_and_env_var(kind: str) -> None:
    calls: list[httpx.Request] = []

    def handler(r: httpx.Request) -> httpx.Response:
        calls.append(r)
        return httpx.Response(401, text="no token")

    with pytest.raises(SourceAuthError) as info:
        run(kind, handler, retries=3)
    msg = str(info.value)
    assert msg.startswith(f"{NAMES[kind]} at http://{kind}.example:1234/base/")
    assert "401 Unauthorized: no token" in msg
    assert f"set CORRELATOR_{kind.upper()}_TOKEN" in msg
    assert len(calls) == 1  # 4xx is never retried


@pytest.mark.parametrize("kind", KINDS)
def test_429_then_success_retries_with_backoff(kind: str) -> None:
    calls: list[httpx.Request] = []

    def handler(r: httpx.Request) -> httpx.Response:
        calls.append(r)
        if len(calls) < 3:
            return httpx.Response(429, text="slow down")
        return httpx.Response(200, json=OK_BODIES[kind])

    _, sleeps = run(kind, handler, retries=2, backoff=0.5)
    assert len(calls) == 3
    assert sleeps == [0.5, 1.0]


@pytest.mark.parametrize("kind", KINDS)
def test_500_retried_then_reported(kind: str) -> None:
    calls: list[httpx.Request] = []

    def handler(r: httpx.Request) -> httpx.Response:
        calls.append(r)
        return httpx.Response(500, text="internal error: ingester down")

    with pytest.raises(SourceError) as info:
        run(kind, handler, retries=2)
    msg = str(info.value)
    assert len(calls) == 3
    assert "500 Internal Server Error: internal error: ingester down (after 3 attempts)" in msg
    assert "check its logs" in msg


@pytest.mark.parametrize("kind", KINDS)
def test_timeout_is_not_retried(kind: str) -> None:
    calls: list[httpx.Request] = []

    def handler(r: httpx.Request) -> httpx.Response:
        calls.append(r)
        raise httpx.ReadTimeout("timed out", request=r)

    with pytest.raises(SourceError, match=r"cut after 3s \(the backend's timeout\)") as info:
        run(kind, handler, retries=2, timeout=3)
    assert f"CORRELATOR_{kind.upper()}_TIMEOUT" in str(info.value)
    assert len(calls) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_truncated_bodies(kind: str) -> None:
    with pytest.raises(SourceError, match=r"not valid JSON.*truncated"):
        run(kind, lambda r: httpx.Response(200, content=b'{"status":"success","data":['))

    def cut(r: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("peer closed connection without sending complete body")

    with pytest.raises(SourceError, match="connection failed mid-response"):
        run(kind, cut)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("kind", KINDS)
def test_connection_refused_real_socket(kind: str) -> None:
    settings = HttpSettings(
        name=kind, url=f"http://127.0.0.1:{_closed_port()}", retries=2, backoff=0.01
    )
    sleeps: list[float] = []
    backend = HttpBackend(settings, sleep=sleeps.append)
    with pytest.raises(SourceError) as info:
        backend.get_json("/x")
    backend.close()
    msg = str(info.value)
    assert msg.startswith(f"{NAMES[kind]} at http://127.0.0.1:")
    assert "cannot connect" in msg and "after 3 attempt(s)" in msg
    assert f"CORRELATOR_{kind.upper()}_URL" in msg
    assert backend.requests == 3 and sleeps == [0.01, 0.02]


def test_auth_headers_tenant_and_basic_auth() -> None:
    seen: list[httpx.Request] = []
    s = HttpSettings(name="loki", url="http://loki:3100", token="s3cret", tenant="team-a",
                     headers={"X-Extra": "1"})  # fmt: skip
    from correlator.http import build_client

    client = build_client(s)
    client._transport = httpx.MockTransport(
        lambda r: (seen.append(r), httpx.Response(200, json=[]))[1]
    )
    HttpBackend(s, client).get_json("/x")
    client.close()
    assert seen[0].headers["Authorization"] == "Bearer s3cret"
    assert seen[0].headers["X-Scope-OrgID"] == "team-a"
    assert seen[0].headers["X-Extra"] == "1"
    b = HttpSettings(name="prometheus", url="http://p:9090", username="u", password="pw")
    client = build_client(b)
    client._transport = httpx.MockTransport(
        lambda r: (seen.append(r), httpx.Response(200, json=[]))[1]
    )
    HttpBackend(b, client).get_json("/x")
    client.close()
    assert seen[1].headers["Authorization"].startswith("Basic ")


def test_secrets_never_in_repr_or_errors() -> None:
    s = HttpSettings(name="loki", url="http://user:pw@loki:3100", token="tok-123",
                     headers={"X-Api-Key": "key-456"})  # fmt: skip
    for text in (repr(s), str(s)):
        assert "tok-123" not in text and "key-456" not in text and ":pw@" not in text
        assert "***" in text
    assert redact_url("http://user:pw@loki:3100/x") == "http://loki:3100/x"
    transport = httpx.MockTransport(lambda r: httpx.Response(403))
    with httpx.Client(transport=transport) as c, pytest.raises(SourceAuthError) as info:
        HttpBackend(s, c).get_json("/x")
    assert ":pw@" not in str(info.value) and "http://loki:3100/x: 403" in str(info.value)
    assert "tok-123" not in str(info.value) and "CORRELATOR_LOKI_TENANT" in str(info.value)


def test_from_env_and_files(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("from-file\n")
    env = {
        "CORRELATOR_TEMPO_URL": "https://tempo:3200/",
        "CORRELATOR_TEMPO_TOKEN_FILE": str(token),
        "CORRELATOR_TEMPO_TENANT": "t1",
        "CORRELATOR_TEMPO_TIMEOUT": "2.5",
        "CORRELATOR_TEMPO_RETRIES": "4",
        "CORRELATOR_TEMPO_INSECURE": "1",
    }
    s = HttpSettings.from_env("tempo", env)
    assert (s.url, s.token, s.tenant, s.timeout, s.retries, s.verify) == (
        "https://tempo:3200",
        "from-file",
        "t1",
        2.5,
        4,
        False,
    )
    assert (
        HttpSettings.from_env(
            "tempo", {"CORRELATOR_TEMPO_URL": "http://t", "CORRELATOR_TEMPO_TOKEN": "x"}
        ).token
        == "x"
    )
    with pytest.raises(ConfigError, match="set CORRELATOR_LOKI_URL"):
        HttpSettings.from_env("loki", {})
    with pytest.raises(ConfigError, match="not a number"):
        HttpSettings.from_env(
            "loki", {"CORRELATOR_LOKI_URL": "http://l", "CORRELATOR_LOKI_TIMEOUT": "soon"}
        )


def test_validated_resolves_secret_env_and_file(tmp_path: Path) -> None:
    # The config validates a backends: entry with the adapter's settings model (one type).
    pw = tmp_path / "pw"
    pw.write_text("filepw")
    cfg = {"name": "alertmanager", "url": "http://am:9093", "token_env": "MY_TOKEN"}
    assert HttpSettings.validated(cfg, env={"MY_TOKEN": "envtok"}).token == "envtok"
    cfg2 = {"name": "alertmanager", "url": "http://am:9093", "username": "u",
            "password_file": str(pw)}  # fmt: skip
    assert HttpSettings.validated(cfg2, env={}).password == "filepw"
    bad = {"name": "alertmanager", "url": "http://am:9093", "token_file": str(tmp_path / "no")}
    with pytest.raises(ConfigError, match=r"backends\.alertmanager\.token_file: cannot read"):
        HttpSettings.validated(bad, env={})
    with pytest.raises(ConfigError, match=r"backends\.alertmanager\.timeout: Input should be"):
        HttpSettings.validated({**cfg, "timeout": "soon"}, env={})


def test_adapters_adopt_plain_settings_and_name_themselves() -> None:
    plain = HttpSettings(name="prom-eu", url="http://p:9090", token="t")
    adapter = PrometheusAdapter(plain, concurrency=2)
    assert adapter.name == "prom-eu" and adapter.concurrency == 2
    assert adapter.settings.display_name == "Prometheus (prom-eu)"
    assert adapter.settings.token == "t" and adapter.settings.env_prefix == "CORRELATOR_PROM_EU_"
    assert LokiAdapter("http://loki:3100").settings.display_name == "Loki"
    with pytest.raises(ConfigError, match=r"backends\.loki\.page_size"):
        LokiAdapter(HttpSettings.validated({"name": "loki", "url": "http://l"})).settings.with_(
            page_size=0
        )


def test_bad_settings() -> None:
    with pytest.raises(ConfigError, match="not an http"):
        HttpSettings(name="loki", url="loki:3100")
    with pytest.raises(ConfigError, match="keep one of them"):
        HttpSettings(name="loki", url="http://l", token="t", username="u")
    with pytest.raises(ConfigError, match="CA bundle"):
        HttpSettings(name="loki", url="https://l", ca_file="/nonexistent.pem").ssl_verify()


def test_retry_after_header_is_honoured_up_to_cap() -> None:
    calls: list[int] = []

    def handler(r: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            return httpx.Response(503, headers={"Retry-After": "120"})
        return httpx.Response(
            200, json={"status": "success", "data": {"resultType": "vector", "result": []}}
        )

    _, sleeps = run("prometheus", handler, retries=1, backoff_max=7)
    assert sleeps == [7]

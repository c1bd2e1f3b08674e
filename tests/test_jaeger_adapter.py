"""JaegerAdapter on every recorded Jaeger-API response (VictoriaTraces under /select/jaeger)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest
from correlator.adapters.jaeger import JaegerAdapter, edges_from_spans

from correlator.http import HttpSettings
from correlator.model import SPAN_COLUMNS, Window
from correlator.sources import SourceError, TopologySource, TraceSource
from recorded import load, records, response_for, transport

START, END = 1795715820, 1795723020
URL = "http://vt:10428/select/jaeger"
FAILING = "0310d7742b9c140a255a25179a58d4dd"


@pytest.fixture
def sent() -> list[httpx.Request]:
    return []


@pytest.fixture
def jaeger(sent: list[httpx.Request]) -> Iterator[JaegerAdapter]:
    with httpx.Client(transport=transport("jaeger", log=sent)) as client:
        yield JaegerAdapter(HttpSettings(name="jaeger", url=URL, retries=0), client, api="legacy")


def test_protocols(jaeger: JaegerAdapter) -> None:
    assert isinstance(jaeger, TraceSource) and isinstance(jaeger, TopologySource)


def test_auto_detects_legacy_behind_a_path_prefix(sent: list[httpx.Request]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        if "/api/v3/" in request.url.path:  # VictoriaTraces: unknown path is 400 text (J6)
            return response_for(load("jaeger", "error_404_path"))
        return response_for(load("jaeger", "services"))

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        jaeger = JaegerAdapter(URL, client)
        assert jaeger.services() == ["catalog", "checkout", "frontend", "orders-db", "payment"]
        assert jaeger.api == "legacy"
    assert [r.url.path for r in sent] == [
        "/select/jaeger/api/v3/services",
        "/select/jaeger/api/services",
    ]


def test_trace_by_id_maps_spans(jaeger: JaegerAdapter) -> None:
    frame = jaeger.trace(FAILING)
    assert list(frame.columns) == list(SPAN_COLUMNS)
    assert len(frame) == 10 and set(frame.trace_id) == {FAILING}
    assert set(frame.service) == {"frontend", "checkout", "payment", "orders-db"}
    # every span has an "error" tag: "true" on ERROR, "unset" otherwise (J2)
    assert set(frame[frame.status == 2].service) >= {"payment", "checkout", "frontend"}
    assert (frame.status != 2).any()
    gateway = frame[(frame.service == "payment") & (frame.kind == 3)].iloc[0]
    assert gateway.duration == pytest.approx(3.0, abs=0.1) and "ReadTimeout" in gateway.error
    assert set(frame.parent_span_id.dropna()) <= set(frame.span_id)
    assert frame.zone.isin(["eu-west-1a", "eu-west-1b"]).all()
    assert set(frame[(frame.kind == 3) & frame.db_system.notna()].peer) == {"orders-db"}


def test_trace_ids_are_padded_before_asking(
    jaeger: JaegerAdapter, sent: list[httpx.Request]
) -> None:
    # Tempo search prints the id without its leading zero; Jaeger only knows the padded one (J5).
    frame = jaeger.trace("310d7742b9c140a255a25179a58d4dd")
    assert len(frame) == 10 and sent[-1].url.path.endswith(FAILING)
    b64 = base64.b64encode(bytes.fromhex(FAILING)).decode()
    assert len(jaeger.trace(b64)) == 10


def test_not_found_is_empty(jaeger: JaegerAdapter) -> None:
    assert jaeger.trace("0123456789abcdef0123456789abcdef").empty


def test_searches(jaeger: JaegerAdapter) -> None:
    errors = jaeger.find_traces("payment", START, END, limit=5, tags={"error": "true"})
    assert errors.trace_id.nunique() == 5
    assert (errors[errors.service == "payment"].status == 2).any()
    slow = jaeger.find_traces(
        "payment", START, END, limit=5, operation="POST /v1/charge", min_duration=2
    )
    assert slow.trace_id.nunique() == 5
    assert (slow[slow.name == "POST /v1/charge"].duration > 2).all()
    assert jaeger.find_traces("frontend", START, END, limit=5).trace_id.nunique() == 5
    assert jaeger.find_traces("no-such-service", START, END, limit=5).empty


def test_missing_service_is_a_clear_400(jaeger: JaegerAdapter) -> None:
    rec = load("jaeger", "error_traces_missing_service")
    with pytest.raises(
        SourceError, match=r"Jaeger at http://vt:10428/select/jaeger/api/traces: 400"
    ):
        jaeger.http.get_json("/api/traces", rec["params"])


def test_dependencies_unsupported_falls_back_to_spans() -> None:
    deps = load("jaeger", "dependencies")
    search = load("jaeger", "traces_search_payment_error")

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/api/dependencies"):
            assert request.url.params["endTs"] == deps["params"]["endTs"]
            return response_for(deps)
        if request.url.path.endswith("/api/services"):
            return response_for(load("jaeger", "services"))
        assert request.url.path.endswith("/api/traces")
        return response_for(search)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        jaeger = JaegerAdapter(URL, client, api="legacy")
        edges, kinds = jaeger.edges(Window(START, END, END - 10800))
    assert ("checkout", "payment") in edges and ("frontend", "checkout") in edges
    assert kinds["orders-db"] == "database"


def test_dependencies_when_served() -> None:
    body = {"data": [{"parent": "frontend", "child": "checkout", "callCount": 7}], "total": 1}
    with httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, json=body))) as c:
        jaeger = JaegerAdapter(URL, c, api="legacy")
        assert jaeger.edges(Window(START, END, START)) == (
            [("frontend", "checkout")],
            {"frontend": "service", "checkout": "service"},
        )


def test_v3_api_with_otlp_json() -> None:
    trace = load("tempo", "trace_v2_failing")["body"]["trace"]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        path = request.url.path
        if path.endswith("/api/v3/services"):
            return httpx.Response(200, json={"services": ["payment"]})
        if path.endswith(f"/api/v3/traces/{FAILING}"):
            return httpx.Response(200, json={"result": trace})
        if path.endswith("/api/v3/traces/0123456789abcdef0123456789abcdef"):
            return httpx.Response(
                404, json={"error": {"httpCode": 404, "message": "trace not found"}}
            )
        return httpx.Response(200, json={"result": trace})

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        jaeger = JaegerAdapter("http://jaeger:16686", client)
        frame = jaeger.spans(Window(START, END, START), limit=10)
        assert jaeger.api == "v3"
        assert set(frame.trace_id) == {FAILING} and len(frame) == 10
        assert len(jaeger.trace(FAILING)) == 10
        assert jaeger.trace("0123456789abcdef0123456789abcdef").empty
    search = [r for r in seen if r.url.path == "/api/v3/traces"]
    assert search[0].url.params["query.service_name"] == "payment"
    assert search[0].url.params["query.start_time_min"] == "2026-11-26T17:57:00Z"


def test_operations_and_lookback_recordings_parse() -> None:
    ops = load("jaeger", "operations_payment")["body"]["data"]
    assert "POST /v1/charge" in ops
    lookback = load("jaeger", "traces_search_lookback")["body"]["data"]
    from correlator.adapters.jaeger import spans_from_jaeger

    frame = spans_from_jaeger(lookback)
    assert frame.trace_id.nunique() == 2 and set(frame.service) >= {"catalog"}
    assert edges_from_spans(frame)[0]


def test_all_recordings_present() -> None:
    assert len(records("jaeger")) == 16


def test_spans_search_the_baseline_alike() -> None:
    """Failing, slow and sample searches per service, in the window and, alike, before it."""
    found = load("jaeger", "traces_search_payment_error")
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return response_for(found)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        jaeger = JaegerAdapter(URL, client, api="legacy", slow_threshold=2.0)
        frame = jaeger.spans(Window(START + 3600, END, START), ["payment"], limit=30)
    params = [r.url.params for r in sent]
    assert [(p["start"], p["end"]) for p in params] == [
        (str((START + 3600) * 10**6), str(END * 10**6))
    ] * 3 + [(str(START * 10**6), str((START + 3600) * 10**6 - 1))] * 3
    kinds = [(p.get("tags"), p.get("minDuration"), p["limit"]) for p in params]
    assert (
        kinds[:3]
        == kinds[3:]
        == [
            ('{"error": "true"}', None, "10"),
            (None, "2s", "10"),
            (None, None, "10"),
        ]
    )
    assert not frame.duplicated(["trace_id", "span_id"]).any()

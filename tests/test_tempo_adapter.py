"""TempoAdapter on every recorded real Tempo response."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest
from correlator.adapters.tempo import TempoAdapter, normalize_trace_id

from correlator.model import SPAN_COLUMNS, Window
from correlator.sources import SourceError, TraceSource
from recorded import load, response_for, transport

START, END = 1795715820, 1795723020
URL = "http://tempo:3200"
FAILING = "0310d7742b9c140a255a25179a58d4dd"


@pytest.fixture
def tempo() -> Iterator[TempoAdapter]:
    with httpx.Client(transport=transport("tempo")) as client:
        yield TempoAdapter(URL, client)


def test_trace_ids_hex_trimmed_and_base64() -> None:
    assert normalize_trace_id("310d7742b9c140a255a25179a58d4dd") == FAILING
    assert normalize_trace_id(FAILING.upper()) == FAILING
    b64 = base64.b64encode(bytes.fromhex(FAILING)).decode()
    assert normalize_trace_id(b64) == FAILING
    assert normalize_trace_id(b64.rstrip("=")) == FAILING
    with pytest.raises(ValueError, match="not a trace id"):
        normalize_trace_id("not-a-trace-id!")


@pytest.mark.parametrize("name", ["trace_v2_failing", "trace_v1_failing"])
def test_failing_trace_maps_to_span_rows(name: str) -> None:
    rec = load("tempo", name)
    with httpx.Client(transport=httpx.MockTransport(lambda r: response_for(rec))) as client:
        tempo = TempoAdapter(URL, client)
        tempo._v2 = name.startswith("trace_v2")
        trace = tempo.trace(FAILING)
        assert trace is not None
        frame = tempo.frame([trace])
    assert list(frame.columns) == list(SPAN_COLUMNS)
    assert set(frame.trace_id) == {FAILING}
    assert len(frame) == 10
    assert set(frame.service) == {"frontend", "checkout", "payment", "orders-db"}
    errors = frame[frame.status == 2]
    assert set(errors.service) >= {"payment", "checkout", "frontend"}
    gateway = frame[(frame.service == "payment") & (frame.kind == 3)]
    assert gateway.duration.iloc[0] == pytest.approx(3.0, abs=0.1)
    assert "ReadTimeout" in gateway.error.iloc[0]
    db = frame[(frame.db_system == "postgresql") & (frame.kind == 3)]
    assert set(db.peer) == {"orders-db"}
    # parent links resolve inside the trace
    assert set(frame.parent_span_id.dropna()) <= set(frame.span_id)


def test_trimmed_id_and_not_found(tempo: TempoAdapter) -> None:
    # The recordings were requested with the id as given; map our padding back for the mock.
    assert tempo.trace("0123456789abcdef0123456789abcdef") is None  # v2: 200 {"trace": {}}
    tempo._v2 = False
    assert tempo.trace("0123456789abcdef0123456789abcdef") is None  # v1: 404, empty body


def test_v1_fallback_when_v2_is_missing() -> None:
    v1 = load("tempo", "trace_v1_failing")
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path.startswith("/api/v2/"):
            return httpx.Response(404, text="404 page not found\n")
        return response_for(v1)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        tempo = TempoAdapter(URL, client)
        assert tempo.trace(FAILING) is not None
        assert tempo.trace(FAILING) is not None
    assert paths == [
        f"/api/v2/traces/{FAILING}",
        f"/api/traces/{FAILING}",
        f"/api/traces/{FAILING}",
    ]


def test_traceql_searches(tempo: TempoAdapter) -> None:
    rec = load("tempo", "search_traceql_payment_errors")
    p = rec["params"]
    hits = tempo.search(p["q"], START, END, limit=p["limit"], spss=p["spss"])
    assert hits and all(len(h.trace_id) == 32 for h in hits)
    assert all(h.services.get("payment", (0, 0))[1] > 0 for h in hits)
    slow = load("tempo", "search_traceql_duration")["params"]
    hits = tempo.search(slow["q"], START, END, limit=slow["limit"])
    assert hits and all(h.duration > 2 for h in hits)
    assert (
        tempo.search('{ resource.service.name = "no-such-service" }', START, END, limit=None) == []
    )


def test_search_finds_trimmed_ids_and_pads_them(tempo: TempoAdapter) -> None:
    rec = load("tempo", "search_tags_legacy_payment")
    p = rec["params"]
    hits = tempo.search(None, START, END, limit=p["limit"], tags=p["tags"])
    raw = {t["traceID"] for t in rec["body"]["traces"]}
    assert {h.trace_id for h in hits} == {r.zfill(32) for r in raw}


def test_spans_runs_error_slow_and_sample_searches_then_fetches_by_id() -> None:
    search = load("tempo", "search_traceql_payment_errors")
    trace = load("tempo", "trace_v2_failing")
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        if request.url.path == "/api/search":
            return response_for(search)
        return response_for(trace)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        tempo = TempoAdapter(URL, client, slow_threshold=2.0)
        frame = tempo.spans(Window(START, END, START - 3600), ["payment", 'x"} || { true'], limit=3)
    assert isinstance(tempo, TraceSource)
    searches = [r for r in sent if r.url.path == "/api/search"]
    q = searches[0].url.params["q"]
    assert (
        q
        == r'{ resource.service.name =~ "^(?:payment|x\"\\} \\|\\| \\{ true)$" && status = error }'
    )
    assert len(sent) - len(searches) == 3  # limit traces fetched by id
    assert set(frame.trace_id) == {FAILING}


def test_tags_and_values(tempo: TempoAdapter) -> None:
    tags = tempo.tags(START, END)
    assert "service.name" in tags["resource"] and "http.route" in tags["span"]
    assert tempo.tags(START, END, scope="resource")["resource"] == [
        "cloud.availability_zone",
        "k8s.pod.name",
        "service.name",
        "service.version",
    ]
    assert set(tempo.tag_values("resource.service.name", START, END)) == {
        "payment",
        "frontend",
        "catalog",
        "checkout",
        "orders-db",
    }
    routes = tempo.tag_values(
        "span.http.route", START, END, query='{ resource.service.name = "frontend" }'
    )
    assert "/api/checkout" in routes


def test_v1_tag_apis() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "/v2/" in request.url.path:
            return httpx.Response(404, text="404 page not found\n")
        name = (
            "search_tags_v1" if request.url.path.endswith("/tags") else "tag_values_v1_service_name"
        )
        return response_for(load("tempo", name))

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        tempo = TempoAdapter(URL, client)
        assert "service.name" in tempo.tags(START, END)[""]
        assert "payment" in tempo.tag_values("resource.service.name", START, END)


def test_metrics_zero_samples_have_no_value_key(tempo: TempoAdapter) -> None:
    rec = load("tempo", "metrics_query_range_errors_by_service")
    series = tempo.metrics_range(rec["params"]["q"], START, END, 300)
    by = {labels["resource.service.name"]: values for labels, _, values in series}
    assert {"payment", "checkout", "frontend"} <= set(by)
    assert (by["checkout"] == 0).any() and (by["checkout"] > 0).any()
    q = load("tempo", "metrics_query_range_quantile_payment")
    series = tempo.metrics_range(q["params"]["q"], START, END, 600)
    assert {labels.get("p") for labels, _, _ in series} == {0.5, 0.99}
    rate = load("tempo", "metrics_query_range_rate_by_service")
    assert len(tempo.metrics_range(rate["params"]["q"], START, END, 60)) >= 5


@pytest.mark.parametrize(
    ("name", "status", "needle"),
    [
        ("error_traceql_syntax", 400, "parse error"),
        ("error_search_range_too_long", 400, "range"),
        ("error_metrics_not_a_metrics_query", 400, "metrics query"),
        ("error_metrics_range_older_than_live_store_window", 500, "20m0s"),
    ],
)
def test_recorded_errors(name: str, status: int, needle: str) -> None:
    rec = load("tempo", name)
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return response_for(rec)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        from correlator.http import HttpSettings

        tempo = TempoAdapter(HttpSettings(name="tempo", url=URL, retries=2, backoff=0), client)
        with pytest.raises(SourceError) as info:
            tempo.http.get_json(rec["path"], rec["params"])
    msg = str(info.value)
    assert msg.startswith(f"Tempo at {URL}{rec['path']}: {status}")
    assert needle in msg
    assert len(calls) == (3 if status == 500 else 1)


def test_malformed_id_is_a_400_error(tempo: TempoAdapter) -> None:
    rec = load("tempo", "error_trace_id_invalid")
    with pytest.raises(SourceError, match=r"Tempo at .*/api/traces/not-a-trace-id: 400"):
        tempo.http.get_json(rec["path"])


def test_spans_search_the_baseline_alike() -> None:
    """The look-back before the window gets the same searches with the same bounds, so the
    span detector compares periods selected alike (recorded answers for every search)."""
    search = load("tempo", "search_traceql_payment_errors")
    healthy = load("tempo", "search_all_recent")
    trace = load("tempo", "trace_v2_failing")
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        if request.url.path == "/api/search":
            errors = "status = error" in request.url.params["q"]
            return response_for(search if errors else healthy)
        return response_for(trace)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        tempo = TempoAdapter(URL, client, slow_threshold=2.0, sample=4)
        window = Window(START + 3600, END, START)
        tempo.spans(window, ["payment"], limit=50)
    searches = [r.url.params for r in sent if r.url.path == "/api/search"]
    by_period: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for p in searches:
        by_period.setdefault((p["start"], p["end"]), []).append((p["q"], p["limit"]))
    assert list(by_period) == [(str(START + 3600), str(END)), (str(START), str(START + 3599))]
    window_searches, baseline_searches = by_period.values()
    assert window_searches == baseline_searches
    assert [q for q, _ in window_searches] == [
        '{ resource.service.name = "payment" && status = error }',
        '{ resource.service.name = "payment" && duration > 2s }',
        '{ resource.service.name = "payment" }',
    ]
    fetched = [r.url.path for r in sent if r.url.path != "/api/search"]
    assert len(fetched) == len(set(fetched))  # a trace found in both periods is fetched once

"""LokiAdapter on every recorded real Loki response, and on error paths."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from correlator.adapters.loki import LokiAdapter

from correlator.http import HttpSettings
from correlator.model import LOG_COLUMNS, SIGNAL_COLUMNS, Window
from correlator.sources import LogSource, SourceError
from recorded import load, records, response_for, transport

START, END = 1795715820, 1795723020
INCIDENT = 1795721820
URL = "http://loki:3100"


@pytest.fixture
def loki() -> Iterator[LokiAdapter]:
    with httpx.Client(transport=transport("loki")) as client:
        yield LokiAdapter(HttpSettings(name="loki", url=URL, retries=0), client)


def test_is_a_log_source(loki: LokiAdapter) -> None:
    assert isinstance(loki, LogSource)


def _query(loki: LokiAdapter, name: str) -> list:  # type: ignore[type-arg]
    rec = load("loki", name)
    p = rec["params"]
    return loki.query_range(
        p["query"],
        int(p["start"]) / 1e9,
        0,
        limit=int(p["limit"]),
        direction=p.get("direction"),
        end_ns=int(p["end"]),
        categorize="request_headers" in rec,
    )


def test_backward_page_is_newest_first_and_flattened(loki: LokiAdapter) -> None:
    entries = _query(loki, "query_range_json_level_error_backward_limit20")
    assert len(entries) == 20  # == limit: truncated, with no flag (L5)
    ts = [e.ts_ns for e in entries]
    assert ts == sorted(ts, reverse=True)
    assert all(e.labels["service_name"] == "payment" for e in entries)
    forward = _query(loki, "query_range_json_level_error_forward_limit20")
    assert [e.ts_ns for e in forward] == sorted(e.ts_ns for e in forward)
    assert forward[0].ts_ns < entries[-1].ts_ns


def test_page_two_repeats_nothing(loki: LokiAdapter) -> None:
    page1 = _query(loki, "query_range_json_level_error_backward_limit20")
    page2 = _query(loki, "query_range_json_level_error_backward_limit20_page2")
    assert min(e.ts_ns for e in page1) == int(
        load("loki", "query_range_json_level_error_backward_limit20_page2")["params"]["end"]
    )
    assert not {e.ts_ns for e in page1} & {e.ts_ns for e in page2}


def test_logs_read_baseline_and_window_apart_and_warn_when_cut() -> None:
    """logs() reads the window and the look-back before it separately (each with half
    the limit), pages backwards with end = oldest line seen, and says what a limit cut.
    Served by the recorded pages (page 2 stands in for the baseline's answer)."""
    page1 = load("loki", "query_range_json_level_error_backward_limit20")
    page2 = load("loki", "query_range_json_level_error_backward_limit20_page2")
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        assert request.url.params["limit"] == "20"
        return response_for(page1 if request.url.params["end"] == str(END * 10**9) else page2)

    # The window starts at page 1's oldest line, so page 2's lines lie before it.
    split = int(page2["params"]["end"]) / 1e9
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        loki = LokiAdapter(URL, client, page_size=20)
        window = Window(start=split, end=END, baseline_start=START)
        frame = loki.logs(window, ["payment"], min_severity=17, limit=40)
    assert [(r.url.params["start"], r.url.params["end"]) for r in sent] == [
        (sent[0].url.params["start"], str(END * 10**9)),
        (str(START * 10**9), sent[0].url.params["start"]),
    ]
    assert abs(int(sent[0].url.params["start"]) - int(page2["params"]["end"])) < 1000
    assert list(frame.columns) == list(LOG_COLUMNS)
    assert len(frame) == 40
    assert (frame.severity == 17).all() and (frame.level == "error").all()
    assert set(frame.service) == {"payment"}
    assert frame.body.str.startswith("charge failed").any()
    assert frame.trace_id.str.len().eq(32).all()
    q = sent[0].url.params["query"]
    assert q.startswith('{service_name="payment"} | level=~"(?i)')
    assert "severity_text=~" in q and "detected_level=~" in q
    warnings = frame.attrs["warnings"]
    assert len(warnings) == 2 and all("were not read (20 lines, the limit" in w for w in warnings)
    assert warnings[0].endswith("in the window") and warnings[1].endswith("before the window")


def test_logs_page_on_and_stop_without_warning_when_all_arrived() -> None:
    page1 = load("loki", "query_range_json_level_error_backward_limit20")
    page2 = load("loki", "query_range_json_level_error_backward_limit20_page2")
    empty = load("loki", "query_range_empty_result")
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        end = request.url.params["end"]
        if end == str(END * 10**9):
            return response_for(page1)
        return response_for(page2 if end == page2["params"]["end"] else empty)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        loki = LokiAdapter(URL, client, page_size=20)
        frame = loki.logs(Window(START, END, START - 600), ["payment"], min_severity=17)
    # Page 2 starts where page 1 ended (end is exclusive, L5); its 20 lines fill a page,
    # so a third is asked (empty); then the baseline (empty). Nothing was cut.
    assert [r.url.params["end"] for r in sent] == [
        str(END * 10**9),
        page2["params"]["end"],
        min((v[0] for st in page2["body"]["data"]["result"] for v in st["values"]), key=int),
        str(START * 10**9),
    ]
    assert len(frame) == 40 and "warnings" not in frame.attrs


def test_mixed_push_and_otlp_map_to_one_row_per_event(loki: LokiAdapter) -> None:
    for name in ("query_range_mixed_push_and_otlp", "query_range_mixed_json_categorize_labels"):
        entries = _query(loki, name)
        rows = [loki._row(e) for e in entries]
        otlp = [r for r in rows if r["pod"]]
        push = [r for r in rows if not r["pod"]]
        assert otlp and push
        assert all(r["severity"] == 17 for r in rows)
        assert {r["body"] for r in rows} == {"charge failed: gateway timeout after 3000ms"}
        assert all(r["zone"] in ("eu-west-1a", "eu-west-1b") for r in otlp)
        keys = {(round(r["ts"], 9), r["body"], r["trace_id"]) for r in rows}
        assert len(keys) < len(rows)  # the same events arrived both ways


def test_otlp_structured_metadata_trace_lookup(loki: LokiAdapter) -> None:
    entries = _query(loki, "query_range_otlp_streams_trace_id")
    rows = [loki._row(e) for e in entries]
    assert rows and {r["trace_id"] for r in rows} == {"0310d7742b9c140a255a25179a58d4dd"}
    assert all(r["pod"].startswith("payment-") for r in rows)
    push = [loki._row(e) for e in _query(loki, "query_range_push_trace_id_json")]
    assert {r["trace_id"] for r in push} == {"0310d7742b9c140a255a25179a58d4dd"}
    assert {r["service"] for r in push} >= {"payment", "checkout", "frontend"}


def test_categorized_line_filter_keeps_metadata(loki: LokiAdapter) -> None:
    plain = _query(loki, "query_range_line_filter_error_backward")
    cat = _query(loki, "query_range_line_filter_error_categorize_labels")
    assert len(plain) == len(cat) == 30
    assert {e.ts_ns for e in plain} == {e.ts_ns for e in cat}
    assert all(loki._row(e)["severity"] >= 13 for e in cat)


def test_empty_results(loki: LokiAdapter) -> None:
    assert _query(loki, "query_range_empty_result") == []
    # L1: the window older than the ingester look-back came back empty, without a warning.
    assert _query(loki, "query_range_older_than_ingester_lookback_empty") == []


def test_metric_matrix_is_zero_filled(loki: LokiAdapter) -> None:
    rec = load("loki", "query_range_metric_errors_by_service")
    series = loki.metric_range(rec["params"]["query"], START, END, 60)
    by = {labels["service_name"]: (ts, v) for labels, ts, v in series}
    assert set(by) == {"checkout", "frontend", "payment"}
    ts, values = by["payment"]
    assert len(ts) == (END - START) // 60 + 1 and np.all(np.diff(ts) == 60)
    raw = {r["metric"]["service_name"]: r["values"] for r in rec["body"]["data"]["result"]}
    assert values.sum() == sum(float(v) for _, v in raw["payment"])
    assert (values == 0).sum() == len(ts) - len(raw["payment"])


def test_metric_rate_step_as_duration(loki: LokiAdapter) -> None:
    rec = load("loki", "query_range_metric_rate_by_level")
    series = loki.metric_range(rec["params"]["query"], START, END, 300)
    assert {s[0]["level"] for s in series} >= {"error", "info"}


def test_instant_vector(loki: LokiAdapter) -> None:
    rec = load("loki", "query_instant_metric_errors_by_service")
    rows = loki.instant(rec["params"]["query"], END)
    assert {labels["service_name"] for labels, _ in rows} == {"checkout", "frontend", "payment"}
    assert all(v > 0 for _, v in rows)


def test_label_discovery(loki: LokiAdapter) -> None:
    assert loki.labels(START, END) == [
        "cloud_availability_zone",
        "k8s_pod_name",
        "level",
        "service_name",
    ]
    assert set(loki.label_values("service_name", START, END)) >= {"payment", "checkout"}
    assert loki.label_values("no_such_label", START, END) == []
    assert "error" in loki.label_values("level", START, END)
    series = loki.series('{service_name="payment"}', START, END)
    assert any("k8s_pod_name" in s for s in series) and any("level" in s for s in series)


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("error_limit_too_large", "max_entries_limit_per_query"),
        ("error_logql_bad_selector", "400"),
        ("error_logql_syntax", "parse error"),
        ("error_range_too_long", "query time range exceeds"),
        ("error_start_after_end", "400"),
        ("query_instant_log_query", "400"),
    ],
)
def test_recorded_errors_name_backend_status_and_loki_text(
    loki: LokiAdapter, name: str, needle: str
) -> None:
    rec = load("loki", name)
    with pytest.raises(SourceError) as info:
        path = rec["path"]
        loki._data(path, rec["params"])
    msg = str(info.value)
    assert msg.startswith(f"Loki at {URL}{rec['path']}: 400 Bad Request")
    assert needle in msg
    assert rec["body_raw"].strip()[:40] in msg


def test_too_many_points_and_404(loki: LokiAdapter) -> None:
    rec = load("loki", "error_too_many_points")
    with pytest.raises(SourceError, match="exceeded maximum resolution"):
        loki._data(rec["path"], rec["params"])
    with pytest.raises(
        SourceError, match=r"404 Not Found: 404 page not found; check CORRELATOR_LOKI_URL"
    ):
        loki._data("/loki/api/v1/nonexistent", {})


def test_log_rates_frame() -> None:
    """log_rates (was log_counts: that name now means counts by severity, below)."""
    rec = load("loki", "query_range_metric_errors_by_service")

    def handler(request: httpx.Request) -> httpx.Response:
        assert "sum by (service_name) (rate(" in request.url.params["query"]
        return response_for(rec)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        loki = LokiAdapter(URL, client)
        frame = loki.log_rates(Window(INCIDENT, END, START), 60, min_severity=17)
    assert list(frame.columns) == list(SIGNAL_COLUMNS)
    assert set(frame.role) == {"log_error_rate"} and set(frame.service) == {
        "checkout",
        "frontend",
        "payment",
    }


def test_log_counts_by_service_and_level_from_recorded_matrices() -> None:
    """log_counts: one count_over_time query over baseline and window, grouped by service
    and every place a level lives; only non-zero steps come back (L6), values are strings."""
    by_service = load("loki", "query_range_metric_errors_by_service")
    by_level = load("loki", "query_range_metric_rate_by_level")
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return response_for(by_service if len(sent) == 1 else by_level)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        loki = LokiAdapter(URL, client)
        window = Window(INCIDENT, END, START)
        frame = loki.log_counts(window, 60)
        q = sent[0].url.params
        assert q["query"] == (
            "sum by (service_name, level, severity_text, detected_level) "
            '(count_over_time({service_name=~".+"} [60s]))'
        )
        assert (q["start"], q["end"], q["step"]) == (str(START * 10**9), str(END * 10**9), "60s")
        # Recorded without a level label: the service's records, severity unknown (0).
        assert list(frame.columns) == ["ts", "service", "severity", "count"]
        assert set(frame.service) == {"checkout", "frontend", "payment"}
        assert (frame.severity == 0).all() and (frame["count"] > 0).all()
        rows = by_service["body"]["data"]["result"][0]["values"]
        checkout = frame[frame.service == "checkout"]
        assert checkout["ts"].tolist() == [float(t) - 60 for t, _ in rows]  # bucket starts
        assert checkout["count"].sum() == sum(float(v) for _, v in rows)
        # One service pinned by the selector: series without a service label are its own.
        levels = loki.log_counts(window, 300, ["payment"])
    assert (
        sent[1].url.params["query"].endswith('(count_over_time({service_name="payment"} [300s]))')
    )
    assert set(levels.service) == {"payment"}
    assert set(levels.severity) == {9, 13, 17}
    per_level = {
        row.severity: row.count
        for row in levels.groupby("severity", as_index=False)["count"].sum().itertuples()
    }
    assert per_level[17] == pytest.approx(
        sum(float(v) for _, v in by_level["body"]["data"]["result"][0]["values"])
    )


def test_log_counts_is_the_declared_optional_protocol(loki: LokiAdapter) -> None:
    from correlator.adapters.bundle import BundleBackend

    from correlator.sources import LogCountSource

    assert isinstance(loki, LogCountSource) and isinstance(BundleBackend(), LogCountSource)

    class LinesOnly:
        name = "x"
        local = False

        def bind(self, alert: object) -> LinesOnly:
            return self

        def close(self) -> None:
            pass

        def logs(
            self, window: Window, services: object = None, min_severity: int = 13, limit: int = 5000
        ) -> object:
            return None

    assert isinstance(LinesOnly(), LogSource) and not isinstance(LinesOnly(), LogCountSource)


def test_every_recorded_loki_file_is_exercised() -> None:
    """Guard: new recordings must get a test above (names listed here)."""
    covered = {
        "buildinfo",
        "detected_fields_payment",
        "detected_labels",
        "index_stats",
        "index_volume",
        "index_volume_range",
        "patterns_payment",
        "ready",  # not used by the adapter
    }
    used = {n for n in records("loki") if n not in covered}
    assert len(used) == 27


def test_log_counts_step_respects_the_point_cap() -> None:
    """Over a long look-back the step grows past Loki's 11,000 points (L7), and the range
    with it, so buckets neither overlap nor leave gaps."""
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return response_for(load("loki", "query_range_metric_errors_by_service"))

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        frame = LokiAdapter(URL, client).log_counts(Window(END - 60, END, END - 30 * 86400), 15)
    step = int(sent[0].url.params["step"].removesuffix("s"))
    assert (30 * 86400) / step < 11_000 and sent[0].url.params["query"].endswith(f"[{step}s]))")
    assert not frame.empty

"""The span detector on small generated traces and on shipped bundles."""

from __future__ import annotations

from importlib.metadata import entry_points

import numpy as np
import pandas as pd
import pytest
from correlator.detectors.spans import SpanDetector

from correlator.detector import DETECTOR_GROUP, Detector
from correlator.model import ANOMALY_COLUMNS, SPAN_COLUMNS, Window, empty_frame
from span_factory import T0, detect_input, traces

WINDOW = Window(start=T0 + 1800, end=T0 + 2400, baseline_start=T0)


def run(*parts: pd.DataFrame, baseline_end: float = WINDOW.start) -> tuple[pd.DataFrame, list]:  # type: ignore[type-arg]
    out = SpanDetector().detect(detect_input(WINDOW, baseline_end, pd.concat(parts)))
    assert list(out.anomalies.columns) == list(ANOMALY_COLUMNS)
    return out.anomalies, list(out.gaps)


def test_registered_as_a_detector_plugin() -> None:
    found = {ep.name: ep for ep in entry_points(group=DETECTOR_GROUP)}
    assert {"spans", "logs"} <= set(found)
    det = found["spans"].load()()
    assert isinstance(det, Detector) and (det.name, det.modality) == ("spans", "spans")


def test_exceptions_in_two_percent_of_requests_with_none_before() -> None:
    base = traces(T0, T0 + 1800, 1500, 1)
    quiet = traces(T0 + 1800, T0 + 2000, 170, 2)
    stack = "NullPointerException at ChargeService.java:42\n\tat Handler.java:7"
    fault = traces(T0 + 2000, T0 + 2400, 330, 3, fail=0.03, error=stack)
    rows, gaps = run(base, quiet, fault)
    assert gaps == []
    errs = rows[rows.role == "span_errors"].set_index("service")
    assert {"checkout", "frontend"} <= set(errs.index)
    row = errs.loc["checkout"]
    assert row.score >= 4 and row.modality == "spans" and row.signal == "POST /charge"
    assert row.baseline == 0 and 0.005 < row.peak < 0.05 and row.direction == "up"
    assert row.evidence.endswith(
        "spans of checkout failed (0 of 1500 before): NullPointerException at ChargeService.java:42"
    )  # one line: the stack's first
    assert row.evidence.startswith(f"{round(row.peak * 500)} of 500 POST /charge")
    # Onset: where the failures began (the first failing span after 2000 s), not the split.
    first_failure = fault.loc[fault.status == 2, "start"].min()
    assert first_failure - 60 <= row.onset <= first_failure + 1 and row.end >= row.onset
    edge = rows[(rows.role == "client_errors")].iloc[0]
    assert (edge.service, edge.peer, edge.signal) == ("frontend", "checkout", "calls to checkout")
    assert not (rows.role.isin(["span_latency", "client_latency"]) & (rows.score >= 4)).any()


def test_noisy_baseline_with_the_same_error_rate_after_is_nothing() -> None:
    base = traces(T0, T0 + 1800, 1500, 1, fail=0.03)
    after = traces(T0 + 1800, T0 + 2400, 500, 2, fail=0.03)
    rows, _ = run(base, after)
    assert rows.empty or rows.score.max() < 3


def test_latency_doubling_on_one_operation() -> None:
    base = traces(T0, T0 + 1800, 900, 1)
    after = traces(T0 + 1800, T0 + 2400, 300, 2, charge_latency=0.100)
    rows, _ = run(base, after)
    lat = rows[rows.role == "span_latency"].set_index("signal")
    charge = lat.loc["POST /charge"]
    assert charge.service == "checkout" and charge.score >= 4
    assert 1.6 < charge.peak / charge.baseline < 2.6
    assert "exclusive time (own work, children excluded) of POST /charge" in charge.evidence
    # The caller is slower too, but its own work is not: the evidence says where the time went.
    buy = lat.loc["GET /buy"]
    assert "its exclusive time did not move" in buy.evidence
    assert not (rows.service.eq("checkout") & rows.role.eq("client_latency")).any()  # the db
    assert not rows.role.isin(["span_errors", "client_errors"]).any()


def test_a_share_that_fell_only_because_another_operation_rose_is_nothing() -> None:
    """POST /refund comes three times as often; POST /charge as often as before. Its
    share of the spans fell, but it did not change: only the refunds are a row."""
    base = traces(T0, T0 + 1800, 900, 1)
    base_refunds = traces(T0, T0 + 1800, 900, 2, op="POST /refund")
    after = traces(T0 + 1800, T0 + 2400, 300, 3)
    after_refunds = traces(T0 + 1800, T0 + 2400, 900, 4, op="POST /refund")
    rows, _ = run(base, base_refunds, after, after_refunds)
    rates = rows[rows.role == "span_rate"]
    assert "POST /refund" in set(rates.signal)
    assert rates[rates.signal == "POST /refund"].direction.eq("up").all()
    assert "POST /charge" not in set(rates.signal)


def test_a_new_failing_operation_and_a_vanished_one() -> None:
    base = traces(T0, T0 + 1800, 900, 1)
    after = traces(T0 + 1800, T0 + 2400, 300, 2, op="POST /charge/v2", fail=0.1)
    rows, _ = run(base, after)
    new = rows[(rows.signal == "POST /charge/v2")].set_index("role")
    assert new.loc["span_errors"].score >= 4
    assert "a new operation; 0 of 900 of the service's before" in new.loc["span_errors"].evidence
    assert new.loc["span_rate"].evidence.startswith("a new operation: POST /charge/v2 on checkout")
    gone = rows[(rows.signal == "POST /charge") & (rows.role == "span_rate")].iloc[0]
    assert gone.direction == "down" and gone.score >= 4 and gone.peak == 0
    assert gone.evidence.startswith("the operation vanished")


def test_short_baseline_is_a_gap_and_still_judged() -> None:
    base = traces(T0 + 1680, T0 + 1800, 200, 1)
    after = traces(T0 + 1800, T0 + 2400, 600, 2, fail=0.05)
    rows, gaps = run(base, after)
    assert len(gaps) == 1 and "short baseline of spans: 2.0 min (" in gaps[0].why
    assert gaps[0].source == "spans"
    assert (rows.role == "span_errors").any()


@pytest.mark.parametrize("which", ["empty", "no baseline", "only baseline", "garbage"])
def test_missing_data_never_raises(which: str) -> None:
    spans = {
        "empty": empty_frame(SPAN_COLUMNS),
        "no baseline": traces(T0 + 1800, T0 + 2400, 50, 2, fail=0.5),
        "only baseline": traces(T0, T0 + 1800, 50, 2),
        "garbage": pd.DataFrame(
            {"service": ["a", None], "start": [np.nan, T0 + 1900], "duration": ["x", 0.1]}
        ),
    }[which]
    out = SpanDetector().detect(detect_input(WINDOW, WINDOW.start, spans))
    assert out.anomalies.empty and list(out.anomalies.columns) == list(ANOMALY_COLUMNS)
    if which == "no baseline":
        assert out.gaps and "no spans before" in out.gaps[0].why


def test_a_fault_that_began_before_the_baseline_end_is_still_seen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The split is where the alert says trouble began; a fault begun ten minutes earlier
    puts most of its spans before it. The detector also splits earlier and keeps the
    strongest reading, dated where the failures began."""
    import correlator.detectors.spans as spans_module

    base = traces(T0, T0 + 1200, 1000, 1)
    stack = "TimeoutException at ChargeService.java:90"
    fault = traces(T0 + 1200, T0 + 2400, 1000, 2, fail=0.04, error=stack)
    rows, _ = run(base, fault)
    row = rows[(rows.role == "span_errors") & (rows.service == "checkout")].iloc[0]
    first_failure = fault.loc[fault.status == 2, "start"].min()
    assert row.onset <= first_failure + 60 and row.score >= 4
    # Split only at the baseline's end, the same spans show far less.
    monkeypatch.setattr(spans_module, "EARLIER_SPLITS", ())
    at_end, _ = run(base, fault)
    late = at_end[(at_end.role == "span_errors") & (at_end.service == "checkout")]
    assert late.empty or float(late.score.max()) < row.score - 1.0


def test_a_fault_begun_a_minute_before_the_alert_on_a_short_recording_is_dated_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The export begins four minutes before the window, so the baseline ends at the
    alert; the fault began a minute and a half before it. Splits a minute or two back,
    on the few minutes of baseline there are, find it where it began."""
    import correlator.detectors.spans as spans_module

    alert = WINDOW.start + 100
    base = traces(T0 + 1560, WINDOW.start + 10, 300, 1)
    fault = traces(WINDOW.start + 10, T0 + 2400, 800, 2, fail=0.3, error="Timeout at Pay.java:9")

    def errors() -> pd.DataFrame:
        out = SpanDetector().detect(detect_input(WINDOW, alert, pd.concat([base, fault])))
        rows = out.anomalies
        return rows[(rows.role == "span_errors") & (rows.service == "checkout")]

    near = errors()
    assert len(near) and float(near.onset.min()) <= WINDOW.start + 10 + 30
    monkeypatch.setattr(spans_module, "LOG_SPLITS", ())
    at_alert = errors()
    assert at_alert.empty or float(at_alert.score.max()) < float(near.score.max()) - 1.0


def test_traces_kept_only_minutes_before_the_window_are_split_a_minute_or_two_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The metrics reach an hour back, so the baseline ends at the window's start; the
    traces were kept for six and a half minutes before it only, and the fault began two
    minutes before it. Five minutes back leaves the traces no baseline: a minute or two
    back does, and finds the fault where it began."""
    import correlator.detectors.spans as spans_module

    base = traces(WINDOW.start - 390, WINDOW.start - 120, 300, 1)
    fault = traces(WINDOW.start - 120, T0 + 2400, 800, 2, fail=0.3, error="Timeout at Pay.java:9")

    def errors() -> pd.DataFrame:
        rows, _ = run(base, fault)
        return rows[(rows.role == "span_errors") & (rows.service == "checkout")]

    near = errors()
    assert len(near) and float(near.onset.min()) <= WINDOW.start - 120 + 30
    monkeypatch.setattr(spans_module, "LOG_SPLITS", ())
    at_start = errors()
    assert at_start.empty or float(at_start.score.max()) < float(near.score.max()) - 1.0


def test_a_fault_that_paged_half_an_hour_late_is_still_seen() -> None:
    """An SLO burn-rate alert over an hour pages long after a faint fault began: 25
    minutes of the fault sit before the baseline's end. A split half an hour back
    still holds a clean baseline to judge it against."""
    window = Window(start=T0 + 3000, end=T0 + 3300, baseline_start=T0)
    base = traces(T0, T0 + 1500, 1000, 1)
    fault = traces(T0 + 1500, T0 + 3300, 1200, 2, fail=0.04, error="Timeout at Pay.java:9")
    out = SpanDetector().detect(detect_input(window, window.start, pd.concat([base, fault])))
    rows = out.anomalies
    errs = rows[(rows.role == "span_errors") & (rows.service == "checkout")]
    assert len(errs) and float(errs.score.max()) >= 4
    assert float(errs.onset.min()) <= T0 + 1500 + 120


PODS = ("checkout-a", "checkout-b", "checkout-c")


def test_a_delay_on_one_pods_network_is_laid_at_the_service() -> None:
    # One pod of checkout answers 300 ms late (netem on its interface): the callers' spans
    # see it, checkout's own server spans do not, and the other pods are fine.
    base = traces(T0, T0 + 1800, 600, 1, pods=PODS)
    after = traces(T0 + 1800, T0 + 2400, 300, 2, pods=PODS, delay={"checkout-b": 0.3})
    rows, _ = run(base, after)
    transit = rows[rows.role == "transit_latency"]
    assert list(transit.service) == ["checkout"]
    row = transit.iloc[0]
    assert row.signal == "calls answered by checkout-b" and row.score >= 8
    assert row.peak > 0.25 > 0.01 > row.baseline
    assert "its other instances' calls did not" in row.evidence
    # Its own work did not move: no latency row of its own operation.
    assert not (rows.service.eq("checkout") & rows.role.eq("span_latency")).any()


def test_a_delayed_pod_without_calls_before_is_judged_against_its_siblings() -> None:
    """The trace sample holds no call to checkout-c before the fault (a new pod, or one
    the sample missed): its calls are judged against those to checkout's other pods."""
    base = traces(T0, T0 + 1800, 400, 1, pods=PODS[:2])
    after = traces(T0 + 1800, T0 + 2400, 30, 2, pods=PODS, delay={"checkout-c": 0.3})
    rows, _ = run(base, after)
    transit = rows[rows.role == "transit_latency"]
    assert list(transit.signal) == ["calls answered by checkout-c"]
    assert transit.iloc[0].service == "checkout" and transit.iloc[0].score >= 4
    assert "sibling instances" in transit.iloc[0].evidence
    # Undelayed, the new pod is like its siblings: nothing.
    rows, _ = run(base, traces(T0 + 1800, T0 + 2400, 30, 2, pods=PODS))
    assert rows[rows.role == "transit_latency"].empty


def test_a_delay_in_front_of_a_service_seen_in_few_calls_is_judged_on_them_together() -> None:
    """A sampled trace store kept few calls to checkout: two callers, three pods, a couple
    of calls each before the fault, too few to judge any pod or caller alone. Together,
    every call after it is 300 ms later than every call before, from both callers: the
    network in front of checkout. The same calls all from one caller stay that caller's."""
    delay = dict.fromkeys(PODS, 0.3)
    base = traces(T0, T0 + 1800, 6, 1, pods=PODS)
    after = traces(T0 + 1800, T0 + 2400, 8, 2, pods=PODS, delay=delay)

    def two_callers(frame: pd.DataFrame) -> pd.DataFrame:
        odd = frame["trace_id"].isin(sorted(set(frame["trace_id"]))[1::2])
        return frame.assign(
            service=frame["service"].where(~(odd & (frame.service == "frontend")), "mobile")
        )

    rows, _ = run(two_callers(base), two_callers(after))
    transit = rows[rows.role == "transit_latency"]
    assert list(transit.service) == ["checkout"]
    assert transit.iloc[0].signal == "calls answered by checkout"
    assert "from 2 callers" in transit.iloc[0].evidence
    rows, _ = run(base, after)
    assert rows[rows.role == "transit_latency"].empty


def test_a_delay_on_every_call_of_one_caller_stays_the_callers() -> None:
    # Every call frontend makes to checkout is late, whichever pod answers: frontend's
    # network (or pool, or sidecar) as much as checkout's; nothing is laid at checkout.
    base = traces(T0, T0 + 1800, 600, 1, pods=PODS)
    late = dict.fromkeys(PODS, 0.3)
    after = traces(T0 + 1800, T0 + 2400, 300, 2, pods=PODS, delay=late)
    rows, _ = run(base, after)
    assert not (rows.role == "transit_latency").any()
    calls = rows[rows.role == "client_latency"].set_index("peer")
    assert calls.loc["checkout", "service"] == "frontend" and calls.loc["checkout", "score"] >= 4

"""The log detector on small generated logs (lines and counts) and its template miner."""

from __future__ import annotations

from importlib.metadata import entry_points

import pandas as pd
import pytest
from correlator.detectors.logs import LogDetector, mine, template_of

from correlator.detector import DETECTOR_GROUP, Detector
from correlator.model import ANOMALY_COLUMNS, LOG_COLUMNS, Window, empty_frame
from span_factory import T0, detect_input, logs

WINDOW = Window(start=T0 + 1800, end=T0 + 2400, baseline_start=T0)
OLD = [
    ("checkout", "GET /api/v1/items/{n} 200 {n}ms", 9),
    ("checkout", "slow request took {n} ms", 13),
    ("checkout", "payment retry {n} for order {id}", 17),
]
NEW = ("checkout", 'charge failed: NullPointerException at "Charge.java:{n}"', 17)


def run(
    *parts: pd.DataFrame, counts: pd.DataFrame | None = None, split: float = WINDOW.start
) -> tuple[pd.DataFrame, list]:  # type: ignore[type-arg]
    out = LogDetector().detect(
        detect_input(WINDOW, split, log_frame=pd.concat(parts), log_counts=counts)
    )
    assert list(out.anomalies.columns) == list(ANOMALY_COLUMNS)
    return out.anomalies, list(out.gaps)


def test_registered_as_a_detector_plugin() -> None:
    det = {ep.name: ep for ep in entry_points(group=DETECTOR_GROUP)}["logs"].load()()
    assert isinstance(det, Detector) and (det.name, det.modality) == ("logs", "logs")


def test_templates_mask_what_varies() -> None:
    bodies = pd.Series(
        [
            "GET /api/v1/mobile/90158 200 608.4ms",
            "GET /api/v1/mobile/21252 200 36.8ms",
            "conn from 10.0.0.12:5432 id=9f86d081884c7d65 req 550e8400-e29b-41d4-a716-446655440000",
            "conn from 10.1.3.2:80 id=0a1b2c3d4e5f6071 req 123e4567-e89b-12d3-a456-426614174000",
            'parsing "N/A": invalid syntax\n  at frame 1\n  at frame 2',
            "parsing 'x': invalid syntax",
            "deadline exceeded",
        ]
    )
    t = template_of(bodies).tolist()
    assert t[0] == t[1] == "GET /api/v<n>/mobile/<n> <n> <n>ms"
    assert t[2] == t[3] == "conn from <ip> id=<hex> req <uuid>"
    assert t[4] == t[5] == "parsing <str>: invalid syntax"  # first line only: stacks vary
    assert t[6] == "deadline exceeded"
    flags = mine(
        pd.Series(["NullPointerException at x", "ValueError: bad", "all fine", "panic: oh"])
    )[1]
    assert flags.tolist() == [True, True, False, True]


def test_a_new_template_is_found_and_old_ones_at_the_same_rate_are_not() -> None:
    base = logs(T0, T0 + 1800, 600, 1, OLD)
    after = logs(T0 + 1800, T0 + 2400, 200, 2, OLD)
    rows, gaps = run(base, after)
    assert rows.empty and gaps == []
    new = logs(T0 + 2000, T0 + 2400, 8, 3, [NEW])
    rows, _ = run(base, after, new)
    assert rows.role.tolist() == ["log_template"]
    row = rows.iloc[0]
    assert row.service == "checkout" and row.score >= 4 and row.modality == "logs"
    assert row.signal == "charge failed: NullPointerException at <str>"
    assert row.onset == pytest.approx(new.ts.min()) and row.end == pytest.approx(new.ts.max())
    assert "x8 after" in row.evidence and "never in the 30 min before" in row.evidence


def test_a_template_is_dated_where_it_became_frequent_not_by_a_stray_line_before() -> None:
    """One line of a template right after the split (a call that failed now and then),
    then none for five minutes, then forty: the template changed when the forty began."""
    base = logs(T0, T0 + 1800, 600, 1, OLD)
    after = logs(T0 + 1800, T0 + 2400, 200, 2, OLD)
    stray = logs(T0 + 1810, T0 + 1811, 1, 3, [NEW])
    burst = logs(T0 + 2100, T0 + 2400, 40, 4, [NEW])
    rows, _ = run(base, after, stray, burst)
    row = rows[rows.role == "log_template"].iloc[0]
    assert row.onset == pytest.approx(burst.ts.min(), abs=30.0)
    assert row.end == pytest.approx(burst.ts.max())


def test_error_share_from_counts() -> None:
    """With counts by severity the test is on the share of records that are errors."""

    def counts(start: float, end: float, per_min: int, errors: int) -> pd.DataFrame:
        ts = [float(t) for t in range(int(start), int(end), 60)]
        return pd.DataFrame(
            [(t, "checkout", 9, per_min - errors) for t in ts]
            + [(t, "checkout", 17, errors) for t in ts if errors],
            columns=["ts", "service", "severity", "count"],
        )

    # Traffic triples, errors stay 1 in 100: nothing. Errors to 5 in 100 from 2100 s: found.
    base = counts(T0, T0 + 1800, 100, 1)
    same = counts(T0 + 1800, T0 + 2400, 300, 3)
    line = logs(T0, T0 + 60, 3, 9, OLD[:1])
    rows, _ = run(line, counts=pd.concat([base, same]))
    assert not (rows.role == "log_errors").any()
    worse = pd.concat([counts(T0 + 1800, T0 + 2100, 100, 1), counts(T0 + 2100, T0 + 2400, 100, 5)])
    rows, _ = run(line, counts=pd.concat([base, worse]))
    row = rows[rows.role == "log_errors"].iloc[0]
    assert row.score >= 4 and row.onset == pytest.approx(T0 + 2100, abs=60)
    assert row.evidence.startswith("30 of 1000 log records of checkout were errors after")
    assert "(30 of 3000 before)" in row.evidence


def test_error_rate_from_lines_and_the_exception_text() -> None:
    base = logs(T0, T0 + 1800, 300, 1, OLD[:2])
    after = logs(T0 + 1800, T0 + 2400, 100, 2, OLD[:2])
    # Logged at warn, but an exception all the same.
    bad = logs(T0 + 2200, T0 + 2400, 12, 3, [("checkout", "retry after TimeoutException {n}", 13)])
    rows, _ = run(base, after, bad)
    err = rows[rows.role == "log_errors"].iloc[0]
    assert err.score >= 4 and err.signal == "error records"
    assert err.evidence.startswith("12 error records of checkout in 10 min after")
    assert "retry after TimeoutException" in err.evidence
    assert (rows.role == "log_template").any()


def test_short_or_missing_baseline() -> None:
    short = logs(T0 + 1700, T0 + 1800, 50, 1, OLD)
    after = logs(T0 + 1800, T0 + 2400, 300, 2, [*OLD, NEW])
    rows, gaps = run(short, after)
    assert len(gaps) == 1 and gaps[0].why.startswith("short baseline of logs: 1.6 min before")
    assert (rows.signal == "charge failed: NullPointerException at <str>").any()
    rows, gaps = run(after)
    assert rows.empty and "no log records before" in gaps[0].why


@pytest.mark.parametrize(
    "frame",
    [
        empty_frame(LOG_COLUMNS),
        pd.DataFrame({"ts": ["x", None], "service": [None, "a"], "body": [None, 3]}),
    ],
)
def test_missing_data_never_raises(frame: pd.DataFrame) -> None:
    out = LogDetector().detect(
        detect_input(WINDOW, WINDOW.start, log_frame=frame, log_counts=frame)
    )
    assert out.anomalies.empty


def test_a_caller_logging_a_callee_names_it_as_peer() -> None:
    """A wrong answer only the callers log: the caller's new error line names the callee."""
    base = logs(T0, T0 + 1800, 600, 1, [*OLD, ("reviews", "GET /api/v1/reviews 200 {n}ms", 9)])
    after = logs(T0 + 1800, T0 + 2400, 200, 2, OLD)
    blame = logs(
        T0 + 2000,
        T0 + 2400,
        10,
        3,
        [("checkout", "call to reviews failed: bad rating {n} in /api/v1/checkout", 17)],
    )
    rows, _ = run(base, after, blame)
    row = rows[rows.role == "log_template"].iloc[0]
    assert (row.service, row.peer) == ("checkout", "reviews")
    assert rows[rows.role != "log_template"].peer.isin(["", "reviews"]).all()


def test_counts_without_baseline_lines_do_not_make_every_template_new() -> None:
    after = logs(T0 + 1800, T0 + 2400, 300, 2, OLD)
    counts = pd.DataFrame(
        [(float(t), "checkout", 9, 10.0) for t in range(int(T0), int(T0 + 2400), 60)],
        columns=["ts", "service", "severity", "count"],
    )
    rows, gaps = run(after, counts=counts)
    assert not (rows.role == "log_template").any()
    assert any("new message templates were not judged" in g.why for g in gaps)


def test_errors_that_began_a_minute_before_a_short_baseline_ends() -> None:
    """Six minutes of baseline ending at the alert, errors from a minute before it: the
    detector splits a minute or two back too, so the errors are not half baseline."""
    window = Window(start=T0 + 240, end=T0 + 540, baseline_start=T0)
    base = logs(T0, T0 + 540, 540, 1, [*OLD[:2], ("payment", "charged {n} cents", 9)])
    blame = logs(
        T0 + 370, T0 + 540, 8, 3, [("checkout", "call to payment failed: charged {n}", 17)]
    )
    out = LogDetector().detect(
        detect_input(window, T0 + 420, log_frame=pd.concat([base, blame]), log_counts=None)
    )
    rows = out.anomalies
    errs = rows[(rows.service == "checkout") & (rows.role == "log_errors")]
    assert len(errs) == 1 and errs.iloc[0].onset < T0 + 420
    assert (rows.peer == "payment").any()


def test_sparse_logs_with_two_minutes_before_the_fault_are_still_judged() -> None:
    """Logs of warnings and errors only: two minutes of them before a fault that began
    two minutes before the alert. An earlier split still leaves a baseline to count on."""
    window = Window(start=T0 + 60, end=T0 + 320, baseline_start=T0)
    base = logs(T0, T0 + 320, 30, 1, [("payment", "charged {n} cents", 13), OLD[1]])
    blame = logs(
        T0 + 125, T0 + 320, 12, 3, [("checkout", "call to payment failed: charged {n}", 17)]
    )
    out = LogDetector().detect(
        detect_input(window, T0 + 240, log_frame=pd.concat([base, blame]), log_counts=None)
    )
    rows = out.anomalies
    errs = rows[(rows.service == "checkout") & (rows.role == "log_errors")]
    assert len(errs) == 1 and errs.iloc[0].onset < T0 + 240


def test_a_new_warning_is_a_notice_not_an_error_template() -> None:
    # "GC overhead" warnings begin (a leak on its way) and then an exception: the
    # warning is news about the service, not an error of its code.
    base = logs(T0, T0 + 1800, 600, 1, OLD)
    after = logs(T0 + 1800, T0 + 2400, 200, 2, OLD)
    gc = ("checkout", "GC overhead: {n}% of time spent in GC, heap {n}MiB", 13)
    new = logs(T0 + 2000, T0 + 2400, 8, 3, [gc]), logs(T0 + 2100, T0 + 2400, 8, 4, [NEW])
    rows, _ = run(base, after, *new)
    roles = dict(zip(rows.signal.str.split(":").str[0], rows.role, strict=True))
    assert roles == {"GC overhead": "log_notice", "charge failed": "log_template"}


def test_a_service_name_used_as_a_word_of_the_message_is_not_a_peer() -> None:
    """checkout throws its own exception whose message says "currency" (a field), and a
    service called currency exists: the line is checkout's own error, not a call to it.
    "call to currency failed" is."""
    base = logs(T0, T0 + 1800, 600, 1, [*OLD, ("currency", "GET /api/v1/rates 200 {n}ms", 9)])
    after = logs(T0 + 1800, T0 + 2400, 200, 2, OLD)
    own = logs(
        T0 + 2000,
        T0 + 2400,
        10,
        3,
        [("checkout", "IllegalStateException: rule {n} has no currency for region HR", 17)],
    )
    rows, _ = run(base, after, own)
    assert (rows[rows.service == "checkout"].peer == "").all()
    call = logs(
        T0 + 2000, T0 + 2400, 10, 3, [("checkout", "call to currency failed: status {n}", 17)]
    )
    rows, _ = run(base, after, call)
    assert (rows[rows.role == "log_template"].peer == "currency").all()

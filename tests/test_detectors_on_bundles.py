"""The span and log detectors on shipped bundles, fed by the bundle backend as the engine
feeds them (spans and logs of the baseline and the window, log counts by severity)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from correlator.adapters.bundle import BundleBackend
from correlator.detectors.logs import LogDetector
from correlator.detectors.spans import SpanDetector

from correlator.catalog import default_catalog
from correlator.detector import DetectInput
from correlator.model import SIGNAL_COLUMNS, Telemetry, Window, empty_frame


@pytest.fixture(scope="module")
def library() -> BundleBackend:
    return BundleBackend()


def _input(backend: BundleBackend, name: str) -> tuple[DetectInput, dict]:  # type: ignore[type-arg]
    bundle = next(b for b in backend.bundles() if b.path.name == name)
    alert = bundle.alerts[0]
    backend = backend.bind(alert)
    window = Window(alert.starts_at - 300, bundle.window[1], bundle.window[0])
    tel = Telemetry()
    tel.spans = backend.spans(window)
    tel.logs = backend.logs(window)
    tel.log_counts = backend.log_counts(window, 60)
    data = DetectInput(
        alert, window, tel, default_catalog(), empty_frame(SIGNAL_COLUMNS), 15.0, window.start
    )
    return data, json.loads((bundle.path / "scenario.json").read_text())["truth"]


@pytest.mark.parametrize(
    ("name", "exception"),
    [("reviews-exception", "strconv.ParseFloat"), ("search-exception", "RangeError")],
)
def test_code_exceptions_show_in_spans_and_logs_of_the_faulty_service(
    library: BundleBackend, name: str, exception: str
) -> None:
    data, truth = _input(library, name)
    spans = SpanDetector().detect(data)
    logs = LogDetector().detect(data)
    assert spans.gaps == () or list(spans.gaps) == []
    rows = pd.concat([spans.anomalies, logs.anomalies], ignore_index=True)
    mine = rows[rows.service == truth["service"]]
    errors = mine[mine.role == "span_errors"]
    assert not errors.empty and errors.score.max() >= 4 and (errors.modality == "spans").all()
    template = mine[mine.role == "log_template"].sort_values("score").iloc[-1]
    assert template.score >= 4 and exception in template.evidence
    # The paging service (a caller) sees it too, as failed calls to the faulty one.
    caller = rows[(rows.role == "client_errors") & (rows.peer == truth["service"])]
    assert not caller.empty
    # The faulty service's template is found no later than any caller's.
    templates = rows[rows.role == "log_template"]
    assert template.onset <= templates.onset.min() + 60


def test_bundle_spans_and_logs_cover_the_baseline(library: BundleBackend) -> None:
    data, _ = _input(library, "reviews-exception")
    spans, logs, window = data.telemetry.spans, data.telemetry.logs, data.window
    first = spans.groupby("trace_id").start.min()
    assert (first < window.start).sum() > 50 and (first >= window.start).sum() > 50
    assert logs.ts.min() < window.start and (logs.severity >= 13).all()
    counts = data.telemetry.log_counts  # type: ignore[attr-defined]
    bundle = library._bundle(window)
    inside = bundle.logs[(bundle.logs.ts >= window.baseline_start) & (bundle.logs.ts <= window.end)]
    assert counts["count"].sum() == len(inside)
    assert set(counts.severity) == set(inside.severity) and 9 in set(counts.severity)
    assert (counts.ts.diff().dropna() >= 0).all() and (
        (counts.ts - window.baseline_start) % 60 == 0
    ).all()


def test_bundle_span_limit_is_per_period_and_evenly_spaced(library: BundleBackend) -> None:
    data, _ = _input(library, "search-exception")
    window = data.window
    cut = library.spans(window, limit=20)
    first = cut.groupby("trace_id").start.min()
    assert (first < window.start).sum() == 20 and (first >= window.start).sum() == 20
    everything = data.telemetry.spans
    share = (everything.groupby("trace_id").status.max() == 2).mean()
    # Evenly spaced, not failing-first: the failing share stays about what it was.
    assert (cut.groupby("trace_id").status.max() == 2).mean() <= max(2 * share, 0.3)
    assert "traces kept (limit 20 per period)" in cut.attrs["warnings"][0]

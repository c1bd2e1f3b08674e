"""Reading, writing and validating scenario bundles (real files in tmp_path)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from correlator.bundle import find_bundles, read_bundle, validate_bundle, write_bundle
from correlator.errors import BundleError
from correlator.fingerprint import alert_fingerprint
from correlator.model import parse_time
from correlator.openmetrics import Family, render

T0 = 1772442000  # 2026-03-02T09:00:00Z
LABELS = {"alertname": "HighErrorRate", "service": "checkout"}


def scenario(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "format": "correlator-scenario/1",
        "name": "t",
        "description": "test",
        "window": {"start": "2026-03-02T09:00:00Z", "end": "2026-03-02T11:00:00Z"},
        "alerts": [
            {
                "labels": LABELS,
                "annotations": {},
                "startsAt": "2026-03-02T10:35:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "fingerprint": alert_fingerprint(LABELS),
                "status": {"state": "active"},
            }
        ],
        "truth": {"service": "checkout", "cause": "deployment", "start": "2026-03-02T10:31:00Z"},
    }
    doc.update(over)
    return doc


def metrics() -> list[str]:
    fam = Family(
        "up", "gauge", tuple(("up", {"job": "checkout"}, T0 + 15 * i, 1) for i in range(480))
    )
    return list(render([fam], eof=False))


def span_request() -> dict[str, Any]:
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "checkout"}}]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "ab" * 16,
                                "spanId": "cd" * 8,
                                "name": "x",
                                "kind": 2,
                                "startTimeUnixNano": str(T0 * 10**9),
                                "endTimeUnixNano": str(T0 * 10**9 + 5),
                            }
                        ]
                    }
                ],
            }
        ]
    }


def make(tmp_path: Path, **kw: Any) -> Path:
    args: dict[str, Any] = {
        "scenario": scenario(),
        "metrics_lines": metrics(),
        "traces": [span_request()],
    }
    args.update(kw)
    return write_bundle(tmp_path / "b", **args)


def test_write_then_read(tmp_path: Path) -> None:
    path = make(tmp_path, topology={"nodes": [{"id": "checkout"}], "edges": []})
    text = (path / "metrics.om").read_text()
    assert text.endswith("\n# EOF\n") and text.count("# EOF") == 1
    b = read_bundle(path)
    assert b.name == "t" and b.window == (T0, T0 + 7200)
    (alert,) = b.alerts
    assert alert.fingerprint == alert_fingerprint(LABELS) and alert.source == str(path)
    assert alert.starts_at == T0 + 5700 and alert.ends_at is None and alert.status == "firing"
    assert b.truth is not None and b.truth["cause"] == "deployment"
    assert b.metrics.sample_count == 480 and len(b.spans) == 1 and b.logs.empty
    assert b.topology == {"nodes": [{"id": "checkout"}], "edges": []}
    assert validate_bundle(path) == []


def test_compressed_bundle_reads(tmp_path: Path) -> None:
    path = make(tmp_path, compress=True, logs=[{"resourceLogs": []}])
    assert (path / "metrics.om.gz").exists() and not (path / "metrics.om").exists()
    with gzip.open(path / "traces.otlp.jsonl.gz", "rt") as fh:
        assert fh.read().count("\n") == 1
    b = read_bundle(path)
    assert b.metrics.sample_count == 480 and len(b.spans) == 1


def test_writer_keeps_existing_eof(tmp_path: Path) -> None:
    path = make(tmp_path, metrics_lines=[*metrics(), "# EOF"])
    assert (path / "metrics.om").read_text().count("# EOF") == 1


def _error(fn: Any) -> BundleError:
    with pytest.raises(BundleError) as info:
        fn()
    return info.value


def test_bad_json_in_scenario_names_line(tmp_path: Path) -> None:
    path = make(tmp_path)
    (path / "scenario.json").write_text(
        '{\n  "format": "correlator-scenario/1",\n  "name": oops\n}'
    )
    err = _error(lambda: read_bundle(path))
    assert err.path.endswith("scenario.json") and err.line == 3 and "not valid JSON" in str(err)
    assert "scenario.json:3:" in str(err)


def test_bad_json_in_jsonl_names_line(tmp_path: Path) -> None:
    path = make(tmp_path)
    good = json.dumps(span_request())
    (path / "traces.otlp.jsonl").write_text(f"{good}\n{good}\n{{broken\n")
    err = _error(lambda: read_bundle(path).spans)
    assert (
        err.path.endswith("traces.otlp.jsonl") and err.line == 3 and "not valid JSON" in err.problem
    )
    problems = validate_bundle(path)
    assert [p.line for p in problems] == [3]


def test_sample_without_timestamp(tmp_path: Path) -> None:
    path = make(tmp_path, metrics_lines=[*metrics(), 'up{job="x"} 1\n'])
    err = _error(lambda: read_bundle(path).metrics)
    assert err.path.endswith("metrics.om") and err.line == 482 and "no timestamp" in err.problem


def test_millisecond_timestamps(tmp_path: Path) -> None:
    path = make(tmp_path, metrics_lines=["# TYPE up gauge\n", f'up{{job="x"}} 1 {T0 * 1000}\n'])
    err = _error(lambda: read_bundle(path).metrics)
    assert err.line == 2
    assert "look like milliseconds" in err.problem or "looks like milliseconds" in err.problem
    assert "OpenMetrics timestamps are seconds" in err.problem


def test_missing_eof(tmp_path: Path) -> None:
    path = make(tmp_path)
    (path / "metrics.om").write_text(f'up{{job="x"}} 1 {T0}\n')
    err = _error(lambda: read_bundle(path).metrics)
    assert err.path.endswith("metrics.om") and err.line == 1 and "# EOF" in err.problem


def test_unknown_format(tmp_path: Path) -> None:
    path = make(tmp_path, scenario=scenario(format="correlator-scenario/9"))
    err = _error(lambda: read_bundle(path))
    assert err.path.endswith("scenario.json") and err.line == 2
    assert "unknown format 'correlator-scenario/9'" in err.problem


def test_alert_without_fingerprint(tmp_path: Path) -> None:
    doc = scenario()
    second = dict(doc["alerts"][0])
    del second["fingerprint"]
    doc["alerts"].append(second)
    path = make(tmp_path, scenario=doc)
    err = _error(lambda: read_bundle(path))
    assert err.path.endswith("scenario.json") and "alerts[1]" in err.problem
    assert "no 'fingerprint'" in err.problem and alert_fingerprint(LABELS) in err.problem
    lines = (path / "scenario.json").read_text().splitlines()
    assert err.line is not None and lines[err.line - 1].strip() == "{"


def test_missing_required_files(tmp_path: Path) -> None:
    path = make(tmp_path)
    (path / "metrics.om").unlink()
    err = _error(lambda: read_bundle(path))
    assert err.path.endswith("metrics.om") and "missing required file" in err.problem
    (path / "scenario.json").unlink()
    err = _error(lambda: read_bundle(path))
    assert err.path.endswith("scenario.json") and "missing required file" in err.problem


def test_short_window_is_accepted(tmp_path: Path) -> None:
    # Real exports often hold a few minutes before the fault: readers must accept them.
    doc = scenario(window={"start": "2026-03-02T10:20:00Z", "end": "2026-03-02T11:00:00Z"})
    path = make(tmp_path, scenario=doc)
    b = read_bundle(path)
    assert b.window[0] == parse_time("2026-03-02T10:20:00Z")


def test_validate_reports_fingerprint_mismatch_and_bad_topology(tmp_path: Path) -> None:
    doc = scenario()
    doc["alerts"][0]["fingerprint"] = "0000000000000000"
    path = make(tmp_path, scenario=doc, topology={"nodes": [{"id": "x", "kind": "robot"}]})
    problems = validate_bundle(path)
    text = [str(p) for p in problems]
    assert any("does not match its labels" in t for t in text)
    assert any("topology.json" in t and "robot" in t for t in text)


def test_find_bundles(tmp_path: Path) -> None:
    for name in ("a", "b", "group/c"):
        write_bundle(tmp_path / name, scenario(), metrics())
    found = find_bundles(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a", "b", "group/c"]
    assert find_bundles(tmp_path / "a") == [tmp_path / "a"]

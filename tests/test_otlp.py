"""OTLP/JSON to span and log frames, on recorded real inputs and on variant encodings."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from correlator.model import LOG_COLUMNS, SPAN_COLUMNS
from correlator.otlp import OtlpError, logs_from_otlp, normalize_id, spans_from_otlp

DATA = Path(__file__).parent / "data" / "recorded"
FAILING = "0310d7742b9c140a255a25179a58d4dd"


def _meta() -> dict[str, Any]:
    return json.loads((DATA / "meta.json").read_text())  # type: ignore[no-any-return]


def _traces() -> list[dict[str, Any]]:
    with gzip.open(DATA / "otlp_traces.jsonl.gz", "rt") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def test_recorded_traces_counts() -> None:
    meta = _meta()
    df = spans_from_otlp(_traces())
    assert tuple(df.columns) == SPAN_COLUMNS
    assert len(df) == meta["spans"] == 2152
    assert df["trace_id"].nunique() == meta["traces"] == 283
    assert int((df["status"] == 2).sum()) == meta["error_spans"] == 138


def test_recorded_failing_trace() -> None:
    df = spans_from_otlp(_traces())
    trace = df[df["trace_id"] == FAILING]
    assert len(trace) == 10
    gateway = trace[(trace["service"] == "payment") & (trace["kind"] == 3)].iloc[0]
    assert gateway["peer"] == "acme-pay"
    assert gateway["error"].startswith("httpx.ReadTimeout")
    assert gateway["duration"] == pytest.approx(3.0, abs=0.1)
    db = trace[(trace["service"] == "checkout") & (trace["db_system"] == "postgresql")]
    assert set(db["peer"]) == {"orders-db"}
    assert set(trace["zone"].dropna()) <= {"eu-west-1a", "eu-west-1b"}
    assert trace["pod"].notna().all() and trace["version"].notna().all()
    roots = trace[trace["parent_span_id"].isna()]
    assert roots["service"].tolist() == ["frontend"]


def test_recorded_logs_counts() -> None:
    with (DATA / "otlp_logs.jsonl").open() as fh:
        df = logs_from_otlp(json.loads(line) for line in fh if line.strip())
    assert tuple(df.columns) == LOG_COLUMNS
    assert len(df) == _meta()["log_lines"] == 869
    counts = df.groupby(["service", "level"]).size()
    for key, n in _meta()["log_lines_by_service_level"].items():
        service, level = key.split("/")
        assert counts[(service, level)] == n
    errors = df[df["level"] == "error"]
    assert (errors["severity"] == 17).all()
    assert errors["trace_id"].str.len().eq(32).all()


def test_snake_case_base64_and_string_enums() -> None:
    tid, sid = bytes(range(16)), bytes(range(8))
    req = {
        "resource_spans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"string_value": "api"}}]
                },
                "scope_spans": [
                    {
                        "spans": [
                            {
                                "trace_id": base64.b64encode(tid).decode(),
                                "span_id": base64.b64encode(sid).decode(),
                                "name": "GET",
                                "kind": "SPAN_KIND_CLIENT",
                                "start_time_unix_nano": 1_000_000_000,
                                "end_time_unix_nano": "1500000000",
                                "status": {"code": "STATUS_CODE_ERROR", "message": "boom"},
                                "attributes": [
                                    {"key": "server.address", "value": {"stringValue": "db1"}},
                                    {"key": "db.system", "value": {"stringValue": "mysql"}},
                                ],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    row = spans_from_otlp([req]).iloc[0]
    assert row["trace_id"] == tid.hex() and row["span_id"] == sid.hex()
    assert row["kind"] == 3 and row["status"] == 2 and row["error"] == "boom"
    assert row["peer"] == "db1" and row["db_system"] == "mysql"
    assert row["start"] == 1.0 and row["duration"] == 0.5


def test_tempo_v2_shape_and_log_severity_text() -> None:
    span = {
        "traceId": "ab" * 16,
        "spanId": "cd" * 8,
        "name": "x",
        "kind": 2,
        "startTimeUnixNano": "2000000000",
        "endTimeUnixNano": "3000000000",
    }
    wrapped = {"trace": {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}}
    row = spans_from_otlp([wrapped]).iloc[0]
    assert row["service"] == "unknown_service" and row["duration"] == 1.0
    logs = logs_from_otlp(
        [
            {
                "resourceLogs": [
                    {
                        "scopeLogs": [
                            {
                                "logRecords": [
                                    {
                                        "observedTimeUnixNano": "5000000000",
                                        "severityText": "WARN",
                                        "body": {
                                            "kvlistValue": {
                                                "values": [{"key": "a", "value": {"intValue": "1"}}]
                                            }
                                        },
                                    },
                                    {
                                        "timeUnixNano": "6000000000",
                                        "severityNumber": "SEVERITY_NUMBER_ERROR",
                                    },
                                ]
                            }
                        ]
                    }
                ]
            }
        ]
    )
    assert logs["severity"].tolist() == [13, 17]
    assert logs["level"].tolist() == ["warn", "error"]
    assert logs["ts"].tolist() == [5.0, 6.0]
    assert logs["body"].iloc[0] == '{"a": 1}'


def test_ids() -> None:
    assert normalize_id("310d7742b9c140a255a25179a58d4dd", 16) == FAILING
    assert normalize_id("", 8) is None
    with pytest.raises(OtlpError, match="neither"):
        normalize_id("not an id!", 8)

"""A hand-built, realistic investigation for the plot, notebook and HTML tests.

checkout is deployed (v1.4.2 -> v1.5.0) at 10:31; its error rate and latency
climb from then on; frontend, which calls it, errors from 10:32; the alert
fires at 10:35. Frames use the model's column constants, like a real source.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pandas as pd

from correlator.detector import anomaly_frame
from correlator.model import (
    ANOMALY_COLUMNS,
    LOG_COLUMNS,
    SIGNAL_COLUMNS,
    SPAN_COLUMNS,
    Alert,
    Evidence,
    Finding,
    Gap,
    Investigation,
    Telemetry,
    Window,
    parse_time,
)

FAULT = parse_time("2026-03-02T10:31:00Z")
ALERT = parse_time("2026-03-02T10:35:00Z")
EDGES = [
    ("frontend", "checkout", "service"),
    ("frontend", "catalog", "service"),
    ("checkout", "payments", "service"),
    ("checkout", "inventory", "service"),
    ("checkout", "orders-db", "database"),
    ("catalog", "catalog-cache", "cache"),
    ("payments", "payments-db", "database"),
]


def _signals(window: Window) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    ts = np.arange(window.baseline_start, window.end + 1, 30.0)
    after = ts >= FAULT
    rows: list[dict[str, object]] = []

    def add(role: str, service: str, values: np.ndarray, **dims: str) -> None:
        for t, v in zip(ts, values, strict=True):
            row: dict[str, object] = dict.fromkeys(SIGNAL_COLUMNS)
            row.update(role=role, service=service, ts=float(t), value=float(v), **dims)
            rows.append(row)

    for svc, rate in [
        ("frontend", 120.0),
        ("checkout", 40.0),
        ("catalog", 80.0),
        ("payments", 30.0),
    ]:
        add("request_rate", svc, rate + rng.normal(0, rate * 0.03, ts.size))
        errors = np.abs(rng.normal(0.05, 0.02, ts.size))
        latency = 0.08 + np.abs(rng.normal(0, 0.005, ts.size))
        if svc == "checkout":
            errors = errors + after * 6.0
            latency = latency + after * 0.9
        if svc == "frontend":
            errors = errors + (ts >= FAULT + 60) * 5.5
        add("error_rate", svc, errors)
        add("latency", svc, latency)
    for pod, version, start in [
        ("checkout-7d9f8b6c5d-x2k4q", "v1.4.2", 0.0),
        ("checkout-5c8d7f9b4-a1b2c", "v1.5.0", FAULT),
    ]:
        mem = np.where(ts >= start, 2.1e8 + rng.normal(0, 2e6, ts.size), np.nan)
        add("memory", "checkout", mem, pod=pod, version=version)
    return pd.DataFrame(rows, columns=list(SIGNAL_COLUMNS)).dropna(subset=["value"])


def _logs() -> pd.DataFrame:
    rows = []
    for i in range(12):
        t = FAULT + 20 + 15 * i
        rows.append(
            {
                "ts": t,
                "service": "checkout",
                "severity": 17,
                "level": "ERROR",
                "body": f"NullPointerException in PriceCalculator.apply (order {1000 + i})",
                "trace_id": f"{i:032x}",
                "span_id": f"{i:016x}",
                "zone": "eu-west-1a",
                "pod": "checkout-5c8d7f9b4-a1b2c",
            }
        )
    rows.append(
        {
            "ts": FAULT - 1800,
            "service": "checkout",
            "severity": 9,
            "level": "INFO",
            "body": "order placed",
            "trace_id": None,
            "span_id": None,
            "zone": "eu-west-1a",
            "pod": "checkout-7d9f8b6c5d-x2k4q",
        }
    )
    return pd.DataFrame(rows, columns=list(LOG_COLUMNS))


def _spans() -> pd.DataFrame:
    rows = []
    for i in range(6):
        t = FAULT + 30 + 20 * i
        trace = f"{i:032x}"
        rows.append(
            dict(
                zip(
                    SPAN_COLUMNS,
                    [
                        trace,
                        f"a{i:015x}",
                        None,
                        "frontend",
                        "GET /checkout",
                        2,
                        t,
                        1.1,
                        2,
                        None,
                        None,
                        "eu-west-1a",
                        "frontend-6b7c8d9e0f-abcde",
                        "v3.0.0",
                        "upstream 500",
                    ],
                    strict=True,
                )
            )
        )
        rows.append(
            dict(
                zip(
                    SPAN_COLUMNS,
                    [
                        trace,
                        f"b{i:015x}",
                        f"a{i:015x}",
                        "checkout",
                        "POST /orders",
                        2,
                        t + 0.01,
                        1.0,
                        2,
                        None,
                        None,
                        "eu-west-1a",
                        "checkout-5c8d7f9b4-a1b2c",
                        "v1.5.0",
                        "NullPointerException",
                    ],
                    strict=True,
                )
            )
        )
    return pd.DataFrame(rows, columns=list(SPAN_COLUMNS))


def _anomalies() -> pd.DataFrame:
    rows = [
        ("checkout", "error_rate", FAULT, FAULT + 900, 42.0, "up", 0.05, 6.05, ""),
        ("checkout", "latency", FAULT + 30, FAULT + 900, 30.0, "up", 0.08, 0.98, ""),
        ("frontend", "error_rate", FAULT + 60, FAULT + 900, 25.0, "up", 0.05, 5.55, ""),
    ]
    return anomaly_frame([dict(zip(ANOMALY_COLUMNS, r, strict=False)) for r in rows])


def build_investigation() -> Investigation:
    """The checkout bad-deploy incident, as the engine would hand it to a report."""
    alert = Alert(
        fingerprint="4f1c0e9a2b3d5e6f",
        labels={"alertname": "HighErrorRate", "service": "frontend", "severity": "page"},
        annotations={"summary": "frontend 5xx ratio above 5% for 2 minutes"},
        starts_at=ALERT,
        source="synthetic",
    )
    window = Window(
        start=ALERT - 300 - 600, end=ALERT + 300, baseline_start=ALERT - 300 - 600 - 3600
    )
    top = Finding(
        service="checkout",
        cause="deployment",
        confidence=0.86,
        pattern="deployment",
        onset=FAULT,
        evidence=(
            Evidence(
                kind="deploy",
                summary="checkout changed version v1.4.2 -> v1.5.0 at 10:31:00, 0 s before its errors rose",
                service="checkout",
                signal="version",
                onset=FAULT,
            ),
            Evidence(
                kind="metric",
                summary="checkout error_rate rose from 0.05/s to 6.05/s (120x baseline) at 10:31:00",
                service="checkout",
                signal="error_rate",
                onset=FAULT,
                query='sum by (service) (rate(http_server_requests_total{status=~"5.."}[1m]))',
                url="http://prometheus.example:9090/graph?g0.expr=up",
            ),
            Evidence(
                kind="log",
                summary='12 ERROR lines from checkout since 10:31: "NullPointerException in PriceCalculator.apply"',
                service="checkout",
                onset=FAULT + 20,
            ),
            Evidence(
                kind="trace",
                summary="6 failing traces: frontend GET /checkout -> checkout POST /orders (NullPointerException)",
                service="checkout",
            ),
        ),
    )
    second = Finding(
        service="frontend",
        cause="dependency_failure",
        confidence=0.12,
        pattern="dependency_failure",
        onset=FAULT + 60,
        evidence=(
            Evidence(
                kind="metric",
                summary="frontend errors follow checkout's",
                service="frontend",
                signal="error_rate",
            ),
        ),
    )
    graph = nx.DiGraph()
    for caller, callee, kind in EDGES:
        graph.add_edge(caller, callee)
        graph.nodes[callee]["kind"] = kind
    graph.nodes["frontend"]["kind"] = "service"
    return Investigation(
        alert=alert,
        window=window,
        findings=[top, second],
        blast_radius=["frontend"],
        gaps=[
            Gap(
                source="tempo",
                why="timed out after 10 s; traces come from the bundle only",
                signal=None,
            )
        ],
        timings={"collect": 0.4, "detect": 0.2, "rank": 0.01},
        telemetry=Telemetry(
            signals=_signals(window),
            logs=_logs(),
            spans=_spans(),
            edges=list(EDGES),
            node_kinds={callee: kind for _, callee, kind in EDGES} | {"frontend": "service"},
        ),
        anomalies=_anomalies(),
        topology=graph,
        not_evaluated=[{"pattern": "az_failure", "why": "no zone labels on any series"}],
    )

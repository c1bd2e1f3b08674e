"""Hand-built telemetry frames for engine, detection and pattern tests.

A small call graph ``frontend -> checkout -> payments -> orders-db`` (plus
``catalog``), one hour of baseline and a fault at ``FAULT`` seconds. Each
builder returns a :class:`Telemetry`; :class:`MemorySource` serves it through
the source protocols.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from correlator.catalog import Catalog
from correlator.model import LOG_COLUMNS, SIGNAL_COLUMNS, SPAN_COLUMNS, Alert, Telemetry, Window
from correlator.sources import MetricResult

T0 = 1_700_000_000.0
STEP = 15.0
FAULT = T0 + 3900.0
END = T0 + 4800.0
EDGES = [
    ("frontend", "checkout"),
    ("checkout", "payments"),
    ("payments", "orders-db"),
    ("frontend", "catalog"),
]
SERVICES = ["frontend", "checkout", "payments", "catalog"]


def _rows(
    role: str, service: str, ts: np.ndarray, values: np.ndarray, **dims: str | None
) -> pd.DataFrame:
    d = {"role": role, "service": service, "ts": ts, "value": values}
    for c in SIGNAL_COLUMNS[4:]:
        d[c] = dims.get(c)
    return pd.DataFrame(d)


@dataclass
class Scenario:
    """A hand-built incident: telemetry, alert and truth."""

    telemetry: Telemetry
    alert: Alert
    truth: tuple[str, str]


def build(cause: str, seed: int = 0, root: str = "payments") -> Scenario:
    """A scenario whose fault is ``cause`` at ``root`` (``az_failure`` hits zone b)."""
    rng = np.random.default_rng(seed)
    ts = np.arange(T0, END, STEP)
    after = ts >= FAULT
    ramp = np.clip((ts - FAULT) / 600.0, 0, 1)
    frames: list[pd.DataFrame] = []
    # Which services hurt: the root and its transitive callers.
    callers = {
        "payments": ["checkout", "frontend"],
        "checkout": ["frontend"],
        "orders-db": ["payments", "checkout", "frontend"],
        "frontend": [],
        "catalog": ["frontend"],
    }
    hurt = set([root, *callers.get(root, [])]) if cause != "traffic_spike" else set(SERVICES[:3])
    for svc in SERVICES:
        rr = 50 + rng.normal(0, 1.5, ts.size)
        if cause == "traffic_spike" and svc in ("frontend", "checkout", "payments"):
            rr = np.where(after, rr * 4, rr)
        err = np.abs(rng.normal(0.05, 0.02, ts.size))
        lat = 0.08 + rng.normal(0, 0.004, ts.size)
        cpu = 0.5 + rng.normal(0, 0.02, ts.size)
        mem = 2e8 + rng.normal(0, 1e6, ts.size)
        if svc in hurt and cause not in ("az_failure",):
            lat = np.where(after, lat + 0.4, lat)
            if cause in ("deployment", "dependency_failure", "code_exception"):
                err = np.where(after, err + 8, err)
        if svc == root and cause == "memory_leak":
            mem = mem + ramp * 3e8
        if svc == root and cause == "cpu_contention":
            cpu = np.where(after, cpu + 1.5, cpu)
        if cause == "traffic_spike" and svc == "frontend":
            cpu = np.where(after, cpu * 3, cpu)
        frames += [
            _rows("request_rate", svc, ts, rr),
            _rows("error_rate", svc, ts, err),
            _rows("latency", svc, ts, lat),
            _rows("cpu", svc, ts, cpu),
        ]
        for i, zone in enumerate(("zone-a", "zone-b")):
            pod = f"{svc}-5d9f8b6c5d-x2k4{i}"
            pm = mem / 2
            if svc == root and cause == "memory_leak" and i == 0:
                pm = mem * 0.9 + ramp * 3e8
            ready = np.ones(ts.size)
            if cause == "az_failure" and zone == "zone-b":
                ready = np.where(after, 0.0, 1.0)
            frames += [
                _rows("memory", svc, ts, pm, pod=pod),
                _rows("memory_limit", svc, ts, np.full(ts.size, 6e8), pod=pod),
                _rows("pod_ready", svc, ts, ready, pod=pod),
                _rows("pod_info", svc, ts, np.ones(ts.size), pod=pod, node=f"node-{zone}"),
            ]
        if svc == root and cause == "memory_leak":
            kills = np.where(ts >= FAULT + 540, 1 / 60, 0.0)
            frames.append(_rows("oom_kills", svc, ts, kills))
            frames.append(_rows("restarts", svc, ts, kills))
        version = np.where(after & (svc == root) & (cause == "deployment"), "1.4.0", "1.3.2")
        for v in np.unique(version):
            m = version == v
            frames.append(_rows("version", svc, ts[m], np.ones(m.sum()), version=str(v)))
    for zone in ("zone-a", "zone-b"):
        node = f"node-{zone}"
        ready = np.ones(ts.size)
        if cause == "az_failure" and zone == "zone-b":
            ready = np.where(after, 0.0, 1.0)
        frames += [
            _rows("node_zone", node, ts, np.ones(ts.size), node=node, zone=zone),
            _rows("node_ready", node, ts, ready, node=node),
        ]
    # Database and edges.
    conns = 40 + rng.normal(0, 2, ts.size)
    tx = 0.5 + np.abs(rng.normal(0, 0.1, ts.size))
    if cause == "db_overload":
        conns = np.where(after, 96, conns)
        tx = np.where(after, 30.0, tx)
    frames += [
        _rows("db_connections", "orders-db", ts, conns),
        _rows("db_max_connections", "orders-db", ts, np.full(ts.size, 100.0)),
        _rows("db_tx_duration", "orders-db", ts, tx),
    ]
    for caller, callee in EDGES:
        er = 20 + rng.normal(0, 1, ts.size)
        ee = np.abs(rng.normal(0.02, 0.01, ts.size))
        el = 0.03 + rng.normal(0, 0.002, ts.size)
        if callee == root and cause == "dependency_failure":
            ee = np.where(after, er * 0.5, ee)
            el = np.where(after, 2.0, el)
        if callee == "orders-db" and cause == "db_overload":
            el = np.where(after, 1.5, el)
        frames += [
            _rows("edge_rate", callee, ts, er, peer=caller),
            _rows("edge_errors", callee, ts, ee, peer=caller),
            _rows("edge_latency", callee, ts, el, peer=caller),
        ]
    signals = pd.concat(frames, ignore_index=True)
    if cause == "dependency_failure":
        # The dependency exports nothing itself: drop its own server-side series.
        own = signals["role"].isin(
            (
                "request_rate",
                "error_rate",
                "latency",
                "cpu",
                "memory",
                "memory_limit",
                "pod_ready",
                "pod_info",
                "version",
            )
        )
        signals = signals[~(own & (signals["service"] == root))]
    spans = _spans(rng, cause, root)
    logs = pd.DataFrame(
        [
            {
                "ts": FAULT + 30 + i,
                "service": root,
                "severity": 17,
                "level": "error",
                "body": f"boom {i % 2}",
                "trace_id": "ab" * 16,
                "span_id": "cd" * 8,
                "zone": None,
                "pod": None,
            }
            for i in range(4)
        ],
        columns=list(LOG_COLUMNS),
    )
    tel = Telemetry(signals=signals.reset_index(drop=True), logs=logs, spans=spans)
    tel.edges = [(a, b, "database" if b == "orders-db" else "service") for a, b in EDGES]
    tel.node_kinds = {"orders-db": "database"}
    if cause == "dependency_failure":
        tel.node_kinds[root] = "external"
    tel.queries = {"latency": "histogram_quantile(0.95, ...)"}
    alert = Alert(
        fingerprint="f00d",
        labels={"alertname": "HighLatency", "service": "frontend"},
        starts_at=FAULT + 240,
    )
    return Scenario(tel, alert, (root, cause))


def _spans(rng: np.random.Generator, cause: str, root: str) -> pd.DataFrame:
    rows = []
    for i in range(40):
        tid = f"{i:032x}"
        failing = cause in ("dependency_failure", "deployment") and i % 2 == 0
        start = FAULT + 60 + i
        rows.append(
            [
                tid,
                f"{i:08x}a0000000",
                None,
                "checkout",
                "POST /pay",
                3,
                start,
                0.3,
                2 if failing else 0,
                "payments",
                None,
                "zone-a",
                None,
                None,
                "upstream 503" if failing else None,
            ]
        )
        rows.append(
            [
                tid,
                f"{i:08x}b0000000",
                f"{i:08x}a0000000",
                "payments",
                "pay",
                2,
                start,
                0.29,
                2 if failing else 0,
                None,
                None,
                "zone-a",
                None,
                "1.4.0",
                None,
            ]
        )
    df = pd.DataFrame(rows, columns=list(SPAN_COLUMNS))
    return df


@dataclass
class MemorySource:
    """Serves a :class:`Telemetry` through every source protocol (for tests)."""

    telemetry: Telemetry
    name: str = "memory"
    delay: float = 0.0
    fail: str | None = None
    calls: list[str] = field(default_factory=list)
    local: bool = False

    def _maybe(self, what: str) -> None:
        import time

        self.calls.append(what)
        if self.delay:
            time.sleep(self.delay)
        if self.fail == what:
            from correlator.sources import SourceError

            raise SourceError(f"{self.name}: {what} backend is down")

    def bind(self, alert: Alert) -> MemorySource:
        return self

    def close(self) -> None:
        pass

    def signals(
        self, catalog: Catalog, window: Window, step: float, *, deadline: float | None = None
    ) -> MetricResult:
        self._maybe("metrics")
        tel = self.telemetry
        return MetricResult(tel.signals, step, queries=dict(tel.queries), links=dict(tel.links))

    def logs(
        self,
        window: Window,
        services: Sequence[str] | None = None,
        min_severity: int = 13,
        limit: int = 5000,
        *,
        deadline: float | None = None,
    ) -> pd.DataFrame:
        self._maybe("logs")
        return self.telemetry.logs

    def spans(
        self,
        window: Window,
        services: Sequence[str] | None = None,
        limit: int = 200,
        *,
        deadline: float | None = None,
    ) -> pd.DataFrame:
        self._maybe("traces")
        return self.telemetry.spans

    def edges(
        self, window: Window, *, deadline: float | None = None
    ) -> tuple[list[tuple[str, str]], dict[str, str]]:
        self._maybe("topology")
        return [(a, b) for a, b, _ in self.telemetry.edges], dict(self.telemetry.node_kinds)

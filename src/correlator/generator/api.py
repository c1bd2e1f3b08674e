"""The generator's Python API: ``generate(seed, ...) -> Scenario`` and ``write(scenario, dest)``.

Seed ranges by convention: the shipped library uses 1000-1999, calibration
2000-4999, evaluation 5000 and up, so no evaluation scenario was ever seen
while tuning.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from correlator.generator.alerts import WildAlert, fire_alerts
from correlator.generator.emit_metrics import metric_lines
from correlator.generator.emit_otlp import Otlp, build_otlp
from correlator.generator.faults import BUILTIN, CAUSES, SEVERITIES, Fault, add_noise, apply_fault
from correlator.generator.topology import Topology, build_topology
from correlator.generator.traffic import STEP, Result, Sim, simulate
from correlator.generator.wild import (
    WILD_FAULTS,
    Conventions,
    add_wild_noise,
    apply_wild_fault,
    draw_conventions,
    settle,
    style_of,
    tweak_topology,
    visible_in,
)
from correlator.model import format_time

__all__ = ["SEED_RANGES", "WILD_SEEDS", "Scenario", "generate", "onsets", "write"]

SEED_RANGES = {"library": (1000, 1999), "calibration": (2000, 4999), "evaluation": (5000, None)}
#: Wild suite: 6000-6199 held out for reporting, 9500 and up for tuning.
WILD_SEEDS = {"held_out": (6000, 6199), "tuning": (9500, None)}
NAME_WORDS = {
    "deployment": "bad-deploy",
    "db_overload": "db-overload",
    "az_failure": "zone-outage",
    "memory_leak": "memory-leak",
    "dependency_failure": "dependency-down",
    "traffic_spike": "traffic-spike",
    "cpu_contention": "cpu-contention",
    "network_delay": "network-delay",
    "code_exception": "exception",
    "cpu_saturation": "cpu-saturation",
    "code_fault": "code-fault",
}


@dataclass
class Scenario:
    """One generated incident: the system, what happened, and its telemetry (lazily)."""

    seed: int
    name: str
    description: str
    start: float
    end: float
    fault: Fault
    truth: dict[str, Any]
    alerts: list[dict[str, Any]]
    topology: Topology
    sim: Sim
    result: Result
    otlp: Otlp
    namespaces: dict[int, str]
    timeline: list[dict[str, Any]] = field(default_factory=list)
    conventions: Conventions | None = None
    """Set for wild scenarios: how their telemetry is exported."""

    def to_json(self) -> dict[str, Any]:
        """``scenario.json``."""
        return {
            "format": "correlator-scenario/1",
            "name": self.name,
            "description": self.description,
            "window": {"start": format_time(self.start), "end": format_time(self.end)},
            "alerts": self.alerts,
            "truth": self.truth,
            "generator": {
                "seed": self.seed,
                "services": len(self.topology.services()),
                "cause": self.fault.cause,
                "severity": self.fault.severity,
                "traces": self.otlp.n_traces,
                "spans": self.otlp.n_spans,
                **(
                    {"wild": self.conventions.to_json(), "mode": self.truth.get("mode", "")}
                    if self.conventions is not None
                    else {}
                ),
            },
            "timeline": self.timeline,
        }

    def metric_lines(self) -> Iterator[str]:
        """``metrics.om`` as chunks of text."""
        if self.conventions is not None:
            from correlator.generator.emit_wild import wild_metric_lines

            return wild_metric_lines(
                self.sim, self.result, self.seed, self.namespaces, self.conventions
            )
        return metric_lines(self.sim, self.result, self.seed, self.namespaces)


def _namespaces(topo: Topology) -> dict[int, str]:
    small = len(topo.services()) <= 60
    names = ["edge", "web", "core", "platform", "data"]
    return {
        n.index: ("shop" if small else names[min(n.layer, 4)]) if n.kind == "service" else "data"
        for n in topo.nodes
    }


def onsets(sim: Sim, res: Result, step: int) -> dict[str, float]:
    """When each node's errors or p95 latency first left its baseline (unix seconds)."""
    out: dict[str, float] = {}
    p95 = res.p95()
    for node in sim.topo.nodes:
        i = node.index
        if node.kind == "external" or step < 4:
            continue
        be = float(np.mean(res.total_err[i, :step]))
        bl = float(np.median(p95[i, :step]))
        bad = (res.total_err[i] > max(3 * be, be + 0.01)) | (p95[i] > 1.5 * bl)
        bad[:step] = False
        hits = np.flatnonzero(bad)
        if hits.size:
            out[node.id] = float(sim.ts[int(hits[0])])
    return out


def generate(
    seed: int,
    services: int = 20,
    duration: int | None = None,
    cause: str | None = None,
    severity: str | None = None,
    target: str | None = None,
    fault_at: float | None = None,
    traces: int | None = None,
    name: str | None = None,
    start: datetime | None = None,
    wild: bool = False,
    mode: str | None = None,
) -> Scenario:
    """A labeled incident, deterministic by ``seed``.

    ``cause`` is one of the six built-in causes or ``cpu_contention``,
    ``network_delay``, ``code_exception`` (default: a built-in one drawn from
    the seed); ``severity`` is ``low``/``medium``/``high``; ``duration`` the
    window in seconds (at least 50 minutes: 30 of baseline, 20 of incident);
    ``fault_at`` seconds after the window start (default 60-90 minutes in);
    ``target`` names the faulty node when you want a particular one.

    ``wild=True`` draws the scenario's conventions and fault from the seed as well
    (see :mod:`correlator.generator.wild`): scrape interval, metric names and labels,
    5 to 60 minutes of baseline, noise, and faults that only some modalities show
    (``cause`` may then also be ``cpu_saturation`` or ``code_fault``; ``mode`` picks a
    variant: ``service``/``pod`` for ``network_delay``, ``exceptions``/``wrong_value``
    for ``code_fault``). Without it the output is what it always was for a seed.
    """
    if wild:
        return _generate_wild(
            seed, services, duration, cause, mode, severity, target, traces, name, start
        )
    duration = 7200 if duration is None else duration
    if duration < 3000:
        raise ValueError(f"duration {duration}s is too short; use at least 3000 s (50 minutes)")
    rng = np.random.default_rng(seed)
    cause = cause or str(rng.choice(BUILTIN))
    if cause not in CAUSES:
        if any(cause == c for c, _ in WILD_FAULTS):
            raise ValueError(f"cause {cause} is drawn only in wild scenarios; add --wild")
        raise ValueError(f"unknown cause {cause!r}; use one of {', '.join(CAUSES)}")
    severity = severity or str(rng.choice(list(SEVERITIES)))
    topo = build_topology(rng, services)
    if start is None:
        day = datetime(2026, 3, 2, tzinfo=UTC) + timedelta(days=int(seed % 21))
        start = day + timedelta(
            hours=int(rng.integers(7, 19)), minutes=int(rng.integers(0, 4)) * 15
        )
    t0 = start.timestamp()
    steps = duration // STEP + 1
    ts = t0 + STEP * np.arange(steps, dtype=np.float64)
    if fault_at is None:
        if duration >= 7200:
            fault_at = float(rng.uniform(3600, 5400))
        else:
            fault_at = float(np.clip(rng.uniform(0.5, 0.7) * duration, 1800, duration - 1200))
        fault_at = float(int(fault_at))
    if not 1800 <= fault_at <= duration - 600:
        raise ValueError("fault_at must leave 30 minutes of baseline and 10 minutes of incident")
    fstep = math.ceil(fault_at / STEP)
    sim = Sim(topo, ts, rng)
    fault = apply_fault(sim, cause, severity, fstep, target)
    root = topo.by_id(fault.service).index
    avoid = {root} | topo.upstream(root) if cause not in ("az_failure",) else {root}
    if fault.peer:
        avoid.add(topo.by_id(fault.peer).index)
    add_noise(sim, fstep, avoid)
    res = simulate(sim)
    ns = _namespaces(topo)
    alerts = fire_alerts(sim, res, fault, ns)
    n_traces = traces if traces is not None else int(np.clip(150 + 12 * services, 300, 3000))
    otlp = build_otlp(sim, res, fault, seed, n_traces, ns)
    truth: dict[str, Any] = {
        "service": fault.service,
        "cause": cause,
        "start": format_time(t0 + fault_at),
        "severity": severity,
    }
    if fault.zone:
        truth["zone"] = fault.zone
    if fault.peer:
        truth["peer"] = fault.peer
    on = onsets(sim, res, fstep)
    timeline = _timeline(sim, fault, t0 + fault_at, on, alerts)
    word = (
        "overload"
        if cause == "db_overload" and fault.service.endswith("-db")
        else NAME_WORDS[cause]
    )
    scen = Scenario(
        seed,
        name or f"{fault.service}-{word}",
        "",
        t0,
        float(ts[-1]),
        fault,
        truth,
        alerts,
        topo,
        sim,
        res,
        otlp,
        ns,
        timeline,
    )
    from correlator.generator.describe import describe

    scen.description = describe(scen, on)
    return scen


def _timeline(
    sim: Sim, fault: Fault, fault_ts: float, on: dict[str, float], alerts: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for ev in sim.events:
        step = int(ev["step"])  # type: ignore[call-overload]
        items.append(
            {
                "at": format_time(float(sim.ts[min(step, sim.steps - 1)])),
                "kind": ev["kind"],
                "service": ev["service"],
                "text": ev["text"],
            }
        )
    items.append(
        {
            "at": format_time(fault_ts),
            "kind": "fault",
            "service": fault.service,
            "text": fault.summary,
        }
    )
    for svc, ts in sorted(on.items(), key=lambda kv: kv[1])[:12]:
        items.append(
            {
                "at": format_time(ts),
                "kind": "onset",
                "service": svc,
                "text": f"{svc} errors or latency leave their baseline",
            }
        )
    for a in alerts:
        items.append(
            {
                "at": a["startsAt"],
                "kind": "alert",
                "service": a["labels"].get("service", ""),
                "text": f"{a['labels']['alertname']} fires (fingerprint {a['fingerprint']})",
            }
        )
    items.sort(key=lambda x: x["at"])
    return items


def write(scenario: Scenario, dest: str | Path, compress: bool = False) -> Path:
    """Write the scenario as a bundle folder (see scenario-bundle.md) and return its path."""
    from correlator.bundle import write_bundle

    return write_bundle(
        dest,
        scenario.to_json(),
        scenario.metric_lines(),
        scenario.otlp.logs,
        scenario.otlp.traces,
        scenario.topology.to_json(),
        None,
        compress,
    )


_WILD_WORDS = {
    ("network_delay", "pod"): "pod-delay",
    ("code_fault", "exceptions"): "exceptions",
    ("code_fault", "wrong_value"): "bad-responses",
}


def _wild_alert(conv: Conventions, topo: Topology) -> WildAlert:
    """The paging rules of a wild scenario, written against its own metric names."""

    def ident(svc: str) -> str:
        node = topo.by_id(svc)
        if conv.identity == "pod":
            return f'pod=~"{svc}-.*"'
        if conv.identity == "service_name" and style_of(conv, node) == "micrometer":
            return f'application="{svc}"'
        return f'{conv.identity}="{svc}"'

    def latency(svc: str) -> str:
        style = style_of(conv, topo.by_id(svc))
        if style == "micrometer" and conv.summary:
            return f'max(http_server_requests_seconds{{{ident(svc)},quantile="0.95"}}) > 0.5'
        metric, limit = {
            "spanmetrics": ("traces_span_metrics_duration_seconds", "0.5"),
            "otel_http_old": ("http_server_duration_milliseconds", "500"),
            "otel_http_new": ("http_server_request_duration_seconds", "0.5"),
            "otel_rpc": ("rpc_server_duration_milliseconds", "500"),
            "grpc": ("grpc_server_handling_seconds", "0.5"),
            "micrometer": ("http_server_requests_seconds", "0.5"),
        }[style]
        return (
            f"histogram_quantile(0.95, sum by (le) (rate({metric}_bucket{{{ident(svc)}}}[5m])))"
            f" > {limit}"
        )

    def errors(svc: str) -> str:
        style = style_of(conv, topo.by_id(svc))
        metric, bad = {
            "spanmetrics": ("traces_span_metrics_calls_total", 'status_code="STATUS_CODE_ERROR"'),
            "otel_http_old": ("http_server_duration_milliseconds_count", 'http_status_code=~"5.."'),
            "otel_http_new": (
                "http_server_request_duration_seconds_count",
                'http_response_status_code=~"5.."',
            ),
            "otel_rpc": ("rpc_server_duration_milliseconds_count", 'rpc_grpc_status_code!="0"'),
            "grpc": ("grpc_server_handled_total", 'grpc_code!="OK"'),
            "micrometer": ("http_server_requests_seconds_count", 'outcome="SERVER_ERROR"'),
        }[style]
        sel = ident(svc)
        return (
            f"(sum(rate({metric}{{{sel},{bad}}}[1h])) / sum(rate({metric}{{{sel}}}[1h])))"
            " > 14.4 * 0.001"
        )

    label = "service" if conv.identity == "pod" else conv.identity
    return WildAlert(label, latency, errors)


def _seen_by(
    sim: Sim,
    fault: Fault,
    cause: str,
    mode: str,
    conv: Conventions | None = None,
    otlp: Otlp | None = None,
) -> list[str]:
    """The modalities that can see this fault; a leak that never nears its limit within
    the window (short incidents) shows only in memory metrics; a failing dependency or a
    delay in front of a service shows in metrics only where some metric names the calls
    to it (service-graph metrics, or client metrics of its callers); spans see nothing of
    a service no kept trace reached while the fault lasted (a rarely called service, deep
    in the call graph, under a fixed trace budget) nor of a leak's GC pressure no kept
    trace passed through; logs see nothing of a service that neither logged a line nor
    was named in one."""
    seen = visible_in(cause, mode)
    if otlp is not None and otlp.seen_after.get(fault.service, 0) < _FEWEST_SPANS:
        seen = [m for m in seen if m != "spans"]
    if otlp is not None and not otlp.logged_after.get(fault.service):
        seen = [m for m in seen if m != "logs"]
    calls_into = (cause, mode or "") in (("dependency_failure", ""), ("network_delay", "service"))
    if (
        conv is not None
        and calls_into
        and not _calls_measured(sim, conv, sim.topo.by_id(fault.service))
    ):
        seen = [m for m in seen if m != "metrics"]
    if cause == "memory_leak":
        node = sim.topo.by_id(fault.service)
        peak = max(
            (float(np.nanmax(p.mem)) for p in sim.service_pods(node.index) if p.mem is not None),
            default=0.0,
        )
        if peak < 0.8 * node.mem_limit:  # no GC pressure yet: no slow spans, no GC logs
            seen = ["metrics"]
        killed = any(p.ooms for p in sim.service_pods(node.index))
        if otlp is not None and not killed and otlp.slowed.get(fault.service, 0) < _FEWEST_SPANS:
            # GC pressure that no kept trace passed through, and no kill to fail requests
            seen = [m for m in seen if m != "spans"]
    return seen


#: Fewer spans than this of (or calling) the faulty service while the fault lasts and the
#: traces cannot show it.
_FEWEST_SPANS = 5


def _calls_measured(sim: Sim, conv: Conventions, node: Any) -> bool:
    """Whether some metric names the calls into ``node``: service-graph metrics name every
    edge; client metrics name service and external callees of callers that export them."""
    from correlator.generator.emit_wild import CLIENT_DURATIONS

    if conv.service_graph:
        return True
    if not conv.client_metrics or node.kind not in ("service", "external"):
        return False
    topo = sim.topo
    callers = [topo.nodes[topo.edges[e].src] for e in topo.in_edges[node.index]]
    return any(c.kind == "service" and style_of(conv, c) in CLIENT_DURATIONS for c in callers)


def _generate_wild(
    seed: int,
    services: int,
    duration: int | None,
    cause: str | None,
    mode: str | None,
    severity: str | None,
    target: str | None,
    traces: int | None,
    name: str | None,
    start: datetime | None,
) -> Scenario:
    """A wild scenario (see :func:`generate`)."""
    conv = draw_conventions(seed, services)
    rng = np.random.default_rng([seed, 0x46415554])
    causes = sorted({c for c, _ in WILD_FAULTS})
    if cause is None:
        cause, mode = WILD_FAULTS[int(rng.integers(len(WILD_FAULTS)))]
    if cause not in causes:
        raise ValueError(
            f"unknown cause {cause!r} for a wild scenario; use one of {', '.join(causes)}"
        )
    modes = [m for c, m in WILD_FAULTS if c == cause]
    if not mode:
        mode = modes[int(rng.integers(len(modes)))]
    if mode not in modes:
        raise ValueError(
            f"cause {cause} has no mode {mode!r}; use one of {', '.join(m for m in modes if m)}"
        )
    severity = severity or str(rng.choice(list(SEVERITIES)))
    base_s, inc_s = conv.baseline_s, conv.incident_s
    if duration is not None:
        if duration < base_s + 600:
            raise ValueError(
                f"duration {duration}s is too short for this seed's {base_s}s of baseline; "
                f"use at least {base_s + 600} s"
            )
        inc_s = duration - base_s
    topo = build_topology(rng, services)
    tweak_topology(topo, conv, rng)
    if start is None:
        day = datetime(2026, 3, 2, tzinfo=UTC) + timedelta(days=int(seed % 21))
        start = day + timedelta(hours=int(rng.integers(7, 19)), minutes=int(rng.integers(0, 60)))
    t0 = float(int(start.timestamp()) // conv.interval * conv.interval)
    step = conv.interval
    steps = (base_s + inc_s) // step + 1
    ts = t0 + step * np.arange(steps, dtype=np.float64)
    fstep = base_s // step
    sim = Sim(topo, ts, rng, step=step)
    if cause in BUILTIN:
        fault = apply_fault(sim, cause, severity, fstep, target)
    else:
        s = SEVERITIES[severity] * float(rng.uniform(0.85, 1.1))
        fault = apply_wild_fault(sim, cause, mode, s, severity, fstep, target)
    root = topo.by_id(fault.service).index
    avoid = {root} | topo.upstream(root) if cause != "az_failure" else {root}
    add_noise(sim, fstep, avoid)
    add_wild_noise(sim, fstep, avoid)
    res = simulate(sim)
    settle(sim)
    ns = _namespaces(topo)
    alerts = fire_alerts(sim, res, fault, ns, _wild_alert(conv, topo))
    n_traces = traces if traces is not None else int(np.clip(150 + 12 * services, 300, 2000))
    otlp = build_otlp(sim, res, fault, seed, n_traces, ns)
    truth: dict[str, Any] = {
        "service": fault.service,
        "cause": cause,
        "start": format_time(t0 + fstep * step),
        "severity": severity,
        "visible_in": _seen_by(sim, fault, cause, mode, conv, otlp),
    }
    if mode:
        truth["mode"] = mode
    if fault.zone:
        truth["zone"] = fault.zone
    if fault.peer:
        truth["peer"] = fault.peer
    if "pod" in fault.details:
        truth["pod"] = fault.details["pod"]
    on = onsets(sim, res, fstep)
    timeline = _timeline(sim, fault, t0 + fstep * step, on, alerts)
    word = _WILD_WORDS.get((cause, mode)) or NAME_WORDS[cause]
    if cause == "db_overload" and fault.service.endswith("-db"):
        word = "overload"
    scen = Scenario(
        seed,
        name or f"{fault.service}-{word}",
        "",
        t0,
        float(ts[-1]),
        fault,
        truth,
        alerts,
        topo,
        sim,
        res,
        otlp,
        ns,
        timeline,
        conv,
    )
    from correlator.generator.describe import describe

    scen.description = describe(scen, on)
    return scen

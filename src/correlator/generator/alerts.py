"""Alerts as Alertmanager holds them, fired by rules evaluated on the simulated data.

Rules are the usual symptom SLO alerts (error ratio, p95 latency, burn rate)
per service, with a ``for:`` clause; the alert that pages is the one closest to
the users (an entry service when it fires), which is often not the root cause.
Some causes also fire a cause-level warning (too many connections, a node not
ready, a crash-looping pod).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import numpy as np

from correlator.fingerprint import alert_fingerprint
from correlator.generator.faults import Fault
from correlator.generator.traffic import F64, Result, Sim
from correlator.model import format_time

__all__ = ["WildAlert", "fire_alerts"]

PROM = "http://prometheus.monitoring.svc:9090"


@dataclass(frozen=True)
class WildAlert:
    """How a wild scenario's paging rule reads: the label naming the service, and the
    PromQL of its latency and error rules for a service (the scenario's own metric names)."""

    label: str
    latency_expr: Callable[[str], str]
    error_expr: Callable[[str], str]


def _rolling(x: F64, n: int) -> F64:
    c = np.cumsum(np.concatenate([[0.0], x]))
    idx = np.arange(len(x))
    lo = np.maximum(0, idx - n + 1)
    out: F64 = (c[idx + 1] - c[lo]) / (idx + 1 - lo)
    return out


def _first_sustained(cond: np.ndarray, start: int, hold: int) -> int | None:
    run = 0
    for k in range(start, len(cond)):
        run = run + 1 if cond[k] else 0
        if run >= hold:
            return k - hold + 1
    return None


def _alert(
    labels: dict[str, str], summary: str, description: str, expr: str, starts: float, end: float
) -> dict[str, Any]:
    return {
        "labels": labels,
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": f"https://runbooks.example.internal/alerts/{labels['alertname']}",
        },
        "startsAt": format_time(starts),
        "endsAt": format_time(end + 240),
        "updatedAt": format_time(end),
        "fingerprint": alert_fingerprint(labels),
        "generatorURL": f"{PROM}/graph?g0.expr={quote(expr, safe='')}&g0.tab=1",
        "receivers": [
            {"name": "pagerduty-sre" if labels.get("severity") == "page" else "slack-sre"}
        ],
        "status": {"state": "active", "silencedBy": [], "inhibitedBy": []},
    }


def fire_alerts(
    sim: Sim,
    res: Result,
    fault: Fault,
    ns: dict[int, str],
    wild: WildAlert | None = None,
) -> list[dict[str, Any]]:
    """The alerts active at the end of the window, the paging symptom alert first.

    With ``wild``, only entry services page (latency first, an SLO burn otherwise), and
    the rule's expression and labels follow the scenario's metric conventions.
    """
    w5, w2 = sim.steps_for(20), sim.steps_for(8)
    topo, rng = sim.topo, np.random.default_rng(int(sim.ts[0]) + fault.step)
    end = float(sim.ts[-1])
    step = fault.step
    p95 = res.p95()
    candidates: list[tuple[int, int, str, int]] = []  # (layer, fire step, kind, node)
    for strict in (True, False):
        for node in topo.services():
            i = node.index
            base_p95 = float(np.median(p95[i, :step]))
            base_err = float(np.mean(res.total_err[i, :step]))
            if wild is not None and node.layer != 0:
                continue
            err5 = _rolling(res.total_err[i], w5)
            lat5 = _rolling(p95[i], w5)
            if strict:
                err_cond = err5 > max(0.02, 5 * base_err)
                lat_cond = lat5 > max(1.8 * base_p95, base_p95 + 0.25)
            else:
                err_cond = err5 > max(0.004, 3 * base_err)
                lat_cond = lat5 > 1.3 * base_p95
            e = _first_sustained(err_cond, step, w2)
            lt = _first_sustained(lat_cond, step, w5)
            if e is not None:
                candidates.append((node.layer, e + w2, "error", i))
            if lt is not None:
                candidates.append((node.layer, lt + w5, "latency", i))
        if candidates:
            break
    alerts: list[dict[str, Any]] = []
    # real alerts carry the cluster; it also keeps fingerprints unique across scenarios
    cluster = f"prod-{topo.region}-{int(sim.rng.integers(0, 16**4)):04x}"
    if candidates:
        top = min(c[0] for c in candidates)
        layer0 = sorted((c for c in candidates if c[0] == top), key=lambda c: (c[1], c[2]))
        _, fire, kind, i = layer0[0]
    elif wild is not None:
        # nothing crossed a rule: the entry whose p95 moved most pages (a slow burn)
        moved = [
            (float(np.median(p95[n.index, step:]) / max(np.median(p95[n.index, :step]), 1e-9)), n)
            for n in topo.entries()
        ]
        fire, kind, i = (
            min(step + w5, sim.steps - 1),
            "latency",
            max(moved, key=lambda m: m[0])[1].index,
        )
    else:
        fire, kind, i = (
            min(step + 20, sim.steps - 1),
            "latency",
            topo.by_id(fault.service).index
            if topo.by_id(fault.service).kind == "service"
            else topo.entries()[0].index,
        )
    node = topo.nodes[i]
    starts = float(int(sim.ts[min(fire, sim.steps - 1)] + rng.uniform(0, sim.step)))
    if kind == "error":
        if rng.random() < 0.6:
            labels = {
                "alertname": "HighErrorRate",
                "service": node.id,
                "severity": "page",
                "namespace": ns[i],
                "team": "sre",
            }
            expr = (
                f'sum(rate(traces_span_metrics_calls_total{{service_name="{node.id}",span_kind="SPAN_KIND_SERVER",'
                f'status_code="STATUS_CODE_ERROR"}}[5m])) / sum(rate(traces_span_metrics_calls_total'
                f'{{service_name="{node.id}",span_kind="SPAN_KIND_SERVER"}}[5m])) > 0.02'
            )
            summary = f"{node.id}: more than 2% of requests fail"
        else:
            labels = {
                "alertname": "SLOBurnRate",
                "service": node.id,
                "severity": "page",
                "namespace": ns[i],
                "slo": "availability-99.9",
                "window": "1h",
            }
            expr = (
                f'(sum(rate(traces_span_metrics_calls_total{{service_name="{node.id}",status_code="STATUS_CODE_ERROR"}}[1h]))'
                f' / sum(rate(traces_span_metrics_calls_total{{service_name="{node.id}"}}[1h]))) > 14.4 * 0.001'
            )
            summary = f"{node.id} is burning its 99.9% availability error budget 14x too fast"
    else:
        labels = {
            "alertname": "HighLatencyP95",
            "service": node.id,
            "severity": "page",
            "namespace": ns[i],
            "team": "sre",
        }
        expr = (
            f"histogram_quantile(0.95, sum by (le) (rate(traces_span_metrics_duration_seconds_bucket"
            f'{{service_name="{node.id}",span_kind="SPAN_KIND_SERVER"}}[5m]))) > 0.5'
        )
        summary = f"{node.id}: p95 latency above its SLO"
    if wild is not None:
        labels = {(wild.label if k == "service" else k): v for k, v in labels.items()}
        if kind == "error":
            labels["alertname"] = "SLOBurnRate"
            labels.setdefault("slo", "availability-99.9")
            expr = wild.error_expr(node.id)
            summary = f"{node.id} is burning its 99.9% availability error budget"
        else:
            expr = wild.latency_expr(node.id)
    labels["cluster"] = cluster
    alerts.append(
        _alert(
            labels,
            summary,
            f"{summary} for the last minutes. Users are affected.",
            expr,
            starts,
            end,
        )
    )
    for extra in [] if wild is not None else _cause_alerts(sim, res, fault, ns, rng, end):
        extra["labels"]["cluster"] = cluster
        extra["fingerprint"] = alert_fingerprint(extra["labels"])
        alerts.append(extra)
    return alerts


def _cause_alerts(
    sim: Sim, res: Result, fault: Fault, ns: dict[int, str], rng: np.random.Generator, end: float
) -> list[dict[str, Any]]:
    """A cause-level warning, sometimes (as real rule sets have)."""
    if rng.random() > 0.45:
        return []
    topo = sim.topo
    out: list[dict[str, Any]] = []
    if fault.cause == "db_overload":
        db = topo.by_id(fault.service)
        use = (res.db_active[db.index] + res.db_idle[db.index]) / db.max_connections
        k = _first_sustained(use > 0.8, fault.step, 8)
        if k is not None:
            labels = {
                "alertname": "PostgresTooManyConnections",
                "service": db.id,
                "severity": "warning",
                "instance": f"{db.id}:9187",
            }
            out.append(
                _alert(
                    labels,
                    f"{db.id} uses more than 80% of max_connections",
                    "",
                    f'sum by (service) (pg_stat_activity_count{{service="{db.id}"}}) / '
                    f"max by (service) (pg_settings_max_connections) > 0.8",
                    float(sim.ts[min(k + 8, sim.steps - 1)]),
                    end,
                )
            )
    elif fault.cause == "az_failure":
        for node_name, k in sorted(sim.node_down.items())[:2]:
            labels = {"alertname": "KubeNodeNotReady", "node": node_name, "severity": "warning"}
            out.append(
                _alert(
                    labels,
                    f"{node_name} has been unready for more than 2 minutes",
                    "",
                    f'kube_node_status_condition{{condition="Ready",status="true",node="{node_name}"}} == 0',
                    float(sim.ts[min(k + 3 + 8, sim.steps - 1)]),
                    end,
                )
            )
    elif fault.cause == "memory_leak":
        svc = topo.by_id(fault.service)
        pods = [p for p in sim.pods if p.service == svc.index and p.ooms]
        if pods:
            p = min(pods, key=lambda q: min(q.ooms))
            labels = {
                "alertname": "KubePodCrashLooping",
                "namespace": ns[svc.index],
                "pod": p.name,
                "container": svc.id,
                "severity": "warning",
            }
            out.append(
                _alert(
                    labels,
                    f"pod {p.name} is crash looping",
                    "",
                    f'increase(kube_pod_container_status_restarts_total{{pod="{p.name}"}}[10m]) > 0',
                    float(sim.ts[min(min(p.ooms) + 4, sim.steps - 1)]),
                    end,
                )
            )
    return out

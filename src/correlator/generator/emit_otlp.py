"""Sampled traces and logs in OTLP/JSON (ExportTraceServiceRequest / ExportLogsServiceRequest).

Requests are replayed through the call graph at a chosen moment using the
simulated state of every node at that step (own latency, own failure
probability, per-edge delay and timeouts), so traces agree with the metrics.
Sampling imitates tail sampling: every failed trace is kept, slow ones mostly,
normal ones rarely. Errors are recorded as OpenTelemetry does: span status
code 2 and an ``exception`` event with type, message and stack trace. Logs are
templated per situation and carry the trace and span ids of real spans.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from correlator.generator.faults import Fault
from correlator.generator.topology import Node, Topology
from correlator.generator.traffic import Pod, Reason, Result, Sim

__all__ = ["LogRecord", "Otlp", "build_otlp"]

SCOPES = {
    "java": ("io.opentelemetry.spring-webmvc-6.0", "2.9.0-alpha"),
    "go": ("go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp", "0.56.0"),
    "python": ("opentelemetry.instrumentation.flask", "0.48b0"),
    "node": ("@opentelemetry/instrumentation-http", "0.54.0"),
}


@dataclass
class Span:
    """A span before OTLP encoding."""

    trace: str
    span: str
    parent: str
    node: int
    pod: Pod | None
    name: str
    kind: int
    start: int
    end: int
    attrs: dict[str, Any]
    status: int = 0
    message: str = ""
    exc: tuple[str, str, str] | None = None


@dataclass
class LogRecord:
    """A log record before OTLP encoding."""

    ts: int
    node: int
    pod: Pod | None
    severity: int
    body: str
    trace: str = ""
    span: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Otlp:
    """Encoded OTLP requests, one per line."""

    traces: list[dict[str, Any]]
    logs: list[dict[str, Any]]
    n_traces: int
    n_spans: int
    seen_after: dict[str, int] = field(default_factory=dict)
    """Per service, the kept spans from the fault's first step on that are its own or
    calls to it (what a trace backend can show of it while the fault lasts)."""
    slowed: dict[str, int] = field(default_factory=dict)
    """Per service, its kept spans served by a pod its own state slowed at least 1.5x
    (a heap near its limit, a saturated CPU)."""
    logged_after: dict[str, int] = field(default_factory=dict)
    """Per service, the log records from the fault's first step on that are its own or
    name it (``peer.service``)."""


_SEV = {9: "INFO", 13: "WARN", 17: "ERROR", 21: "FATAL"}


def _ctx(
    lang: str, kind: str, node: Node, callee: str = "", detail: str = ""
) -> tuple[str, str, int]:
    """(exception type, message, http status) of a failure of ``kind`` in a ``lang`` service."""
    tbl: dict[str, dict[str, tuple[str, str, int]]] = {
        "deploy_bug": {
            "java": (
                "java.lang.NullPointerException",
                'Cannot invoke "com.shop.model.LineItem.getSku()" because "item" is null',
                500,
            ),
            "go": (
                "runtime.Error",
                "runtime error: invalid memory address or nil pointer dereference",
                500,
            ),
            "python": ("KeyError", "'currency_code'", 500),
            "node": ("TypeError", "Cannot read properties of undefined (reading 'sku')", 500),
        },
        "code_bug": {
            "java": ("java.lang.IllegalArgumentException", "Unknown currency code: HRK", 500),
            "go": ("*strconv.NumError", 'strconv.ParseFloat: parsing "N/A": invalid syntax', 500),
            "python": ("ValueError", "invalid literal for int() with base 10: 'N/A'", 500),
            "node": ("RangeError", "Invalid currency code : HRK", 500),
        },
        "db_saturated": {
            "java": (
                "java.sql.SQLTransientConnectionException",
                "HikariPool-1 - Connection is not available, request timed out after 30000ms "
                "(connection pool exhausted)",
                503,
            ),
            "go": (
                "*pgconn.PgError",
                "FATAL: sorry, too many clients already (SQLSTATE 53300)",
                503,
            ),
            "python": ("psycopg2.OperationalError", "FATAL:  sorry, too many clients already", 503),
            "node": ("error", "sorry, too many clients already", 503),
        },
        "timeout": {
            "java": (
                "java.net.SocketTimeoutException",
                f"Read timed out calling {callee} (upstream request timeout)",
                504,
            ),
            "go": (
                "context.deadlineExceededError",
                f"calling {callee}: context deadline exceeded",
                504,
            ),
            "python": (
                "requests.exceptions.ReadTimeout",
                f"HTTPConnectionPool(host='{callee}', port=8080): Read timed out. (read timeout=2.0)",
                504,
            ),
            "node": ("TimeoutError", f"upstream request timeout calling {callee}", 504),
        },
        "upstream": {
            "java": (
                "org.springframework.web.client.HttpServerErrorException$ServiceUnavailable",
                f"503 Service Unavailable from {callee}",
                503,
            ),
            "go": (
                "*errors.errorString",
                f"{callee}: unexpected status 503 Service Unavailable",
                503,
            ),
            "python": (
                "requests.exceptions.HTTPError",
                f"503 Server Error: Service Unavailable for url: http://{callee}:8080/",
                503,
            ),
            "node": ("Error", f"Request to {callee} failed with status code 503", 503),
        },
        "zone_down": {
            "java": (
                "java.net.ConnectException",
                f"Connection refused calling {callee or node.id}",
                503,
            ),
            "go": (
                "*net.OpError",
                f"dial tcp {detail or '10.0.33.12'}:8080: connect: connection refused",
                503,
            ),
            "python": (
                "requests.exceptions.ConnectionError",
                "[Errno 111] Connection refused",
                503,
            ),
            "node": ("Error", "connect ECONNREFUSED 10.0.33.12:8080", 503),
        },
        "oom": {
            "java": ("java.lang.OutOfMemoryError", "Java heap space", 500),
            "go": ("runtime.Error", "fatal error: runtime: out of memory", 500),
            "python": ("MemoryError", "", 500),
            "node": ("RangeError", "Array buffer allocation failed", 500),
        },
        "overload": {
            "java": (
                "java.util.concurrent.RejectedExecutionException",
                "Task rejected: request queue full (1024), shedding load",
                503,
            ),
            "go": (
                "*errors.errorString",
                "server overloaded: too many concurrent requests, shedding load",
                503,
            ),
            "python": (
                "werkzeug.exceptions.ServiceUnavailable",
                "503 Service Unavailable: server overloaded",
                503,
            ),
            "node": ("Error", "Server overloaded: request queue full, shedding load", 503),
        },
        "base": {
            "java": ("java.lang.IllegalStateException", "Invalid session state", 500),
            "go": ("*errors.errorString", "context canceled", 500),
            "python": ("ValueError", "invalid request payload", 500),
            "node": ("Error", "socket hang up", 500),
        },
    }
    return tbl.get(kind, tbl["base"]).get(lang, tbl["base"]["go"])


def _dep_ctx(dep: Node, lang: str) -> tuple[str, str, int]:
    if dep.kind == "cache":
        if lang == "java":
            return (
                "io.lettuce.core.RedisCommandTimeoutException",
                "Command timed out after 250 millisecond(s)",
                503,
            )
        return (
            "redis.exceptions.TimeoutError" if lang == "python" else "*errors.errorString",
            f"redis: connection pool timeout ({dep.id}:6379)",
            503,
        )
    host = dep.host or dep.id
    if lang == "java":
        return ("com.shop.payments.GatewayException", f"503 Service Unavailable from {host}", 502)
    return (
        "*errors.errorString" if lang == "go" else "Error",
        f"{host}: 503 Service Unavailable",
        502,
    )


def _stack(lang: str, node: Node, exc_type: str, msg: str, rng: random.Random) -> str:
    pkg = node.id.replace("-", "")
    cls = "".join(w.capitalize() for w in node.id.split("-"))
    line = rng.randrange(40, 400)
    if lang == "java":
        return (
            f"{exc_type}: {msg}\n\tat com.shop.{pkg}.{cls}Service.handle({cls}Service.java:{line})\n"
            f"\tat com.shop.{pkg}.{cls}Controller.process({cls}Controller.java:{line // 2 + 7})\n"
            "\tat org.springframework.web.servlet.FrameworkServlet.service(FrameworkServlet.java:885)\n"
            "\tat java.base/java.lang.Thread.run(Thread.java:1583)"
        )
    if lang == "go":
        return (
            f"goroutine {rng.randrange(100, 9000)} [running]:\n"
            f"github.com/shop/{pkg}/internal/handler.(*Handler).Serve(...)\n"
            f"\t/app/internal/handler/handler.go:{line} +0x1a4\n"
            "net/http.HandlerFunc.ServeHTTP(...)\n\t/usr/local/go/src/net/http/server.go:2171 +0x29"
        )
    if lang == "python":
        return (
            "Traceback (most recent call last):\n"
            f'  File "/app/{pkg}/views.py", line {line}, in handle\n    result = service.process(request)\n'
            f'  File "/app/{pkg}/service.py", line {line // 2 + 3}, in process\n    raise\n'
            f"{exc_type}: {msg}"
        )
    return (
        f"{exc_type}: {msg}\n    at process (/app/src/{pkg}/service.js:{line}:17)\n"
        "    at processTicksAndRejections (node:internal/process/task_queues:95:5)"
    )


class _Tracer:
    def __init__(self, sim: Sim, res: Result, fault: Fault, seed: int) -> None:
        self.sim, self.res, self.topo, self.fault = sim, res, sim.topo, fault
        self.rng = random.Random(seed * 7919 + 11)
        self.reasons: dict[int, list[Reason]] = {}
        for r in sim.reasons:
            self.reasons.setdefault(r.node, []).append(r)
        self.pods_at: dict[tuple[int, int], list[Pod]] = {}
        self.by_service: dict[int, list[Pod]] = {}
        for p in sim.pods:
            self.by_service.setdefault(p.service, []).append(p)
        self.spans: list[Span] = []
        self.logs: list[LogRecord] = []
        self.budget = 0
        self.wild = sim.wild
        self.last_pod: Pod | None = None

    def reason(self, node: int, k: int, pod: Pod | None) -> Reason | None:
        for r in self.reasons.get(node, []):
            if r.start <= k < r.end and (not r.pods or (pod is not None and pod.name in r.pods)):
                return r
        return None

    def pick_pod(self, node: int, k: int) -> Pod | None:
        key = (node, k)
        if key not in self.pods_at:
            pods = [p for p in self.by_service.get(node, []) if p.ready[k]]
            self.pods_at[key] = pods
        pods = self.pods_at[key]
        if not pods:
            return None
        return pods[self.rng.randrange(len(pods))]

    def ids(self, n: int) -> str:
        return f"{self.rng.getrandbits(8 * n):0{2 * n}x}"

    def lognormal(self, median: float, sigma: float) -> float:
        return median * math.exp(sigma * self.rng.gauss(0.0, 1.0))

    # a server-side request at node i ----------------------------------------------
    def serve(self, i: int, k: int, start: int, trace: str, parent: str) -> tuple[int, bool, str]:
        """Returns (end ns, failed, error kind)."""
        node = self.topo.nodes[i]
        sim, res = self.sim, self.res
        pod = self.pick_pod(i, k)
        span_id = self.ids(8)
        own = self.lognormal(float(res.own_median[i, k]), node.sigma)
        rho = float(res.rho[i, k])
        shed = min(max(1 - 1 / max(rho, 1e-9), 0), 1) * 0.9
        pod_err = float(pod.err_add[k]) if pod is not None else 1.0
        p_own = min(1.0, node.base_err + float(sim.err_add[i, k]) + pod_err)
        p_own = 1 - (1 - p_own) * (1 - shed)
        t = start + int(own * 0.3e9)
        failed, kind = False, ""
        reason = self.reason(i, k, pod)
        if self.rng.random() < p_own:
            failed = True
            if pod is None:
                kind = "zone_down"
            elif shed > 0 and self.rng.random() < shed / max(p_own, 1e-9):
                kind = "overload"
            elif reason is not None and reason.kind in (
                "deploy_bug",
                "code_bug",
                "zone_down",
                "oom",
            ):
                kind = reason.kind
            elif reason is not None and reason.kind == "gc" and pod_err > 0.5:
                kind = "oom"
            else:
                kind = "base"
        if not failed:
            for ei in self.topo.out_edges[i]:
                e = self.topo.edges[ei]
                n_calls = int(e.calls) + (1 if self.rng.random() < e.calls - int(e.calls) else 0)
                for _ in range(min(n_calls, 2)):
                    if self.budget <= 0:
                        break
                    ok = False
                    err_kind = ""
                    for _attempt in range(e.retries + 1):
                        t, ok, err_kind = self.call(i, ei, k, t, trace, span_id, pod)
                        if ok:
                            break
                    if not ok and self.rng.random() < e.critical:
                        failed = True
                        kind = (
                            "timeout"
                            if err_kind == "timeout"
                            else ("db_saturated" if err_kind == "db_saturated" else "upstream")
                        )
                        if err_kind == "dep":
                            kind = "dep:" + str(e.dst)
                        break
                if failed:
                    break
        end = t + int(own * 0.7e9)
        attrs: dict[str, Any] = {
            "http.request.method": node.method,
            "url.path": node.route.replace("{id}", str(self.rng.randrange(1000, 99999))),
            "http.route": node.route,
            "server.port": 8080,
        }
        span = Span(trace, span_id, parent, i, pod, node.span_name, 2, start, end, attrs)
        status_code = 200
        if failed:
            if kind.startswith("dep:"):
                exc = _dep_ctx(self.topo.nodes[int(kind[4:])], node.lang)
            else:
                callee = ""
                exc = _ctx(node.lang, kind, node, callee, reason.detail if reason else "")
            status_code = exc[2] if exc[2] >= 500 else 502
            span.status, span.message = 2, f"{exc[0]}: {exc[1]}"
            span.exc = (exc[0], exc[1], _stack(node.lang, node, exc[0], exc[1], self.rng))
        attrs["http.response.status_code"] = status_code
        self.spans.append(span)
        self.log_for(span, node, k, reason, failed, own)
        if self.wild and not failed:
            self.handled_exception(span, node, k)
        self.last_pod = pod
        return end, failed, kind

    def handled_exception(self, span: Span, node: Node, k: int) -> None:
        """Wild ``code_fault``/exceptions: an internal span fails, the request still succeeds."""
        exc = self.wild.get("exceptions")
        if not exc or exc["node"] != node.index or k < exc["step"]:
            return
        if self.rng.random() >= exc["share"]:
            return
        etype, msg = exc["exc"]
        op = f"{''.join(w.capitalize() for w in node.id.split('-'))}Service.enrich"
        mid = span.start + (span.end - span.start) // 3
        child = Span(
            span.trace,
            self.ids(8),
            span.span,
            node.index,
            span.pod,
            op,
            1,
            mid,
            mid + 200_000,
            {"code.function": "enrich"},
        )
        child.status, child.message = 2, f"{etype}: {msg}"
        child.exc = (etype, msg, _stack(node.lang, node, etype, msg, self.rng))
        self.spans.append(child)
        self.logs.append(
            LogRecord(
                child.end,
                node.index,
                span.pod,
                17,
                f"error enriching response, using fallback: {etype}: {msg}",
                span.trace,
                child.span,
                {
                    "exception.type": etype,
                    "exception.message": msg,
                    "exception.stacktrace": child.exc[2],
                },
            )
        )

    def call(
        self, i: int, ei: int, k: int, t: int, trace: str, parent: str, pod: Pod | None
    ) -> tuple[int, bool, str]:
        """A client span from i over edge ei; returns (end, ok, error kind)."""
        e = self.topo.edges[ei]
        caller, callee = self.topo.nodes[i], self.topo.nodes[e.dst]
        self.budget -= 2
        span_id = self.ids(8)
        net = e.net + float(self.sim.edge_lat_add[ei, k])
        start = t
        inner_start = start + int(net * 0.5e9)
        attrs: dict[str, Any] = {}
        kind = ""
        if callee.kind == "service":
            name = f"{callee.method} {callee.route}"
            attrs = {
                "http.request.method": callee.method,
                "server.address": callee.id,
                "server.port": 8080,
                "url.full": f"http://{callee.id}:8080{callee.route}",
                "peer.service": callee.id,
            }
            end_inner, failed, kind = self.serve(e.dst, k, inner_start, trace, span_id)
            if self.wild:
                end_inner += self.wild_call(i, e.dst, k, end_inner, trace, span_id, pod, failed)
            dur = (end_inner - start) / 1e9 + net * 0.5
            err_kind = (
                "dep"
                if kind.startswith("dep")
                else ("db_saturated" if kind == "db_saturated" else "upstream")
            )
        else:
            med = float(self.res.own_median[e.dst, k])
            dur = self.lognormal(med, callee.sigma) + net
            failed = self.rng.random() < float(self.res.own_err[e.dst, k])
            if callee.kind == "database":
                db = callee.id.removesuffix("-db").replace("-", "_")
                verb = self.rng.choice(["SELECT", "SELECT", "UPDATE", "INSERT"])
                name = f"{verb} {db}"
                attrs = {
                    "db.system": "postgresql",
                    "db.name": callee.id,
                    "db.namespace": db,
                    "db.operation.name": verb,
                    "server.address": callee.id,
                    "server.port": 5432,
                    "peer.service": callee.id,
                    "db.query.text": f"{verb} * FROM {db.split('_')[0]}s WHERE id = $1"
                    if verb == "SELECT"
                    else f"{verb} {db.split('_')[0]}s SET status = $1 WHERE id = $2"
                    if verb == "UPDATE"
                    else f"INSERT INTO {db.split('_')[0]}s VALUES ($1, $2, $3)",
                }
                err_kind = "db_saturated"
            elif callee.kind == "cache":
                op = self.rng.choice(["GET", "GET", "SET", "MGET"])
                name = op
                attrs = {
                    "db.system": "redis",
                    "db.name": callee.id,
                    "db.operation.name": op,
                    "server.address": callee.id,
                    "server.port": 6379,
                    "peer.service": callee.id,
                }
                err_kind = "dep"
            else:
                name = "POST"
                attrs = {
                    "http.request.method": "POST",
                    "server.address": callee.host,
                    "server.port": 443,
                    "url.full": f"https://{callee.host}/v1/charges",
                    "peer.service": callee.id,
                }
                err_kind = "dep"
            end_inner = start + int(dur * 1e9)
        timed_out = dur > e.timeout
        if timed_out:
            failed, err_kind = True, "timeout"
            dur = e.timeout
        end = start + int(dur * 1e9)
        span = Span(trace, span_id, parent, i, pod, name, 3, start, end, attrs)
        if "http.request.method" in attrs:
            attrs["http.response.status_code"] = 504 if timed_out else (503 if failed else 200)
        if failed:
            if err_kind == "timeout":
                exc = _ctx(caller.lang, "timeout", caller, callee.id)
            elif err_kind == "db_saturated":
                exc = _ctx(caller.lang, "db_saturated", caller, callee.id)
            elif callee.kind in ("cache", "external"):
                exc = _dep_ctx(callee, caller.lang)
            else:
                exc = _ctx(caller.lang, "upstream", caller, callee.id)
            span.status, span.message = 2, f"{exc[0]}: {exc[1]}"
            span.exc = (exc[0], exc[1], _stack(caller.lang, caller, exc[0], exc[1], self.rng))
            self.logs.append(
                LogRecord(
                    end,
                    i,
                    pod,
                    17 if e.critical >= 0.5 else 13,
                    f"call to {callee.id} failed: {exc[1]}",
                    trace,
                    span_id,
                    {"exception.type": exc[0], "peer.service": callee.id},
                )
            )
        elif dur > max(1.0, 5 * float(self.res.own_median[e.dst, k]) + 0.5):
            self.logs.append(
                LogRecord(
                    end,
                    i,
                    pod,
                    13,
                    f"slow call to {callee.id}: {dur * 1000:.0f} ms",
                    trace,
                    span_id,
                    {"peer.service": callee.id},
                )
            )
        self.spans.append(span)
        return end, not failed, err_kind

    def wild_call(
        self,
        i: int,
        dst: int,
        k: int,
        end: int,
        trace: str,
        span_id: str,
        pod: Pod | None,
        failed: bool,
    ) -> int:
        """Wild effects seen from the caller: a slow pod's delay (ns), a wrong answer logged."""
        extra = 0
        slow = self.wild.get("pod_delay", {})
        if self.last_pod is not None and self.last_pod.name in slow:
            extra = int(float(slow[self.last_pod.name][k]) * 1e9)
        bad: dict[str, Any] = self.wild.get("wrong_value") or {}
        hit = bool(bad) and not failed and bad["node"] == dst and k >= bad["step"]
        if hit and self.rng.random() < bad["share"]:
            self.logs.append(
                _invalid_response(self.topo, i, dst, pod, end + extra, bad["field"], trace, span_id)
            )
        return extra

    def log_for(
        self, span: Span, node: Node, k: int, reason: Reason | None, failed: bool, own: float
    ) -> None:
        dur_ms = (span.end - span.start) / 1e6
        path = span.attrs["url.path"]
        if failed and span.exc:
            body = (
                f"{span.attrs['http.request.method']} {path} failed: {span.exc[0]}: {span.exc[1]}"
            )
            self.logs.append(
                LogRecord(
                    span.end,
                    span.node,
                    span.pod,
                    17,
                    body,
                    span.trace,
                    span.span,
                    {
                        "exception.type": span.exc[0],
                        "http.response.status_code": span.attrs.get(
                            "http.response.status_code", 500
                        ),
                    },
                )
            )
        elif dur_ms > max(800.0, 6000 * float(self.res.own_median[span.node, 0]) * 4):
            self.logs.append(
                LogRecord(
                    span.end,
                    span.node,
                    span.pod,
                    13,
                    f"slow request {span.attrs['http.request.method']} {path} took {dur_ms:.0f} ms",
                    span.trace,
                    span.span,
                )
            )
        elif self.rng.random() < 0.06:
            self.logs.append(
                LogRecord(
                    span.end,
                    span.node,
                    span.pod,
                    9,
                    f"{span.attrs['http.request.method']} {path} 200 {dur_ms:.1f}ms",
                    span.trace,
                    span.span,
                )
            )


def _event_logs(tr: _Tracer) -> None:
    """Logs that belong to no request: starts, GC pressure, OOM kills, node loss, the database."""
    sim, topo, rng = tr.sim, tr.topo, tr.rng
    ns = 1_000_000_000
    t0 = sim.ts

    def at(k: int, jitter: float = sim.step) -> int:
        return int((float(t0[min(k, len(t0) - 1)]) + rng.uniform(0, jitter)) * ns)

    for p in sim.pods:
        node = topo.nodes[p.service]
        if p.start > 0:
            tr.logs.append(
                LogRecord(
                    at(p.start, 5),
                    p.service,
                    p,
                    9,
                    f"Starting {node.id} version {p.version} (revision {p.revision})",
                )
            )
            tr.logs.append(
                LogRecord(
                    at(p.start + 1, 5),
                    p.service,
                    p,
                    9,
                    f"Started {node.id} in {rng.uniform(4, 14):.1f} seconds; listening on :8080",
                )
            )
        for o in p.ooms:
            if node.lang == "java":
                tr.logs.append(
                    LogRecord(
                        at(o, 3),
                        p.service,
                        p,
                        21,
                        'Exception in thread "http-nio-8080-exec-7" java.lang.OutOfMemoryError: Java heap space',
                    )
                )
            tr.logs.append(
                LogRecord(
                    at(o, 10),
                    p.service,
                    p,
                    17,
                    f"Container {node.id} in pod {p.name} was OOMKilled (exit code 137); "
                    f"memory limit {node.mem_limit / 2**20:.0f}Mi",
                    attrs={"k8s.event.reason": "OOMKilling"},
                )
            )
            tr.logs.append(
                LogRecord(
                    at(o + 1, 10),
                    p.service,
                    p,
                    13,
                    f"Back-off restarting failed container {node.id} in pod {p.name}",
                    attrs={"k8s.event.reason": "BackOff"},
                )
            )
        if p.mem is not None:
            for kk in range(0, sim.steps, 4):
                m = p.mem[kk]
                if not np.isnan(m) and m / node.mem_limit > 0.8:
                    pct = 100 * (m / node.mem_limit - 0.8) / 0.2 * 0.9
                    tr.logs.append(
                        LogRecord(
                            at(kk),
                            p.service,
                            p,
                            13,
                            f"GC overhead: {pct:.0f}% of time spent in GC over the last 60s, "
                            f"heap {m / 2**20:.0f}MiB of {node.mem_limit / 2**20:.0f}MiB",
                        )
                    )
        if p.node in sim.node_down and p.start <= sim.node_down[p.node] < p.end:
            d = sim.node_down[p.node]
            tr.logs.append(
                LogRecord(
                    at(d + 3),
                    p.service,
                    p,
                    13,
                    f"Pod {p.name} marked NotReady: node {p.node} is unreachable (NodeNotReady)",
                    attrs={"k8s.event.reason": "NodeNotReady"},
                )
            )
    for node in topo.nodes:
        i = node.index
        if node.kind == "database" and (sim.db_tx[i] > 0).any():
            start = int(np.argmax(sim.db_tx[i] > 0))
            for kk in range(start, sim.steps, 2):
                ms = float(tr.res.own_median[i, kk]) * 1000 * rng.uniform(3, 20)
                tr.logs.append(
                    LogRecord(
                        at(kk),
                        i,
                        None,
                        9,
                        f"duration: {ms:.3f} ms  statement: UPDATE {node.id.removesuffix('-db').replace('-', '_')}s SET status = $1 WHERE id = $2",
                    )
                )
                tr.logs.append(
                    LogRecord(
                        at(kk),
                        i,
                        None,
                        9,
                        f"process {rng.randrange(1000, 60000)} still waiting for ShareLock on transaction "
                        f"{rng.randrange(10**6, 10**7)} after 1000.{rng.randrange(100, 999)} ms",
                    )
                )
                if tr.res.db_waiting[i, kk] > 0:
                    tr.logs.append(
                        LogRecord(at(kk), i, None, 21, "FATAL:  sorry, too many clients already")
                    )
        if node.kind == "service" and float(tr.res.rho[i].max()) > 1.0:
            over = np.flatnonzero(tr.res.rho[i] > 1.0)
            for kk in over[::4].tolist():
                tr.logs.append(
                    LogRecord(
                        at(kk),
                        i,
                        tr.pick_pod(i, kk),
                        13,
                        f"request queue full ({tr.res.rate[i, kk]:.0f} req/s, CPU saturated); "
                        "shedding load with 503",
                    )
                )


def _attr(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": str(value)}}


def _resource(topo: Topology, node: int, pod: Pod | None, ns: dict[int, str]) -> dict[str, Any]:
    n = topo.nodes[node]
    attrs = [_attr("service.name", n.id)]
    if pod is not None:
        attrs += [
            _attr("service.version", pod.version),
            _attr("service.namespace", "shop"),
            _attr("k8s.pod.name", pod.name),
            _attr("k8s.namespace.name", ns.get(node, "prod")),
            _attr("k8s.node.name", pod.node),
            _attr("k8s.deployment.name", n.id),
            _attr("cloud.availability_zone", pod.zone),
            _attr("cloud.region", topo.region),
            _attr("telemetry.sdk.language", "nodejs" if n.lang == "node" else n.lang),
        ]
    elif n.kind == "database":
        attrs += [_attr("db.system", "postgresql"), _attr("cloud.region", topo.region)]
    attrs.append(_attr("deployment.environment.name", "production"))
    return {"attributes": attrs}


def _encode_span(s: Span) -> dict[str, Any]:
    out: dict[str, Any] = {
        "traceId": s.trace,
        "spanId": s.span,
        "name": s.name,
        "kind": s.kind,
        "startTimeUnixNano": str(s.start),
        "endTimeUnixNano": str(s.end),
        "attributes": [_attr(k, v) for k, v in s.attrs.items()],
    }
    if s.parent:
        out["parentSpanId"] = s.parent
    if s.status == 2:
        out["status"] = {"code": 2, "message": s.message}
        if s.exc:
            out["events"] = [
                {
                    "timeUnixNano": str(s.end),
                    "name": "exception",
                    "attributes": [
                        _attr("exception.type", s.exc[0]),
                        _attr("exception.message", s.exc[1]),
                        _attr("exception.stacktrace", s.exc[2]),
                    ],
                }
            ]
    else:
        out["status"] = {}
    return out


def _group(
    items: list[Any], topo: Topology, ns: dict[int, str], enc: Any, kind: str
) -> dict[str, Any]:
    groups: dict[tuple[int, str], list[Any]] = {}
    pods: dict[tuple[int, str], Pod | None] = {}
    for it in items:
        key = (it.node, it.pod.name if it.pod else "")
        groups.setdefault(key, []).append(it)
        pods[key] = it.pod
    out = []
    for key, group in groups.items():
        lang = topo.nodes[key[0]].lang
        scope = (
            {"name": SCOPES[lang][0], "version": SCOPES[lang][1]}
            if kind == "spans"
            else {"name": f"{topo.nodes[key[0]].id}.logger"}
        )
        inner = {"scope": scope, kind: [enc(x) for x in group]}
        out.append(
            {
                "resource": _resource(topo, key[0], pods[key], ns),
                ("scopeSpans" if kind == "spans" else "scopeLogs"): [inner],
            }
        )
    return {"resourceSpans" if kind == "spans" else "resourceLogs": out}


def _encode_log(r: LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "timeUnixNano": str(r.ts),
        "observedTimeUnixNano": str(r.ts + 150_000),
        "severityNumber": r.severity,
        "severityText": _SEV.get(r.severity, "INFO"),
        "body": {"stringValue": r.body},
        "attributes": [_attr(k, v) for k, v in r.attrs.items()],
    }
    if r.trace:
        out["traceId"], out["spanId"] = r.trace, r.span
    return out


def build_otlp(
    sim: Sim, res: Result, fault: Fault, seed: int, n_traces: int, ns: dict[int, str]
) -> Otlp:
    """Sample ``n_traces`` traces (tail-sampling style) and the logs that go with them."""
    tr = _Tracer(sim, res, fault, seed)
    topo, rng, t = sim.topo, tr.rng, sim.steps
    entries = [n.index for n in topo.entries()]
    lines: list[dict[str, Any]] = []
    kept = 0
    tries = 0
    n_spans = 0
    fault_ns = int(float(sim.ts[min(fault.step, t - 1)]) * 1e9)
    seen_after: dict[str, int] = {}
    slowed: dict[str, int] = {}
    slow_ref = {i: float(np.median(res.median()[i, : max(1, fault.step)])) * 3 for i in entries}
    while kept < n_traces and tries < n_traces * 25:
        tries += 1
        k = rng.randrange(max(0, fault.step - 8), t) if rng.random() < 0.5 else rng.randrange(0, t)
        entry = rng.choices(entries, weights=res.rate[entries, k].tolist())[0]
        trace = tr.ids(16)
        tr.spans, logs_before = [], len(tr.logs)
        tr.budget = 36
        start = int((float(sim.ts[k]) + float(rng.uniform(0, sim.step))) * 1e9)
        end, failed, _ = tr.serve(entry, k, start, trace, "")
        dur = (end - start) / 1e9
        if sim.wild and not failed:
            # tail sampling keeps a trace with any failed span
            failed = any(s.status == 2 for s in tr.spans)
        keep = failed or (dur > slow_ref[entry] and rng.random() < 0.7) or rng.random() < 0.1
        if not keep:
            del tr.logs[logs_before:]
            continue
        kept += 1
        n_spans += len(tr.spans)
        for sp in tr.spans:
            if sp.start >= fault_ns:
                _touch(seen_after, topo.nodes[sp.node].id, sp.attrs)
            if sp.pod is not None:
                kk = min(int((sp.start / 1e9 - float(sim.ts[0])) // sim.step), t - 1)
                if sp.pod.lat_mult[max(kk, 0)] >= 1.5:
                    who = topo.nodes[sp.node].id
                    slowed[who] = slowed.get(who, 0) + 1
        lines.append(_group(tr.spans, topo, ns, _encode_span, "spans"))
    _event_logs(tr)
    if sim.wild:
        _wild_logs(tr)
    tr.logs.sort(key=lambda r: r.ts)
    logged_after: dict[str, int] = {}
    for r in tr.logs:
        if r.ts >= fault_ns:
            _touch(logged_after, topo.nodes[r.node].id, r.attrs)
    log_lines = [
        _group(tr.logs[j : j + 200], topo, ns, _encode_log, "logRecords")
        for j in range(0, len(tr.logs), 200)
    ]
    return Otlp(lines, log_lines, kept, n_spans, seen_after, slowed, logged_after)


def _touch(counts: dict[str, int], own: str, attrs: dict[str, Any]) -> None:
    """Count a record for its own service and for the one it names (``peer.service``)."""
    for who in {own, str(attrs.get("peer.service") or own)}:
        counts[who] = counts.get(who, 0) + 1


def iter_json(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The requests, one per line."""
    yield from items


def _invalid_response(
    topo: Topology,
    caller: int,
    callee: int,
    pod: Pod | None,
    ts: int,
    field_name: str,
    trace: str = "",
    span: str = "",
) -> LogRecord:
    dst = topo.nodes[callee].id
    return LogRecord(
        ts,
        caller,
        pod,
        17,
        f'invalid response from {dst}: field "{field_name}" is missing or null; '
        "request answered with defaults",
        trace,
        span,
        {"peer.service": dst, "exception.type": "ResponseValidationError"},
    )


def _wild_logs(tr: _Tracer) -> None:
    """Logs of every request, not only sampled ones: wrong answers, handled exceptions, noise."""
    sim, topo, rng, res = tr.sim, tr.topo, tr.rng, tr.res
    step = sim.step
    nps = np.random.default_rng(int(sim.ts[0]) + 17)

    def stamps(counts: np.ndarray, cap: int) -> list[tuple[int, int]]:
        ks = np.repeat(np.arange(len(counts)), counts)
        if len(ks) > cap:
            ks = np.sort(nps.choice(ks, size=cap, replace=False))
        return [(int(k), int((float(sim.ts[k]) + rng.uniform(0, step)) * 1e9)) for k in ks]

    bad = sim.wild.get("wrong_value")
    if bad:
        for ei in topo.in_edges[bad["node"]]:
            e = topo.edges[ei]
            lam = res.edge_rate[ei] * step * bad["share"] * (np.arange(sim.steps) >= bad["step"])
            for k, ts in stamps(nps.poisson(lam), 400):
                tr.logs.append(
                    _invalid_response(topo, e.src, e.dst, tr.pick_pod(e.src, k), ts, bad["field"])
                )
    exc = sim.wild.get("exceptions")
    if exc:
        i = exc["node"]
        node = topo.nodes[i]
        etype, msg = exc["exc"]
        lam = res.rate[i] * step * exc["share"] * (np.arange(sim.steps) >= exc["step"])
        for k, ts in stamps(nps.poisson(lam), 400):
            stack = _stack(node.lang, node, etype, msg, rng)
            tr.logs.append(
                LogRecord(
                    ts,
                    i,
                    tr.pick_pod(i, k),
                    17,
                    f"error enriching response, using fallback: {etype}: {msg}",
                    attrs={
                        "exception.type": etype,
                        "exception.message": msg,
                        "exception.stacktrace": stack,
                    },
                )
            )
    for svc, k, secs in sim.wild.get("gc", []):
        tr.logs.append(
            LogRecord(
                int((float(sim.ts[k]) + secs) * 1e9),
                svc,
                tr.pick_pod(svc, k),
                13,
                f"[gc] Pause Full (G1 Compaction Pause) 812M->455M(1024M) {secs * 1000:.3f}ms",
            )
        )
    for svc, k, length, _cores in sim.wild.get("cron", []):
        name = f"{topo.nodes[svc].id}-reconcile"
        tr.logs.append(
            LogRecord(
                int(float(sim.ts[k]) * 1e9), svc, tr.pick_pod(svc, k), 9, f"job {name} started"
            )
        )
        end = min(k + length, sim.steps - 1)
        tr.logs.append(
            LogRecord(
                int(float(sim.ts[end]) * 1e9),
                svc,
                tr.pick_pod(svc, end),
                13,
                f"job {name} finished in {length * step}s (expected under {length * step // 3}s)",
            )
        )

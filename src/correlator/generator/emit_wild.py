"""OpenMetrics for wild scenarios: the same simulation, exported under the conventions the
scenario drew (see :mod:`correlator.generator.wild`).

Names and labels are those real exporters emit: the OpenTelemetry Prometheus exporter
(``http_server_duration_milliseconds`` with ``http_status_code`` before semantic
conventions 1.20, ``http_server_request_duration_seconds`` with
``http_response_status_code`` after, ``rpc_server_duration_milliseconds`` with
``rpc_grpc_status_code``), go-grpc-prometheus (``grpc_server_handled_total`` by
``grpc_code``), Micrometer (``http_server_requests_seconds`` with ``outcome`` and
``status``, buckets or ``quantile`` summaries, and its ``_max`` gauge), the
spanmetrics/servicegraph connectors, cAdvisor, kube-state-metrics, postgres_exporter,
the Prometheus client runtime collectors (``process_*``, ``go_*``) and Micrometer's JVM
binders (``jvm_*``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import numpy.typing as npt

from correlator.generator.emit_metrics import (
    I64,
    SERVICEGRAPH_BUCKETS,
    SPANMETRICS_BUCKETS,
    _conn_type,
    _Emitter,
    _ksm,
    _postgres,
    _up_and_build,
    hash_ip,
)
from correlator.generator.topology import Node
from correlator.generator.traffic import F64, Pod, Result, Sim, ncdf
from correlator.generator.wild import Conventions, style_of

__all__ = ["wild_metric_lines"]

B = npt.NDArray[np.bool_]
#: OpenTelemetry's default explicit buckets before semantic conventions 1.20 (milliseconds).
OTEL_MS_BUCKETS: tuple[float, ...] = (0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0)
OTEL_MS_BUCKETS += (750.0, 1000.0, 2500.0, 5000.0, 7500.0, 10000.0)
OTEL_S_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
PROM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MICROMETER_SLO = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
QUANTILES = ((0.5, 0.0), (0.95, 1.645), (0.99, 2.326))
GRPC_ERRORS = ("Unavailable", "Internal", "DeadlineExceeded")
GRPC_NUM = {"Unavailable": "14", "Internal": "13", "DeadlineExceeded": "4"}


class _WildEmitter(_Emitter):
    def __init__(self, sim: Sim, res: Result, seed: int, ns: dict[int, str], conv: Conventions):
        super().__init__(sim, res, seed, ns)
        self.conv = conv
        self.rng = np.random.default_rng([seed, 7, 1729])
        self.allmask: B = np.ones(self.t, dtype=bool)

    def buckets(self, n: I64, median: F64, sigma: float, bounds: tuple[float, ...]) -> I64:
        # a bucket at 0 (OpenTelemetry's old default) holds nothing; avoid log(0)
        le = np.maximum(np.array(bounds), 1e-12)
        z = (np.log(le)[:, None] - np.log(np.maximum(median, 1e-7))[None, :]) / sigma
        inc = np.floor(ncdf(z) * n[None, :] + 0.5).astype(np.int64)
        inc = np.minimum(np.maximum.accumulate(inc, axis=0), n[None, :])
        out: I64 = np.vstack([inc, n[None, :]])
        return out

    def ident(self, node: Node, pod: Pod | None = None) -> str:
        """The labels naming the service (and the pod when series are per pod)."""
        idn = self.conv.identity
        if idn == "pod" and pod is not None:
            return f'job="kubernetes-pods",namespace="{self.ns[node.index]}",pod="{pod.name}"'
        if idn == "service_name" and style_of(self.conv, node) == "micrometer":
            return f'application="{node.id}"'
        return f'{idn if idn != "pod" else "service"}="{node.id}"'

    def units(self, node: Node) -> list[tuple[str, F64]]:
        """(identity labels, share of the service's traffic) per exported series."""
        if self.conv.identity != "pod":
            return [(self.ident(node), np.ones(self.t))]
        out = []
        for p in self.sim.service_pods(node.index):
            share = np.where(
                self.routed[node.index] > 0, p.ready / np.maximum(self.routed[node.index], 1), 0.0
            )
            out.append((self.ident(node, p), share))
        return out

    def gauge(self, name: str, labels: str, values: F64, mask: B, digits: int = 3) -> str:
        return self.series(name, labels, list(map(str, np.round(values, digits).tolist())), mask)

    def counter(self, name: str, labels: str, inc: F64, mask: B, digits: int = 3) -> str:
        cum = np.cumsum(inc) + float(inc[0]) * float(self.rng.uniform(50, 500))
        return self.series(name, labels, list(map(str, np.round(cum, digits).tolist())), mask)

    def summary(
        self, name: str, labels: str, rate: F64, median: F64, sigma: float, scale: float = 1.0
    ) -> str:
        """A Micrometer-style summary: quantiles over a ~2-minute window, count and sum."""
        n = self.counts(rate)
        win = max(1, round(120 / self.step))
        seen = np.convolve(n, np.ones(win), mode="full")[: self.t]
        noise = self.rng.lognormal(0, 0.08, (len(QUANTILES), self.t))
        out = []
        for j, (q, z) in enumerate(QUANTILES):
            val = np.where(seen > 0, median * math.exp(z * sigma) * noise[j] * scale, 0.0)
            out.append(self.gauge(name, f'{labels},quantile="{q}"', val, self.allmask, 6))
        mean = median * math.exp(sigma**2 / 2) * scale
        off = self.start_offset(float(rate[0]))
        cnt = np.cumsum(n) + off
        tot = np.cumsum(n * mean) + off * float(mean[0])
        first = int(np.argmax(cnt > 0)) if cnt[-1] > 0 else self.t
        m = np.arange(self.t) >= first
        out.append(self.series(f"{name}_count", labels, list(map(str, cnt.tolist())), m))
        out.append(self.gauge(f"{name}_sum", labels, tot, m))
        return "".join(out)


def wild_metric_lines(
    sim: Sim, res: Result, seed: int, namespace_of: dict[int, str], conv: Conventions
) -> Iterator[str]:
    """The whole ``metrics.om`` of a wild scenario, ending with ``# EOF``."""
    em = _WildEmitter(sim, res, seed, namespace_of, conv)
    for style in ("spanmetrics", "otel_http_old", "otel_http_new", "otel_rpc", "grpc"):
        nodes = [n for n in em.topo.services() if style_of(conv, n) == style]
        if nodes:
            yield from _SERVER[style](em, nodes)
    micrometer = [n for n in em.topo.services() if style_of(conv, n) == "micrometer"]
    if micrometer:
        yield from _micrometer(em, micrometer)
    if conv.client_metrics:
        yield from _client(em)
    if conv.service_graph:
        yield from _servicegraph(em)
    yield from _cadvisor(em)
    if conv.ksm:
        yield from _ksm(em)
    if conv.postgres:
        yield from _postgres(em)
    if conv.runtime:
        yield from _runtime(em)
    yield from _up_and_build(em)
    yield "# EOF\n"


def _slug(node: Node) -> str:
    return "".join(w.capitalize() for w in node.id.split("-"))


def _hist_pair(
    em: _WildEmitter,
    name: str,
    node: Node,
    ok_labels: str,
    err_labels: str,
    bounds: tuple[float, ...],
    scale: float,
) -> str:
    """Successful and failed requests of a service, one histogram labelset each."""
    i, res = node.index, em.res
    med = res.median()[i] * scale
    sig = float(res.sigma[i])
    out = []
    for ident, share in em.units(node):
        rate = res.rate[i] * share
        out.append(
            em.hist_series(
                name,
                f"{ident},{ok_labels}",
                rate,
                med,
                sig,
                em.allmask,
                1 - res.total_err[i],
                bounds,
            )
        )
        out.append(
            em.hist_series(
                name, f"{ident},{err_labels}", rate, med, sig, em.allmask, res.total_err[i], bounds
            )
        )
    return "".join(out)


def _spanmetrics(em: _WildEmitter, nodes: list[Node]) -> Iterator[str]:
    res, t = em.res, em.t
    yield "# TYPE traces_span_metrics_calls counter\n"
    yield "# HELP traces_span_metrics_calls Number of spans (OpenTelemetry spanmetrics connector)\n"
    for node in nodes:
        i = node.index
        n = em.counts(res.rate[i])
        err = em.rng.binomial(n, np.clip(res.total_err[i], 0, 1)).astype(np.int64)
        lab = f'service_name="{node.id}",span_name="{node.span_name}",span_kind="SPAN_KIND_SERVER"'
        for code, arr in (("UNSET", n - err), ("ERROR", err)):
            cum = np.cumsum(arr) + em.start_offset(float(arr[:10].mean()) / em.step)
            first = int(np.argmax(cum > 0)) if cum[-1] > 0 else t
            yield em.series(
                "traces_span_metrics_calls_total",
                f'{lab},status_code="STATUS_CODE_{code}"',
                list(map(str, cum.tolist())),
                np.arange(t) >= first,
            )
    yield "# TYPE traces_span_metrics_duration_seconds histogram\n"
    yield "# HELP traces_span_metrics_duration_seconds Span durations (OpenTelemetry spanmetrics connector)\n"
    for node in nodes:
        i = node.index
        lab = f'service_name="{node.id}",span_name="{node.span_name}",span_kind="SPAN_KIND_SERVER"'
        yield em.hist_series(
            "traces_span_metrics_duration_seconds",
            lab + ',status_code="STATUS_CODE_UNSET"',
            res.rate[i] * (1 - res.total_err[i]),
            res.median()[i],
            float(res.sigma[i]),
            em.allmask,
        )


def _otel_http_old(em: _WildEmitter, nodes: list[Node]) -> Iterator[str]:
    name = "http_server_duration_milliseconds"
    yield f"# TYPE {name} histogram\n"
    yield f"# HELP {name} Measures the duration of inbound HTTP requests.\n"
    for node in nodes:
        base = f'http_method="{node.method}",http_route="{node.route}",http_scheme="http",net_host_port="8080"'
        yield _hist_pair(
            em,
            name,
            node,
            base + ',http_status_code="200"',
            base + ',http_status_code="500"',
            OTEL_MS_BUCKETS,
            1000.0,
        )


def _otel_http_new(em: _WildEmitter, nodes: list[Node]) -> Iterator[str]:
    name = "http_server_request_duration_seconds"
    yield f"# TYPE {name} histogram\n"
    yield f"# HELP {name} Duration of HTTP server requests.\n"
    for node in nodes:
        base = (
            f'http_request_method="{node.method}",http_route="{node.route}",'
            'network_protocol_version="1.1",url_scheme="http"'
        )
        yield _hist_pair(
            em,
            name,
            node,
            base + ',http_response_status_code="200"',
            base + ',error_type="500",http_response_status_code="500"',
            OTEL_S_BUCKETS,
            1.0,
        )


def _rpc_names(node: Node) -> tuple[str, str]:
    resource = node.id.split("-")[0].capitalize()
    return f"shop.{_slug(node)}Service", f"Get{resource}"


def _otel_rpc(em: _WildEmitter, nodes: list[Node]) -> Iterator[str]:
    name = "rpc_server_duration_milliseconds"
    yield f"# TYPE {name} histogram\n"
    yield f"# HELP {name} Measures the duration of inbound RPC.\n"
    for node in nodes:
        svc, method = _rpc_names(node)
        base = f'rpc_method="{method}",rpc_service="{svc}",rpc_system="grpc"'
        code = GRPC_NUM[GRPC_ERRORS[node.index % len(GRPC_ERRORS)]]
        yield _hist_pair(
            em,
            name,
            node,
            base + ',rpc_grpc_status_code="0"',
            base + f',rpc_grpc_status_code="{code}"',
            OTEL_MS_BUCKETS,
            1000.0,
        )


def _grpc(em: _WildEmitter, nodes: list[Node]) -> Iterator[str]:
    res = em.res
    counts: dict[tuple[int, str], tuple[I64, I64]] = {}
    yield "# TYPE grpc_server_handled counter\n"
    yield "# HELP grpc_server_handled Total number of RPCs completed on the server, regardless of success or failure.\n"
    for node in nodes:
        svc, method = _rpc_names(node)
        code = GRPC_ERRORS[node.index % len(GRPC_ERRORS)]
        for ident, share in em.units(node):
            n = em.counts(res.rate[node.index] * share)
            err = em.rng.binomial(n, np.clip(res.total_err[node.index], 0, 1)).astype(np.int64)
            counts[(node.index, ident)] = (n, err)
            base = f'{ident},grpc_method="{method}",grpc_service="{svc}",grpc_type="unary"'
            for grpc_code, arr in (("OK", n - err), (code, err)):
                cum = np.cumsum(arr) + em.start_offset(float(arr[:10].mean()) / em.step)
                first = int(np.argmax(cum > 0)) if cum[-1] > 0 else em.t
                yield em.series(
                    "grpc_server_handled_total",
                    f'{base},grpc_code="{grpc_code}"',
                    list(map(str, cum.tolist())),
                    np.arange(em.t) >= first,
                )
    yield "# TYPE grpc_server_handling_seconds histogram\n"
    yield "# HELP grpc_server_handling_seconds Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.\n"
    for node in nodes:
        svc, method = _rpc_names(node)
        for ident, share in em.units(node):
            yield em.hist_series(
                "grpc_server_handling_seconds",
                f'{ident},grpc_method="{method}",grpc_service="{svc}",grpc_type="unary"',
                res.rate[node.index] * share,
                res.median()[node.index],
                float(res.sigma[node.index]),
                em.allmask,
                bounds=PROM_BUCKETS,
            )


def _micrometer(em: _WildEmitter, nodes: list[Node]) -> Iterator[str]:
    res = em.res
    name = "http_server_requests_seconds"
    kind = "summary" if em.conv.summary else "histogram"
    yield f"# TYPE {name} {kind}\n"
    yield f"# HELP {name} Duration of HTTP server request handling\n"
    for node in nodes:
        i = node.index
        base = f'method="{node.method}",uri="{node.route}"'
        ok = base + ',error="none",exception="none",outcome="SUCCESS",status="200"'
        bad = base + ',error="none",exception="none",outcome="SERVER_ERROR",status="500"'
        for ident, share in em.units(node):
            for lab, part in ((ok, 1 - res.total_err[i]), (bad, res.total_err[i])):
                rate = res.rate[i] * share * part
                if em.conv.summary:
                    yield em.summary(
                        name, f"{ident},{lab}", rate, res.median()[i], float(res.sigma[i])
                    )
                else:
                    yield em.hist_series(
                        name,
                        f"{ident},{lab}",
                        rate,
                        res.median()[i],
                        float(res.sigma[i]),
                        em.allmask,
                        bounds=MICROMETER_SLO,
                    )
    yield f"# TYPE {name}_max gauge\n"
    yield f"# HELP {name}_max Duration of HTTP server request handling\n"
    for node in nodes:
        i = node.index
        lab = f'method="{node.method}",uri="{node.route}",error="none",exception="none",outcome="SUCCESS",status="200"'
        for ident, _share in em.units(node):
            peak = res.median()[i] * math.exp(3.0 * float(res.sigma[i]))
            yield em.gauge(
                f"{name}_max",
                f"{ident},{lab}",
                peak * em.rng.lognormal(0, 0.2, em.t),
                em.allmask,
                6,
            )


_SERVER: dict[str, Callable[[_WildEmitter, list[Node]], Iterator[str]]] = {
    "spanmetrics": _spanmetrics,
    "otel_http_old": _otel_http_old,
    "otel_http_new": _otel_http_new,
    "otel_rpc": _otel_rpc,
    "grpc": _grpc,
}


def _client_median(em: _WildEmitter, ei: int) -> F64:
    """Client-side median of an edge: the callee's time plus the network (and any delay)."""
    e = em.topo.edges[ei]
    sig = float(em.res.sigma[e.dst])
    pod_share = em.sim.wild.get("pod_delay_edges", {}).get(ei, 0.0)
    mean = em.res.edge_server_mean[ei] + e.net + em.sim.edge_lat_add[ei] + pod_share
    out: F64 = np.minimum(mean, e.timeout) / math.exp(sig**2 / 2)
    return out


#: Per latency convention whose clients export request durations by callee: the
#: histogram's name, its bucket bounds and its unit scale (spanmetrics has none).
CLIENT_DURATIONS: dict[str, tuple[str, tuple[float, ...], float]] = {
    "otel_http_old": ("http_client_duration_milliseconds", OTEL_MS_BUCKETS, 1000.0),
    "otel_http_new": ("http_client_request_duration_seconds", OTEL_S_BUCKETS, 1.0),
    "otel_rpc": ("rpc_client_duration_milliseconds", OTEL_MS_BUCKETS, 1000.0),
    "grpc": ("grpc_client_handling_seconds", PROM_BUCKETS, 1.0),
    "micrometer": ("http_client_requests_seconds", MICROMETER_SLO, 1.0),
}


def _client(em: _WildEmitter) -> Iterator[str]:
    """Client-side request durations of service callers, by callee, in each caller's style."""
    topo, res = em.topo, em.res
    by_style: dict[str, list[int]] = {}
    for e in topo.edges:
        src, dst = topo.nodes[e.src], topo.nodes[e.dst]
        if src.kind == "service" and dst.kind in ("service", "external"):
            by_style.setdefault(style_of(em.conv, src), []).append(e.index)
    for style, edges in by_style.items():
        if style not in CLIENT_DURATIONS:
            continue  # spanmetrics: client spans feed the service graph instead
        name, bounds, scale = CLIENT_DURATIONS[style]
        kind = "summary" if style == "micrometer" and em.conv.summary else "histogram"
        yield f"# TYPE {name} {kind}\n"
        yield f"# HELP {name} Client-side duration of outbound requests.\n"
        for ei in edges:
            e = topo.edges[ei]
            src, dst = topo.nodes[e.src], topo.nodes[e.dst]
            host = dst.host or dst.id
            peer = {
                "otel_http_old": f'http_method="{dst.method}",http_status_code="200",net_peer_name="{host}"',
                "otel_http_new": f'http_request_method="{dst.method}",http_response_status_code="200",server_address="{host}",server_port="8080"',
                "otel_rpc": f'net_peer_name="{host}",rpc_grpc_status_code="0",rpc_method="{_rpc_names(dst)[1]}",rpc_service="{_rpc_names(dst)[0]}",rpc_system="grpc"',
                "grpc": f'grpc_method="{_rpc_names(dst)[1]}",grpc_service="{_rpc_names(dst)[0]}",grpc_type="unary"',
                "micrometer": f'client_name="{host}",method="{dst.method}",outcome="SUCCESS",status="200",uri="{dst.route}"',
            }[style]
            med = _client_median(em, ei) * scale
            sig = float(res.sigma[e.dst])
            rate = res.edge_rate[ei] * (1 - np.clip(res.edge_fail[ei], 0, 1))
            if kind == "summary":
                yield em.summary(name, f"{em.ident(src)},{peer}", rate, med, sig)
            else:
                yield em.hist_series(
                    name, f"{em.ident(src)},{peer}", rate, med, sig, em.allmask, bounds=bounds
                )


def _servicegraph(em: _WildEmitter) -> Iterator[str]:
    topo, res = em.topo, em.res
    labs = {
        e.index: f'client="{topo.nodes[e.src].id}",server="{topo.nodes[e.dst].id}",'
        f'connection_type="{_conn_type(topo.nodes[e.dst])}"'
        for e in topo.edges
    }
    yield "# TYPE traces_service_graph_request counter\n"
    yield "# HELP traces_service_graph_request Requests between two nodes (OpenTelemetry servicegraph connector)\n"
    fails: dict[int, I64] = {}
    for e in topo.edges:
        n = em.counts(res.edge_rate[e.index])
        fails[e.index] = em.rng.binomial(n, np.clip(res.edge_fail[e.index], 0, 1)).astype(np.int64)
        cum = np.cumsum(n) + em.start_offset(float(res.edge_rate[e.index, 0]))
        yield em.series(
            "traces_service_graph_request_total",
            labs[e.index],
            list(map(str, cum.tolist())),
            em.allmask,
        )
    yield "# TYPE traces_service_graph_request_failed counter\n"
    yield "# HELP traces_service_graph_request_failed Failed requests between two nodes\n"
    for e in topo.edges:
        cum = np.cumsum(fails[e.index])
        first = int(np.argmax(cum > 0)) if cum[-1] > 0 else em.t
        yield em.series(
            "traces_service_graph_request_failed_total",
            labs[e.index],
            list(map(str, cum.tolist())),
            np.arange(em.t) >= first,
        )
    for side in ("server", "client"):
        name = f"traces_service_graph_request_{side}_seconds"
        yield f"# TYPE {name} histogram\n"
        yield f"# HELP {name} {side.capitalize()}-side duration of requests between two nodes\n"
        for e in topo.edges:
            sig = float(res.sigma[e.dst])
            med = (
                res.edge_server_mean[e.index] / math.exp(sig**2 / 2)
                if side == "server"
                else _client_median(em, e.index)
            )
            yield em.hist_series(
                name,
                labs[e.index],
                res.edge_rate[e.index],
                med,
                sig,
                em.allmask,
                bounds=SERVICEGRAPH_BUCKETS,
            )


def _pod_cpu(em: _WildEmitter, p: Pod) -> tuple[F64, F64, F64]:
    """(cores used, throttled periods per second, CFS periods per second) of one pod."""
    sim, res = em.sim, em.res
    node = em.topo.nodes[p.service]
    i = p.service
    share = np.where(em.routed[i] > 0, p.ready / np.maximum(em.routed[i], 1), 0.0)
    hog = sim.wild.get("cpu_hog", {}).get(i, np.zeros(em.t))
    limit = node.cpu_limit * sim.cap_mult[i] / np.maximum(1 - hog, 1e-3)
    demand = res.rate[i] * share * sim.cpu_per_req[i]
    for svc, k, length, cores in sim.wild.get("cron", []):
        if svc == i:
            demand = demand.copy()
            demand[k : k + length] += cores / max(1, len(em.topo.pods_of(i)))
    want = demand + hog * limit * p.ready
    used = np.minimum(want, limit) * em.rng.lognormal(0, 0.06, em.t) + 0.004
    rho = want / np.maximum(limit, 1e-6)
    thr = 10.0 * (np.clip((rho - 0.55) / 0.45, 0, 1) ** 2 + 0.004) * em.rng.lognormal(0, 0.1, em.t)
    periods = 10.0 * np.clip(0.3 + rho, 0, 1)
    return used, np.minimum(thr, periods), periods


def _pod_memory(em: _WildEmitter, p: Pod) -> F64:
    node = em.topo.nodes[p.service]
    k = np.arange(em.t)
    base = node.mem_limit * node.mem_base_frac * float(em.rng.uniform(0.9, 1.1))
    warm = np.clip((k - p.start + 1) / em.sim.steps_for(20), 0.55, 1.0)
    drift = np.cumsum(em.rng.normal(0, 0.004 * math.sqrt(em.step / 15), em.t))
    mem: F64 = base * warm * (1 + drift) * em.rng.lognormal(0, 0.01, em.t)
    if p.mem is not None:
        mem = p.mem
    return mem


def _cadvisor(em: _WildEmitter) -> Iterator[str]:
    conv, sim, topo = em.conv, em.sim, em.topo
    cpu: dict[str, tuple[F64, F64, F64]] = {p.name: _pod_cpu(em, p) for p in sim.pods}
    mem: dict[str, F64] = {p.name: _pod_memory(em, p) for p in sim.pods}
    per_pod = conv.cadvisor == "pod"
    key = "container_name" if conv.cadvisor == "container_name" else "container"

    def rows(values: Callable[[Pod], F64]) -> Iterator[tuple[str, F64, B]]:
        if per_pod:
            for p in sim.pods:
                node = topo.nodes[p.service]
                lab = f'namespace="{em.ns[p.service]}",pod="{p.name}",container="{node.id}",node="{p.node}"'
                yield lab, values(p), p.alive(em.t) & p.scraped
            return
        for node in topo.services():
            total = np.zeros(em.t)
            for p in sim.service_pods(node.index):
                total += np.nan_to_num(values(p)) * (p.alive(em.t) & p.scraped)
            yield f'namespace="{em.ns[node.index]}",{key}="{node.id}"', total, em.allmask

    counters = [
        ("container_cpu_usage_seconds", "Cumulative cpu time consumed in seconds.", 0, 3),
        ("container_cpu_cfs_periods", "Number of elapsed enforcement period intervals.", 2, 0),
        ("container_cpu_cfs_throttled_periods", "Number of throttled period intervals.", 1, 0),
        (
            "container_cpu_cfs_throttled_seconds",
            "Total time duration the container has been throttled.",
            1,
            3,
        ),
    ]
    for fam, help_text, col, digits in counters:
        if fam != "container_cpu_usage_seconds" and f"{fam}_total" not in conv.cfs:
            continue
        yield f"# TYPE {fam} counter\n# HELP {fam} {help_text}\n"
        # throttled seconds: ~50 ms lost per throttled 100 ms period
        factor = 0.05 if fam.endswith("throttled_seconds") else 1.0

        def cpu_of(p: Pod, c: int = col, f: float = factor) -> F64:
            out: F64 = cpu[p.name][c] * f
            return out

        for lab, per_s, mask in rows(cpu_of):
            cum = np.cumsum(per_s * em.step) + float(per_s[0]) * float(em.rng.uniform(3600, 86400))
            vals = np.round(cum, digits) if digits else np.floor(cum).astype(np.int64)
            yield em.series(f"{fam}_total", lab, list(map(str, vals.tolist())), mask)
    factors = {
        "container_memory_working_set_bytes": 1.0,
        "container_memory_usage_bytes": 1.25,
        "container_memory_rss": 0.82,
        "container_memory_cache": 0.25,
    }
    for fam in conv.memory:
        yield f"# TYPE {fam} gauge\n# HELP {fam} Memory ({fam.removeprefix('container_memory_')}) in bytes.\n"

        def memory(p: Pod, f: float = factors[fam]) -> F64:
            out: F64 = mem[p.name] * f
            return out

        for lab, val, mask in rows(memory):
            ok = mask & ~np.isnan(val)
            yield em.series(
                fam, lab, list(map(str, np.nan_to_num(np.round(val)).astype(np.int64).tolist())), ok
            )


def _runtime(em: _WildEmitter) -> Iterator[str]:
    """Process, Go and JVM runtime metrics: every service has some, no role maps them."""
    sim, res, topo = em.sim, em.res, em.topo
    svcs = topo.services()
    conc = {n.index: res.rate[n.index] * res.total_mean[n.index] for n in svcs}

    def units(node: Node) -> list[tuple[str, F64]]:
        return em.units(node)

    yield "# TYPE process_cpu_seconds counter\n# HELP process_cpu_seconds Total user and system CPU time spent in seconds.\n"
    for node in svcs:
        for ident, share in units(node):
            used = np.zeros(em.t)
            for p in sim.service_pods(node.index):
                used += _pod_cpu(em, p)[0] * p.ready
            yield em.counter("process_cpu_seconds_total", ident, used * share * em.step, em.allmask)
    yield "# TYPE process_resident_memory_bytes gauge\n# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
    for node in svcs:
        for ident, share in units(node):
            mem = node.mem_limit * node.mem_base_frac * 0.9 * em.rng.lognormal(0, 0.01, em.t)
            n_pods = max(1, len(topo.pods_of(node.index)))
            scale = share if em.conv.identity == "pod" else n_pods * np.ones(em.t)
            yield em.gauge(
                "process_resident_memory_bytes", ident, np.round(mem * scale), em.allmask, 0
            )
    yield "# TYPE process_open_fds gauge\n# HELP process_open_fds Number of open file descriptors.\n"
    for node in svcs:
        for ident, share in units(node):
            fds = 40 + 2 * conc[node.index] * share + em.rng.poisson(2, em.t)
            yield em.gauge("process_open_fds", ident, np.round(fds), em.allmask, 0)
    go = [n for n in svcs if n.lang == "go"]
    if go:
        yield "# TYPE go_goroutines gauge\n# HELP go_goroutines Number of goroutines that currently exist.\n"
        for node in go:
            for ident, share in units(node):
                g = 12 + 1.5 * conc[node.index] * share + em.rng.poisson(3, em.t)
                yield em.gauge("go_goroutines", ident, np.round(g), em.allmask, 0)
        yield "# TYPE go_gc_duration_seconds summary\n# HELP go_gc_duration_seconds A summary of the pause duration of garbage collection cycles.\n"
        for node in go:
            for ident, share in units(node):
                gc_rate = 0.05 + 0.002 * res.rate[node.index] * share
                yield _go_gc(em, ident, gc_rate)
    java = [n for n in svcs if n.lang == "java"]
    if java:
        yield "# TYPE jvm_threads_live_threads gauge\n# HELP jvm_threads_live_threads The current number of live threads including both daemon and non-daemon threads\n"
        for node in java:
            for ident, share in units(node):
                th = 45 + conc[node.index] * share + em.rng.poisson(2, em.t)
                yield em.gauge("jvm_threads_live_threads", ident, np.round(th), em.allmask, 0)
        yield "# TYPE jvm_gc_pause_seconds summary\n# HELP jvm_gc_pause_seconds Time spent in GC pause\n"
        for node in java:
            pauses = np.zeros(em.t)
            for svc, k, secs in sim.wild.get("gc", []):
                if svc == node.index:
                    pauses[k] += secs
            for ident, share in units(node):
                n = em.rng.poisson((0.1 + 0.004 * res.rate[node.index] * share) * em.step)
                tot = n * 0.012 * em.rng.lognormal(0, 0.3, em.t) + pauses
                lab = f'{ident},action="end of minor GC",cause="G1 Evacuation Pause",gc="G1 Young Generation"'
                cnt = np.cumsum(n + (pauses > 0)) + int(em.rng.integers(100, 5000))
                yield em.series(
                    "jvm_gc_pause_seconds_count", lab, list(map(str, cnt.tolist())), em.allmask
                )
                yield em.counter("jvm_gc_pause_seconds_sum", lab, tot, em.allmask)


def _go_gc(em: _WildEmitter, ident: str, gc_rate: F64) -> str:
    n = em.rng.poisson(gc_rate * em.step)
    out = []
    for q, base in (("0", 2e-5), ("0.25", 4e-5), ("0.5", 6e-5), ("0.75", 9e-5), ("1", 4e-4)):
        val = base * em.rng.lognormal(0, 0.15, em.t)
        out.append(
            em.gauge("go_gc_duration_seconds", f'{ident},quantile="{q}"', val, em.allmask, 7)
        )
    cnt = np.cumsum(n) + int(em.rng.integers(100, 5000))
    out.append(
        em.series("go_gc_duration_seconds_count", ident, list(map(str, cnt.tolist())), em.allmask)
    )
    out.append(em.counter("go_gc_duration_seconds_sum", ident, n * np.float64(8e-5), em.allmask, 6))
    return "".join(out)


_ = (SPANMETRICS_BUCKETS, hash_ip)

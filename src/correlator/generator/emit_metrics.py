"""OpenMetrics text for a simulated scenario, under real exporters' names.

Families (each ``# TYPE`` once, series grouped, points in time order, every
sample timestamped in seconds) follow the OpenTelemetry spanmetrics and
service-graph connectors, cAdvisor, kube-state-metrics, postgres_exporter and
Prometheus' own ``up``. Counts are Poisson draws around the simulated rates, so
counters are noisy and monotonic (container counters reset when the container
restarts). Lines are formatted in bulk, one series at a time, and yielded in
chunks so a 2000-service scenario never sits in memory as text.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from correlator.generator.topology import Node, Topology
from correlator.generator.traffic import F64, Pod, Result, Sim, ncdf

__all__ = ["SERVICEGRAPH_BUCKETS", "SPANMETRICS_BUCKETS", "metric_lines"]

#: The OpenTelemetry spanmetrics/servicegraph connectors' default explicit buckets.
SPANMETRICS_BUCKETS = (
    0.002,
    0.004,
    0.006,
    0.008,
    0.01,
    0.05,
    0.1,
    0.2,
    0.4,
    0.8,
    1.0,
    1.4,
    2.0,
    5.0,
    10.0,
    15.0,
)
#: Tempo metrics-generator's default service-graph buckets.
SERVICEGRAPH_BUCKETS = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8)
I64 = npt.NDArray[np.int64]


class _Emitter:
    def __init__(self, sim: Sim, res: Result, seed: int, namespace_of: dict[int, str]) -> None:
        self.sim, self.res, self.topo = sim, res, sim.topo
        self.rng = np.random.default_rng([seed, 7])
        self.t = sim.steps
        self.step = sim.step
        self.ts = [str(int(x)) for x in sim.ts]
        self.ok = ~sim.gaps
        self.ns = namespace_of
        self.routed = np.zeros((len(self.topo.nodes), self.t))
        for p in sim.pods:
            self.routed[p.service] += p.ready

    # --- formatting ------------------------------------------------------------
    def series(self, name: str, labels: str, values: list[str], mask: npt.NDArray[np.bool_]) -> str:
        pre = f"{name}{{{labels}}} "
        ts = self.ts
        return "".join(
            [pre + values[k] + " " + ts[k] + "\n" for k in np.flatnonzero(mask & self.ok).tolist()]
        )

    def hist(
        self,
        name: str,
        labels: str,
        cum: I64,
        count: I64,
        total: F64,
        mask: npt.NDArray[np.bool_],
        bounds: tuple[float, ...],
    ) -> str:
        """One histogram labelset: per step its buckets, count and sum together."""
        les = [repr(b) for b in bounds] + ["+Inf"]
        pres = [f'{name}_bucket{{{labels},le="{le}"}} ' for le in les]
        cpre = f"{name}_count{{{labels}}} "
        spre = f"{name}_sum{{{labels}}} "
        cols = [list(map(str, row)) for row in cum.tolist()]
        cnt = list(map(str, count.tolist()))
        sums = list(map(str, np.round(total, 3).tolist()))
        ts = self.ts
        out: list[str] = []
        nb = len(pres)
        for k in np.flatnonzero(mask & self.ok).tolist():
            tk = " " + ts[k] + "\n"
            for b in range(nb):
                out.append(pres[b] + cols[b][k] + tk)
            out.append(cpre + cnt[k] + tk)
            out.append(spre + sums[k] + tk)
        return "".join(out)

    # --- helpers -----------------------------------------------------------------
    def counts(self, rate: F64) -> I64:
        out: I64 = self.rng.poisson(np.maximum(rate, 0) * self.step).astype(np.int64)
        return out

    def start_offset(self, rate: float) -> int:
        """Counts accumulated before the window (the collector's uptime: minutes to an hour)."""
        return int(self.rng.poisson(max(rate, 0.0) * float(self.rng.uniform(60, 3600))))

    def buckets(self, n: I64, median: F64, sigma: float, bounds: tuple[float, ...]) -> I64:
        """Cumulative bucket counts for ``n`` lognormal observations per step."""
        le = np.array(bounds)
        z = (np.log(le)[:, None] - np.log(np.maximum(median, 1e-7))[None, :]) / sigma
        cdf = ncdf(z)
        inc = np.floor(cdf * n[None, :] + 0.5).astype(np.int64)
        inc = np.minimum(np.maximum.accumulate(inc, axis=0), n[None, :])
        out: I64 = np.vstack([inc, n[None, :]])
        return out

    def hist_series(
        self,
        name: str,
        labels: str,
        rate: F64,
        median: F64,
        sigma: float,
        mask: npt.NDArray[np.bool_],
        errors: F64 | None = None,
        bounds: tuple[float, ...] = SPANMETRICS_BUCKETS,
    ) -> str:
        n = self.counts(rate)
        if errors is not None:
            n = self.rng.binomial(n, np.clip(errors, 0, 1)).astype(np.int64)
        inc = self.buckets(n, median, sigma, bounds)
        off = self.start_offset(float(rate[0]) * (float(errors[0]) if errors is not None else 1.0))
        base = self.buckets(np.array([off], dtype=np.int64), median[:1], sigma, bounds)[:, 0]
        cum = np.cumsum(inc, axis=1) + base[:, None]
        mean = median * math.exp(sigma**2 / 2) * self.rng.lognormal(0, 0.05, self.t)
        total = np.cumsum(n * mean) + off * float(median[0]) * math.exp(sigma**2 / 2)
        first = np.argmax(cum[-1] > 0) if cum[-1, -1] > 0 else self.t
        m = mask & (np.arange(self.t) >= first)
        return self.hist(name, labels, cum, cum[-1], total, m, bounds)


def metric_lines(sim: Sim, res: Result, seed: int, namespace_of: dict[int, str]) -> Iterator[str]:
    """The whole ``metrics.om`` as chunks of complete lines, ending with ``# EOF``."""
    em = _Emitter(sim, res, seed, namespace_of)
    yield from _spanmetrics(em)
    yield from _servicegraph(em)
    yield from _cadvisor(em)
    yield from _ksm(em)
    yield from _postgres(em)
    yield from _up_and_build(em)
    yield "# EOF\n"


def _services(topo: Topology) -> list[Node]:
    return topo.services()


def _spanmetrics(em: _Emitter) -> Iterator[str]:
    topo, res, t = em.topo, em.res, em.t
    allmask = np.ones(t, dtype=bool)
    med = res.median()
    yield "# TYPE traces_span_metrics_calls counter\n"
    yield "# HELP traces_span_metrics_calls Number of spans (OpenTelemetry spanmetrics connector)\n"
    cache: dict[int, tuple[I64, I64]] = {}
    for node in _services(topo):
        i = node.index
        n = em.counts(res.rate[i])
        err = em.rng.binomial(n, np.clip(res.total_err[i], 0, 1)).astype(np.int64)
        cache[i] = (n, err)
        lab = f'service_name="{node.id}",span_name="{node.span_name}",span_kind="SPAN_KIND_SERVER"'
        ok_cum = np.cumsum(n - err) + em.start_offset(float(res.rate[i, 0]))
        err_cum = np.cumsum(err) + em.start_offset(float(res.rate[i, 0] * res.total_err[i, 0]))
        yield em.series(
            "traces_span_metrics_calls_total",
            lab + ',status_code="STATUS_CODE_UNSET"',
            list(map(str, ok_cum.tolist())),
            allmask,
        )
        first = int(np.argmax(err_cum > 0)) if err_cum[-1] > 0 else t
        yield em.series(
            "traces_span_metrics_calls_total",
            lab + ',status_code="STATUS_CODE_ERROR"',
            list(map(str, err_cum.tolist())),
            np.arange(t) >= first,
        )
    yield "# TYPE traces_span_metrics_duration_seconds histogram\n"
    yield "# HELP traces_span_metrics_duration_seconds Span durations (OpenTelemetry spanmetrics connector)\n"
    for node in _services(topo):
        i = node.index
        lab = f'service_name="{node.id}",span_name="{node.span_name}",span_kind="SPAN_KIND_SERVER"'
        ok_rate = res.rate[i] * (1 - res.total_err[i])
        yield em.hist_series(
            "traces_span_metrics_duration_seconds",
            lab + ',status_code="STATUS_CODE_UNSET"',
            ok_rate,
            med[i],
            float(res.sigma[i]),
            allmask,
        )
        # Failed requests get no duration histogram of their own: it would double the
        # histogram volume of every bundle for a signal the investigator reads from the
        # calls counter (and the library must stay small).


def _conn_type(node: Node) -> str:
    return {"database": "database", "cache": "database", "external": "virtual_node"}.get(
        node.kind, ""
    )


def _servicegraph(em: _Emitter) -> Iterator[str]:
    topo, res, t = em.topo, em.res, em.t
    allmask = np.ones(t, dtype=bool)
    labs = {}
    for e in topo.edges:
        src, dst = topo.nodes[e.src], topo.nodes[e.dst]
        labs[e.index] = f'client="{src.id}",server="{dst.id}",connection_type="{_conn_type(dst)}"'
    yield "# TYPE traces_service_graph_request counter\n"
    yield "# HELP traces_service_graph_request Requests between two nodes (OpenTelemetry servicegraph connector)\n"
    fails: dict[int, I64] = {}
    for e in topo.edges:
        n = em.counts(res.edge_rate[e.index])
        f = em.rng.binomial(n, np.clip(res.edge_fail[e.index], 0, 1)).astype(np.int64)
        fails[e.index] = f
        cum = np.cumsum(n) + em.start_offset(float(res.edge_rate[e.index, 0]))
        yield em.series(
            "traces_service_graph_request_total",
            labs[e.index],
            list(map(str, cum.tolist())),
            allmask,
        )
    yield "# TYPE traces_service_graph_request_failed counter\n"
    yield "# HELP traces_service_graph_request_failed Failed requests between two nodes\n"
    for e in topo.edges:
        f = fails[e.index]
        cum = np.cumsum(f) + em.start_offset(
            float(res.edge_rate[e.index, 0] * res.edge_fail[e.index, 0])
        )
        first = int(np.argmax(cum > 0)) if cum[-1] > 0 else t
        yield em.series(
            "traces_service_graph_request_failed_total",
            labs[e.index],
            list(map(str, cum.tolist())),
            np.arange(t) >= first,
        )
    yield "# TYPE traces_service_graph_request_server_seconds histogram\n"
    yield "# HELP traces_service_graph_request_server_seconds Server-side duration of requests between two nodes\n"
    for e in topo.edges:
        dst = topo.nodes[e.dst]
        sig = float(res.sigma[e.dst])
        median = res.edge_server_mean[e.index] / math.exp(sig**2 / 2)
        yield em.hist_series(
            "traces_service_graph_request_server_seconds",
            labs[e.index],
            res.edge_rate[e.index],
            median,
            sig,
            allmask,
            bounds=SERVICEGRAPH_BUCKETS,
        )


def _pod_labels(em: _Emitter, p: Pod, node: Node, with_node: bool = True) -> str:
    lab = f'namespace="{em.ns[p.service]}",pod="{p.name}",container="{node.id}"'
    return lab + (f',node="{p.node}"' if with_node else "")


def _alive(em: _Emitter, p: Pod) -> npt.NDArray[np.bool_]:
    out: npt.NDArray[np.bool_] = p.alive(em.t)
    return out


def _segments_cumsum(inc: F64, restarts: list[int], offset: float) -> F64:
    """Cumulative sum that restarts from zero at each restart step."""
    cum = np.cumsum(inc) + offset
    for r in sorted(restarts):
        if 0 < r + 1 < len(cum):
            cum[r + 1 :] -= cum[r]
    return cum


def _cadvisor(em: _Emitter) -> Iterator[str]:
    topo, res, sim, t = em.topo, em.res, em.sim, em.t
    k = np.arange(t)
    cpu: dict[str, F64] = {}
    thr: dict[str, F64] = {}
    for p in sim.pods:
        node = topo.nodes[p.service]
        share = np.where(
            em.routed[p.service] > 0, p.ready / np.maximum(em.routed[p.service], 1), 0.0
        )
        cap = node.cpu_limit * sim.cap_mult[p.service]
        demand = res.rate[p.service] * share * sim.cpu_per_req[p.service]
        used = np.minimum(demand, cap) * em.rng.lognormal(0, 0.06, t) + 0.004
        gc = np.clip(p.lat_mult - 1, 0, 4) * 0.1 * node.cpu_limit
        cpu[p.name] = used + gc
        rho = demand / np.maximum(cap, 1e-6)
        thr[p.name] = (
            10.0 * (np.clip((rho - 0.55) / 0.45, 0, 1) ** 2 + 0.004) * em.rng.lognormal(0, 0.1, t)
        )
    yield "# TYPE container_cpu_usage_seconds counter\n"
    yield "# HELP container_cpu_usage_seconds Cumulative cpu time consumed in seconds (cAdvisor)\n"
    for p in sim.pods:
        node = topo.nodes[p.service]
        off = (
            float(cpu[p.name][0]) * float(em.rng.uniform(3600, 3 * 86400)) if p.start == 0 else 0.0
        )
        cum = _segments_cumsum(cpu[p.name] * em.step, p.restarts, off)
        yield em.series(
            "container_cpu_usage_seconds_total",
            _pod_labels(em, p, node),
            list(map(str, np.round(cum, 3).tolist())),
            _alive(em, p) & p.scraped,
        )
    yield "# TYPE container_cpu_cfs_throttled_periods counter\n"
    yield "# HELP container_cpu_cfs_throttled_periods Number of throttled period intervals (cAdvisor)\n"
    for p in sim.pods:
        node = topo.nodes[p.service]
        off = float(thr[p.name][0]) * float(em.rng.uniform(3600, 86400)) if p.start == 0 else 0.0
        cum = _segments_cumsum(thr[p.name] * em.step, p.restarts, off)
        yield em.series(
            "container_cpu_cfs_throttled_periods_total",
            _pod_labels(em, p, node),
            list(map(str, np.floor(cum).astype(np.int64).tolist())),
            _alive(em, p) & p.scraped,
        )
    yield "# TYPE container_memory_working_set_bytes gauge\n"
    yield "# HELP container_memory_working_set_bytes Current working set in bytes (cAdvisor)\n"
    for p in sim.pods:
        node = topo.nodes[p.service]
        base = node.mem_limit * node.mem_base_frac * float(em.rng.uniform(0.9, 1.1))
        warm = np.clip((k - p.start + 1) / 20.0, 0.55, 1.0)
        drift = np.cumsum(em.rng.normal(0, 0.004, t))
        mem = base * warm * (1 + drift) * em.rng.lognormal(0, 0.01, t)
        if p.mem is not None:
            mem = p.mem
        mask = _alive(em, p) & p.scraped & ~np.isnan(mem)
        vals = list(map(str, np.nan_to_num(np.round(mem)).astype(np.int64).tolist()))
        yield em.series("container_memory_working_set_bytes", _pod_labels(em, p, node), vals, mask)
    yield "# TYPE container_oom_events counter\n"
    yield "# HELP container_oom_events Count of out of memory events observed for the container (cAdvisor)\n"
    for p in sim.pods:
        node = topo.nodes[p.service]
        inc = np.zeros(t)
        for o in p.ooms:
            inc[o] += 1
        cum = np.cumsum(inc).astype(np.int64)
        yield em.series(
            "container_oom_events_total",
            _pod_labels(em, p, node),
            list(map(str, cum.tolist())),
            _alive(em, p) & p.scraped,
        )


def _ksm(em: _Emitter) -> Iterator[str]:
    topo, sim, t = em.topo, em.sim, em.t
    k = np.arange(t)
    yield "# TYPE kube_pod_container_status_restarts counter\n"
    yield "# HELP kube_pod_container_status_restarts The number of container restarts per container.\n"
    for p in sim.pods:
        node = topo.nodes[p.service]
        inc = np.zeros(t)
        for r in p.restarts:
            if r + 1 < t:
                inc[r + 1] += 1
        cum = np.cumsum(inc).astype(np.int64)
        yield em.series(
            "kube_pod_container_status_restarts_total",
            _pod_labels(em, p, node, False),
            list(map(str, cum.tolist())),
            _alive(em, p),
        )
    yield "# TYPE kube_pod_container_status_last_terminated_reason gauge\n"
    yield "# HELP kube_pod_container_status_last_terminated_reason Describes the last reason the container was in terminated state.\n"
    one = ["1"] * t
    for p in sim.pods:
        if not p.ooms:
            continue
        node = topo.nodes[p.service]
        lab = _pod_labels(em, p, node, False) + ',reason="OOMKilled"'
        yield em.series(
            "kube_pod_container_status_last_terminated_reason",
            lab,
            one,
            _alive(em, p) & (k > min(p.ooms)),
        )
    yield "# TYPE kube_pod_container_resource_limits gauge\n"
    yield "# HELP kube_pod_container_resource_limits The number of requested limit resource by a container.\n"
    for p in sim.pods:
        node = topo.nodes[p.service]
        lab = _pod_labels(em, p, node)
        yield em.series(
            "kube_pod_container_resource_limits",
            lab + ',resource="memory",unit="byte"',
            [str(int(node.mem_limit))] * t,
            _alive(em, p),
        )
        yield em.series(
            "kube_pod_container_resource_limits",
            lab + ',resource="cpu",unit="core"',
            [repr(node.cpu_limit)] * t,
            _alive(em, p),
        )
    yield "# TYPE kube_pod_status_ready gauge\n"
    yield "# HELP kube_pod_status_ready Describes whether the pod is ready to serve requests.\n"
    for p in sim.pods:
        node = topo.nodes[p.service]
        lab = f'namespace="{em.ns[p.service]}",pod="{p.name}"'
        ready = p.ready
        yield em.series(
            "kube_pod_status_ready",
            lab + ',condition="true"',
            ["1" if r else "0" for r in ready.tolist()],
            _alive(em, p),
        )
        yield em.series(
            "kube_pod_status_ready",
            lab + ',condition="false"',
            ["0" if r else "1" for r in ready.tolist()],
            _alive(em, p),
        )
        yield em.series(
            "kube_pod_status_ready", lab + ',condition="unknown"', ["0"] * t, _alive(em, p)
        )
    yield "# TYPE kube_pod_info gauge\n"
    yield "# HELP kube_pod_info Information about pod.\n"
    for p in sim.pods:
        node = topo.nodes[p.service]
        host_ip = p.node.split(".")[0][3:].replace("-", ".")
        lab = (
            f'namespace="{em.ns[p.service]}",pod="{p.name}",node="{p.node}",host_ip="{host_ip}",'
            f'created_by_kind="ReplicaSet",created_by_name="{node.id}-{p.rs_hash}"'
        )
        yield em.series("kube_pod_info", lab, one, _alive(em, p))
    yield "# TYPE kube_deployment_metadata_generation gauge\n"
    yield "# HELP kube_deployment_metadata_generation Sequence number representing a specific generation of the desired state.\n"
    allmask = np.ones(t, dtype=bool)
    for node in topo.services():
        gen = np.zeros(t, dtype=np.int64)
        for step, g in sim.generation[node.index]:
            gen[step:] = g
        yield em.series(
            "kube_deployment_metadata_generation",
            f'namespace="{em.ns[node.index]}",deployment="{node.id}"',
            list(map(str, gen.tolist())),
            allmask,
        )
    yield "# TYPE kube_node_labels gauge\n"
    yield "# HELP kube_node_labels Kubernetes labels converted to Prometheus labels.\n"
    for name, zone in sorted(topo.k8s_nodes.items()):
        lab = (
            f'node="{name}",label_topology_kubernetes_io_zone="{zone}",'
            f'label_topology_kubernetes_io_region="{topo.region}",label_kubernetes_io_hostname="{name}"'
        )
        yield em.series("kube_node_labels", lab, one, allmask)
    yield "# TYPE kube_node_status_condition gauge\n"
    yield "# HELP kube_node_status_condition The condition of a cluster node.\n"
    for name in sorted(topo.k8s_nodes):
        down = sim.node_down.get(name)
        bad = (k >= down + 3) if down is not None else np.zeros(t, dtype=bool)
        for status, vals in (
            ("true", ["0" if b else "1" for b in bad.tolist()]),
            ("false", ["0"] * t),
            ("unknown", ["1" if b else "0" for b in bad.tolist()]),
        ):
            yield em.series(
                "kube_node_status_condition",
                f'node="{name}",condition="Ready",status="{status}"',
                vals,
                allmask,
            )


def _postgres(em: _Emitter) -> Iterator[str]:
    topo, res, sim, t = em.topo, em.res, em.sim, em.t
    dbs = [n for n in topo.nodes if n.kind == "database"]
    if not dbs:
        return
    allmask = np.ones(t, dtype=bool)

    def lab(db: Node) -> str:
        return f'service="{db.id}",job="postgres-exporter",instance="{db.id}:9187"'

    def datname(db: Node) -> str:
        return db.id.removesuffix("-db").replace("-", "_")

    yield "# TYPE pg_stat_activity_count gauge\n"
    yield "# HELP pg_stat_activity_count number of connections in this state\n"
    for db in dbs:
        i = db.index
        active = np.round(
            np.maximum(0, res.db_active[i] * em.rng.lognormal(0, 0.15, t) + em.rng.poisson(1.0, t))
        )
        idle = np.round(res.db_idle[i] * em.rng.lognormal(0, 0.03, t))
        fault = sim.db_tx[i] > 0
        idle_tx = np.round(np.where(fault, 0.12 * active, 0) + em.rng.poisson(0.4, t))
        cap = db.max_connections - 3
        total = active + idle + idle_tx
        scale = np.where(total > cap, cap / np.maximum(total, 1), 1.0)
        for state, arr in (("active", active), ("idle", idle), ("idle in transaction", idle_tx)):
            vals = list(map(str, np.floor(arr * scale).astype(np.int64).tolist()))
            yield em.series(
                "pg_stat_activity_count",
                f'{lab(db)},datname="{datname(db)}",state="{state}"',
                vals,
                allmask,
            )
    yield "# TYPE pg_settings_max_connections gauge\n"
    yield "# HELP pg_settings_max_connections Sets the maximum number of concurrent connections.\n"
    for db in dbs:
        yield em.series(
            "pg_settings_max_connections", lab(db), [str(db.max_connections)] * t, allmask
        )
    yield "# TYPE pg_stat_activity_max_tx_duration gauge\n"
    yield "# HELP pg_stat_activity_max_tx_duration max duration in seconds any active transaction has been running\n"
    for db in dbs:
        i = db.index
        base = em.rng.exponential(0.4, t) + 0.02
        vals = list(map(str, np.round(base + sim.db_tx[i], 3).tolist()))
        yield em.series(
            "pg_stat_activity_max_tx_duration",
            f'{lab(db)},datname="{datname(db)}",state="active"',
            vals,
            allmask,
        )
    yield "# TYPE pg_locks_count gauge\n"
    yield "# HELP pg_locks_count Number of locks\n"
    for db in dbs:
        i = db.index
        active = res.db_active[i] + res.db_waiting[i] * 0.2
        fault = sim.db_tx[i] > 0
        modes = {
            "accesssharelock": active * 1.6 + 2,
            "rowexclusivelock": active * 0.7 + 1,
            "sharelock": np.where(fault, active * 0.5, 0.05),
            "exclusivelock": np.where(fault, active * 0.1, 0.02),
            "accessexclusivelock": np.where(fault, 1.0, 0.0),
            "sharerowexclusivelock": np.zeros(t),
        }
        for mode, arr in modes.items():
            vals = list(map(str, em.rng.poisson(np.maximum(arr, 0)).astype(np.int64).tolist()))
            yield em.series(
                "pg_locks_count", f'{lab(db)},datname="{datname(db)}",mode="{mode}"', vals, allmask
            )


def _up_and_build(em: _Emitter) -> Iterator[str]:
    topo, sim, t = em.topo, em.sim, em.t
    yield "# TYPE up gauge\n"
    yield "# HELP up Whether the scrape target is up\n"
    for p in sim.pods:
        node = topo.nodes[p.service]
        ip = f"10.{1 + hash_ip(p.name) % 250}.{hash_ip(p.name + 'x') % 250}.{hash_ip(p.name + 'y') % 250}"
        up = np.where(p.scraped | (p.up == 0), p.up, 0.0)
        yield em.series(
            "up",
            f'job="{node.id}",instance="{ip}:8080",namespace="{em.ns[p.service]}",pod="{p.name}"',
            ["1" if u > 0 else "0" for u in up.tolist()],
            _alive(em, p),
        )
    allmask = np.ones(t, dtype=bool)
    for db in (n for n in topo.nodes if n.kind == "database"):
        yield em.series(
            "up",
            f'job="postgres-exporter",instance="{db.id}:9187",service="{db.id}"',
            ["1"] * t,
            allmask,
        )
    yield "# TYPE app_build_info gauge\n"
    yield "# HELP app_build_info Build information of the running application\n"
    one = ["1"] * t
    for p in sim.pods:
        node = topo.nodes[p.service]
        lab = (
            f'service="{node.id}",version="{p.version}",revision="{p.revision}",'
            f'namespace="{em.ns[p.service]}",pod="{p.name}"'
        )
        yield em.series("app_build_info", lab, one, _alive(em, p) & p.scraped)


def hash_ip(text: str) -> int:
    """A stable small hash (Python's ``hash`` is salted per process)."""
    h = 2166136261
    for ch in text.encode():
        h = ((h ^ ch) * 16777619) & 0xFFFFFFFF
    return h

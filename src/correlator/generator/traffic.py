"""Traffic through the call graph, one 15-second scrape step at a time (vectorised).

Rates flow top-down (entry traffic with a daily shape and noise, times calls per
request and retries); latency and errors flow bottom-up: a service's latency is
its own processing time plus the latency of its synchronous calls, and a failed
critical call fails the caller unless a retry succeeds. Callee effects reach a
caller after a per-edge lag (connection pools filling, retries and timeouts
backing up), so the cause moves first and its callers follow.

Faults and noise do not touch the model directly: they write *effect* arrays
(latency multipliers, added error probability, lost capacity, extra entry
traffic, per-edge delay) and pod lifecycles into a :class:`Sim` before
:func:`simulate` runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from correlator.generator.topology import Node, PodSpec, Topology

__all__ = ["STEP", "Pod", "Reason", "Result", "Sim", "ncdf", "simulate"]

STEP = 15
"""Scrape interval, seconds."""

F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]


def _erf(x: F64) -> F64:
    """Abramowitz-Stegun 7.1.26 (|error| < 1.5e-7), vectorised."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    out: F64 = sign * (1.0 - poly * np.exp(-a * a))
    return out


def ncdf(x: F64) -> F64:
    """Standard normal CDF."""
    out: F64 = 0.5 * (1.0 + _erf(np.asarray(x, dtype=np.float64) / math.sqrt(2.0)))
    return out


@dataclass
class Pod:
    """A pod's life in the window: when it exists, is ready, fails, restarts."""

    name: str
    service: int
    rs_hash: str
    node: str
    zone: str
    version: str
    revision: str
    start: int
    end: int
    ready: B
    err_add: F64
    lat_mult: F64
    scraped: B
    """cAdvisor/app scrapes succeed (False: gap, or the node is gone)."""
    up: F64
    mem: F64 | None = None
    """Working-set override (memory leak); None: the normal shape."""
    restarts: list[int] = field(default_factory=list)
    ooms: list[int] = field(default_factory=list)

    def alive(self, t: int) -> np.ndarray:
        """Boolean mask of the steps during which the pod object exists."""
        k = np.arange(t)
        return (k >= self.start) & (k < self.end)


@dataclass(frozen=True)
class Reason:
    """Why a node's requests fail or slow during [start, end): drives exceptions and logs."""

    node: int
    start: int
    end: int
    kind: str
    """deploy_bug, db_saturated, oom, zone_down, dep_down, overload, code_bug, slow, gc."""
    pods: tuple[str, ...] = ()
    """Only these pods (empty: all)."""
    detail: str = ""


@dataclass
class Sim:
    """The system plus everything faults and noise changed, before simulation."""

    topo: Topology
    ts: F64
    rng: np.random.Generator
    pods: list[Pod] = field(default_factory=list)
    rate_mult: F64 = field(init=False)
    lat_mult: F64 = field(init=False)
    err_add: F64 = field(init=False)
    cap_mult: F64 = field(init=False)
    edge_lat_add: F64 = field(init=False)
    edge_err_add: F64 = field(init=False)
    db_tx: F64 = field(init=False)
    """Extra longest-transaction age (s) per node (databases)."""
    gaps: B = field(init=False)
    """Global scrape gaps (True: no sample at this step)."""
    generation: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    """Service -> [(step, generation)] changes."""
    reasons: list[Reason] = field(default_factory=list)
    events: list[dict[str, object]] = field(default_factory=list)
    """Timeline entries: {step, kind, service, text}."""
    cpu_per_req: F64 = field(init=False)
    rho0: F64 = field(init=False)
    idle_conns: F64 = field(init=False)
    noise: F64 = field(init=False)
    base_rate: F64 = field(init=False)
    node_down: dict[str, int] = field(default_factory=dict)
    """Kubernetes node -> step it went NotReady."""
    step: int = STEP
    """Seconds between two points (the scrape interval)."""
    wild: dict[str, Any] = field(default_factory=dict)
    """Effects only wild scenarios draw (CPU hogs, a slow pod, handled exceptions, bad
    responses, GC pauses, cron jobs); empty otherwise, so classic output is unchanged."""

    def __post_init__(self) -> None:
        n, t, e = len(self.topo.nodes), len(self.ts), len(self.topo.edges)
        self.rate_mult = np.ones((n, t))
        self.lat_mult = np.ones((n, t))
        self.err_add = np.zeros((n, t))
        self.cap_mult = np.ones((n, t))
        self.edge_lat_add = np.zeros((e, t))
        self.edge_err_add = np.zeros((e, t))
        self.db_tx = np.zeros((n, t))
        self.gaps = np.zeros(t, dtype=bool)
        for spec in self.topo.pods:
            self.pods.append(self.new_pod(spec, 0, t))
        for node in self.topo.services():
            self.generation[node.index] = [(0, node.generation)]
        self._calibrate()

    @property
    def steps(self) -> int:
        """Number of scrape steps."""
        return len(self.ts)

    def new_pod(
        self,
        spec: PodSpec,
        start: int,
        end: int,
        version: str | None = None,
        revision: str | None = None,
    ) -> Pod:
        """A pod alive in [start, end), ready one step after it starts (or at once at 0)."""
        t = self.steps
        node = self.topo.nodes[spec.service]
        k = np.arange(t)
        ready = (k >= (start + (0 if start == 0 else self.steps_for(2)))) & (k < end)
        return Pod(
            spec.name,
            spec.service,
            spec.rs_hash,
            spec.node,
            spec.zone,
            version or node.version,
            revision or node.revision,
            start,
            end,
            ready,
            np.zeros(t),
            np.ones(t),
            (k >= start) & (k < end),
            ((k >= start) & (k < end)).astype(np.float64),
        )

    def service_pods(self, index: int) -> list[Pod]:
        """Every pod (old and new) of a service."""
        return [p for p in self.pods if p.service == index]

    def steps_for(self, n: int) -> int:
        """How many steps last as long as ``n`` steps of 15 s (faults are written in those)."""
        if self.step == STEP:
            return n
        return max(1, round(n * STEP / self.step))

    def daily(self) -> F64:
        """Daily traffic shape (peak mid-afternoon local time), plus slow noise."""
        offset = {"eu-west-1": 0, "eu-central-1": 1, "us-east-1": -5, "ap-southeast-2": 10}
        hours = (self.ts / 3600.0 + offset.get(self.topo.region, 0)) % 24
        shape: F64 = 1.0 + 0.4 * np.sin(2 * np.pi * (hours - 10.0) / 24.0)
        return shape

    def _entry_noise(self) -> F64:
        """AR(1) multiplicative noise per entry service (a few percent)."""
        n, t = len(self.topo.nodes), self.steps
        out = np.ones((n, t))
        for node in self.topo.entries():
            eps = self.rng.normal(0.0, 0.025, t)
            x = np.zeros(t)
            for k in range(1, t):
                x[k] = 0.85 * x[k - 1] + eps[k]
            out[node.index] = 1.0 + x
        return out

    def _calibrate(self) -> None:
        """Pick CPU cost per request so that baseline utilisation is 20-45%."""
        self.noise = self._entry_noise()
        base = base_rates(
            self.topo, self.daily() * self.noise, np.ones((len(self.topo.edges), self.steps))
        )
        head = max(1, min(self.steps, 120))
        mean = base[:, :head].mean(axis=1)
        n = len(self.topo.nodes)
        self.cpu_per_req = np.zeros(n)
        self.rho0 = np.full(n, 0.3)
        self.idle_conns = np.zeros(n)
        for node in self.topo.nodes:
            if node.kind != "service" or mean[node.index] <= 0:
                continue
            rho = float(self.rng.uniform(0.2, 0.45))
            self.rho0[node.index] = rho
            self.cpu_per_req[node.index] = rho * node.replicas * node.cpu_limit / mean[node.index]
        for node in self.topo.nodes:
            if node.kind == "database":
                callers = [self.topo.edges[e].src for e in self.topo.in_edges[node.index]]
                pods = sum(self.topo.nodes[c].replicas for c in callers)
                self.idle_conns[node.index] = min(0.35 * node.max_connections, 4.0 * pods + 3)
        self.base_rate = base


def base_rates(
    topo: Topology, entry_shape: F64, attempts: F64, rate_mult: F64 | None = None
) -> F64:
    """Requests/s each node serves: entry traffic times calls per request, top-down."""
    n, t = entry_shape.shape
    rate = np.zeros((n, t))
    for node in topo.entries():
        rate[node.index] = node.base_rate * entry_shape[node.index]
        if rate_mult is not None:
            rate[node.index] *= rate_mult[node.index]
    for i in topo.order():
        for ei in topo.out_edges[i]:
            e = topo.edges[ei]
            rate[e.dst] += rate[i] * e.calls * attempts[ei]
    return rate


def shift(x: F64, lag: int) -> F64:
    """``x`` delayed by ``lag`` steps (the first value repeated)."""
    if lag <= 0:
        return x
    out: F64 = np.concatenate([np.full(lag, x[0]), x[:-lag]])
    return out


@dataclass
class Result:
    """What the simulation computed, per node/edge and step."""

    rate: F64
    own_median: F64
    own_err: F64
    total_mean: F64
    total_err: F64
    sigma: F64
    rho: F64
    ready: F64
    edge_rate: F64
    edge_fail: F64
    """Per-attempt failure probability of an edge."""
    edge_server_mean: F64
    db_active: F64
    db_idle: F64
    db_waiting: F64

    def median(self) -> F64:
        """Median end-to-end server latency per node."""
        out: F64 = self.total_mean / np.exp(self.sigma[:, None] ** 2 / 2)
        return out

    def p95(self) -> F64:
        """p95 server latency per node."""
        out: F64 = self.median() * np.exp(1.645 * self.sigma[:, None])
        return out


def simulate(sim: Sim) -> Result:
    """Run the model over every step (two passes so retries add load)."""
    topo, t = sim.topo, sim.steps
    n, e_count = len(topo.nodes), len(topo.edges)
    ready = np.zeros((n, t))
    err_sum = np.zeros((n, t))
    lat_sum = np.zeros((n, t))
    routed = np.zeros((n, t))
    for p in sim.pods:
        r = p.ready.astype(np.float64)
        routed[p.service] += r
        err_sum[p.service] += r * p.err_add
        lat_sum[p.service] += r * p.lat_mult
        ready[p.service] += r * (p.err_add < 0.99)
    pod_err = np.where(routed > 0, err_sum / np.maximum(routed, 1), 1.0)
    pod_lat = np.where(routed > 0, lat_sum / np.maximum(routed, 1), 1.0)
    sigma = np.array([node.sigma for node in topo.nodes])
    attempts = np.ones((e_count, t))
    shape = sim.daily() * sim.noise
    res: Result | None = None
    for _ in range(2):
        rate = base_rates(topo, shape, attempts, sim.rate_mult)
        own_med = np.zeros((n, t))
        own_err = np.zeros((n, t))
        rho = np.zeros((n, t))
        db_active = np.zeros((n, t))
        db_idle = np.zeros((n, t))
        db_wait = np.zeros((n, t))
        for node in topo.nodes:
            i = node.index
            if node.kind == "service":
                cap = np.maximum(ready[i], 0.0) * node.cpu_limit * sim.cap_mult[i]
                rho[i] = np.where(
                    cap > 0, rate[i] * sim.cpu_per_req[i] / np.maximum(cap, 1e-9), 5.0
                )
                r0 = min(sim.rho0[i], 0.9)
                load = (1 - r0) / (1 - np.clip(rho[i], 0, 0.96))
                shed = np.clip(1 - 1 / np.maximum(rho[i], 1e-9), 0, 1) * 0.9
                own_med[i] = node.median * sim.lat_mult[i] * pod_lat[i] * load
                base = np.clip(node.base_err + sim.err_add[i] + pod_err[i], 0, 1)
                own_err[i] = 1 - (1 - base) * (1 - shed)
            elif node.kind == "database":
                med = node.median * sim.lat_mult[i]
                demand = rate[i] * med * math.exp(node.sigma**2 / 2)
                idle0 = sim.idle_conns[i]
                avail = node.max_connections - 3 - 0.15 * idle0
                active = np.minimum(demand, avail)
                db_active[i] = active
                db_idle[i] = np.maximum(
                    0.15 * idle0, np.minimum(idle0, node.max_connections - 3 - active)
                )
                db_wait[i] = np.clip(demand - avail, 0, None)
                over = np.where(demand > avail, demand / np.maximum(avail, 1), 1.0)
                own_med[i] = med * np.minimum(over, 30.0)
                own_err[i] = np.clip(
                    np.where(demand > avail, 1 - avail / np.maximum(demand, 1e-9), 0.0)
                    + sim.err_add[i],
                    0,
                    1,
                )
            else:
                own_med[i] = node.median * sim.lat_mult[i]
                own_err[i] = np.clip(node.base_err + sim.err_add[i], 0, 1)
        total_mean = own_med * np.exp(sigma[:, None] ** 2 / 2)
        total_err = own_err.copy()
        edge_fail = np.zeros((e_count, t))
        edge_server = np.zeros((e_count, t))
        for i in reversed(topo.order()):
            if not topo.out_edges[i]:
                continue
            ok = 1 - own_err[i]
            extra = np.zeros(t)
            for ei in topo.out_edges[i]:
                e = topo.edges[ei]
                c = e.dst
                lc = shift(total_mean[c], e.lag)
                edge_server[ei] = lc
                lc = lc + e.net + sim.edge_lat_add[ei]
                ec = shift(total_err[c], e.lag)
                med_c = lc / math.exp(sigma[c] ** 2 / 2)
                p_to = 1 - ncdf((math.log(e.timeout) - np.log(np.maximum(med_c, 1e-6))) / sigma[c])
                p_att = np.clip(ec + (1 - ec) * p_to + sim.edge_err_add[ei], 0, 1)
                edge_fail[ei] = p_att
                tries = np.where(
                    p_att < 0.999,
                    (1 - p_att ** (e.retries + 1)) / np.maximum(1 - p_att, 1e-9),
                    e.retries + 1.0,
                )
                attempts[ei] = tries
                extra += e.calls * np.minimum(lc, e.timeout) * tries
                fail = p_att ** (e.retries + 1)
                ok = ok * (1 - min(e.calls, 1.0) * e.critical * fail)
            total_mean[i] = total_mean[i] + extra
            total_err[i] = np.clip(1 - ok, 0, 1)
        edge_rate = np.zeros((e_count, t))
        for ed in topo.edges:
            edge_rate[ed.index] = rate[ed.src] * ed.calls * attempts[ed.index]
        res = Result(
            rate,
            own_med,
            own_err,
            total_mean,
            total_err,
            sigma,
            rho,
            ready,
            edge_rate,
            edge_fail,
            edge_server,
            db_active,
            db_idle,
            db_wait,
        )
    assert res is not None
    return res


def node_of(topo: Topology, name: str) -> Node:
    """Shorthand for :meth:`Topology.by_id`."""
    return topo.by_id(name)

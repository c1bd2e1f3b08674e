"""Wild scenarios: conventions and faults drawn per seed, so the generator stops drawing
only what the investigator already knows.

A wild scenario varies, per seed, what real systems vary: the scrape interval (1, 15
or 60 s), how latency is exported (OpenTelemetry spanmetrics, the old and new
OpenTelemetry HTTP conventions, OpenTelemetry RPC, go-grpc-prometheus, Micrometer as
histogram or as summary with a ``quantile`` label), which label names the service
(``service``, ``service_name``, ``job`` or only the pod name), how cAdvisor labels its
series (per pod, or per ``container``/``container_name`` with no pod), which cAdvisor
memory and CFS families exist, low traffic, 5 to 60 minutes of baseline, runtime
metrics (JVM, Go, process) and unrelated noise that resolves (a spike, a GC pause, a
slow cron job). It also draws faults that only one or two modalities show (handled
exceptions, wrong return values only callers log, a delay on one pod), CPU saturation
by a stress process, and a network delay on a service's ingress. ``truth.visible_in``
names the modalities that can see the fault, checked against what the scenario's own
series, kept traces and logs carry (``api._seen_by``).

Conventions come from their own random stream (``seed`` and a constant), so drawing
them never disturbs the classic generator's stream.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from correlator.generator.faults import BUILTIN, Fault, _pick, _service_candidates, ramp
from correlator.generator.topology import Node, Topology
from correlator.generator.traffic import Reason, Sim, base_rates

__all__ = [
    "WILD_CAUSES",
    "WILD_FAULTS",
    "Conventions",
    "add_wild_noise",
    "apply_wild_fault",
    "draw_conventions",
    "settle",
    "style_of",
    "tweak_topology",
    "visible_in",
]

#: (cause, mode) pairs a wild scenario draws from; the six built-in causes keep their mode.
WILD_FAULTS: tuple[tuple[str, str], ...] = (
    *((c, "") for c in BUILTIN),
    ("cpu_saturation", "stress"),
    ("network_delay", "service"),
    ("network_delay", "pod"),
    ("code_fault", "exceptions"),
    ("code_fault", "wrong_value"),
)
WILD_CAUSES = ("cpu_saturation", "network_delay", "code_fault")
_ALL = ("metrics", "spans", "logs")
_VISIBLE: dict[tuple[str, str], tuple[str, ...]] = {
    ("cpu_saturation", "stress"): ("metrics", "spans"),
    ("network_delay", "service"): ("metrics", "spans"),
    ("network_delay", "pod"): ("spans",),
    ("code_fault", "exceptions"): ("spans", "logs"),
    ("code_fault", "wrong_value"): ("logs",),
}
LATENCY_STYLES = (
    "spanmetrics",
    "otel_http_old",
    "otel_http_new",
    "otel_rpc",
    "grpc",
    "micrometer",
    "mixed",
)
MEMORY_FAMILIES = (
    "container_memory_working_set_bytes",
    "container_memory_usage_bytes",
    "container_memory_rss",
    "container_memory_cache",
)
CFS_FAMILIES = (
    "container_cpu_cfs_periods_total",
    "container_cpu_cfs_throttled_periods_total",
    "container_cpu_cfs_throttled_seconds_total",
)


def visible_in(cause: str, mode: str) -> list[str]:
    """The modalities that can see a fault of ``cause``/``mode``."""
    return list(_VISIBLE.get((cause, mode), _ALL))


@dataclass(frozen=True)
class Conventions:
    """How one wild scenario's telemetry is exported (recorded in ``scenario.json``)."""

    interval: int
    """Scrape interval, seconds: 1, 15 or 60."""
    latency: str
    """One of LATENCY_STYLES (``mixed``: by language, as a polyglot system does)."""
    summary: bool
    """Micrometer timers published as summaries (``quantile`` label) rather than buckets."""
    identity: str
    """Label naming the service on application metrics: service, service_name, job, pod."""
    cadvisor: str
    """cAdvisor labels: ``pod`` (pod + container), ``container`` or ``container_name`` only."""
    memory: tuple[str, ...]
    cfs: tuple[str, ...]
    service_graph: bool
    client_metrics: bool
    ksm: bool
    postgres: bool
    runtime: bool
    low_traffic: str
    """none, some (a few services at 0.05-1 requests/s) or all (the whole system)."""
    baseline_s: int
    incident_s: int

    def to_json(self) -> dict[str, Any]:
        """The conventions as JSON-ready values."""
        out = asdict(self)
        out["memory"], out["cfs"] = list(self.memory), list(self.cfs)
        return out


def draw_conventions(seed: int, services: int) -> Conventions:
    """The conventions of wild scenario ``seed`` (deterministic)."""
    rng = np.random.default_rng([seed, 0x57494C44])
    # 1 s scrapes come from small systems (a shop demo at 1 s holds a few services)
    interval = int(rng.choice([1, 15, 15, 60, 60])) if services <= 15 else int(rng.choice([15, 60]))
    latency = str(rng.choice(LATENCY_STYLES))
    identity = str(rng.choice(["service", "service_name", "job", "pod"]))
    if latency == "spanmetrics":
        identity = "service_name"  # the connector always names it so
    n_mem = int(rng.integers(1, len(MEMORY_FAMILIES) + 1))
    memory = tuple(sorted(rng.choice(MEMORY_FAMILIES, size=n_mem, replace=False).tolist()))
    cfs = tuple(
        f for f in CFS_FAMILIES if rng.random() < 0.7 or f.endswith("throttled_periods_total")
    )
    if interval == 1:
        base_min, inc_min = rng.uniform(5, 8), rng.uniform(9, 11)
    elif interval == 15:
        base_min, inc_min = rng.uniform(5, 60), rng.uniform(15, 25)
    else:
        base_min, inc_min = rng.uniform(8, 60), rng.uniform(20, 30)
    low = str(rng.choice(["none", "none", "some", "some", "all"]))
    return Conventions(
        interval=interval,
        latency=latency,
        summary=bool(rng.random() < 0.5),
        identity=identity,
        cadvisor=str(rng.choice(["pod", "pod", "container", "container_name"])),
        memory=memory,
        cfs=cfs,
        # at 1 s only the application and cAdvisor are scraped that often
        service_graph=bool(rng.random() < 0.5) and interval > 1,
        client_metrics=bool(rng.random() < 0.7) and (interval > 1 or rng.random() < 0.3),
        ksm=bool(rng.random() < 0.6) and interval > 1,
        postgres=bool(rng.random() < 0.7) and interval > 1,
        runtime=bool(rng.random() < 0.75),
        low_traffic=low,
        baseline_s=int(base_min * 60) // interval * interval,
        incident_s=int(inc_min * 60) // interval * interval,
    )


def style_of(conv: Conventions, node: Node) -> str:
    """The latency convention of one service (``mixed`` goes by language)."""
    if conv.latency != "mixed":
        return conv.latency
    return {
        "java": "micrometer",
        "go": "grpc",
        "python": "otel_http_old",
        "node": "otel_http_new",
    }.get(node.lang, "otel_http_new")


def tweak_topology(topo: Topology, conv: Conventions, rng: np.random.Generator) -> None:
    """Low traffic: the whole system, or a few services reached by rare calls."""
    if conv.low_traffic == "none":
        return
    entries = topo.entries()
    if conv.low_traffic == "all":
        total = float(rng.uniform(0.5, 4.0))
        shares = rng.dirichlet(np.ones(len(entries)) * 2)
        for node, share in zip(entries, shares, strict=True):
            node.base_rate = max(0.1, total * float(share))
        return
    n, e = len(topo.nodes), len(topo.edges)
    rate = base_rates(topo, np.ones((n, 1)), np.ones((e, 1)))[:, 0]
    deep = [x for x in topo.services() if x.layer >= 2 and topo.in_edges[x.index]]
    picked = [deep[j] for j in rng.permutation(len(deep)).tolist()] if deep else []
    for node in picked[: int(rng.integers(1, 4))] if deep else []:
        want = float(rng.uniform(0.05, 1.0))
        scale = want / max(float(rate[node.index]), 1e-9)
        if scale < 1:
            for ei in topo.in_edges[node.index]:
                topo.edges[ei].calls *= scale


def apply_wild_fault(
    sim: Sim, cause: str, mode: str, s: float, sev: str, step: int, target: str | None
) -> Fault:
    """Write a wild-only fault into ``sim`` (the built-in six go through ``apply_fault``)."""
    fn = {
        ("cpu_saturation", "stress"): _cpu_saturation,
        ("network_delay", "service"): _ingress_delay,
        ("network_delay", "pod"): _pod_delay,
        ("code_fault", "exceptions"): _exceptions,
        ("code_fault", "wrong_value"): _wrong_value,
    }[(cause, mode)]
    return fn(sim, s, sev, step, target)


def _svc(sim: Sim, target: str | None, pool: list[Node] | None = None) -> Node:
    if target:
        return sim.topo.by_id(target)
    return _pick(sim.rng, pool or _service_candidates(sim))


def _cpu_saturation(sim: Sim, s: float, sev: str, step: int, target: str | None) -> Fault:
    """A stress process in the service's containers eats most of their CPU limit."""
    svc = _svc(sim, target)
    hog = float(np.clip((0.45 + 0.4 * s) * sim.rng.uniform(0.9, 1.1), 0.3, 0.9))
    r = ramp(sim.steps, step, sim.steps_for(2))
    sim.cap_mult[svc.index] *= 1 - hog * r
    sim.wild.setdefault("cpu_hog", {})[svc.index] = hog * r
    sim.reasons.append(Reason(svc.index, step, sim.steps, "slow", detail="cpu"))
    return Fault(
        "cpu_saturation",
        svc.id,
        step,
        sev,
        f"a stress process in {svc.id}'s containers burns {hog:.0%} of their CPU limit: CPU "
        "usage and throttling climb, requests queue and slow down",
        details={"mode": "stress", "cpu_hog": round(hog, 2)},
    )


def _called_services(sim: Sim) -> list[Node]:
    topo = sim.topo
    return [
        n
        for n in _service_candidates(sim)
        if any(topo.nodes[topo.edges[e].src].kind == "service" for e in topo.in_edges[n.index])
    ]


def _ingress_delay(sim: Sim, s: float, sev: str, step: int, target: str | None) -> Fault:
    """netem on the service's interface: its callers wait longer, its own spans do not."""
    topo, rng = sim.topo, sim.rng
    svc = _svc(sim, target, _called_services(sim))
    delay = (0.06 + 0.45 * s) * float(rng.uniform(0.8, 1.2))
    r = ramp(sim.steps, step, sim.steps_for(2))
    for ei in topo.in_edges[svc.index]:
        sim.edge_lat_add[ei] += delay * r * (1 + 0.1 * rng.standard_normal(sim.steps))
    callers = sorted({topo.nodes[topo.edges[e].src].id for e in topo.in_edges[svc.index]})
    sim.reasons.append(Reason(svc.index, step, sim.steps, "slow", detail="net"))
    return Fault(
        "network_delay",
        svc.id,
        step,
        sev,
        f"the network in front of {svc.id} adds ~{delay * 1000:.0f} ms to every call to it "
        f"(a netem delay on its interface): its callers ({', '.join(callers)}) see slower "
        f"calls, while {svc.id}'s own server-side latency does not move",
        details={"mode": "service", "delay_ms": round(delay * 1000)},
    )


def _pod_delay(sim: Sim, s: float, sev: str, step: int, target: str | None) -> Fault:
    """The same delay on one pod only: callers' spans to that pod show it, averages barely."""
    topo, rng = sim.topo, sim.rng
    pool = _called_services(sim)
    most = max((len(topo.pods_of(n.index)) for n in pool), default=0)
    svc = _svc(sim, target, [n for n in pool if len(topo.pods_of(n.index)) == most] or pool)
    pods = [p for p in sim.service_pods(svc.index) if p.start <= step < p.end]
    pod = pods[int(rng.integers(len(pods)))]
    delay = (0.15 + 0.6 * s) * float(rng.uniform(0.8, 1.2))
    r = ramp(sim.steps, step, sim.steps_for(1))
    sim.wild.setdefault("pod_delay", {})[pod.name] = delay * r
    # on average over the pods the callers see only a share of it; the traces replay it
    # per pod instead (see ``settle``)
    shares = sim.wild.setdefault("pod_delay_edges", {})
    for ei in topo.in_edges[svc.index]:
        shares[ei] = delay * r / max(len(pods), 1)
        sim.edge_lat_add[ei] += shares[ei]
    return Fault(
        "network_delay",
        svc.id,
        step,
        sev,
        f"one pod of {svc.id} ({pod.name}, of {len(pods)}) answers ~{delay * 1000:.0f} ms late "
        "(a netem delay on that pod): the callers' spans to it are slow, the service's "
        "averaged metrics barely move",
        details={"mode": "pod", "pod": pod.name, "delay_ms": round(delay * 1000)},
    )


_EXCEPTIONS = {
    "java": (
        "java.lang.IllegalStateException",
        "Discount rule 'SPRING25' has no currency for region HR",
    ),
    "go": ("*json.UnmarshalTypeError", "json: cannot unmarshal string into Go value of type int"),
    "python": ("KeyError", "'currency_code'"),
    "node": ("TypeError", "Cannot read properties of undefined (reading 'amount')"),
}


def _exceptions(sim: Sim, s: float, sev: str, step: int, target: str | None) -> Fault:
    """A handled exception in 1-5 % of requests: spans and logs only; the request succeeds."""
    svc = _svc(sim, target)
    share = float(np.clip((0.01 + 0.04 * s) * sim.rng.uniform(0.85, 1.15), 0.01, 0.05))
    exc = _EXCEPTIONS.get(svc.lang, _EXCEPTIONS["go"])
    sim.wild["exceptions"] = {"node": svc.index, "step": step, "share": share, "exc": exc}
    return Fault(
        "code_fault",
        svc.id,
        step,
        sev,
        f"{svc.id} throws {exc[0]} ({exc[1]}) on {share:.1%} of requests; the handler "
        "catches it and answers with a fallback, so error rates and latency barely move",
        details={"mode": "exceptions", "share": round(share, 4), "exception": exc[0]},
    )


def _wrong_value(sim: Sim, s: float, sev: str, step: int, target: str | None) -> Fault:
    """Wrong return values: the service's own spans are fine, its callers log the damage."""
    svc = _svc(sim, target, _called_services(sim))
    share = float(np.clip((0.04 + 0.25 * s) * sim.rng.uniform(0.8, 1.2), 0.03, 0.4))
    field_name = str(
        sim.rng.choice(["amount", "currency", "sku", "quantity", "shippingCost", "userId"])
    )
    sim.wild["wrong_value"] = {"node": svc.index, "step": step, "share": share, "field": field_name}
    callers = sorted(
        {sim.topo.nodes[sim.topo.edges[e].src].id for e in sim.topo.in_edges[svc.index]}
    )
    return Fault(
        "code_fault",
        svc.id,
        step,
        sev,
        f"{svc.id} returns wrong values ({field_name} missing or null) in {share:.0%} of its "
        f"answers with status 200; its callers ({', '.join(callers)}) log invalid responses",
        details={"mode": "wrong_value", "share": round(share, 3), "field": field_name},
    )


def settle(sim: Sim) -> None:
    """After the simulation: per-edge averages that traces replay per pod leave the edges."""
    for ei, share in sim.wild.get("pod_delay_edges", {}).items():
        sim.edge_lat_add[ei] -= share


def add_wild_noise(sim: Sim, fault_step: int, avoid: set[int]) -> None:
    """Unrelated trouble that resolves: a spike, a GC pause, a slow cron job."""
    rng, t = sim.rng, sim.steps
    services = [n for n in sim.topo.services() if n.index not in avoid]
    if not services:
        return
    lo, hi = sim.steps_for(4), max(sim.steps_for(4) + 1, t - sim.steps_for(12))
    for _ in range(int(rng.integers(1, 3))):  # a spike, possibly during the incident
        svc = _pick(rng, services)
        start = int(rng.integers(lo, hi))
        length = sim.steps_for(int(rng.integers(2, 8)))
        sim.lat_mult[svc.index, start : start + length] *= float(rng.uniform(1.8, 3.5))
        sim.events.append(
            {
                "step": start,
                "kind": "blip",
                "service": svc.id,
                "text": f"latency spike in {svc.id} ({length * sim.step}s), unrelated; resolves",
            }
        )
    java = [n for n in services if n.lang == "java"]
    if java and rng.random() < 0.7:
        svc = _pick(rng, java)
        k = int(rng.integers(lo, hi))
        pause = float(rng.uniform(1.5, 8.0))
        n = max(1, round(pause / sim.step))
        sim.lat_mult[svc.index, k : k + n] *= 1 + pause / max(sim.step, pause)
        sim.wild.setdefault("gc", []).append((svc.index, k, pause))
        sim.events.append(
            {
                "step": k,
                "kind": "gc",
                "service": svc.id,
                "text": f"full GC pause of {pause:.1f}s in {svc.id}, unrelated",
            }
        )
    if rng.random() < 0.7:
        svc = _pick(rng, services)
        k = int(rng.integers(lo, hi))
        length = sim.steps_for(int(rng.integers(6, 16)))
        cores = float(rng.uniform(0.2, 0.5)) * svc.cpu_limit
        sim.lat_mult[svc.index, k : k + length] *= float(rng.uniform(1.15, 1.5))
        sim.wild.setdefault("cron", []).append((svc.index, k, length, cores))
        sim.events.append(
            {
                "step": k,
                "kind": "cron",
                "service": svc.id,
                "text": f"nightly-style cron job in {svc.id} runs slow ({length * sim.step}s of "
                f"extra CPU), unrelated",
            }
        )

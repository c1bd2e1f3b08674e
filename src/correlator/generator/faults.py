"""Faults (the six built-in causes and three outside them) and background noise.

Each fault writes its signature into a :class:`~correlator.generator.traffic.Sim`
(effect arrays, pod lifecycles, reasons for the logs and exceptions); the
simulation then propagates it through the call graph. Severity is ``low``,
``medium`` or ``high`` (a number in (0, 1] behind the scenes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from correlator.generator.topology import Node, PodSpec, pod_suffix, rs_hash
from correlator.generator.traffic import F64, Pod, Reason, Sim
from correlator.model import BUILTIN_CAUSES

__all__ = ["BUILTIN", "CAUSES", "EXTRA", "SEVERITIES", "Fault", "add_noise", "apply_fault"]

#: The causes the generator draws with a built-in pattern of their own (the six the project
#: began with; its other faults are EXTRA, whatever patterns exist for them).
BUILTIN = BUILTIN_CAUSES[:6]
EXTRA = ("cpu_contention", "network_delay", "code_exception")
CAUSES = BUILTIN + EXTRA
SEVERITIES = {"low": 0.35, "medium": 0.65, "high": 1.0}


@dataclass(frozen=True)
class Fault:
    """What went wrong, where and when (the scenario's truth, plus a story)."""

    cause: str
    service: str
    step: int
    severity: str
    summary: str
    zone: str | None = None
    peer: str | None = None
    details: dict[str, object] = field(default_factory=dict)


def ramp(t: int, start: int, length: int) -> F64:
    """0 before ``start``, rising linearly to 1 over ``length`` steps, then 1."""
    k = np.arange(t, dtype=np.float64)
    out: F64 = np.clip((k - start + 1) / max(length, 1), 0.0, 1.0)
    return out


def critical_reach(sim: Sim) -> set[int]:
    """Nodes whose failure reaches an entry service through critical calls."""
    topo = sim.topo
    seen = {n.index for n in topo.entries()}
    todo = list(seen)
    while todo:
        cur = todo.pop()
        for ei in topo.out_edges[cur]:
            e = topo.edges[ei]
            if e.critical >= 0.5 and e.dst not in seen:
                seen.add(e.dst)
                todo.append(e.dst)
    return seen


def _pick(rng: np.random.Generator, nodes: list[Node]) -> Node:
    return nodes[int(rng.integers(len(nodes)))]


def _service_candidates(sim: Sim, layers: tuple[int, ...] = (1, 2, 3)) -> list[Node]:
    reach = critical_reach(sim)
    cands = [n for n in sim.topo.services() if n.layer in layers and n.index in reach]
    return cands or [n for n in sim.topo.services() if n.layer in layers] or sim.topo.services()


def bump_version(version: str, rng: np.random.Generator) -> str:
    """The next release: a minor bump (most of the time) or a patch bump."""
    major, minor, patch = (int(x) for x in version.split("."))
    if rng.random() < 0.6:
        return f"{major}.{minor + 1}.0"
    return f"{major}.{minor}.{patch + 1}"


def deploy(sim: Sim, svc: Node, step: int, err: float = 0.0, lat: float = 1.0) -> list[Pod]:
    """A rolling update of ``svc`` at ``step``: new ReplicaSet hash, pods replaced one by one."""
    rng = sim.rng
    old = [p for p in sim.service_pods(svc.index) if p.start <= step < p.end]
    version = bump_version(svc.version, rng)
    revision = "".join("0123456789abcdef"[int(i)] for i in rng.integers(0, 16, 7))
    new_hash = rs_hash(rng)
    zone_nodes: dict[str, list[str]] = {}
    for name, zone in sim.topo.k8s_nodes.items():
        zone_nodes.setdefault(zone, []).append(name)
    new_pods: list[Pod] = []
    for j, pod in enumerate(old):
        start = step + sim.steps_for(2) * j
        node = zone_nodes[pod.zone][int(rng.integers(len(zone_nodes[pod.zone])))]
        spec = PodSpec(
            svc.index, f"{svc.id}-{new_hash}-{pod_suffix(rng)}", new_hash, node, pod.zone
        )
        new = sim.new_pod(spec, start, sim.steps, version, revision)
        new.err_add[start:] = err
        new.lat_mult[start:] = lat
        new_pods.append(new)
        # the old pod terminates once its replacement is ready
        end = min(sim.steps, start + sim.steps_for(3))
        pod.end = end
        pod.ready[end - 1 :] = False
        pod.scraped[end:] = False
        pod.up[end:] = 0.0
    sim.pods.extend(new_pods)
    gen = sim.generation[svc.index][-1][1] + 1
    sim.generation[svc.index].append((step, gen))
    sim.events.append(
        {
            "step": step,
            "kind": "deploy",
            "service": svc.id,
            "text": f"deploy {svc.id} {svc.version} -> {version} (revision {revision}, "
            f"generation {gen}, {len(new_pods)} pods replaced)",
            "from": svc.version,
            "to": version,
        }
    )
    svc.version, svc.revision, svc.rs_hash = version, revision, new_hash
    return new_pods


def apply_fault(sim: Sim, cause: str, severity: str, step: int, target: str | None = None) -> Fault:
    """Write the fault's signature into ``sim`` and return its description."""
    if cause not in CAUSES:
        raise ValueError(f"unknown cause {cause!r}; use one of {', '.join(CAUSES)}")
    if severity not in SEVERITIES:
        raise ValueError(f"unknown severity {severity!r}; use low, medium or high")
    s = SEVERITIES[severity] * float(sim.rng.uniform(0.85, 1.1))
    fn = globals()[f"_{cause}"]
    fault: Fault = fn(sim, s, severity, step, target)
    return fault


def _target(sim: Sim, target: str | None, default: list[Node]) -> Node:
    if target:
        return sim.topo.by_id(target)
    return _pick(sim.rng, default)


def _deployment(sim: Sim, s: float, sev: str, step: int, target: str | None) -> Fault:
    rng = sim.rng
    svc = _target(sim, target, _service_candidates(sim))
    mode = str(rng.choice(["errors", "latency", "both", "errors"]))
    err = s * float(rng.uniform(0.12, 0.45)) if mode != "latency" else 0.0
    lat = 1 + s * float(rng.uniform(3.0, 9.0)) if mode != "errors" else 1.0
    old = svc.version
    pods = deploy(sim, svc, step, err, lat)
    kind = "deploy_bug" if err > 0 else "slow"
    sim.reasons.append(
        Reason(svc.index, step, sim.steps, kind, tuple(p.name for p in pods), detail=svc.version)
    )
    what = {
        "errors": f"{err:.0%} of its requests fail",
        "latency": f"it is {lat:.1f}x slower",
        "both": f"{err:.0%} of requests fail and it is {lat:.1f}x slower",
    }[mode]
    return Fault(
        "deployment",
        svc.id,
        step,
        sev,
        f"{svc.id} {old} -> {svc.version} was rolled out and the new version is bad: {what}",
        details={
            "from": old,
            "to": svc.version,
            "mode": mode,
            "error_rate": round(err, 3),
            "latency_factor": round(lat, 2),
        },
    )


def _db_overload(sim: Sim, s: float, sev: str, step: int, target: str | None) -> Fault:
    topo, rng = sim.topo, sim.rng
    dbs = [n for n in topo.nodes if n.kind == "database"]
    reach = critical_reach(sim)
    dbs_r = [d for d in dbs if d.index in reach] or dbs
    if target:
        db = topo.by_id(target)
    else:
        most = max(len(topo.in_edges[d.index]) for d in dbs_r)
        db = _pick(rng, [d for d in dbs_r if len(topo.in_edges[d.index]) == most])
    i = db.index
    head = max(1, min(step, 120))
    base_demand = float(sim.base_rate[i, :head].mean()) * db.median * math.exp(db.sigma**2 / 2)
    avail = db.max_connections - 3 - 0.15 * sim.idle_conns[i]
    f = 0.3 + 2.7 * s**1.5
    mult = max(8.0, f * avail / max(base_demand, 1e-6))
    length = int(rng.integers(8, 20))
    r = ramp(sim.steps, step, sim.steps_for(length)) ** 1.5
    sim.lat_mult[i] *= 1 + (mult - 1) * r
    k = np.arange(sim.steps)
    sim.db_tx[i] = np.where(k >= step, (k - step) * sim.step + float(rng.uniform(5, 40)), 0.0)
    query = str(
        rng.choice(
            [
                "a reporting query doing a sequential scan over the orders table",
                "a schema migration holding an ACCESS EXCLUSIVE lock",
                "a batch job updating millions of rows in one transaction",
                "a missing index after a query plan change",
            ]
        )
    )
    sim.reasons.append(Reason(i, step, sim.steps, "db_saturated", detail=query))
    callers = ", ".join(topo.nodes[topo.edges[e].src].id for e in topo.in_edges[i])
    return Fault(
        "db_overload",
        db.id,
        step,
        sev,
        f"{db.id} (PostgreSQL) is overloaded by {query}: queries slow down, connections "
        f"climb toward max_connections={db.max_connections}; its callers ({callers}) "
        "slow down and fail",
        details={
            "max_connections": db.max_connections,
            "query": query,
            "demand_over_capacity": round(f, 2),
        },
    )


def _az_failure(sim: Sim, s: float, sev: str, step: int, target: str | None) -> Fault:
    topo, rng = sim.topo, sim.rng
    zone = topo.zones[int(rng.integers(3))]
    zone_nodes = sorted(n for n, z in topo.k8s_nodes.items() if z == zone)
    n_down = max(1, round(len(zone_nodes) * min(1.0, 0.4 + 0.6 * s)))
    down = sorted(rng.choice(zone_nodes, size=n_down, replace=False).tolist())
    # the most affected service: most of its pods sit in the zone
    star = _target(sim, target, _service_candidates(sim, (1, 2, 3)))
    pods = [p for p in sim.pods if p.service == star.index]
    want = max(1, math.ceil(len(pods) * 2 / 3))
    for j, p in enumerate(pods):
        if j < want:
            p.zone, p.node = zone, down[j % len(down)]
    for spec in topo.pods:
        for p in pods:
            if spec.name == p.name:
                spec.zone, spec.node = p.zone, p.node
    grace = sim.steps_for(3)  # node-monitor-grace-period ~40s: endpoints still route to dead pods
    evict = step + sim.steps_for(20)  # pod eviction after ~5 minutes
    other = [n for n, z in topo.k8s_nodes.items() if z != zone]
    lost: dict[int, int] = {}
    for p in list(sim.pods):
        if p.node not in down or p.end <= step:
            continue
        lost[p.service] = lost.get(p.service, 0) + 1
        p.err_add[step : step + grace] = 1.0
        p.ready[step + grace :] = False
        p.scraped[step:] = False
        p.up[step:] = 0.0
        if evict < sim.steps:
            node = other[int(rng.integers(len(other)))]
            spec = PodSpec(
                p.service,
                f"{topo.nodes[p.service].id}-{p.rs_hash}-{pod_suffix(rng)}",
                p.rs_hash,
                node,
                topo.k8s_nodes[node],
            )
            sim.pods.append(sim.new_pod(spec, evict, sim.steps, p.version, p.revision))
        sim.reasons.append(
            Reason(p.service, step, step + grace + 2, "zone_down", (p.name,), p.node)
        )
    for n in down:
        sim.node_down[n] = step
    frac = {
        svc: cnt
        / max(1, len([p for p in sim.pods if p.service == svc and p.start <= step < p.end]))
        for svc, cnt in lost.items()
    }
    best = max(frac, key=lambda k: (frac[k], sim.base_rate[k].mean()))
    sim.events.append(
        {
            "step": step,
            "kind": "zone",
            "service": topo.nodes[best].id,
            "text": f"{len(down)} of {len(zone_nodes)} nodes in {zone} stop responding "
            f"(NotReady); {sum(lost.values())} pods of {len(lost)} services lost",
        }
    )
    return Fault(
        "az_failure",
        topo.nodes[best].id,
        step,
        sev,
        f"availability zone {zone} fails: {len(down)} of its {len(zone_nodes)} nodes go "
        f"NotReady, {sum(lost.values())} pods of {len(lost)} services become unreachable "
        f"at once; {topo.nodes[best].id} loses {frac[best]:.0%} of its pods",
        zone=zone,
        details={"nodes": down, "services_hit": len(lost)},
    )


def _memory_leak(sim: Sim, s: float, sev: str, step: int, target: str | None) -> Fault:
    rng = sim.rng
    cands = _service_candidates(sim)
    java = [n for n in cands if n.lang == "java"]
    svc = _target(sim, target, java or cands)
    limit = svc.mem_limit
    minutes = 26 - 16 * s
    base = limit * svc.mem_base_frac
    per_s = (limit - base) / (minutes * 60)
    t = sim.steps
    k = np.arange(t)
    for p in sim.service_pods(svc.index):
        if not p.start <= step < p.end:
            continue
        rate = per_s * float(rng.uniform(0.75, 1.3))
        start_mem = base * float(rng.uniform(0.95, 1.08))
        mem = start_mem * (1 + 0.01 * np.sin(k / 7.0 + rng.uniform(0, 6)))
        cur = start_mem
        down_until = -1
        backoff = 1
        for kk in range(step, t):
            if kk < down_until:
                mem[kk] = np.nan
                continue
            cur += rate * sim.step
            if cur >= limit * 0.995:
                mem[kk] = limit * 0.995
                p.ooms.append(kk)
                p.restarts.append(kk)
                p.err_add[kk] = 1.0
                down_until = kk + 1 + backoff
                p.ready[kk + 1 : down_until] = False
                p.up[kk + 1 : down_until] = 0.0
                backoff = min(backoff * 2, 8)
                cur = base * 0.6
                continue
            mem[kk] = cur
            frac = cur / limit
            pressure = max(0.0, (frac - 0.8) / 0.2)
            p.lat_mult[kk] = 1 + 4 * pressure**2
            p.err_add[kk] = max(p.err_add[kk], 0.02 * pressure**2)
        p.mem = mem
        sim.reasons.append(Reason(svc.index, step, t, "gc", (p.name,)))
        for kk in p.ooms:
            sim.reasons.append(Reason(svc.index, kk, kk + 1, "oom", (p.name,)))
    ooms = sum(len(p.ooms) for p in sim.service_pods(svc.index))
    return Fault(
        "memory_leak",
        svc.id,
        step,
        sev,
        f"{svc.id} leaks memory: working set grows ~{per_s * 60 / 2**20:.1f} MiB/min per pod "
        f"toward its {limit / 2**20:.0f} MiB limit; {ooms} OOM kills and restarts follow, "
        "with errors and GC pauses around each",
        details={
            "mib_per_min": round(per_s * 60 / 2**20, 2),
            "oom_kills": ooms,
            "limit_mib": round(limit / 2**20),
        },
    )


def _dependency_failure(sim: Sim, s: float, sev: str, step: int, target: str | None) -> Fault:
    topo, rng = sim.topo, sim.rng
    reach = critical_reach(sim)
    ext = [n for n in topo.nodes if n.kind == "external" and n.index in reach]
    cache = [n for n in topo.nodes if n.kind == "cache" and n.index in reach]
    pool = ext if (ext and (rng.random() < 0.7 or not cache)) else (cache or ext)
    pool = pool or [n for n in topo.nodes if n.kind in ("external", "cache")]
    dep = _target(sim, target, pool)
    i = dep.index
    mode = str(rng.choice(["errors", "timeouts"]))
    r = ramp(sim.steps, step, sim.steps_for(int(rng.integers(1, 4))))
    if mode == "errors":
        sim.err_add[i] += (0.15 + 0.8 * s) * r
        what = f"returns errors for {0.15 + 0.8 * s:.0%} of calls"
    else:
        sim.lat_mult[i] *= 1 + (8 + 60 * s) * r
        sim.err_add[i] += 0.1 * s * r
        what = f"answers {1 + 8 + 60 * s:.0f}x slower, so callers time out"
    sim.reasons.append(Reason(i, step, sim.steps, "dep_down", detail=mode))
    callers = sorted({topo.nodes[topo.edges[e].src].id for e in topo.in_edges[i]})
    return Fault(
        "dependency_failure",
        dep.id,
        step,
        sev,
        f"{dep.id} ({dep.kind}) degrades and {what}; its callers ({', '.join(callers)}) fail",
        details={"mode": mode, "kind": dep.kind},
    )


def _traffic_spike(sim: Sim, s: float, sev: str, step: int, target: str | None) -> Fault:
    rng = sim.rng
    entry = _target(sim, target, sim.topo.entries())
    mult = 2.5 + 7.0 * s * float(rng.uniform(0.8, 1.1))
    r = ramp(sim.steps, step, sim.steps_for(int(rng.integers(2, 5))))
    sim.rate_mult[entry.index] *= 1 + (mult - 1) * r
    source = str(
        rng.choice(
            [
                "a retry storm from the mobile app after a push notification",
                "a scraper bot hammering the API",
                "a flash sale announced by email",
                "a partner replaying a day of requests",
            ]
        )
    )
    sim.reasons.append(Reason(entry.index, step, sim.steps, "overload", detail=source))
    return Fault(
        "traffic_spike",
        entry.id,
        step,
        sev,
        f"requests to {entry.id} jump {mult:.1f}x ({source}); CPU saturates and latency "
        "and shed requests spread downstream",
        details={"factor": round(mult, 2), "source": source},
    )


def _cpu_contention(sim: Sim, s: float, sev: str, step: int, target: str | None) -> Fault:
    rng = sim.rng
    svc = _target(sim, target, _service_candidates(sim))
    left = max(0.18, 0.65 - 0.45 * s)
    r = ramp(sim.steps, step, sim.steps_for(int(rng.integers(2, 6))))
    sim.cap_mult[svc.index] *= 1 - (1 - left) * r
    sim.reasons.append(Reason(svc.index, step, sim.steps, "slow", detail="cpu"))
    return Fault(
        "cpu_contention",
        svc.id,
        step,
        sev,
        f"{svc.id}'s pods are starved of CPU by a noisy neighbour on their nodes (only "
        f"{left:.0%} of their CPU is available): throttling and latency rise, no deploy",
        details={"cpu_available": round(left, 2)},
    )


def _network_delay(sim: Sim, s: float, sev: str, step: int, target: str | None) -> Fault:
    topo, rng = sim.topo, sim.rng
    reach = critical_reach(sim)
    cands = [
        e
        for e in topo.edges
        if topo.nodes[e.dst].kind == "service"
        and topo.nodes[e.src].layer >= 1
        and e.src in reach
        and e.critical >= 0.5
    ]
    cands = cands or [e for e in topo.edges if topo.nodes[e.dst].kind == "service"]
    if target:
        cands = [e for e in cands if topo.nodes[e.src].id == target] or cands
    edge = cands[int(rng.integers(len(cands)))]
    delay = (0.08 + 0.7 * s) * float(rng.uniform(0.8, 1.2))
    r = ramp(sim.steps, step, sim.steps_for(2))
    noise = 1 + 0.1 * rng.standard_normal(sim.steps)
    src = topo.nodes[edge.src]
    # The sidecar sits on the caller's way out: every call it makes to a service crosses it
    # (a route to one callee alone would look the same as a delay in front of that callee).
    out = [e for e in topo.out_edges[src.index] if topo.nodes[topo.edges[e].dst].kind == "service"]
    for ei in out:
        sim.edge_lat_add[ei] += delay * r * noise
    callees = sorted({topo.nodes[topo.edges[e].dst].id for e in out})
    sim.reasons.append(
        Reason(src.index, step, sim.steps, "slow", detail="net:" + ",".join(callees))
    )
    return Fault(
        "network_delay",
        src.id,
        step,
        sev,
        f"{src.id}'s sidecar adds ~{delay * 1000:.0f} ms to every call it makes (to "
        f"{', '.join(callees)}); those services stay fast, {src.id} and its callers slow down",
        details={"delay_ms": round(delay * 1000)},
    )


def _code_exception(sim: Sim, s: float, sev: str, step: int, target: str | None) -> Fault:
    rng = sim.rng
    svc = _target(sim, target, _service_candidates(sim))
    err = 0.04 + 0.45 * s * float(rng.uniform(0.8, 1.2))
    sim.err_add[svc.index] += err * ramp(sim.steps, step, sim.steps_for(2))
    trigger = str(
        rng.choice(
            [
                "a feature flag flipped for 50% of users",
                "a malformed record in the catalog feed",
                "a certificate rotated in a downstream config",
                "a new currency added to the price list",
            ]
        )
    )
    sim.reasons.append(Reason(svc.index, step, sim.steps, "code_bug", detail=trigger))
    return Fault(
        "code_exception",
        svc.id,
        step,
        sev,
        f"{svc.id} starts throwing a new exception on {err:.0%} of requests ({trigger}); no deploy",
        details={"error_rate": round(err, 3), "trigger": trigger},
    )


def add_noise(sim: Sim, fault_step: int, avoid: set[int]) -> None:
    """Harmless deploys, blips in unrelated services and missing scrapes."""
    rng, t = sim.rng, sim.steps
    services = [n for n in sim.topo.services() if n.index not in avoid]
    if not services:
        return
    for j in range(int(rng.integers(1, 4))):
        svc = _pick(rng, services)
        if j == 0 and rng.random() < 0.5:  # a red herring shortly before the fault
            step = max(5, fault_step - int(rng.integers(8, 60)))
        else:
            step = int(rng.integers(10, t - 5))
        if any(st > 0 for st, _ in sim.generation[svc.index]):
            continue
        deploy(sim, svc, step)
    for _ in range(int(rng.integers(1, 4))):
        svc = _pick(rng, services)
        start = int(rng.integers(5, max(6, fault_step - 10)))
        length = sim.steps_for(int(rng.integers(2, 7)))
        if rng.random() < 0.5:
            sim.lat_mult[svc.index, start : start + length] *= float(rng.uniform(1.4, 2.2))
        else:
            sim.err_add[svc.index, start : start + length] += float(rng.uniform(0.005, 0.02))
        sim.events.append(
            {
                "step": start,
                "kind": "blip",
                "service": svc.id,
                "text": f"short blip in {svc.id} ({length * sim.step}s), unrelated",
            }
        )
    if rng.random() < 0.5:
        g = int(rng.integers(10, t - 3))
        sim.gaps[g : g + int(rng.integers(1, 3))] = True
    for p in sim.pods:
        if rng.random() < 0.04:
            g = int(rng.integers(0, t - 4))
            p.scraped[g : g + int(rng.integers(1, 4))] = False

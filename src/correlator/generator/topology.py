"""The simulated system: a layered call graph, its datastores, pods, nodes and zones.

A system has an edge layer (gateways receiving user traffic), frontends/BFFs, a
mid tier, and backends; services call services of deeper layers (fan-out, with
popular services shared by many callers), PostgreSQL databases, Redis caches and
one or two external APIs. Every service runs 2-4 pods spread over three
availability zones on EC2-style nodes (``ip-10-0-33-187.eu-west-1.compute.internal``).
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Edge", "Node", "PodSpec", "Topology", "build_topology"]

Rng = np.random.Generator

EDGE_NAMES = ["api-gateway", "mobile-gateway", "partner-api", "edge-proxy", "graphql-gateway"]
FRONT_NAMES = [
    "web-frontend",
    "mobile-bff",
    "storefront",
    "admin-bff",
    "partner-bff",
    "checkout-ui",
    "account-ui",
    "search-ui",
]
MID_NAMES = [
    "checkout",
    "cart",
    "catalog",
    "search",
    "recommendations",
    "pricing",
    "promotions",
    "user-profile",
    "orders",
    "shipping",
    "reviews",
    "wishlist",
    "account",
    "auth",
    "notifications",
    "loyalty",
    "returns",
    "tax",
    "quotes",
    "subscriptions",
    "gift-cards",
    "store-locator",
    "content",
    "personalization",
]
BACK_NAMES = [
    "payment",
    "inventory",
    "fraud-detection",
    "ledger",
    "identity",
    "email-sender",
    "warehouse",
    "currency",
    "geo",
    "media",
    "audit-log",
    "session",
    "feature-flags",
    "billing",
    "invoicing",
    "fulfillment",
    "product-data",
    "price-engine",
    "tokenizer",
    "rate-limiter",
    "events",
    "kyc",
    "risk-scoring",
    "image-resizer",
]
DOMAINS = [
    "retail",
    "payments",
    "logistics",
    "identity",
    "growth",
    "content",
    "marketplace",
    "finance",
    "support",
    "data",
    "mobile",
    "partner",
    "ads",
    "travel",
    "insurance",
]
SUFFIXES = ["api", "worker", "core", "sync", "reader", "writer", "gateway", "store", "svc", "v2"]
EXTERNALS = [
    ("payment-gateway", "api.payment-gateway.example.com"),
    ("shipping-carrier-api", "api.carrier.example.net"),
    ("sms-provider", "api.sms-provider.example.com"),
    ("geo-ip-api", "geoip.example.org"),
]
LANGS = ["java", "go", "python", "node"]
REGIONS = ["eu-west-1", "us-east-1", "eu-central-1", "ap-southeast-2"]
HASH_CHARS = "bcdfghjklmnpqrstvwxz2456789"


@dataclass
class Node:
    """A node of the service graph: a service, database, cache or external API."""

    id: str
    kind: str  # service | database | cache | external
    layer: int
    index: int
    lang: str = "go"
    namespace: str = "prod"
    base_rate: float = 0.0
    """Requests/s for entry services (others get theirs from callers)."""
    median: float = 0.01
    """Median own processing time, seconds."""
    sigma: float = 0.5
    base_err: float = 0.0005
    cpu_per_req: float = 0.002
    cpu_limit: float = 1.0
    mem_limit: float = 512 * 2**20
    mem_base_frac: float = 0.5
    replicas: int = 2
    span_name: str = ""
    method: str = "GET"
    route: str = "/"
    host: str = ""
    max_connections: int = 100
    version: str = "1.0.0"
    revision: str = "0000000"
    rs_hash: str = ""
    generation: int = 1


@dataclass
class Edge:
    """A synchronous call from ``src`` to ``dst`` (node indices)."""

    src: int
    dst: int
    index: int
    calls: float
    """Calls per request of the caller."""
    critical: float
    """1: a failed call fails the request; 0: the caller degrades gracefully."""
    retries: int
    timeout: float
    lag: int
    """Propagation delay, in scrape steps, of callee effects onto the caller."""
    net: float = 0.0005


@dataclass
class PodSpec:
    """A pod at generation time (before faults add replacements)."""

    service: int
    name: str
    rs_hash: str
    node: str
    zone: str


@dataclass
class Topology:
    """The whole simulated system."""

    nodes: list[Node]
    edges: list[Edge]
    region: str
    zones: list[str]
    k8s_nodes: dict[str, str]
    """Kubernetes node name -> zone."""
    pods: list[PodSpec]
    out_edges: list[list[int]] = field(default_factory=list)
    in_edges: list[list[int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.out_edges = [[] for _ in self.nodes]
        self.in_edges = [[] for _ in self.nodes]
        for e in self.edges:
            self.out_edges[e.src].append(e.index)
            self.in_edges[e.dst].append(e.index)

    def by_id(self, name: str) -> Node:
        """The node called ``name``."""
        for n in self.nodes:
            if n.id == name:
                return n
        raise KeyError(name)

    def services(self) -> list[Node]:
        """Nodes of kind service."""
        return [n for n in self.nodes if n.kind == "service"]

    def entries(self) -> list[Node]:
        """Entry services (they receive user traffic)."""
        return [n for n in self.nodes if n.kind == "service" and n.layer == 0]

    def order(self) -> list[int]:
        """Node indices callers-first (layers are a topological order)."""
        return sorted(range(len(self.nodes)), key=lambda i: (self.nodes[i].layer, i))

    def upstream(self, index: int) -> set[int]:
        """Every node that (transitively) calls ``index``."""
        seen: set[int] = set()
        todo = [index]
        while todo:
            cur = todo.pop()
            for ei in self.in_edges[cur]:
                src = self.edges[ei].src
                if src not in seen:
                    seen.add(src)
                    todo.append(src)
        return seen

    def pods_of(self, index: int) -> list[PodSpec]:
        """Initial pods of a service."""
        return [p for p in self.pods if p.service == index]

    def to_json(self) -> dict[str, object]:
        """The bundle's ``topology.json``."""
        nodes: list[dict[str, object]] = []
        for n in self.nodes:
            item: dict[str, object] = {"id": n.id, "kind": n.kind}
            zones = sorted({p.zone for p in self.pods if p.service == n.index})
            if len(zones) == 1:
                item["zone"] = zones[0]
            elif zones:
                item["zones"] = zones
            nodes.append(item)
        edges = [
            {"source": self.nodes[e.src].id, "target": self.nodes[e.dst].id} for e in self.edges
        ]
        return {"nodes": nodes, "edges": edges}


def rs_hash(rng: Rng) -> str:
    """A ReplicaSet pod-template hash (9-10 chars, Kubernetes' safe alphabet)."""
    n = int(rng.integers(9, 11))
    return "".join(HASH_CHARS[int(i)] for i in rng.integers(0, len(HASH_CHARS), n))


def pod_suffix(rng: Rng) -> str:
    """The 5-char random suffix of a pod name."""
    return "".join(HASH_CHARS[int(i)] for i in rng.integers(0, len(HASH_CHARS), 5))


def _git_sha(rng: Rng) -> str:
    return "".join(string.hexdigits[int(i)] for i in rng.integers(0, 16, 7)).lower()


def _names(rng: Rng, pool: list[str], count: int, used: set[str]) -> list[str]:
    """``count`` unique names: the pool first (shuffled), then domain/suffix variants."""
    out: list[str] = []
    base = [p for p in rng.permutation(pool).tolist() if p not in used]
    for name in base[:count]:
        out.append(name)
        used.add(name)
    while len(out) < count:
        stem = pool[int(rng.integers(len(pool)))]
        if rng.random() < 0.5:
            name = f"{DOMAINS[int(rng.integers(len(DOMAINS)))]}-{stem}"
        else:
            name = f"{stem}-{SUFFIXES[int(rng.integers(len(SUFFIXES)))]}"
        if name in used:
            name = f"{DOMAINS[int(rng.integers(len(DOMAINS)))]}-{name}"
        if name in used:
            continue
        out.append(name)
        used.add(name)
    return out


def _layer_sizes(n: int) -> list[int]:
    n_edge = 1 if n < 15 else (2 if n < 200 else 3)
    n_front = max(1, round(n * 0.15))
    rest = n - n_edge - n_front
    n_mid = max(1, round(rest * 0.5))
    n_back = max(1, n - n_edge - n_front - n_mid)
    n_front = n - n_edge - n_mid - n_back
    return [n_edge, n_front, n_mid, n_back]


def build_topology(rng: Rng, n_services: int) -> Topology:
    """A layered system of ``n_services`` services plus datastores and externals."""
    if not 5 <= n_services <= 5000:
        raise ValueError(f"services must be between 5 and 5000, got {n_services}")
    region = REGIONS[int(rng.integers(len(REGIONS)))]
    zones = [f"{region}{z}" for z in "abc"]
    sizes = _layer_sizes(n_services)
    used: set[str] = set()
    pools = [EDGE_NAMES, FRONT_NAMES, MID_NAMES, BACK_NAMES]
    nodes: list[Node] = []
    for layer, (size, pool) in enumerate(zip(sizes, pools, strict=True)):
        for name in _names(rng, pool, size, used):
            nodes.append(_service(rng, name, layer, len(nodes)))
    n_db = max(1, round(n_services / 7))
    n_cache = max(1, round(n_services / 12))
    n_ext = 1 if n_services < 12 else 2
    backs = [n for n in nodes if n.layer == 3] or [n for n in nodes if n.layer == 2]
    db_owners = [backs[i % len(backs)] for i in rng.permutation(len(backs))[:n_db]]
    while len(db_owners) < n_db:
        db_owners.append(backs[int(rng.integers(len(backs)))])
    db_stems = rng.permutation(
        [
            "orders",
            "inventory",
            "users",
            "catalog",
            "payments",
            "shipping",
            "ledger",
            "reviews",
            "accounts",
            "billing",
        ]
    ).tolist()
    for j, owner in enumerate(db_owners):
        stem = db_stems[j % len(db_stems)] if j < len(db_stems) else owner.id
        name = f"{stem}-db" if f"{stem}-db" not in used else f"{stem}-{len(nodes)}-db"
        used.add(name)
        node = Node(
            name,
            "database",
            4,
            len(nodes),
            median=float(rng.uniform(0.0015, 0.005)),
            sigma=0.6,
            base_err=0.0,
        )
        node.max_connections = int(rng.choice([100, 200, 300, 500]))
        nodes.append(node)
    cache_stems = rng.permutation(
        ["session", "cart", "catalog", "pricing", "rate-limit", "feature", "profile", "inventory"]
    ).tolist()
    for i in range(n_cache):
        stem = cache_stems[i % len(cache_stems)]
        name = f"{stem}-redis" if f"{stem}-redis" not in used else f"{stem}-redis-{i}"
        used.add(name)
        nodes.append(
            Node(
                name,
                "cache",
                4,
                len(nodes),
                median=float(rng.uniform(0.0003, 0.001)),
                sigma=0.5,
                base_err=0.0,
            )
        )
    for name, host in [EXTERNALS[int(i)] for i in rng.permutation(len(EXTERNALS))[:n_ext]]:
        node = Node(
            name,
            "external",
            4,
            len(nodes),
            median=float(rng.uniform(0.08, 0.25)),
            sigma=0.35,
            base_err=0.0008,
        )
        node.host = host
        nodes.append(node)
    edges = _wire(rng, nodes, db_owners)
    k8s_nodes, pods = _place(rng, nodes, region, zones)
    topo = Topology(nodes, edges, region, zones, k8s_nodes, pods)
    _entry_rates(rng, topo)
    return topo


def _service(rng: Rng, name: str, layer: int, index: int) -> Node:
    lang = LANGS[int(rng.integers(len(LANGS)))]
    node = Node(name, "service", layer, index, lang=lang)
    node.median = float(rng.uniform(0.002, 0.012) if layer < 2 else rng.uniform(0.003, 0.03))
    node.sigma = float(rng.uniform(0.35, 0.6))
    node.base_err = float(rng.choice([0.0, 0.0, 0.0, 0.0002, 0.0005, 0.001]))
    node.cpu_limit = float(rng.choice([0.5, 1.0, 2.0]))
    node.mem_limit = float(rng.choice([256, 512, 768, 1024, 2048])) * 2**20
    node.mem_base_frac = float(rng.uniform(0.35, 0.6))
    node.replicas = int(rng.integers(2, 5))
    resource = name.split("-")[0]
    if layer == 0:
        node.method, node.route = "GET", "/api/*"
    else:
        node.method = "POST" if rng.random() < 0.35 else "GET"
        node.route = f"/api/v1/{resource}" + (
            "/{id}" if node.method == "GET" and rng.random() < 0.5 else ""
        )
    node.span_name = f"{node.method} {node.route}"
    major, minor, patch = (
        int(rng.integers(1, 5)),
        int(rng.integers(0, 30)),
        int(rng.integers(0, 12)),
    )
    node.version = f"{major}.{minor}.{patch}"
    node.revision = _git_sha(rng)
    node.rs_hash = rs_hash(rng)
    node.generation = int(rng.integers(3, 80))
    return node


def _wire(rng: Rng, nodes: list[Node], db_owners: list[Node]) -> list[Edge]:
    """Callers to callees: fan-out to deeper layers, with popular shared services."""
    edges: list[Edge] = []
    by_layer: dict[int, list[Node]] = {}
    for n in nodes:
        by_layer.setdefault(n.layer, []).append(n)
    pairs: set[tuple[int, int]] = set()

    def add(src: Node, dst: Node) -> None:
        if (src.index, dst.index) in pairs or src.index == dst.index:
            return
        pairs.add((src.index, dst.index))
        if dst.kind == "database":
            calls = float(rng.uniform(1.0, 3.0))
            crit, retries, timeout = 1.0, 0, 5.0
        elif dst.kind == "cache":
            calls = float(rng.uniform(0.5, 2.0))
            crit, retries, timeout = float(rng.choice([1.0, 0.3])), 0, 0.25
        elif dst.kind == "external":
            calls = float(rng.uniform(0.3, 0.9))
            crit, retries, timeout = (
                1.0,
                int(rng.integers(0, 2)),
                float(rng.choice([2.0, 3.0, 5.0])),
            )
        else:
            calls = float(rng.uniform(0.3, 1.2))
            crit = float(rng.choice([1.0, 1.0, 1.0, 0.5, 0.0]))
            retries = int(rng.choice([0, 1, 1, 2]))
            timeout = float(rng.choice([0.5, 1.0, 2.0, 3.0]))
        lag = int(rng.integers(1, 4))
        edges.append(Edge(src.index, dst.index, len(edges), calls, crit, retries, timeout, lag))

    services = [n for n in nodes if n.kind == "service"]
    for layer in (0, 1, 2):
        callers = by_layer.get(layer, [])
        deeper = [n for n in services if n.layer > layer]
        if not callers or not deeper:
            continue
        nxt = [n for n in services if n.layer == layer + 1] or deeper
        # popularity: a few services are shared by many callers
        weights = rng.pareto(1.5, len(deeper)) + 0.2
        weights /= weights.sum()
        # every next-layer service gets at least one caller
        for i, callee in enumerate(rng.permutation(len(nxt)).tolist()):
            add(callers[i % len(callers)], nxt[callee])
        for caller in callers:
            fan = int(rng.integers(1, 4 if layer else 3))
            for j in rng.choice(len(deeper), size=min(fan, len(deeper)), replace=False, p=weights):
                add(caller, deeper[int(j)])
    for back in by_layer.get(3, []):
        if rng.random() < 0.25 and len(by_layer.get(3, [])) > 3:
            other = by_layer[3][int(rng.integers(len(by_layer[3])))]
            if other.index > back.index:
                add(back, other)
    dbs = [n for n in nodes if n.kind == "database"]
    for owner, db in zip(db_owners, dbs, strict=True):
        add(owner, db)
    mids = [n for n in services if n.layer >= 2]
    for db in dbs:  # shared databases: another service or two reads it
        for _ in range(int(rng.integers(0, 3))):
            add(mids[int(rng.integers(len(mids)))], db)
    callers_pool = [n for n in services if n.layer >= 1]
    for cache in (n for n in nodes if n.kind == "cache"):
        for _ in range(int(rng.integers(1, 4))):
            add(callers_pool[int(rng.integers(len(callers_pool)))], cache)
    for ext in (n for n in nodes if n.kind == "external"):
        for _ in range(int(rng.integers(1, 3))):
            add(mids[int(rng.integers(len(mids)))], ext)
    return edges


def _place(
    rng: Rng, nodes: list[Node], region: str, zones: list[str]
) -> tuple[dict[str, str], list[PodSpec]]:
    """Pods over zones (round-robin from a random zone), on nodes of ~10 pods each."""
    services = [n for n in nodes if n.kind == "service"]
    total = sum(n.replicas for n in services)
    per_zone = max(1, math.ceil(total / 10 / 3))
    k8s: dict[str, str] = {}
    zone_nodes: list[list[str]] = []
    for zi, zone in enumerate(zones):
        names: list[str] = []
        while len(names) < per_zone:
            ip = f"10-0-{zi * 32 + int(rng.integers(1, 32))}-{int(rng.integers(2, 255))}"
            name = f"ip-{ip}.{region}.compute.internal"
            if name in k8s:
                continue
            k8s[name] = zone
            names.append(name)
        zone_nodes.append(names)
    pods: list[PodSpec] = []
    for svc in services:
        z0 = int(rng.integers(3))
        for r in range(svc.replicas):
            zi = (z0 + r) % 3
            node = zone_nodes[zi][int(rng.integers(len(zone_nodes[zi])))]
            pods.append(
                PodSpec(
                    svc.index,
                    f"{svc.id}-{svc.rs_hash}-{pod_suffix(rng)}",
                    svc.rs_hash,
                    node,
                    zones[zi],
                )
            )
    return k8s, pods


def _entry_rates(rng: Rng, topo: Topology) -> None:
    """Entry traffic so that per-service rates land in a realistic range."""
    entries = topo.entries()
    total = float(rng.uniform(80, 300)) * max(1.0, len(topo.services()) / 40) ** 0.5
    shares = rng.dirichlet(np.ones(len(entries)) * 2)
    for node, share in zip(entries, shares, strict=True):
        node.base_rate = max(5.0, total * float(share))

"""The role table: what each role means, in one place.

A *role* is what a series (or a span or log aggregate) means to the
investigation. The catalog maps exporters' series to roles; detectors judge
them; topology and patterns reason over them. Each of those reads this table
instead of keeping its own lists.

Columns of a :class:`Role`:

* ``direction``: which way a move matters (``+1`` up, ``-1`` down, ``0`` either);
* ``agg``: how per-pod or per-dimension rows add up to one value per service;
* ``kind``: ``symptom`` (what the service's users feel: errors, latency),
  ``cause`` (something happening *to* the service: resources, pods, load),
  ``edge`` (calls between two services, kept per ``peer``), ``inventory``
  (what is deployed, read by patterns, never judged), or ``other``;
* ``unit``: ``count`` for per-second rates of events (Poisson noise at low
  rates), ``ratio`` for shares in 0..1, ``seconds``, ``bytes`` or ``value``;
* ``catalog``: whether the signal catalog maps series to it (else it is derived,
  or made by a span or log detector).

Roles not in the table (a plugin's own, or ``series`` for a series no role
knows) are judged in both directions as ``other``: the catalog adds meaning,
never visibility.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "CAUSE_ROLES",
    "CLIENT_ROLES",
    "EDGE_ROLES",
    "GENERIC",
    "INVENTORY_ROLES",
    "PER_PEER_ROLES",
    "ROLES",
    "SYMPTOM_ROLES",
    "Role",
    "role",
]

Kind = Literal["symptom", "cause", "edge", "inventory", "other"]
Unit = Literal["count", "ratio", "seconds", "bytes", "value"]


@dataclass(frozen=True)
class Role:
    """One role: its meaning and how detection and reasoning treat it."""

    name: str
    description: str
    kind: Kind = "other"
    direction: int = 0
    agg: Literal["sum", "max", "min"] = "sum"
    unit: Unit = "value"
    catalog: bool = True
    """Whether exporters' series map to it through the signal catalog (``False``: it is
    derived from other roles, or made by the span and log detectors)."""


#: The role of a series that no catalog role knows ("series X of S rose 6x").
GENERIC = "series"

_TABLE: tuple[Role, ...] = (
    Role(
        "request_rate",
        "requests per second a service serves (server side)",
        "cause",
        0,
        "sum",
        "count",
    ),
    Role(
        "error_rate",
        "failed requests per second a service serves (5xx, gRPC errors, span status ERROR)",
        "symptom",
        1,
        "sum",
        "count",
    ),
    Role(
        "error_ratio",
        "share of a service's requests that failed (derived)",
        "symptom",
        1,
        "max",
        "ratio",
        catalog=False,
    ),
    Role(
        "latency",
        "p95 server-side latency of a service's requests, seconds",
        "symptom",
        1,
        "max",
        "seconds",
    ),
    Role("cpu", "CPU cores used by a service's containers", "cause", 0, "sum", "value"),
    Role(
        "cpu_throttled",
        "CFS throttled periods per second of a service's containers",
        "cause",
        1,
        "sum",
        "count",
    ),
    Role("memory", "working-set bytes of a service's containers", "cause", 1, "max", "bytes"),
    Role(
        "memory_limit",
        "memory limit bytes of a service's containers",
        "inventory",
        0,
        "max",
        "bytes",
    ),
    Role(
        "memory_ratio", "memory over its limit (derived)", "cause", 1, "max", "ratio", catalog=False
    ),
    Role("restarts", "container restarts per second", "cause", 1, "sum", "count"),
    Role(
        "oom_kills",
        "OOM kills per second (cAdvisor) or OOMKilled last-termination flags",
        "cause",
        1,
        "sum",
        "count",
    ),
    Role(
        "pod_ready",
        "ready pods of a service (kube-state-metrics), per pod",
        "cause",
        -1,
        "sum",
        "value",
    ),
    Role("pod_info", "pod -> node mapping (kube_pod_info), per pod", "inventory"),
    Role("node_zone", "node -> availability zone (kube_node_labels)", "inventory"),
    Role("node_ready", "node Ready condition (1 ready, 0 not)", "other", -1, "min", "value"),
    Role("up", "scrape health per target (1 up, 0 down)", "cause", -1, "min", "value"),
    Role("version", "the running version of a service (build-info series)", "inventory"),
    Role("deploy_generation", "Deployment metadata.generation (kube-state-metrics)", "inventory"),
    Role(
        "db_connections",
        "database connections in use (postgres_exporter)",
        "cause",
        1,
        "sum",
        "value",
    ),
    Role("db_max_connections", "database max_connections setting", "inventory", 0, "max", "value"),
    Role(
        "db_tx_duration",
        "longest running transaction, seconds (postgres_exporter)",
        "cause",
        1,
        "max",
        "seconds",
    ),
    Role("db_locks", "locks held in the database", "cause", 1, "sum", "value"),
    Role(
        "edge_rate",
        "calls per second from a caller (peer) to a callee (service)",
        "edge",
        0,
        "sum",
        "count",
    ),
    Role("edge_errors", "failed calls per second from peer to service", "edge", 1, "sum", "count"),
    Role(
        "client_rate",
        "calls per second a service makes to a peer, as it counts them (client side); "
        "read to know how many calls a client latency quantile is of",
        "inventory",
        0,
        "sum",
        "count",
    ),
    Role(
        "edge_error_ratio",
        "share of calls from peer to service that failed (derived)",
        "edge",
        1,
        "max",
        "ratio",
        catalog=False,
    ),
    Role(
        "edge_latency",
        "p95 latency of calls from peer to service, seconds (server side)",
        "edge",
        1,
        "max",
        "seconds",
    ),
    Role(
        "client_errors",
        "failed calls a caller (service) makes to peer, seen on the caller's side",
        "symptom",
        1,
        "sum",
        "count",
    ),
    Role(
        "client_error_ratio",
        "share of a caller's calls to peer that failed",
        "symptom",
        1,
        "max",
        "ratio",
        catalog=False,
    ),
    Role(
        "client_latency",
        "p95 latency of a caller's (service's) calls to peer, as the caller sees it",
        "symptom",
        1,
        "max",
        "seconds",
    ),
    Role(
        "transit_latency",
        "p95 time calls to a service's instance spend outside its server span (network, "
        "proxies), where some of its instances or most of its callers saw it grow (spans)",
        "symptom",
        1,
        "max",
        "seconds",
        catalog=False,
    ),
    Role(
        "network_receive",
        "bytes per second a service's containers receive",
        "cause",
        0,
        "sum",
        "bytes",
    ),
    Role(
        "network_transmit",
        "bytes per second a service's containers send",
        "cause",
        0,
        "sum",
        "bytes",
    ),
    Role(
        "network_drops",
        "packets per second dropped or in error on a service's interfaces",
        "cause",
        1,
        "sum",
        "count",
    ),
    Role(
        "disk_io",
        "bytes per second a service's containers read and write",
        "cause",
        0,
        "sum",
        "bytes",
    ),
    Role(
        "open_fds",
        "open file descriptors or sockets of a service's processes",
        "cause",
        1,
        "max",
        "value",
    ),
    Role("threads", "threads of a service's processes", "cause", 0, "max", "value"),
    Role(
        "gc_time",
        "seconds per second a service's runtime spends in garbage collection",
        "cause",
        1,
        "sum",
        "seconds",
    ),
    Role(
        "span_latency",
        "p95 duration of a service's own server spans, per operation (spans)",
        "symptom",
        1,
        "max",
        "seconds",
        catalog=False,
    ),
    Role(
        "span_errors",
        "share of a service's spans with status ERROR (spans)",
        "symptom",
        1,
        "max",
        "ratio",
        catalog=False,
    ),
    Role(
        "span_rate",
        "spans per second a service records, per operation (spans)",
        "other",
        0,
        "sum",
        "count",
        catalog=False,
    ),
    Role(
        "log_errors",
        "error and fatal log records per second of a service (logs)",
        "symptom",
        1,
        "sum",
        "count",
        catalog=False,
    ),
    Role(
        "log_template",
        "log records of a message template not seen in the baseline (logs)",
        "symptom",
        1,
        "sum",
        "count",
        catalog=False,
    ),
    Role(
        "log_notice",
        "log records below error level, without exception text, of a message template "
        "not seen in the baseline (logs)",
        "symptom",
        1,
        "sum",
        "count",
        catalog=False,
    ),
    Role(
        "named_by_callers",
        "errors that other services log naming this one (a wrong or failed answer)",
        "symptom",
        1,
        "sum",
        "count",
        catalog=False,
    ),
    Role(
        GENERIC,
        "a series no catalog role knows, judged on its own",
        "other",
        0,
        "sum",
        "value",
        catalog=False,
    ),
)

#: Every known role by name.
ROLES: dict[str, Role] = {r.name: r for r in _TABLE}

#: Roles that show a service hurting (what users feel), client-side views included.
SYMPTOM_ROLES = frozenset(
    {r.name for r in _TABLE if r.kind == "symptom"}
    | {"edge_errors", "edge_error_ratio", "edge_latency"}
)
#: Roles that show something happening *to* a service (a likely cause, not an echo).
CAUSE_ROLES = frozenset(r.name for r in _TABLE if r.kind == "cause")
#: Inventory roles: read by patterns, never judged as anomalies.
INVENTORY_ROLES = frozenset(r.name for r in _TABLE if r.kind == "inventory")
#: Roles kept per caller (``peer``) instead of summed over callers.
EDGE_ROLES = frozenset({"edge_rate", "edge_errors", "edge_latency"})
#: Roles kept per ``peer``: the edges, and a caller's own view of its calls to each peer
#: (client-side metrics), where which callee the calls went to is the point.
PER_PEER_ROLES = EDGE_ROLES | frozenset({"client_latency", "client_errors", "client_rate"})
#: Edge roles as the caller sees them, when the trouble is on the caller's side.
CLIENT_ROLES = {
    "edge_errors": "client_errors",
    "edge_error_ratio": "client_error_ratio",
    "edge_latency": "client_latency",
}


def role(name: str) -> Role:
    """The role called ``name``; an unknown name is judged as a generic series."""
    return ROLES.get(name) or Role(name, "", "other", 0, "sum", "value")

"""The signal catalog: which series play which role.

A *role* is what a series means to the investigation (``request_rate``,
``error_rate``, ``latency``, ``cpu``, ``memory``...). Each role has one or
more *alternatives* (:class:`SignalSpec`), one per exporter that can provide
it (OpenTelemetry spanmetrics, OTel HTTP semantic conventions, Micrometer,
Istio, cAdvisor, kube-state-metrics, postgres_exporter). A source evaluates
every alternative; for each service the first alternative with data wins.

A spec is deliberately PromQL-shaped so that the bundle backend (pandas) and
the Prometheus adapter (PromQL) compute the same thing:

* ``kind="counter"``: ``sum by (service, dims) (rate(metric{matchers}[r]))``
* ``kind="gauge"``: ``<agg> by (service, dims) (metric{matchers})``
* ``kind="histogram"``: ``histogram_quantile(q, sum by (le, service, dims)
  (rate(metric_bucket{matchers}[r])))``, times ``scale``
* ``kind="info"``: like gauge, value ignored; dimensions (``version``) matter

The service a series belongs to is the first non-empty label of
``service_labels``, where the name ``pod`` stands for the pod name with its
Deployment suffix (``-<hash>-<hash>``) or StatefulSet ordinal removed; a list
without ``pod`` tries the pod name last. The default identities
(:data:`SERVICE_LABELS`) are OpenTelemetry's ``service_name``, ``service``,
the ``k8s_*`` resource labels, ``application``/``app``, the pod name, the
``container``/``container_name`` of series aggregated per container, and
``job`` last (a scrape job often names a whole fleet).

Series no alternative takes still reach the engine as the generic role
``series`` (see :mod:`correlator.generic`): the catalog adds meaning, never
visibility.

The catalog is data: JSON (``catalog.json`` in a bundle, or a file named in
the config) in the shape of :meth:`Catalog.to_json`. A user catalog *extends*
the default per role (its alternatives are tried first) unless it says
``"replace": true``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from correlator.errors import ConfigError
from correlator.roles import ROLES as _ROLE_TABLE

__all__ = [
    "DIMENSIONS",
    "ROLES",
    "SERVICE_LABELS",
    "Catalog",
    "Matcher",
    "SignalSpec",
    "default_catalog",
    "service_from_pod",
]

Kind = Literal["counter", "gauge", "histogram", "info"]
Agg = Literal["sum", "max", "avg", "min"]

#: Canonical dimension names (columns of the signal frame besides role/service/ts/value).
DIMENSIONS = ("peer", "pod", "node", "zone", "version", "detail")

#: Roles the engine and the built-in patterns understand, with what they mean
#: (the descriptions of :data:`correlator.roles.ROLES`).
ROLES: dict[str, str] = {name: r.description for name, r in _ROLE_TABLE.items() if r.catalog}

#: Labels that name a series' service, in precedence order (``pod``: the pod name
#: without its Deployment/StatefulSet suffix).
SERVICE_LABELS: tuple[str, ...] = (
    "service_name",
    "service",
    "k8s_deployment_name",
    "k8s_statefulset_name",
    "k8s_daemonset_name",
    "k8s_container_name",
    "application",
    "app",
    "pod",
    "container_label_com_docker_compose_service",
    "container",
    "container_name",
    "job",
)

_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_POD_SUFFIX = re.compile(r"-[0-9a-z]{5,10}-[0-9a-z]{5}$")
_STATEFUL_SUFFIX = re.compile(r"-\d+$")


def service_from_pod(pod: str) -> str:
    """The workload a pod belongs to: ``checkout-7d9f8b6c5d-x2k4q`` -> ``checkout``.

    Deployment pods end in ``-<replicaset hash>-<5 chars>``; StatefulSet pods in
    ``-<ordinal>``. Anything else is returned unchanged.
    """
    stripped = _POD_SUFFIX.sub("", pod)
    if stripped != pod:
        return stripped
    return _STATEFUL_SUFFIX.sub("", pod)


@dataclass(frozen=True)
class Matcher:
    """A PromQL label matcher: ``label op value`` with op ``=``, ``!=``, ``=~``, ``!~``."""

    label: str
    op: Literal["=", "!=", "=~", "!~"]
    value: str

    def matches(self, value: str | None) -> bool:
        """Whether a series' label value satisfies this matcher (missing = "")."""
        v = value or ""
        if self.op == "=":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        hit = re.fullmatch(self.value, v) is not None
        return hit if self.op == "=~" else not hit


@dataclass(frozen=True)
class SignalSpec:
    """One way to compute a role from one exporter's series."""

    role: str
    metric: str
    """Metric family name; for histograms the base name (without ``_bucket``).
    ``""`` with an ``__name__`` matcher selects by regex."""
    kind: Kind
    service_labels: tuple[str, ...] = SERVICE_LABELS
    matchers: tuple[Matcher, ...] = ()
    dims: Mapping[str, str] = field(default_factory=dict)
    """Canonical dimension -> source label, e.g. ``{"peer": "client"}``."""
    agg: Agg = "sum"
    quantile: float = 0.95
    scale: float = 1.0
    source: str = ""
    """Which exporter this alternative reads (documentation only)."""

    def selector(self) -> str:
        """The PromQL series selector, e.g. ``calls_total{span_kind="SERVER"}``.

        Rendered by :func:`correlator.promql.selector`, the one PromQL renderer.
        """
        from correlator import promql  # promql imports this module

        return promql.selector(self)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = asdict(self)
        out["matchers"] = [[m.label, m.op, m.value] for m in self.matchers]
        out["service_labels"] = list(self.service_labels)
        out["dims"] = dict(self.dims)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "catalog") -> SignalSpec:
        """Build a spec from JSON, with a clear :class:`ConfigError` for bad values."""
        try:
            role = str(data["role"])
            metric = str(data.get("metric", ""))
            kind = data["kind"]
        except KeyError as exc:
            raise ConfigError(
                f"{where}: a signal entry lacks {exc.args[0]!r}; every entry needs "
                "'role', 'metric' and 'kind'"
            ) from None
        if kind not in ("counter", "gauge", "histogram", "info"):
            raise ConfigError(
                f"{where}: role {role!r} has kind {kind!r}; use counter, gauge, histogram or info"
            )
        matchers = []
        for raw in data.get("matchers", []):
            if not (isinstance(raw, list | tuple) and len(raw) == 3):
                raise ConfigError(
                    f"{where}: role {role!r}: matcher {raw!r} must be [label, op, value]"
                )
            label, op, value = (str(x) for x in raw)
            if op not in ("=", "!=", "=~", "!~"):
                raise ConfigError(
                    f"{where}: role {role!r}: matcher op {op!r} must be =, !=, =~ or !~"
                )
            if op in ("=~", "!~"):
                try:
                    re.compile(value)
                except re.error as err:
                    raise ConfigError(
                        f"{where}: role {role!r}: bad regex {value!r}: {err}"
                    ) from None
            matchers.append(Matcher(label, op, value))  # type: ignore[arg-type]
        if not metric and not any(m.label == "__name__" for m in matchers):
            raise ConfigError(f"{where}: role {role!r} needs a 'metric' or a __name__ matcher")
        if metric and not _LABEL_RE.match(metric.replace(":", "_")):
            raise ConfigError(f"{where}: role {role!r}: {metric!r} is not a valid metric name")
        dims = dict(data.get("dims", {}))
        for dim in dims:
            if dim not in DIMENSIONS:
                raise ConfigError(
                    f"{where}: role {role!r}: unknown dimension {dim!r}; use one of {', '.join(DIMENSIONS)}"
                )
        agg = data.get("agg", "sum")
        if agg not in ("sum", "max", "avg", "min"):
            raise ConfigError(f"{where}: role {role!r}: agg {agg!r} must be sum, max, avg or min")
        try:
            quantile = float(data.get("quantile", 0.95))
            scale = float(data.get("scale", 1.0))
        except (TypeError, ValueError):
            raise ConfigError(
                f"{where}: role {role!r}: quantile and scale must be numbers"
            ) from None
        if not 0 < quantile < 1:
            raise ConfigError(
                f"{where}: role {role!r}: quantile {quantile} must be between 0 and 1"
            )
        return cls(
            role=role,
            metric=metric,
            kind=kind,
            service_labels=tuple(data.get("service_labels", SERVICE_LABELS)),
            matchers=tuple(matchers),
            dims=dims,
            agg=agg,
            quantile=quantile,
            scale=scale,
            source=str(data.get("source", "")),
        )


@dataclass(frozen=True)
class Catalog:
    """Role -> alternatives, tried in order."""

    roles: Mapping[str, tuple[SignalSpec, ...]]

    def specs(self, role: str) -> tuple[SignalSpec, ...]:
        """The alternatives for ``role`` (empty when unknown)."""
        return self.roles.get(role, ())

    def all_specs(self) -> Iterable[SignalSpec]:
        """Every alternative of every role."""
        for specs in self.roles.values():
            yield from specs

    def merged(self, other: Catalog, replace: bool = False) -> Catalog:
        """This catalog extended (or replaced, per role) by ``other``'s roles."""
        roles = dict(self.roles)
        for role, specs in other.roles.items():
            roles[role] = specs if replace else tuple(specs) + tuple(roles.get(role, ()))
        return Catalog(roles)

    def to_json(self) -> dict[str, Any]:
        """The catalog file schema."""
        return {"signals": [s.to_json() for s in self.all_specs()]}

    @classmethod
    def from_json(cls, data: Any, where: str = "catalog") -> tuple[Catalog, bool]:
        """Parse the catalog schema; returns the catalog and its ``replace`` flag."""
        if not isinstance(data, dict) or not isinstance(data.get("signals"), list):
            raise ConfigError(f'{where}: a catalog is an object with a "signals" list')
        roles: dict[str, list[SignalSpec]] = {}
        for i, raw in enumerate(data["signals"]):
            if not isinstance(raw, dict):
                raise ConfigError(f"{where}: signals[{i}] must be an object")
            spec = SignalSpec.from_json(raw, where=f"{where}: signals[{i}]")
            roles.setdefault(spec.role, []).append(spec)
        return cls({k: tuple(v) for k, v in roles.items()}), bool(data.get("replace", False))

    @classmethod
    def load(cls, path: str | Path, base: Catalog | None = None) -> Catalog:
        """Read a catalog file and merge it over ``base`` (the default catalog)."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"catalog file {p} does not exist; fix the path") from None
        except json.JSONDecodeError as err:
            raise ConfigError(f"{p}:{err.lineno}: not valid JSON: {err.msg}") from None
        extra, replace = cls.from_json(data, where=str(p))
        return (base or default_catalog()).merged(extra, replace=replace)


def _m(label: str, op: str, value: str) -> Matcher:
    return Matcher(label, op, value)  # type: ignore[arg-type]


_SERVER = _m("span_kind", "=", "SPAN_KIND_SERVER")
_CONTAINER = (_m("container", "!=", ""), _m("container", "!=", "POD"))
#: cAdvisor and kube-state-metrics series: a workload label, else the pod name, else
#: the container (series aggregated per container carry no pod).
_COMPOSE = "container_label_com_docker_compose_service"
_POD_ONLY: tuple[str, ...] = (
    "service",
    "app",
    "application",
    "pod",
    _COMPOSE,
    "container",
    "container_name",
)
#: Summary quantiles from p90 up: the highest one a service exports wins (``max``).
_HIGH_QUANTILE = _m("quantile", "=~", "0\\.9[0-9]*|1")
_HTTP_5XX_OLD = _m("http_status_code", "=~", "5..")
_HTTP_5XX = _m("http_response_status_code", "=~", "5..")
_GRPC_FAILED = _m("rpc_grpc_status_code", "!~", "0|")


def _server_protocols() -> list[SignalSpec]:
    """Request rate, errors and latency from HTTP and RPC server instrumentation."""
    s: list[SignalSpec] = []
    # Old OpenTelemetry names (milliseconds; with or without the unit suffix) and new ones.
    otel = (
        ("http_server_request_duration_seconds", _HTTP_5XX, 1.0, "otel http semconv"),
        ("http_server_duration_milliseconds", _HTTP_5XX_OLD, 0.001, "otel http semconv (old)"),
        ("http_server_duration", _HTTP_5XX_OLD, 0.001, "otel http semconv (old, no unit)"),
        ("rpc_server_call_duration_seconds", _GRPC_FAILED, 1.0, "otel rpc semconv"),
        ("rpc_server_duration_milliseconds", _GRPC_FAILED, 0.001, "otel rpc semconv (old)"),
        ("rpc_server_duration", _GRPC_FAILED, 0.001, "otel rpc semconv (old, no unit)"),
    )
    for base, failed, scale, source in otel:
        s.append(SignalSpec("request_rate", f"{base}_count", "counter", source=source))
        s.append(
            SignalSpec("error_rate", f"{base}_count", "counter", matchers=(failed,), source=source)
        )
        s.append(SignalSpec("latency", base, "histogram", scale=scale, source=source))
    micrometer = ("application", *SERVICE_LABELS)
    s += [
        SignalSpec(
            "request_rate",
            "http_server_requests_seconds_count",
            "counter",
            service_labels=micrometer,
            source="micrometer",
        ),
        SignalSpec(
            "error_rate",
            "http_server_requests_seconds_count",
            "counter",
            service_labels=micrometer,
            matchers=(_m("outcome", "=", "SERVER_ERROR"),),
            source="micrometer (outcome)",
        ),
        SignalSpec(
            "error_rate",
            "http_server_requests_seconds_count",
            "counter",
            service_labels=micrometer,
            matchers=(_m("status", "=~", "5.."),),
            source="micrometer",
        ),
        SignalSpec(
            "latency",
            "http_server_requests_seconds",
            "histogram",
            service_labels=micrometer,
            source="micrometer",
        ),
        SignalSpec(
            "latency",
            "http_server_requests_seconds",
            "gauge",
            service_labels=micrometer,
            matchers=(_HIGH_QUANTILE,),
            agg="max",
            source="micrometer summary (quantile label)",
        ),
        # go-grpc-prometheus / grpc-java prometheus interceptors.
        SignalSpec(
            "request_rate", "grpc_server_handled_total", "counter", source="grpc prometheus"
        ),
        SignalSpec(
            "error_rate",
            "grpc_server_handled_total",
            "counter",
            matchers=(_m("grpc_code", "!~", "OK|"),),
            source="grpc prometheus",
        ),
        SignalSpec(
            "latency", "grpc_server_handling_seconds", "histogram", source="grpc prometheus"
        ),
        # Any other summary of request durations in seconds (Prometheus client summaries).
        SignalSpec(
            "latency",
            "",
            "gauge",
            matchers=(
                _m("__name__", "=~", ".*(http|rpc|grpc|request).*_seconds"),
                _HIGH_QUANTILE,
            ),
            agg="max",
            source="request-duration summaries (quantile label)",
        ),
    ]
    return s


def _client_protocols() -> list[SignalSpec]:
    """Client-side latency and errors: a caller's view of its calls to ``peer``."""
    s: list[SignalSpec] = []
    clients = (
        ("http_client_request_duration_seconds", "server_address", _HTTP_5XX, 1.0, "otel http"),
        ("http_client_duration_milliseconds", "net_peer_name", _HTTP_5XX_OLD, 0.001, "otel http"),
        ("http_client_duration", "net_peer_name", _HTTP_5XX_OLD, 0.001, "otel http"),
        ("rpc_client_call_duration_seconds", "server_address", _GRPC_FAILED, 1.0, "otel rpc"),
        ("rpc_client_duration_milliseconds", "net_peer_name", _GRPC_FAILED, 0.001, "otel rpc"),
        ("rpc_client_duration", "net_peer_name", _GRPC_FAILED, 0.001, "otel rpc"),
        (
            "http_client_requests_seconds",
            "client_name",
            _m("status", "=~", "5.."),
            1.0,
            "micrometer",
        ),
    )
    for base, peer, failed, scale, source in clients:
        s.append(
            SignalSpec(
                "client_latency", base, "histogram", dims={"peer": peer}, scale=scale, source=source
            )
        )
        s.append(
            SignalSpec(
                "client_errors",
                f"{base}_count",
                "counter",
                matchers=(failed,),
                dims={"peer": peer},
                source=source,
            )
        )
        s.append(
            SignalSpec(
                "client_rate", f"{base}_count", "counter", dims={"peer": peer}, source=source
            )
        )
    # The service graph times each call on both sides: the client's is the caller's view
    # (a slow network or sidecar shows there, not in the server's).
    s.append(
        SignalSpec(
            "client_latency",
            "traces_service_graph_request_client_seconds",
            "histogram",
            service_labels=("client",),
            dims={"peer": "server"},
            source="otel servicegraph connector",
        )
    )
    s.append(
        SignalSpec(
            "client_latency",
            "grpc_client_handling_seconds",
            "histogram",
            dims={"peer": "grpc_service"},
            source="grpc prometheus",
        )
    )
    s.append(
        SignalSpec(
            "client_errors",
            "grpc_client_handled_total",
            "counter",
            matchers=(_m("grpc_code", "!~", "OK|"),),
            dims={"peer": "grpc_service"},
            source="grpc prometheus",
        )
    )
    s.append(
        SignalSpec(
            "client_rate",
            "grpc_client_handled_total",
            "counter",
            dims={"peer": "grpc_service"},
            source="grpc prometheus",
        )
    )
    return s


def _containers() -> list[SignalSpec]:
    """cAdvisor: CPU, every memory family, network and disk, per service."""

    def cadvisor(role: str, metric: str, kind: Kind, **kw: Any) -> SignalSpec:
        kw.setdefault("matchers", _CONTAINER)
        return SignalSpec(role, metric, kind, service_labels=_POD_ONLY, source="cadvisor", **kw)

    s = [
        cadvisor("cpu", "container_cpu_usage_seconds_total", "counter"),
        cadvisor("cpu_throttled", "container_cpu_cfs_throttled_periods_total", "counter"),
        cadvisor("cpu_throttled", "container_cpu_cfs_throttled_seconds_total", "counter"),
    ]
    for family in ("working_set_bytes", "usage_bytes", "rss", "cache"):
        s.append(cadvisor("memory", f"container_memory_{family}", "gauge", dims={"pod": "pod"}))
    # cAdvisor before Kubernetes 1.16 names the container ``container_name`` (and the pod
    # ``pod_name``); its pause container is "POD".
    old = (_m("container_name", "!=", ""), _m("container_name", "!=", "POD"))
    s += [
        cadvisor("cpu", "container_cpu_usage_seconds_total", "counter", matchers=old),
        cadvisor("cpu_throttled", "container_cpu_cfs_throttled_periods_total", "counter",
                 matchers=old),
        cadvisor("cpu_throttled", "container_cpu_cfs_throttled_seconds_total", "counter",
                 matchers=old),
    ]  # fmt: skip
    for family in ("working_set_bytes", "usage_bytes", "rss", "cache"):
        s.append(
            cadvisor(
                "memory", f"container_memory_{family}", "gauge", matchers=old,
                dims={"pod": "pod_name"},
            )
        )  # fmt: skip
    # cAdvisor beside Docker Compose: no container label, the Compose service names it.
    compose = (_m(_COMPOSE, "!=", ""),)
    for role, metric, kind in (
        ("cpu", "container_cpu_usage_seconds_total", "counter"),
        ("memory", "container_memory_working_set_bytes", "gauge"),
        ("memory", "container_memory_usage_bytes", "gauge"),
    ):
        s.append(
            SignalSpec(
                role,
                metric,
                kind,  # type: ignore[arg-type]
                service_labels=(_COMPOSE,),
                matchers=compose,
                source="cadvisor (docker compose)",
            )
        )
    # Network counters live on the pod's sandbox (container "POD" or ""), not the containers.
    s += [
        cadvisor(
            "network_receive", "container_network_receive_bytes_total", "counter", matchers=()
        ),
        cadvisor(
            "network_transmit", "container_network_transmit_bytes_total", "counter", matchers=()
        ),
        cadvisor(
            "network_drops",
            "",
            "counter",
            matchers=(
                _m(
                    "__name__",
                    "=~",
                    "container_network_(receive|transmit)_(packets_dropped|errors)_total",
                ),
            ),
        ),
        cadvisor(
            "disk_io",
            "",
            "counter",
            matchers=(
                _m("__name__", "=~", "container_fs_(reads|writes)_bytes_total"),
                *_CONTAINER,
            ),
        ),
    ]
    return s


def _runtimes() -> list[SignalSpec]:
    """Process, JVM and Go runtime metrics (after the container view of each role)."""
    return [
        SignalSpec("cpu", "process_cpu_seconds_total", "counter", source="process"),
        SignalSpec("memory", "process_resident_memory_bytes", "gauge", agg="max", source="process"),
        SignalSpec("memory", "jvm_memory_used_bytes", "gauge", source="micrometer / otel jvm"),
        SignalSpec("memory", "jvm_memory_bytes_used", "gauge", source="jvm simpleclient"),
        SignalSpec("memory", "go_memstats_heap_inuse_bytes", "gauge", agg="max", source="go"),
        SignalSpec("open_fds", "process_open_fds", "gauge", agg="max", source="process"),
        SignalSpec("threads", "jvm_threads_live_threads", "gauge", agg="max", source="micrometer"),
        SignalSpec("threads", "jvm_threads_current", "gauge", agg="max", source="jvm simpleclient"),
        SignalSpec("threads", "jvm_thread_count", "gauge", agg="max", source="otel jvm"),
        SignalSpec("threads", "go_goroutines", "gauge", agg="max", source="go"),
        SignalSpec("gc_time", "jvm_gc_pause_seconds_sum", "counter", source="micrometer"),
        SignalSpec(
            "gc_time", "jvm_gc_collection_seconds_sum", "counter", source="jvm simpleclient"
        ),
        SignalSpec("gc_time", "jvm_gc_duration_seconds_sum", "counter", source="otel jvm"),
        SignalSpec("gc_time", "go_gc_duration_seconds_sum", "counter", source="go"),
    ]


def default_catalog() -> Catalog:
    """The built-in catalog: understands the common exporters out of the box."""
    s: list[SignalSpec] = [
        # --- request rate -----------------------------------------------------
        SignalSpec(
            "request_rate",
            "traces_span_metrics_calls_total",
            "counter",
            matchers=(_SERVER,),
            source="otel spanmetrics connector",
        ),
        SignalSpec(
            "request_rate",
            "calls_total",
            "counter",
            matchers=(_SERVER,),
            source="otel spanmetrics (legacy names)",
        ),
        SignalSpec(
            "request_rate",
            "istio_requests_total",
            "counter",
            service_labels=("destination_workload", "destination_service_name"),
            matchers=(_m("reporter", "=", "destination"),),
            source="istio",
        ),
        # --- error rate -------------------------------------------------------
        SignalSpec(
            "error_rate",
            "traces_span_metrics_calls_total",
            "counter",
            matchers=(_SERVER, _m("status_code", "=", "STATUS_CODE_ERROR")),
            source="otel spanmetrics connector",
        ),
        SignalSpec(
            "error_rate",
            "calls_total",
            "counter",
            matchers=(_SERVER, _m("status_code", "=", "STATUS_CODE_ERROR")),
            source="otel spanmetrics (legacy names)",
        ),
        SignalSpec(
            "error_rate",
            "istio_requests_total",
            "counter",
            service_labels=("destination_workload", "destination_service_name"),
            matchers=(_m("reporter", "=", "destination"), _m("response_code", "=~", "5..")),
            source="istio",
        ),
        # --- latency (p95, seconds) ---------------------------------------------
        SignalSpec(
            "latency",
            "traces_span_metrics_duration_seconds",
            "histogram",
            matchers=(_SERVER,),
            source="otel spanmetrics connector",
        ),
        SignalSpec(
            "latency",
            "duration_seconds",
            "histogram",
            matchers=(_SERVER,),
            source="otel spanmetrics (legacy names)",
        ),
        SignalSpec(
            "latency",
            "istio_request_duration_milliseconds",
            "histogram",
            service_labels=("destination_workload", "destination_service_name"),
            matchers=(_m("reporter", "=", "destination"),),
            scale=0.001,
            source="istio",
        ),
        # --- containers (cAdvisor), attributed by pod name ------------------------
        SignalSpec(
            "memory_limit",
            "kube_pod_container_resource_limits",
            "gauge",
            service_labels=_POD_ONLY,
            matchers=(_m("resource", "=", "memory"),),
            dims={"pod": "pod"},
            source="kube-state-metrics",
        ),
        SignalSpec(
            "oom_kills",
            "container_oom_events_total",
            "counter",
            service_labels=_POD_ONLY,
            matchers=_CONTAINER,
            source="cadvisor",
        ),
        SignalSpec(
            "oom_kills",
            "kube_pod_container_status_last_terminated_reason",
            "gauge",
            service_labels=_POD_ONLY,
            matchers=(_m("reason", "=", "OOMKilled"),),
            source="kube-state-metrics",
        ),
        SignalSpec(
            "restarts",
            "kube_pod_container_status_restarts_total",
            "counter",
            service_labels=_POD_ONLY,
            source="kube-state-metrics",
        ),
        SignalSpec(
            "pod_ready",
            "kube_pod_status_ready",
            "gauge",
            service_labels=_POD_ONLY,
            matchers=(_m("condition", "=", "true"),),
            dims={"pod": "pod"},
            source="kube-state-metrics",
        ),
        SignalSpec(
            "pod_info",
            "kube_pod_info",
            "info",
            service_labels=("created_by_name",),
            dims={"pod": "pod", "node": "node"},
            agg="max",
            source="kube-state-metrics",
        ),
        SignalSpec(
            "node_zone",
            "kube_node_labels",
            "info",
            service_labels=("node",),
            dims={"node": "node", "zone": "label_topology_kubernetes_io_zone"},
            agg="max",
            source="kube-state-metrics",
        ),
        SignalSpec(
            "node_ready",
            "kube_node_status_condition",
            "gauge",
            service_labels=("node",),
            matchers=(_m("condition", "=", "Ready"), _m("status", "=", "true")),
            dims={"node": "node"},
            agg="max",
            source="kube-state-metrics",
        ),
        SignalSpec(
            "up",
            "up",
            "gauge",
            service_labels=("service", "job"),
            dims={"pod": "pod"},
            agg="min",
            source="prometheus",
        ),
        # --- deploys --------------------------------------------------------------
        SignalSpec(
            "version",
            "",
            "info",
            service_labels=("service", "service_name", "job", "app"),
            matchers=(_m("__name__", "=~", ".+_build_info"),),
            dims={"version": "version"},
            agg="max",
            source="build_info convention",
        ),
        SignalSpec(
            "version",
            "target_info",
            "info",
            service_labels=("service_name", "job"),
            dims={"version": "service_version"},
            agg="max",
            source="otel target_info",
        ),
        SignalSpec(
            "deploy_generation",
            "kube_deployment_metadata_generation",
            "gauge",
            service_labels=("deployment",),
            agg="max",
            source="kube-state-metrics",
        ),
        # --- databases (postgres_exporter) ------------------------------------------
        SignalSpec(
            "db_connections",
            "pg_stat_activity_count",
            "gauge",
            service_labels=("service", "job", "instance"),
            source="postgres_exporter",
        ),
        SignalSpec(
            "db_max_connections",
            "pg_settings_max_connections",
            "gauge",
            service_labels=("service", "job", "instance"),
            agg="max",
            source="postgres_exporter",
        ),
        SignalSpec(
            "db_tx_duration",
            "pg_stat_activity_max_tx_duration",
            "gauge",
            service_labels=("service", "job", "instance"),
            agg="max",
            source="postgres_exporter",
        ),
        SignalSpec(
            "db_locks",
            "pg_locks_count",
            "gauge",
            service_labels=("service", "job", "instance"),
            source="postgres_exporter",
        ),
        # --- edges (service-graph connector / Tempo metrics-generator) --------------
        SignalSpec(
            "edge_rate",
            "traces_service_graph_request_total",
            "counter",
            service_labels=("server",),
            dims={"peer": "client"},
            source="otel servicegraph connector",
        ),
        SignalSpec(
            "edge_errors",
            "traces_service_graph_request_failed_total",
            "counter",
            service_labels=("server",),
            dims={"peer": "client"},
            source="otel servicegraph connector",
        ),
        SignalSpec(
            "edge_latency",
            "traces_service_graph_request_server_seconds",
            "histogram",
            service_labels=("server",),
            dims={"peer": "client"},
            source="otel servicegraph connector",
        ),
        SignalSpec(
            "edge_rate",
            "istio_requests_total",
            "counter",
            service_labels=("destination_workload",),
            matchers=(_m("reporter", "=", "source"),),
            dims={"peer": "source_workload"},
            source="istio",
        ),
    ]
    # Within a role the first alternative with data wins per service: trace-derived
    # series first, then server instrumentation, the mesh, containers, runtimes.
    s += _server_protocols() + _client_protocols() + _containers() + _runtimes()
    order = {role: i for i, role in enumerate(dict.fromkeys(spec.role for spec in s))}
    istio_last = sorted(s, key=lambda spec: (order[spec.role], spec.source == "istio"))
    roles: dict[str, list[SignalSpec]] = {}
    for spec in istio_last:
        roles.setdefault(spec.role, []).append(spec)
    return Catalog({k: tuple(v) for k, v in roles.items()})

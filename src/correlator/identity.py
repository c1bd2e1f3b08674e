"""One name per service: the callee names that calls carry, resolved to the services that answer.

A call names its callee in whatever its instrumentation knows: a gRPC client its
proto service (``grpc_service="shop.CurrencyService"``, ``rpc.service``), an HTTP
client the host it dialled (``server.address="currency.shop.svc.cluster.local:7000"``),
while the callee's own metrics and spans name it by its deployment (``currency``,
``currencyservice``). Left as they are, one service becomes two nodes: the calls'
trouble sits on a node that has no telemetry of its own, and the service's own
trouble is never tied to its callers. :func:`resolve_peers` maps each such name to
the one known service it spells (else to the one node the declared topology names
that it spells: an external API called by its proto service), and leaves names that
spell none (databases, external hosts) or more than one as they are.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pandas as pd

from correlator.model import SIGNAL_TEXT_COLUMNS, Telemetry, compact_signals

__all__ = ["identity_key", "peer_aliases", "resolve_peers"]

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")
_SUFFIXES = ("service", "svc", "server")
_PORT = re.compile(r":\d+$")


def identity_key(name: str) -> str:
    """A service name without case, separators or a ``Service``/``svc`` suffix
    (``payment-gateway``, ``PaymentGatewayService`` and ``paymentgatewayservice``
    are all ``paymentgateway``)."""
    key = _NOT_ALNUM.sub("", _CAMEL.sub("-", name).lower())
    for suffix in _SUFFIXES:
        if key.endswith(suffix) and len(key) - len(suffix) >= 2:
            return key[: -len(suffix)]
    return key


def _spellings(peer: str) -> list[str]:
    """The names a callee name may stand for: itself without a port, the first label of a
    cluster host name (``currency.shop.svc.cluster.local``), the last part of a
    package-qualified RPC service (``shop.CurrencyService``)."""
    name = _PORT.sub("", peer.strip())
    out = [name]
    if "." in name:
        first, *_, last = name.split(".")
        if any(c.isupper() for c in last):
            out.append(last)  # a proto service: package.Service
        elif name.endswith((".svc", ".svc.cluster.local", ".cluster.local", ".local")):
            out.append(first)  # an in-cluster host name, never a public one
    return out


def peer_aliases(peers: set[str], services: set[str]) -> dict[str, str]:
    """``peer -> service`` for every peer name that is not a known service but spells
    exactly one of them."""
    by_key: dict[str, set[str]] = {}
    for s in services:
        by_key.setdefault(identity_key(s), set()).add(s)
    out: dict[str, str] = {}
    for p in peers:
        if not p or p in services:
            continue
        found: set[str] = set()
        for spelling in _spellings(p):
            if spelling in services:
                found = {spelling}
                break
            found |= by_key.get(identity_key(spelling), set())
        if len(found) == 1:
            out[p] = next(iter(found))
    return out


def _values(col: pd.Series) -> set[str]:
    return {str(v) for v in col.dropna().unique() if str(v)}


def resolve_peers(telemetry: Telemetry) -> Telemetry:
    """A copy of ``telemetry`` whose callee names (metric ``peer`` labels, client span
    peers, declared edges) name the services that answer them, where they spell one."""
    sig, spans = telemetry.signals, telemetry.spans
    services = set()
    if "service" in sig.columns:
        services |= _values(sig["service"])
    if "service" in spans.columns:
        services |= _values(spans["service"])
    peers: set[str] = set()
    if "peer" in sig.columns:
        peers |= _values(sig["peer"])
    if "peer" in spans.columns:
        peers |= _values(spans["peer"])
    peers |= {e[1] for e in telemetry.edges}
    alias = peer_aliases(peers, services)
    # Then declared nodes: an external API or a cache the topology names has no telemetry
    # of its own, yet a gRPC client may call it by its proto service name.
    declared = {str(n) for n in telemetry.node_kinds or {} if str(n)} - services
    rest = peers - set(alias) - services
    alias |= peer_aliases(rest, declared)
    if not alias:
        return telemetry

    def rename(v: Any) -> Any:
        return alias.get(v, v) if isinstance(v, str) else v

    changes: dict[str, Any] = {}
    if "peer" in sig.columns and len(sig):
        col = sig["peer"]
        dtype = col.dtype if isinstance(col.dtype, pd.CategoricalDtype) else None
        cats = dtype.categories if dtype is not None else None
        if dtype is not None and cats is not None and set(alias.values()) <= set(cats):
            # The compact frame's shared dtype already holds every target: codes only.
            changes["signals"] = sig.assign(peer=col.astype(object).map(rename).astype(dtype))
        elif cats is not None:
            text = [c for c in SIGNAL_TEXT_COLUMNS if c in sig.columns]
            plain = sig.astype(dict.fromkeys(text, object))
            changes["signals"] = compact_signals(plain.assign(peer=plain["peer"].map(rename)))
        else:
            changes["signals"] = sig.assign(peer=col.map(rename))
    if "peer" in spans.columns and len(spans):
        changes["spans"] = spans.assign(peer=spans["peer"].map(rename))
    if telemetry.edges:
        changes["edges"] = [(a, alias.get(b, b), k) for a, b, k in telemetry.edges]
    if telemetry.node_kinds:
        changes["node_kinds"] = {k: v for k, v in telemetry.node_kinds.items() if k not in alias}
    return dataclasses.replace(telemetry, **changes)

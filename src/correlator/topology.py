"""The service graph and how impact spreads over it.

The graph (``networkx.DiGraph``, caller -> callee) is merged from every
place that reveals a call: client/server span pairs in traces, client spans
to databases and other peers (``db.system``, ``peer.service``,
``server.address``), the declared topology and Jaeger dependencies
(``Telemetry.edges``), and service-graph metrics (``edge_rate``).

Impact flows *up* the graph: a failing callee hurts its callers. So the usual
suspect is an anomalous node whose own dependencies are healthy (or went
wrong later), whose onset is early, and above which many callers hurt. That
is scored twice and blended:

* a personalised PageRank on the reversed-weight walk (MicroRank/TON style):
  the walker starts at the hurting services and moves towards callees in
  proportion to how anomalous they are, so mass pools at the deepest
  anomalous node;
* an onset/locality score: own anomaly strength, minus what anomalous
  dependencies that started no later already explain, plus earliness.

The blast radius of a candidate is the set of anomalous services upstream of
it (its transitive callers that show anomalies), plus itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np
import numpy.typing as npt
import pandas as pd

from correlator.detect import series_index
from correlator.model import Telemetry
from correlator.pagerank import pagerank
from correlator.roles import CAUSE_ROLES, CLIENT_ROLES, GENERIC, SYMPTOM_ROLES

#: The edge role each caller-side role was moved from.
CLIENT_OF = {v: k for k, v in CLIENT_ROLES.items()}

__all__ = [
    "CAUSE_ROLES",
    "CLIENT_ROLES",
    "SYMPTOM_ROLES",
    "RootScore",
    "aimed_surges",
    "amplified",
    "attribute_edges",
    "blast_radius",
    "build_graph",
    "comovement",
    "demand_rises",
    "fired_by",
    "instrumented",
    "laid_at_callee",
    "laid_at_dark_callee",
    "laid_at_shared_end",
    "named_by_callers",
    "order_scales",
    "over_by",
    "rate_rises",
    "root_scores",
    "service_summary",
    "trouble_began",
    "trouble_ended",
]

_DB_CACHE = frozenset({"redis", "memcached", "valkey", "hazelcast"})


def build_graph(telemetry: Telemetry, signals: pd.DataFrame | None = None) -> nx.DiGraph:
    """Caller -> callee graph with node ``kind`` and edge ``sources`` attributes."""
    g = nx.DiGraph()
    for node, kind in telemetry.node_kinds.items():
        g.add_node(node, kind=kind)

    def add(caller: str, callee: str, source: str, kind: str | None = None) -> None:
        if not caller or not callee or caller == callee:
            return
        for n in (caller, callee):
            if n not in g:
                g.add_node(n, kind="service")
        if kind and g.nodes[callee].get("kind", "service") == "service":
            g.nodes[callee]["kind"] = kind
        if g.has_edge(caller, callee):
            g.edges[caller, callee]["sources"].add(source)
        else:
            g.add_edge(caller, callee, sources={source})

    for caller, callee, declared in telemetry.edges:
        add(caller, callee, "declared", declared if declared != "service" else None)
    spans = telemetry.spans
    if spans is not None and not spans.empty:
        for caller, callee, seen in _span_edges(spans):
            add(caller, callee, "traces", seen)
    sig = signals if signals is not None else telemetry.signals
    if sig is not None and not sig.empty and "edge_rate" in set(sig["role"].unique()):
        e = sig.loc[
            sig["role"].isin(("edge_rate", "edge_errors", "edge_latency")), ["peer", "service"]
        ]
        e = e.dropna().drop_duplicates()
        for caller, callee in e.itertuples(index=False):
            add(str(caller), str(callee), "metrics")
    for n in g.nodes:
        g.nodes[n].setdefault("kind", "service")
    return g


def _span_edges(spans: pd.DataFrame) -> list[tuple[str, str, str | None]]:
    """Edges from client spans: to the child server span's service, else to the peer."""
    s = spans[["trace_id", "span_id", "parent_span_id", "service", "kind", "peer", "db_system"]]
    client = s[s["kind"] == 3]
    if client.empty:
        return []
    server = s[s["kind"].isin((2, 5))]
    pairs = client.merge(
        server[["trace_id", "parent_span_id", "service"]],
        left_on=["trace_id", "span_id"],
        right_on=["trace_id", "parent_span_id"],
        how="left",
        suffixes=("", "_callee"),
    )
    out: list[tuple[str, str, str | None]] = []
    matched = pairs[pairs["service_callee"].notna()]
    for caller, callee in (
        matched[["service", "service_callee"]].drop_duplicates().itertuples(index=False)
    ):
        out.append((str(caller), str(callee), None))
    orphans = pairs[pairs["service_callee"].isna() & pairs["peer"].notna()]
    orphans = orphans[["service", "peer", "db_system"]].drop_duplicates(["service", "peer"])
    for caller, peer, dbs in orphans.itertuples(index=False):
        if dbs is None or (isinstance(dbs, float) and np.isnan(dbs)) or dbs == "":
            kind = "external"
        else:
            kind = "cache" if str(dbs).lower() in _DB_CACHE else "database"
        out.append((str(caller), str(peer), kind))
    return out


#: The callee's own role an edge role is compared with.
_OWN_ROLE = {
    "edge_errors": "error_rate",
    "edge_error_ratio": "error_ratio",
    "edge_latency": "latency",
}


def _own_role_value(a: pd.DataFrame, values: pd.Series, how: str, default: float) -> np.ndarray:
    """Per edge row, ``how`` of ``values`` over the callee's own rows of the matching role."""
    own = a["role"].isin(list(_OWN_ROLE.values()))
    grp = values[own].groupby([a["role"], a["service"]]).agg(how)
    lookup = {
        (str(r), str(svc)): float(v)
        for r, svc, v in zip(
            grp.index.get_level_values(0),
            grp.index.get_level_values(1),
            grp.to_numpy(dtype=float),
            strict=True,
        )
    }
    return np.array(
        [
            lookup.get((_OWN_ROLE.get(str(r), ""), str(svc)), default)
            for r, svc in zip(a["role"], a["service"], strict=True)
        ]
    )


def _first_at(a: pd.DataFrame, mask: np.ndarray) -> np.ndarray:
    """Per row, the earliest onset among the ``mask`` rows of its service (inf if none)."""
    svc = a["service"].astype(str)
    at = a.loc[mask, "onset"].astype(float).groupby(svc[mask]).min()
    out: np.ndarray = svc.map(at).astype(float).fillna(np.inf).to_numpy()
    return out


def _held_at(
    a: pd.DataFrame, mask: np.ndarray, at: np.ndarray, slack: float, where: np.ndarray
) -> np.ndarray:
    """For the ``where`` rows: whether a ``mask`` row of the same service had begun by
    ``at + slack`` and not ended before ``at - slack`` (trouble that was over does not
    explain later trouble). False elsewhere."""
    out = np.zeros(len(a), dtype=bool)
    if not mask.any() or not where.any():
        return out
    codes = pd.factorize(a["service"].astype(str))[0]
    rows = np.flatnonzero(where)
    left = pd.DataFrame({"row": rows, "svc": codes[rows], "at": at[rows]})
    right = pd.DataFrame(
        {
            "svc": codes[mask],
            "onset": a.loc[mask, "onset"].astype(float).to_numpy(),
            "end": a.loc[mask, "end"].astype(float).to_numpy(),
        }
    )
    pairs = left.merge(right, on="svc")
    held = (pairs["onset"] <= pairs["at"] + slack) & (pairs["end"] >= pairs["at"] - slack)
    out[pairs.loc[held, "row"].to_numpy()] = True
    return out


def attribute_edges(
    anomalies: pd.DataFrame, signals: pd.DataFrame, share: float = 0.25, later: float = 30.0
) -> pd.DataFrame:
    """Move edge anomalies of an instrumented callee that does not see them to the caller.

    An edge anomaly (calls from ``peer`` to ``service`` failing or slow) is
    first the callee's. But when the callee serves requests of its own that we
    can see (``request_rate``/``latency`` series) and its own errors or latency
    rose by less than ``share`` of what its callers see (often not at all),
    or began more than ``later`` seconds after its callers saw it (its own
    side fails later, from the retries), the trouble sits between the two (the
    caller's network, sidecar, client or connection pool): the row is moved to
    the caller as ``client_*`` with the callee in ``peer``. It stays the
    callee's when, by then, the callee was losing pods or starved of CPU, or
    (for failed calls) already slow itself: its callers timed out on it. CPU or
    latency that rose with its request rate is load, not a sign of its own.
    """
    if anomalies.empty or signals.empty:
        return anomalies
    instrumented = set(signals.loc[signals["role"].isin(("request_rate", "latency")), "service"])
    a = anomalies
    rise = (a["peak"].astype(float) - a["baseline"].astype(float)).abs()
    own_rise = _own_role_value(a, rise, "max", 0.0)
    own_onset = _own_role_value(a, a["onset"].astype(float), "min", np.inf)
    onset = a["onset"].astype(float).to_numpy()
    # The callee's own side saw little of it, or only clearly after its callers did.
    unseen = (own_rise < share * rise.to_numpy()) | (own_onset > onset + later)
    # ... unless the callee was starved, losing pods or slow by then: its callers time
    # out on it (a slow server records no error of its own), so the trouble is its own.
    # CPU or latency that rose with its request rate is load (retries, more traffic).
    roles = a["role"].astype(str)
    up = a["direction"].astype(str).to_numpy() == "up"
    loaded = _first_at(a, (roles == "request_rate").to_numpy() & up) <= onset + later
    # Pods lost: ready pods or targets down, restarts or OOM kills up.
    lost = roles.isin(("pod_ready", "up", "restarts", "oom_kills")).to_numpy() & (
        up == roles.isin(("restarts", "oom_kills")).to_numpy()
    )
    starved = roles.isin(("cpu", "cpu_throttled")).to_numpy() & up & ~loaded
    slow = (roles == "latency").to_numpy() & up & ~loaded
    edges = roles.isin(list(CLIENT_ROLES)).to_numpy()
    unseen &= ~_held_at(a, lost | starved, onset, later, edges)
    errors = roles.isin(("edge_errors", "edge_error_ratio")).to_numpy()
    unseen &= ~_held_at(a, slow, onset, later, errors)
    m = (
        a["role"].isin(list(CLIENT_ROLES))
        & a["service"].isin(list(instrumented))
        & (a["peer"].astype(str) != "")
        & unseen
    )
    return _to_other_end(a, m, CLIENT_ROLES)


def _to_other_end(
    a: pd.DataFrame, m: pd.Series | np.ndarray, roles: dict[str, str]
) -> pd.DataFrame:
    """``a`` with the call rows ``m`` moved to the other end of their call (service and
    peer swapped, role renamed by ``roles``), in onset order."""
    if not np.asarray(m).any():
        return a
    m = np.asarray(m, dtype=bool)
    moved = a[m].copy()
    moved["service"] = a.loc[m, "peer"].astype(str).to_numpy()
    moved["peer"] = a.loc[m, "service"].astype(str).to_numpy()
    moved["role"] = moved["role"].map(roles)
    out = pd.concat([a[~m], moved], ignore_index=True)
    return out.sort_values(["onset", "score"], ascending=[True, False]).reset_index(drop=True)


def laid_at_callee(anomalies: pd.DataFrame, lag: float = 30.0) -> pd.DataFrame:
    """Move callers' views of their calls to a service back to it where the spans laid the
    calls' trouble at its door (``transit_latency``: calls answered by some of its
    instances, or by it to most of its callers, spent longer outside its server).

    The inverse of :func:`attribute_edges`: calls slow between two services are the
    caller's own (its network, pool or sidecar) until the spans say which end they
    share (or the calls do, see :func:`laid_at_shared_end`). Client rows (``client_*`` on the caller, the callee in ``peer``) that began
    no earlier than ``lag`` before the callee's transit rows become its edge rows
    (``edge_*``, the caller in ``peer``), so the callers' trouble is its trouble.
    """
    if anomalies.empty:
        return anomalies
    a = anomalies
    transit = a[(a["role"] == "transit_latency") & (a["direction"] == "up")]
    if transit.empty:
        return anomalies
    since = transit.groupby(transit["service"].astype(str))["onset"].min().astype(float)
    peer = a["peer"].astype(str)
    at = peer.map(since).astype(float).fillna(np.inf).to_numpy()
    m = (
        a["role"].isin(list(CLIENT_OF)).to_numpy()
        & (a["direction"] == "up").to_numpy()
        & (a["onset"].astype(float).to_numpy() >= at - lag)
    )
    return _to_other_end(a, m, CLIENT_OF)


def instrumented(telemetry: Telemetry) -> set[str]:
    """Services we see from inside: request metrics of their own, or spans of their own."""
    sig = telemetry.signals
    own = sig.loc[sig["role"].isin(("request_rate", "latency")), "service"]
    out = {str(s) for s in own.dropna().unique()}
    if len(telemetry.spans):
        out |= {str(s) for s in telemetry.spans["service"].dropna().unique()}
    return out


def laid_at_shared_end(
    anomalies: pd.DataFrame,
    seen: set[str],
    lag: float = 30.0,
    callees: dict[str, set[str]] | None = None,
) -> pd.DataFrame:
    """Move callers' views of their calls to a callee to it, as its edge rows, where the
    trouble is on the callee's side of the call.

    A callee we see nothing of (no metrics and no spans of its own: a database, a
    cache, an external API; ``seen``: the services we see from inside, see
    :func:`instrumented`) shows only through its callers, as the service-graph edge
    metrics into it would show it. A caller's client rows (``client_*``, the callee in
    ``peer``) become the callee's (``edge_*``, the caller in ``peer``) when two or more
    callers saw its calls go wrong, or when the one that did saw nothing else go wrong
    by then: a caller whose calls to everything went bad at once (its own network, its
    own pool) keeps them.

    A callee we do see, whose own side did not show its callers' trouble (see
    :func:`attribute_edges`), is judged the same way, as far as the calls can tell the
    two ends apart: two or more callers saw calls to it go wrong (a delay in front of
    it, not in each of them); or its one caller makes other calls (``callees``: per
    service, what it calls) that were still fine then (a delay on its way out would
    slow them all). A caller with no other calls keeps them: nothing tells the ends
    apart.
    """
    if anomalies.empty:
        return anomalies
    a = anomalies
    peer = a["peer"].astype(str)
    client = (
        a["role"].isin(list(CLIENT_OF)).to_numpy()
        & (a["direction"] == "up").to_numpy()
        & (peer != "").to_numpy()
    )
    if callees is None:
        client &= ~peer.isin(list(seen)).to_numpy()
    if not client.any():
        return anomalies
    svc = a["service"].astype(str)
    onset = a["onset"].astype(float)
    calls = a["role"].isin([*CLIENT_OF, *CLIENT_ROLES]).to_numpy() & (peer != "").to_numpy()
    # Each troubled call as (caller, callee): client rows sit on the caller, edge rows on
    # the callee (the calls into a caller are not its calls elsewhere).
    at_callee = a["role"].isin(list(CLIENT_ROLES)).to_numpy()
    caller = pd.Series(np.where(at_callee, peer, svc), index=a.index)
    callee = pd.Series(np.where(at_callee, svc, peer), index=a.index)
    # Per caller, its two earliest troubled calls to different peers: the first call that
    # went wrong elsewhere than a given peer is one of them.
    firsts = (
        pd.DataFrame({"svc": caller[calls], "peer": callee[calls], "onset": onset[calls]})
        .groupby(["svc", "peer"], sort=False)["onset"]
        .min()
        .reset_index()
        .sort_values("onset", kind="stable")
    )
    by_svc = firsts.groupby("svc", sort=False)
    first, second = by_svc.nth(0).set_index("svc"), by_svc.nth(1).set_index("svc")
    rows = pd.DataFrame({"svc": svc[client], "peer": peer[client], "onset": onset[client]})
    p1 = rows["svc"].map(first["peer"])
    t1 = rows["svc"].map(first["onset"]).astype(float)
    t2 = rows["svc"].map(second["onset"]).astype(float).fillna(np.inf)
    elsewhere_at = np.where(p1 == rows["peer"], t2, t1)
    n_callers = rows.groupby("peer")["svc"].transform("nunique").to_numpy()
    fine_elsewhere = elsewhere_at > rows["onset"].to_numpy() + lag
    if callees is not None:
        # A seen callee: the caller's calls elsewhere tell only if it makes some.
        unseen = ~rows["peer"].isin(list(seen)).to_numpy()
        pairs = zip(rows["svc"], rows["peer"], strict=True)
        other = np.array([len(callees.get(c, set()) - {p}) > 0 for c, p in pairs], dtype=bool)
        fine_elsewhere &= unseen | other
    # Two callers or more; or one whose calls elsewhere were fine by then (else its own).
    move = np.zeros(len(a), dtype=bool)
    move[np.flatnonzero(client)] = (n_callers >= 2) | fine_elsewhere
    return _to_other_end(a, move, CLIENT_OF)


#: A service's own trouble as its callers would feel it: slower or failing answers.
_OWN_SLOW = ("latency", "span_latency")


def laid_at_dark_callee(
    anomalies: pd.DataFrame, graph: nx.DiGraph, seen: set[str], lag: float = 30.0
) -> pd.DataFrame:
    """Add edge rows to a callee we see nothing of where its callers' trouble says it is
    the callee's: the service-graph metrics into it, as they would have shown it.

    A database, a cache or an external API that only the declared topology names (no
    metrics, spans or log lines of its own, and no caller's rows naming it) shows only
    through its callers. When every one of its callers (two or more, each seen from
    inside: ``seen``, see :func:`instrumented`) began to answer slowly or to fail within
    ``2 * lag`` of the others, nothing's own trouble began before the last of them but
    those callers' and their callers', and nothing else they call hurt first (its own
    symptoms, calls to it, its callers' words), and no caller logs errors of its own as
    its trouble begins (naming something else, since nothing names the callee), the
    callers' shared callee is where it began: each caller's strongest slow row becomes
    the callee's ``edge_latency`` row, its strongest failing row its ``edge_errors`` row, the caller in ``peer`` (the row
    keeps its ``signal``: the caller's series it came from). A surge or a lost zone also
    hurts several services at once, but not the callers of one callee before everything
    else.
    """
    if anomalies.empty or graph.number_of_nodes() == 0:
        return anomalies
    a = anomalies
    up = a[a["direction"] == "up"]
    svc, peer = up["service"].astype(str), up["peer"].astype(str)
    named = set(svc) | set(peer[peer != ""])
    dark = [n for n in graph.nodes if n not in seen and n not in named and graph.in_degree(n) >= 2]
    if not dark:
        return anomalies
    own = up[up["role"].isin([*_OWN_SLOW, *_OWN_ERRORS]) & ((peer == "") | (peer == svc))]
    if own.empty:
        return anomalies
    began = trouble_began(own)
    # What hurt, calls to it and its callers' words included: a callee we do see something
    # of, hurting first, explains its callers.
    sym = up[up["role"].isin(list(SYMPTOM_ROLES))]
    hurt = trouble_began(sym) if len(sym) else pd.Series(dtype=float)
    # A caller that logs errors of its own as its trouble begins, none naming the callee
    # (it is dark: no row names it), tells what failed, and it was not the callee.
    words = up[up["role"].isin(("log_errors", "log_template")) & ((peer == "") | (peer == svc))]
    told = trouble_began(words) if len(words) else pd.Series(dtype=float)
    # Each caller's ancestors and descendants, once (several callees may share callers).
    ancestors: dict[str, set[str]] = {}
    descendants: dict[str, set[str]] = {}
    added = []
    for d in dark:
        callers = sorted({str(c) for c in graph.predecessors(d) if c != d})
        if len(callers) < 2 or not all(c in seen and c in began.index for c in callers):
            continue
        at = began[callers].astype(float)
        first, last = float(at.min()), float(at.max())
        if last - first > 2.0 * lag:
            continue
        if any(c in told.index and float(told[c]) <= float(at[c]) + lag for c in callers):
            continue  # a caller says what failed, and it does not name this one
        for c in callers:
            if c not in ancestors:
                ancestors[c] = {str(x) for x in nx.ancestors(graph, c)}
                descendants[c] = {str(x) for x in nx.descendants(graph, c)}
        above = set(callers).union(*(ancestors[c] for c in callers))
        if any(str(s) not in above for s in began[began < last].index):
            continue  # something else began first: not these callers' shared callee
        below = set().union(*(descendants[c] for c in callers)) - {d, *callers}
        if any(str(s) in below for s in hurt[hurt < last].index):
            continue  # something else they call hurt first
        rows = own[own["service"].astype(str).isin(callers)]
        for roles, edge in ((_OWN_SLOW, "edge_latency"), (_OWN_ERRORS, "edge_errors")):
            best = rows[rows["role"].isin(list(roles))].sort_values("score", ascending=False)
            best = best.drop_duplicates("service")
            if best.empty:
                continue
            moved = best.copy()
            moved["peer"] = best["service"].astype(str).to_numpy()
            moved["service"] = d
            moved["role"] = edge
            added.append(moved)
    if not added:
        return anomalies
    out = pd.concat([a, *added], ignore_index=True)
    return out.sort_values(["onset", "score"], ascending=[True, False]).reset_index(drop=True)


#: What a span or log anomaly's score is worth in a metric's robust z when a service's
#: trouble is weighed against another's that the metrics show. The span and log detectors
#: score a count test (how sure: it grows with how many spans or lines there are); a
#: metric's robust z is the change over its own noise (how big: it grows with the change).
#: On services that moved in both (the same service's latency and span latency, its
#: errors and error spans or error lines), the metric's z was 5 to 10 times the count
#: test's in the demo system's live recordings, 19 to 200 times in generated scenarios:
#: 4 stays below both. Without metrics there is nothing to put them level with.
COUNT_TEST_WEIGHT = 4.0


def service_summary(
    anomalies: pd.DataFrame,
    lag: float = 30.0,
    pushed: frozenset[str] | set[str] = frozenset(),
    onset_share: float = 0.75,
) -> pd.DataFrame:
    """Per service: anomaly strength (0..1), earliest onset, symptom/cause strength.

    Strength maps a sustained z-score ``s`` to ``s / (s + 8)`` (a span or log score
    weighs :data:`COUNT_TEST_WEIGHT` times as much when metrics moved too); the
    ``symptom``/``cause`` columns take the strongest anomaly of those role sets.
    A cause-role anomaly that began more than ``lag`` seconds after the
    service's first symptom is an effect (retries raise the request rate,
    retries and timeouts burn CPU), not a cause, and does not count as one.
    ``pushed`` services (see :func:`amplified`) are busier only because a
    caller calls them more often: their request-rate rise is not a cause,
    and their busyness counts half. A service's ``onset`` is that of its first
    anomaly at least ``onset_share`` as strong as its strongest.
    """
    cols = ["service", "strength", "onset", "symptom", "cause", "n_roles", "symptom_onset"]
    if anomalies.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in cols}).set_index("service")
    # Call volume on an edge follows the callers' traffic: an echo, never a sign of trouble.
    a = anomalies[anomalies["role"] != "edge_rate"].copy()
    if a.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in cols}).set_index("service")
    # Span and log scores are put on the metrics' scale when both are there to compare.
    metric = (
        a["modality"].astype(str).to_numpy() == "metrics"
        if "modality" in a
        else np.ones(len(a), dtype=bool)
    )
    sc = a["score"].astype(float) * (
        np.where(metric, 1.0, COUNT_TEST_WEIGHT) if metric.any() else 1.0
    )
    a["strength"] = sc / (sc + 8.0)
    a["is_symptom"] = a["role"].isin(SYMPTOM_ROLES)
    sym_onset = a[a["is_symptom"]].groupby("service")["onset"].min()
    first_symptom = a["service"].map(sym_onset).astype(float).fillna(np.inf)
    # A rise of traffic is a cause; a drop is an echo of a failure elsewhere.
    is_pushed = a["service"].isin(list(pushed))
    a["is_cause"] = (
        a["role"].isin(CAUSE_ROLES)
        & ~((a["role"] == "request_rate") & (a["direction"] == "down"))
        # Pushed harder by retrying callers, more requests and CPU are what the push did.
        & ~(a["role"].isin(("request_rate", "cpu", "cpu_throttled")) & is_pushed)
        & (a["onset"].astype(float) <= first_symptom + lag)
    )
    # Busier is not hurting: more requests or CPU on a service whose own requests are
    # fine makes it a weaker suspect than one that fails or slows down.
    quiet = ~a["service"].isin(list(sym_onset.index)) | is_pushed
    busy = a["role"].isin(("request_rate", "cpu", "cpu_throttled")) & quiet
    # Likewise memory that grows while nothing errs, slows or gets killed.
    growing = a["role"].isin(("memory", "memory_ratio")) & ~a["service"].isin(list(sym_onset.index))
    a["strength"] = np.where(growing, 0.5 * a["strength"], a["strength"])
    a["full"] = a["strength"]
    a["strength"] = np.where(busy, 0.5 * a["strength"], a["strength"])
    g = a.groupby("service")
    # When the service's trouble began: its first anomaly of some weight. A faint early
    # wobble (a few ms on one caller's calls) does not date trouble that came later.
    strong = a["full"] >= onset_share * g["full"].transform("max")
    # A change of the service's own resources or traffic that is clearly significant in
    # itself (z >= 12) dates it too, however much stronger the errors it later causes are
    # (a leak's climb long before its out-of-memory errors).
    strong |= a["role"].isin(CAUSE_ROLES) & (a["full"] >= 0.6)
    out = pd.DataFrame(
        {
            "strength": g["strength"].max(),
            "full_strength": g["full"].max(),
            # What the service's own telemetry shows (not what its callers say of it).
            "own_strength": a[a["role"] != "named_by_callers"].groupby("service")["strength"].max(),
            "onset": a[strong].groupby("service")["onset"].min(),
            "symptom": a[a["is_symptom"]].groupby("service")["strength"].max(),
            "cause": a[a["is_cause"]].groupby("service")["strength"].max(),
            "n_roles": g["role"].nunique(),
            "symptom_onset": sym_onset,
        }
    )
    out[["symptom", "cause"]] = out[["symptom", "cause"]].fillna(0.0)
    return out


def _calls_in(anomalies: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per service, the callers whose calls into it rose (``edge_rate`` up), and when."""
    a = anomalies
    edge_up = a[(a["role"] == "edge_rate") & (a["direction"] == "up")]
    out: dict[str, dict[str, float]] = {}
    for svc, caller, at in zip(edge_up["service"], edge_up["peer"], edge_up["onset"], strict=True):
        if str(caller):
            calls = out.setdefault(str(svc), {})
            calls[str(caller)] = min(float(at), calls.get(str(caller), np.inf))
    return out


#: A score of some weight (strength 0.5): trouble that dates when something began. Fainter
#: anomalies (a few sampled spans, one stray log line) count as evidence, not as dates.
MATERIAL = 8.0


#: A service's own errors, as it records them.
_OWN_ERRORS = ("error_rate", "error_ratio", "span_errors", "log_errors")
#: What makes callers ask again: the service's requests failing, as it or its callers
#: record them (a timeout is a failure on the caller's side). Slowness alone is not
#: retried, and a slow request that is not a failure dates nothing about retries.
_FAILING = frozenset(
    {*_OWN_ERRORS, "log_template", "edge_errors", "edge_error_ratio", "named_by_callers"}
)


def _timely_rises(anomalies: pd.DataFrame, lag: float) -> pd.DataFrame:
    """Request-rate rises begun no later than ``lag`` after the service's own failures."""
    a = anomalies
    up = a[(a["role"] == "request_rate") & (a["direction"] == "up")]
    # Failures of some weight: a faint wobble of a few sampled spans before a surge does
    # not make the surge callers retrying.
    weighty = a[a["role"].isin(_FAILING) & (a["score"].astype(float) >= MATERIAL)]
    sym = weighty.groupby("service")["onset"].min()
    first = up["service"].map(sym).astype(float).fillna(np.inf)
    # A rate averaged over a window reads a rise late; the same service's sampled spans
    # rising in share (dated to the record) just before it date the same rise.
    spans = a[(a["role"] == "span_rate") & (a["direction"] == "up")]
    seen = up["service"].map(spans.groupby("service")["onset"].min()).astype(float)
    at = up["onset"].astype(float)
    began = np.where((seen <= at) & (seen >= at - 2.0 * lag), seen, at)
    return up[began <= first + lag]


def amplified(anomalies: pd.DataFrame, lag: float = 30.0) -> set[str]:
    """Services whose request rate rose only because callers call them more often.

    The calls that made a rise are the callers' ``edge_rate`` rises into the
    service that began with it (within ``lag / 2``). When none of those
    callers receives more requests itself (more demand, begun no later than
    ``lag`` after its own failures), the extra load is made by them:
    retries after failed or timed-out calls, or a release that calls more.
    It is not demand arriving from outside. It passes on: a caller whose own
    rise is made that way (a retry storm fanning out) adds no demand either.
    """
    a = anomalies
    rises = a[(a["role"] == "request_rate") & (a["direction"] == "up")]
    calls = _calls_in(a)
    if rises.empty or not calls:
        return set()
    rise_at = rises.groupby("service")["onset"].min().astype(float).to_dict()
    timely = set(_timely_rises(a, lag)["service"])
    pushing = {
        svc: {c for c, at in callers.items() if at <= rise_at[svc] + lag / 2}
        for svc, callers in calls.items()
        if svc in rise_at
    }
    pushing = {svc: push for svc, push in pushing.items() if push}
    out: set[str] = set()
    changed = True
    while changed:
        changed = False
        demand = timely - out
        for svc, push in pushing.items():
            if svc not in out and not push & demand:
                out.add(svc)
                changed = True
    return out


def _latency_rises(anomalies: pd.DataFrame) -> dict[str, float]:
    """Per service, the largest rise of its own latency (seconds, peak over baseline)."""
    lat = anomalies[(anomalies["role"] == "latency") & (anomalies["direction"] == "up")]
    if lat.empty:
        return {}
    rise = lat["peak"].astype(float) - lat["baseline"].astype(float)
    per = rise[rise > 0].groupby(lat["service"].astype(str)).max()
    return {str(k): float(v) for k, v in per.items()}


def demand_rises(
    anomalies: pd.DataFrame, lag: float = 30.0, pushed: set[str] | None = None
) -> pd.DataFrame:
    """Request-rate rises that are more demand, not retries: per service ``strength``, ``onset``.

    A rise that began more than ``lag`` seconds after the service's own
    failures (errors, as it or its callers saw them) is callers retrying it, not load
    arriving from outside; so is a rise made by callers that call more often
    while receiving no more requests themselves (``pushed``, by default
    :func:`amplified`).
    """
    if pushed is None:
        pushed = amplified(anomalies, lag)
    up = _timely_rises(anomalies, lag)
    up = up[~up["service"].isin(list(pushed))]
    if up.empty:
        return pd.DataFrame({"strength": [], "onset": []})
    strength = (up["score"] / (up["score"] + 8.0)).groupby(up["service"]).max()
    return pd.DataFrame({"strength": strength, "onset": up.groupby("service")["onset"].min()})


#: How much more (relatively) a callee's rate must rise than its caller's for the
#: caller's surge to count as aimed at it.
AIMED_RISE = 1.5


def aimed_surges(
    graph: nx.DiGraph, ratio: dict[str, float], extra: dict[str, float]
) -> dict[str, set[str]]:
    """Per service whose request rate rose, the callees its surge was aimed at, if any.

    ``ratio``: per service, its request rate's peak over baseline; ``extra``: peak
    minus baseline (requests/s). Extra traffic for one route shows at the entry as a
    modest rise and at the route's callees as a steeper one: a callee's rate rose at
    least :data:`AIMED_RISE` times as much (relatively) as the caller's and took at
    least half its extra requests, while most of the caller's other callees kept their
    usual rate. A surge of the whole entry point raises most callees alike: aimed at
    none. The caller only forwarded such a surge; it is not where it came from.
    """
    out: dict[str, set[str]] = {}
    for svc, r in ratio.items():
        if svc not in graph:
            continue
        callees = [d for d in graph.successors(svc) if d != svc]
        risen = [d for d in callees if d in ratio]
        if not callees or 2 * len(risen) > len(callees):
            continue
        aimed = {
            d
            for d in risen
            if ratio[d] - 1.0 >= AIMED_RISE * (r - 1.0)
            and extra.get(d, 0.0) >= 0.5 * extra.get(svc, 0.0)
        }
        if aimed:
            out[svc] = aimed
    return out


def rate_rises(anomalies: pd.DataFrame) -> tuple[dict[str, float], dict[str, float]]:
    """Per service, the largest request-rate rise: peak over baseline, and peak minus it."""
    up = anomalies[(anomalies["role"] == "request_rate") & (anomalies["direction"] == "up")]
    ratio: dict[str, float] = {}
    extra: dict[str, float] = {}
    for svc, base, peak in zip(up["service"], up["baseline"], up["peak"], strict=True):
        b, p = float(base), float(peak)
        if not (np.isfinite(b) and np.isfinite(p)) or b <= 0 or p <= b:
            continue
        if p / b > ratio.get(str(svc), 0.0):
            ratio[str(svc)], extra[str(svc)] = p / b, p - b
    return ratio, extra


def comovement(
    anomalies: pd.DataFrame,
    signals: pd.DataFrame,
    alert_service: str | None,
    since: float,
    prefer: tuple[str, ...] = (),
    index: Mapping[tuple[str, str, str], Any] | None = None,
) -> dict[str, float]:
    """Per anomalous service, how closely its moved series follow the alert's symptom.

    Effects move with their causes: the cause of the alert's symptom changes when
    it changes, while a series that moved on its own schedule (an unrelated spike
    before the fault, a slow drift) does not. The symptom is the alerted service's
    series the alert's own rule reads (``prefer``: aggregated role keys, e.g.
    ``series:availability_ratio``), else its strongest symptom; each service gets the
    largest absolute Pearson
    correlation of one of its anomalous series with it, on the samples both have
    from ``since`` on. Empty when there is no symptom series to follow.
    """
    if not alert_service or anomalies.empty or signals.empty:
        return {}
    sym = anomalies[
        (anomalies["service"].astype(str) == alert_service)
        & anomalies["role"].isin(list(SYMPTOM_ROLES))
        & (anomalies["modality"].astype(str) == "metrics")
    ]
    if index is None:
        index = series_index(signals)
    vals = signals["value"].to_numpy(dtype=float)
    ts = signals["ts"].to_numpy(dtype=float)

    def series(row: Any) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None:
        """The row's series from ``since`` on: times (unique, sorted) and values."""
        role = str(row["role"])
        key_role = f"{role}:{row['signal']}" if role == GENERIC else role
        origin = str(row["signal"])
        if origin in CLIENT_OF or origin in CLIENT_ROLES:
            # A call row keeps the name of the series it came from as its signal: a row
            # moved to the other end of its call follows that series, on that end.
            ends = (str(row["service"]), str(row["peer"]))
            key = (origin, *(ends if origin == role else ends[::-1]))
        # Rows moved to a caller's side (client_*) follow the edge series they came from.
        elif role in CLIENT_OF:
            key = (CLIENT_OF[role], str(row["peer"]), str(row["service"]))
        else:
            key = (key_role, str(row["service"]), str(row["peer"]))
        rows = index.get(key)
        if rows is None and role in CLIENT_ROLES:
            # Laid at the callee's door (laid_at_callee): the caller's series of its calls.
            rows = index.get((CLIENT_ROLES[role], str(row["peer"]), str(row["service"])))
        if rows is None and role in CLIENT_ROLES and str(row["peer"]):
            # Inferred from a caller's own series (laid_at_dark_callee): that series.
            rows = index.get((origin, str(row["peer"]), ""))
        if rows is None or len(rows) < 3:
            return None
        t, v = ts[rows], vals[rows]
        keep = t >= since
        t, v = t[keep], v[keep]
        _, first = np.unique(t, return_index=True)  # each time once (its first), sorted
        return t[first], v[first]

    # The rule's series that moved most on the alerted service; else its strongest symptom;
    # else the rule's first series (one rule often reads several: errors over requests).
    mine = anomalies[anomalies["service"].astype(str) == alert_service]
    keyed = mine.assign(
        key=[
            f"{r}:{g}" if r == GENERIC else r
            for r, g in zip(mine["role"].astype(str), mine["signal"].astype(str), strict=True)
        ]
    )
    wanted = set(prefer) | ({"error_ratio"} if "error_rate" in prefer else set())
    hits = keyed[keyed["key"].isin(list(wanted))].sort_values("score", ascending=False)
    target = None
    for _, row in pd.concat([hits, sym.sort_values("score", ascending=False)]).iterrows():
        target = series(row)
        if target is not None:
            break
    for key in prefer if target is None else ():
        role, _, family = key.partition(":")
        target = series(
            pd.Series({"role": role, "signal": family, "service": alert_service, "peer": ""})
        )
        if target is not None:
            break
    if target is None or len(target[0]) < 3:
        return {}
    t_ts, t_vals = target
    known = t_vals[~np.isnan(t_vals)]
    if len(known) > 1 and float(known.std()) == 0:
        return {}
    out: dict[str, float] = {}
    metric_rows = anomalies[anomalies["modality"].astype(str) == "metrics"]
    cols = ["role", "signal", "service", "peer"]
    for values in zip(*(metric_rows[c] for c in cols), strict=True):
        rec = dict(zip(cols, values, strict=True))
        svc = str(rec["service"])
        s = series(rec)
        if s is None:
            continue
        # The samples both have (each series' times are unique and sorted).
        _, i, j = np.intersect1d(t_ts, s[0], return_indices=True)
        x, y = t_vals[i], s[1][j]
        ok = ~(np.isnan(x) | np.isnan(y))
        x, y = x[ok], y[ok]
        if len(x) < 3 or y.std() == 0:
            continue
        if x.std() == 0:
            continue  # the symptom is flat where this series has data: nothing to follow
        with np.errstate(divide="ignore", invalid="ignore"):
            r = abs(float(np.corrcoef(x, y)[0, 1]))
        if np.isfinite(r):
            out[svc] = max(out.get(svc, 0.0), r)
    # A service only its callers' words point at (it returns wrong values; nothing of its
    # own moved) follows the symptom as closely as the callers that name it.
    # So does one whose trouble only its callers' spans show (slow or failed calls to it,
    # nothing of its own in the metrics): the calls are its series.
    named = anomalies[
        (anomalies["role"] == "named_by_callers")
        | (
            anomalies["role"].isin(list(CLIENT_OF))
            & (anomalies["modality"].astype(str) != "metrics")
        )
    ]
    named = named[named["peer"].astype(str) != ""]
    inherited: dict[str, float] = {}
    for svc, caller, r in zip(
        named["service"].astype(str), named["peer"].astype(str), named["role"], strict=True
    ):
        if r in CLIENT_OF:
            svc, caller = caller, svc  # a client row sits on the caller; peer is the callee
        if svc not in out and caller in out:
            inherited[svc] = max(inherited.get(svc, 0.0), out[caller])
    return out | inherited


#: A caller's error rows that its logs can blame on a callee.
_BLAMEABLE = _OWN_ERRORS
#: Rows of calls between two services that failed or slowed on the way.
_CALL_TROUBLE = (
    "client_errors",
    "client_error_ratio",
    "client_latency",
    "edge_errors",
    "edge_error_ratio",
    "edge_latency",
)


#: Roles whose change in most services at once is a change of the whole system (a
#: restart's warm-up, node-wide memory pressure), not any one service's: memory, and
#: series no role knows. Health, load and CPU are left alone: a zone failure or a surge
#: moves them everywhere at once and that is their story.
COMMON_MODE_ROLES = ("memory", "memory_ratio", GENERIC)
#: Share of the services measuring a series that must move at once for it to be common.
COMMON_SHARE = 0.5
#: ... and never fewer services than this.
COMMON_MIN = 5


def common_mode(
    anomalies: pd.DataFrame, signals: pd.DataFrame, tolerance: float
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """The anomaly rows without the changes most services made at once.

    A series (a role, or a family no role knows) that moved the same way in at
    least :data:`COMMON_SHARE` of the services measuring it (and
    :data:`COMMON_MIN`), with onsets within ``tolerance`` seconds of each other,
    says nothing about which service is at fault: every candidate gains the same
    strength from it, and a faint true cause drowns. Those rows go; returns the
    rest and, per change set aside, ``(signal, what was set aside)`` for the
    report. Only :data:`COMMON_MODE_ROLES` are judged.
    """
    a = anomalies
    if a.empty or signals.empty:
        return a, []
    cand = a[a["role"].isin(COMMON_MODE_ROLES) & (a["modality"] == "metrics")]
    if cand.empty:
        return a, []
    measured = signals.groupby("role", observed=True)["service"].nunique().to_dict()
    drop: list[Any] = []
    notes: list[tuple[str, str]] = []
    for (role, signal, direction), g in cand.groupby(
        [cand["role"].astype(str), cand["signal"].astype(str), cand["direction"].astype(str)]
    ):
        n = int(measured.get(f"{GENERIC}:{signal}" if role == GENERIC else role, 0))
        need = max(COMMON_MIN, COMMON_SHARE * n)
        if g["service"].nunique() < need:
            continue
        on = g["onset"].to_numpy(dtype=np.float64)
        svc = g["service"].astype(str).to_numpy()
        near = np.abs(on[:, None] - on[None, :]) <= tolerance
        together = [len(set(svc[row])) for row in near]
        center = int(np.argmax(together))
        if together[center] < need:
            continue
        drop.extend(g.index[near[center]].tolist())
        notes.append(
            (
                str(signal),
                f"{signal} went {direction} in {together[center]} of {n} services within "
                f"{tolerance:.0f} s of each other: a change of the whole system (a restart's "
                "warm-up, node-wide pressure), not taken as any one service's",
            )
        )
    return a.drop(index=drop), notes


def named_by_callers(
    anomalies: pd.DataFrame, lag: float = 30.0, callees: dict[str, set[str]] | None = None
) -> pd.DataFrame:
    """``anomalies`` plus, for each log anomaly that names another service (``peer``),
    the same trouble on that service as ``named_by_callers``.

    A service that returns wrong values fails nobody's request by its own
    measure: only its callers notice, and say so in their logs ("invalid
    response from pricing"). Their words point at it, so it becomes a suspect
    with their strength, and the callers' trouble can be explained by it. ``lag``: how
    long after the caller's first error its blaming message may begin (a sampling step
    or two). ``callees``: per service, what it calls. A message naming a service the
    logging one is not known to call is not about a call (a word such as "currency" or
    "payment" in an error's text): its ``peer`` is cleared. A service whose calls are
    not known at all is taken at its word.
    """
    if anomalies.empty or "modality" not in anomalies.columns:
        return anomalies
    a = anomalies
    if callees:
        words = (a["modality"].astype(str) == "logs") & (a["peer"].astype(str) != "")
        stranger = [
            bool(callees.get(s_)) and p_ not in callees.get(s_, set())
            for s_, p_ in zip(
                a.loc[words, "service"].astype(str), a.loc[words, "peer"].astype(str), strict=True
            )
        ]
        if any(stranger):
            a = a.copy()
            a.loc[a.index[words.to_numpy()][np.asarray(stranger)], "peer"] = ""
    m = (a["modality"].astype(str) == "logs") & (a["peer"].astype(str) != "")
    m &= a["peer"].astype(str) != a["service"].astype(str)
    if not m.any():
        return a
    named = a[m].copy()
    # The caller's errors that its logs blame on the peer are the peer's trouble: as
    # strong as the caller's errors, for the share of its error records that name it.
    caller = a.loc[m, "service"].astype(str)
    errs = a[a["role"].isin(_BLAMEABLE) & (a["direction"] == "up")]
    strongest = errs.groupby(errs["service"].astype(str))["score"].max().to_dict()
    logged = a[a["role"] == "log_errors"]
    logged_peak = logged.groupby(logged["service"].astype(str))["peak"].max().to_dict()
    share = [
        min(1.0, float(pk) / float(logged_peak[c])) if logged_peak.get(c, 0.0) > 0 else 0.5
        for c, pk in zip(caller, named["peak"], strict=True)
    ]
    # Only for answers that arrived fine at the transport: calls that failed or slowed
    # (timeouts, refused connections) are judged as calls, by the patterns that read them.
    calls = a[a["role"].isin(_CALL_TROUBLE) & (a["direction"] == "up")]
    troubled = set(zip(calls["service"].astype(str), calls["peer"].astype(str), strict=True))
    troubled |= {(p_, s_) for s_, p_ in troubled}  # edge rows sit on the callee
    # ... and only a message of its own (a template, not the error count's example line)
    # that came with the caller's errors from their start: blame that only came after
    # the caller was already failing is its trouble spilling onto its calls.
    first_err = errs.groupby(errs["service"].astype(str))["onset"].min().to_dict()
    inherited = np.array(
        [
            strongest.get(c, 0.0)
            if (c, str(p_)) not in troubled
            and role == "log_template"
            and float(at) <= first_err.get(c, np.inf) + lag
            else 0.0
            for c, p_, role, at in zip(
                caller,
                a.loc[m, "peer"].astype(str),
                a.loc[m, "role"],
                a.loc[m, "onset"],
                strict=True,
            )
        ]
    ) * np.array(share)
    named["score"] = np.maximum(named["score"].astype(float).to_numpy(), inherited)
    named["service"] = a.loc[m, "peer"].astype(str).to_numpy()
    named["peer"] = a.loc[m, "service"].astype(str).to_numpy()
    named["role"] = "named_by_callers"
    named["evidence"] = [
        f"{caller} logs errors naming {svc}: {text}"
        for caller, svc, text in zip(
            named["peer"], named["service"], a.loc[m, "evidence"], strict=True
        )
    ]
    out = pd.concat([a, named], ignore_index=True)
    return out.sort_values(["onset", "score"], ascending=[True, False]).reset_index(drop=True)


def _agreed_on(anomalies: pd.DataFrame) -> dict[str, float]:
    """Per service named in the error lines of two or more of its callers, the strength
    (``score / (score + 8)``) of the weaker of its two strongest namers."""
    a = anomalies
    named = a[(a["role"] == "named_by_callers") & (a["direction"] == "up")]
    if named.empty:
        return {}
    best = named.groupby([named["service"].astype(str), named["peer"].astype(str)])["score"].max()
    out: dict[str, float] = {}
    for svc, per in best.groupby(level=0):
        top = sorted(per.astype(float).tolist(), reverse=True)
        if len(top) >= 2:
            out[str(svc)] = top[1] / (top[1] + 8.0)
    return out


def _between(anomalies: pd.DataFrame, sym_at: dict[str, float], lag: float) -> dict[str, set[str]]:
    """Per caller, the callees whose calls went wrong *between* the two: the callee's own
    side did not show it (by then).

    Metric edge rows are moved to the caller (``client_*``) only in that case (see
    :func:`attribute_edges`). Span-derived ``client_*`` rows are the caller's view of
    every call; they count as between only when the callee had no symptom of its own
    within ``lag`` of them.
    """
    client = anomalies[anomalies["role"].isin(list(CLIENT_ROLES.values()))]
    out: dict[str, set[str]] = {}
    modality = (
        client["modality"].astype(str)
        if "modality" in client.columns
        else pd.Series("metrics", index=client.index)
    )
    for svc, peer, at, how in zip(
        client["service"], client["peer"], client["onset"], modality, strict=True
    ):
        if not str(peer):
            continue
        if how != "metrics" and sym_at.get(str(peer), np.inf) <= float(at) + lag:
            continue  # the callee hurt by itself: its trouble, seen from the caller
        out.setdefault(str(svc), set()).add(str(peer))
    return out


@dataclass(frozen=True)
class RootScore:
    """How likely a node is the root of the trouble, with the parts that made it."""

    service: str
    score: float
    strength: float
    onset: float | None
    explained: float
    upstream: int
    pagerank: float
    rank: int = 0


#: What a root score keeps for a service upstream of the alerted one (it calls it, it is
#: not called by it) that sent it no more demand: callers' own trouble does not flow down.
UPSTREAM_OF_ALERT = 0.35


#: What a root score keeps for a service whose trouble began only after the alert fired.
LATE = 0.3

#: What a root score (and a finding's score) keeps for a service whose trouble was all
#: over long before the alert's (see :func:`over_by`): a change that came and went (a
#: rollout's brief strain, a blip) is not what keeps an alert firing.
PASSED = 0.5


def over_by(status: str, ends_at: float | None, window_end: float, step: float) -> float:
    """By when trouble must have been over to have passed while the alert held: five
    minutes (or five steps) before the window's end, or before the alert resolved."""
    held = window_end
    if status == "resolved" and ends_at:
        held = min(held, float(ends_at))
    return held - max(300.0, 5.0 * float(step))


def fired_by(starts_at: float | None, step: float) -> float | None:
    """By when an alert that started at ``starts_at`` had certainly fired: onsets are
    known to a step or two (a detector dates a slow climb late)."""
    return starts_at + max(2.0 * float(step), 120.0) if starts_at else None


def dating_weight(strongest: Any) -> Any:
    """The score a row needs to date trouble whose strongest row scores ``strongest``
    (a float or an array): :data:`MATERIAL`, or a quarter of the strongest when less."""
    return np.minimum(MATERIAL, 0.25 * strongest)


def trouble_ended(anomalies: pd.DataFrame) -> pd.Series:
    """Per service, when the last of its anomaly rows ended (none without an ``end``)."""
    if "end" not in anomalies.columns:
        return pd.Series(dtype=float)
    return anomalies.groupby(anomalies["service"].astype(str))["end"].max().astype(float)


def trouble_began(anomalies: pd.DataFrame) -> pd.Series:
    """Per service, when its trouble began: its first anomaly of some weight for its
    trouble (:data:`MATERIAL`, or a quarter of its strongest when that is less).

    A faint early wobble (a stray log line, a few sampled spans) does not date a
    throttling a hundred times stronger that came only after the alert fired; it does
    date a service whose trouble is all faint (a few callers' log lines), however much
    noise of barely more weight comes later.
    """
    by_svc = anomalies["service"].astype(str)
    score = anomalies["score"].astype(float)
    enough: pd.Series = dating_weight(score.groupby(by_svc).transform("max"))
    weighty = (score >= enough).to_numpy()
    return anomalies[weighty].groupby(by_svc[weighty])["onset"].min().astype(float)


def upstream_only(graph: nx.DiGraph, service: str | None) -> set[str]:
    """Services that call ``service`` (transitively) and that it does not reach."""
    if service is None or service not in graph:
        return set()
    return set(nx.ancestors(graph, service)) - set(nx.descendants(graph, service))


#: The strength of a score of 4 on the metrics' scale, clearly anomalous
#: (:func:`service_summary`).
CLEAR_STRENGTH = 4.0 / (4.0 + 8.0)


def order_scales(step: float) -> tuple[float, float]:
    """``(onset_tolerance, lag)`` for :func:`root_scores` at a sampling step of ``step`` s.

    A metric's onset is known to about its rate window (four steps) and never better than
    two steps: within that, order says nothing. The window caps at a minute (the
    tolerance) and half a minute (the lag), unless two steps are longer. At a 1 s scrape
    (a 3 s grid) a callee whose trouble began 15 s after its caller's began after it.
    """
    st = float(step)
    return max(2.0 * st, min(60.0, 4.0 * st)), max(2.0 * st, min(30.0, 4.0 * st))


def root_scores(
    graph: nx.DiGraph,
    anomalies: pd.DataFrame,
    alert_service: str | None = None,
    onset_tolerance: float = 60.0,
    tau: float = 300.0,
    lag: float = 30.0,
    comove: dict[str, float] | None = None,
    fired: float | None = None,
    over: float | None = None,
) -> list[RootScore]:
    """Every anomalous node scored as a root candidate, best first.

    ``onset_tolerance``: a dependency whose onset is at most this much later
    still counts as explaining a caller's trouble (sampling blurs order).
    ``lag``: how much later than a service's trouble more demand from above may
    start and still explain it (see :func:`demand_rises`). ``tau``: seconds over which the
    earliness bonus decays. ``comove``: per service, how closely it follows the alert's
    symptom (see :func:`comovement`); it weighs strength and earliness. ``fired``: by
    when the alert had certainly fired (its start and what its onset is known to); a
    service none of whose trouble had begun by then cannot have caused it, and keeps
    :data:`LATE` of its score. ``over``: a service all of whose trouble had ended by then
    (:func:`over_by`) keeps :data:`PASSED` of it.
    """
    pushed = amplified(anomalies, lag)
    summ = service_summary(anomalies, lag, pushed)
    calls = _calls_in(anomalies)
    pushers = {svc: calls[svc] for svc in pushed}
    sym_at = summ["symptom_onset"].astype(float).fillna(np.inf).to_dict()
    client_peers = _between(anomalies, {str(k): float(v) for k, v in sym_at.items()}, lag)
    if summ.empty:
        return []
    for n in summ.index:
        if n not in graph:
            graph.add_node(n, kind="service")
    strength = {str(k): float(v) for k, v in summ["strength"].items()}
    full = {str(k): float(v) for k, v in summ["full_strength"].items()}
    own = {str(k): float(v) for k, v in summ["own_strength"].fillna(0.0).items()}
    # Two or more callers whose own error lines name the same callee agree on it: their
    # words stand for what it cannot show itself (a cache or an API nobody instruments).
    for svc, agreed in _agreed_on(anomalies).items():
        own[svc] = max(own.get(svc, 0.0), agreed)
    onset = summ["onset"].astype(float).to_dict()
    cause = summ["cause"].to_dict()
    demand = demand_rises(anomalies, lag, pushed)
    load = demand["strength"].to_dict()
    load_onset = demand["onset"].astype(float).to_dict()
    # A surge aimed through a caller at one callee entered at the callee: the caller only
    # forwarded it, and its forwarding explains nothing below it.
    aimed = aimed_surges(graph, *rate_rises(anomalies))
    for svc in aimed:
        load.pop(svc, None)
        cause[svc] = 0.0
    for svc in list(strength):
        # Busy but healthy counts half, unless it is where more demand entered (it got
        # more requests, not retries, and nothing above it did): then busyness is the story.
        if (
            full[svc] > strength[svc]
            and svc in load
            and svc in graph
            and not any(u in load for u in nx.ancestors(graph, svc))
        ):
            strength[svc] = full[svc]
    # Earliness counts from the first trouble of some weight (at least half the strongest,
    # and clearly anomalous; when nothing is, the strongest there is): a faint wobble half
    # an hour before neither takes the bonus nor pushes it off everyone else, and what is
    # faint earns it only in proportion.
    s_max = max(strength.values(), default=0.0)
    s_bar = max(0.5 * s_max, CLEAR_STRENGTH) if s_max >= CLEAR_STRENGTH else s_max
    t_min = min(
        (onset[s] for s in strength if strength[s] >= s_bar and s in onset),
        default=min(onset.values()),
    )
    lat_rise = _latency_rises(anomalies)
    erring = set(
        anomalies.loc[
            anomalies["role"].isin(_OWN_ERRORS) & (anomalies["direction"] == "up"),
            "service",
        ].astype(str)
    )

    began = trouble_began(anomalies)
    ended = trouble_ended(anomalies) if over is not None else pd.Series(dtype=float)
    pr = _pagerank(graph, strength, alert_service)
    pr_max = max(pr.values()) if pr else 1.0
    # Services that call the alerted one but that it does not reach: their own trouble
    # (slowness, errors) cannot make the alerted service hurt; only more demand can.
    above = upstream_only(graph, alert_service)
    out = []
    for svc in summ.index:
        o = onset[svc]
        explained = 0.0
        between = client_peers.get(svc, set())
        for d in nx.descendants(graph, svc) if graph.out_degree(svc) else ():
            if d in between:
                # Its failed calls to d were moved to its own side (d's server side did
                # not see them, or only later): d's trouble is not what hurt it.
                continue
            if d in strength and onset[d] <= o + onset_tolerance:
                # A dependency that clearly started first explains fully; a tie, partly.
                w = 1.0 if onset[d] < o - onset_tolerance / 2 else 0.6
                if comove:
                    # ... as far as it moves with the symptom as closely as this service does.
                    mine = comove.get(str(svc), 0.5)
                    w *= min(1.0, (comove.get(str(d), 0.5) + 0.05) / (mine + 0.05))
                # Only what d's own telemetry shows explains its caller: one caller's words
                # about it (named_by_callers) may come from the caller's own trouble.
                if svc in lat_rise and d in lat_rise and svc not in erring:
                    # Latency adds up along calls: a dependency slower by 7 ms accounts
                    # for little of a caller slower by a second.
                    w *= min(1.0, 2.0 * lat_rise[d] / lat_rise[svc])
                explained = max(explained, w * min(strength[d], own.get(str(d), 0.0)))
        # Something happening to the service itself (resources, traffic) is less of an echo.
        explained *= 1.0 - 0.5 * cause[svc]
        ups = [u for u in nx.ancestors(graph, svc) if u in strength]
        # More traffic arriving upstream first explains trouble below it (load passed on).
        siblings = {d for got in aimed.values() if svc in got for d in got}
        for u in ups:
            if u in siblings:
                continue  # it took its share of the same aimed surge
            if u in load and load_onset[u] <= o + lag:
                explained = max(explained, load[u] * (1.0 if svc in load else 0.9))
        # So do callers whose trouble clearly began first and that call it more (retrying),
        # when their extra calls came before its own trouble (not as retries of it).
        for u, pushed_at in pushers.get(svc, {}).items():
            first = onset.get(u, np.inf) <= sym_at[svc] - onset_tolerance / 2
            if u in strength and first and pushed_at <= sym_at[svc] + lag / 2:
                explained = max(explained, 0.9 * strength[u])
        early = float(np.exp(-max(o - t_min, 0.0) / tau))
        early *= min(1.0, strength[svc] / s_bar) if s_bar > 0 else 1.0
        base = strength[svc] * (1.0 - explained)
        score = 0.55 * base + 0.2 * early + 0.15 * (pr.get(svc, 0.0) / pr_max)
        score += 0.1 * min(len(ups), 5) / 5.0
        if comove:
            # A service that moves with the alert's symptom explains it better than one
            # that moved on its own schedule (no series to compare: neither). Where it sits
            # in the graph says nothing for a service whose trouble keeps its own time.
            score *= 0.2 + 0.8 * comove.get(str(svc), 0.5) ** 2
        if svc in above and svc not in load:
            score *= UPSTREAM_OF_ALERT
        if fired is not None and began.get(str(svc), -np.inf) > fired:
            score *= LATE
        if over is not None and ended.get(str(svc), np.inf) < over:
            score *= PASSED
        out.append(
            RootScore(
                service=str(svc),
                score=float(score),
                strength=float(strength[svc]),
                onset=o,
                explained=float(explained),
                upstream=len(ups),
                pagerank=float(pr.get(svc, 0.0) / pr_max),
            )
        )
    out.sort(key=lambda r: (-r.score, r.onset or 0.0, r.service))
    return [
        RootScore(
            r.service, r.score, r.strength, r.onset, r.explained, r.upstream, r.pagerank, i + 1
        )
        for i, r in enumerate(out)
    ]


def _pagerank(
    graph: nx.DiGraph, strength: dict[str, float], alert_service: str | None
) -> dict[str, float]:
    """Personalised PageRank that drifts from hurting callers towards anomalous callees."""
    if graph.number_of_nodes() == 0:
        return {}
    w = nx.DiGraph()
    w.add_nodes_from(graph.nodes)
    eps = 0.01
    for u, v in graph.edges:
        w.add_edge(u, v, weight=strength.get(v, 0.0) + eps)
        # A small way back up, so a healthy dead end does not trap the walker.
        if not w.has_edge(v, u):
            w.add_edge(v, u, weight=0.1 * (strength.get(u, 0.0) + eps))
    for n in graph.nodes:
        # Staying put: strongest when the node hurts and its callees do not.
        callees = [strength.get(c, 0.0) for c in graph.successors(n)]
        w.add_edge(n, n, weight=max(strength.get(n, 0.0) - max(callees, default=0.0), 0.0) + eps)
    pers = {n: strength.get(n, 0.0) + 1e-6 for n in graph.nodes}
    if alert_service in pers:
        pers[alert_service] += max(pers.values())
    try:
        return dict(pagerank(w, alpha=0.85, personalization=pers, weight="weight", tol=1e-8))
    except nx.PowerIterationFailedConvergence:
        return {n: strength.get(n, 0.0) for n in graph.nodes}


def blast_radius(graph: nx.DiGraph, root: str, anomalous: set[str]) -> list[str]:
    """The root and every anomalous service upstream of it (its callers, transitively)."""
    if root not in graph:
        return [root]
    ups = sorted(u for u in nx.ancestors(graph, root) if u in anomalous)
    return [root, *ups]

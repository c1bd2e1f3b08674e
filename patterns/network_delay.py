"""Network delay: calls touching one service got slow (or timed out) where its own work did not.

Signals: troubled calls between services, with the services' own server-side
``latency``. A troubled call is a ``client_*`` row on the caller (from spans or
client-side metrics, or service-graph metrics the engine moved to the caller's
side because the callee's own server side did not see them) or an ``edge_*``
row on the callee (calls into it; where its own server side did not see them,
the engine laid them at its end because its other callers saw the same, or its
caller's other calls stayed fine). What a callee
records of its calls is its own work, not the network's, and does not count. A
delay on a service's network (a pod's interface, a sidecar, a congested link)
slows every call that crosses it, in or out, and turns some into timeouts,
while the time the service spends on its own work barely moves. So the suspect
is the service most of the troubled calls have in common, whose own server
latency moved less than the calls did. Of the two ends of a troubled call, the
likelier is the one whose other calls on the same side are troubled too: all
calls into a service (a delay in front of it), or all calls out of one (a delay
on its way out). A lone slow call from a caller whose other calls stayed fast
is the callee's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from correlator.model import Evidence, Finding
from correlator.pattern import BasePattern, PatternContext, PatternResult
from correlator.topology import CLIENT_ROLES, instrumented

__all__ = ["NetworkDelayConfig", "NetworkDelayPattern"]

#: Troubled calls as either end holds them: ``client_*`` on the caller, ``edge_*`` on the callee.
_CALLS = (*CLIENT_ROLES.values(), *CLIENT_ROLES)
_FAILED = tuple(r for r in _CALLS if "error" in r)
#: A score of some weight (strength 0.5): a server's own errors that say it failed.
_MATERIAL = 8.0


@dataclass(frozen=True)
class NetworkDelayConfig:
    """Thresholds of the network-delay pattern."""

    own_share: float = 0.5
    """A service whose own latency rose by more than this share of its slow calls' rise
    is slow by itself (a slow server, not a slow network)."""


class NetworkDelayPattern(BasePattern):
    """A service whose calls (in or out) are slow while its own work is not."""

    name = "network_delay"
    cause = "network_delay"
    needs = ("edge_latency",)
    config_class = NetworkDelayConfig
    description = "calls to or from one service slow, its own server-side latency flat"

    def evaluate(self, ctx: PatternContext, config: NetworkDelayConfig) -> PatternResult:
        """Score the service the slow calls share."""
        a = ctx.anomalies
        transit = _transit_findings(self, ctx)
        calls = a[a["role"].isin(_CALLS) & (a["direction"] == "up")]
        calls = calls[calls["peer"].astype(str) != ""]
        # Calls into a service we see nothing of from inside (an external API, a cache)
        # are that dependency's story (dependency_failure), not a network's.
        seen = instrumented(ctx.telemetry)
        calls = calls[
            calls["role"].astype(str).str.startswith("client_")
            | calls["service"].astype(str).isin(list(seen))
        ]
        if not calls.empty:
            # Calls that got troubled only after the strongest did are echoes of it.
            onsets = calls["onset"].astype(float).to_numpy()
            anchor = float(onsets[int(calls["score"].astype(float).to_numpy().argmax())])
            lag = max(60.0, ctx.onset_slack)
            calls = calls[onsets <= anchor + lag]
        if calls.empty:
            if transit:
                return self.found(list(transit.values()))
            if not (ctx.has("edge_latency") or len(ctx.telemetry.spans)):
                return self.not_evaluated("no call latency (service-graph metrics or traces)")
            return self.no_match("no call between two services got slower")
        # Each troubled call as (caller, callee): client rows sit on the caller (the callee's
        # server side did not see it), edge rows on the callee. A call weighs what its
        # strongest row says (a faint wobble of one call is not the story), and where the
        # engine placed the trouble counts a little more. A slow call to a server that was
        # as much slower by itself is the server's (it passes trouble up the call chain):
        # what the network adds is the rest.
        own_up = a[a["role"].isin(("latency", "span_latency")) & (a["direction"] == "up")]
        server_rise = (
            (own_up["peak"].astype(float) - own_up["baseline"].astype(float))
            .groupby(own_up["service"].astype(str))
            .max()
            .to_dict()
        )
        # A server failing by itself (its own errors, of some weight) makes its callers'
        # calls slow and failing too (timeouts, retries): that is its trouble, not the
        # network's.
        own_err = a[
            a["role"].isin(("error_ratio", "error_rate", "span_errors"))
            & (a["direction"] == "up")
            & (a["score"].astype(float) >= _MATERIAL)
        ]
        erring = set(own_err["service"].astype(str))
        weight: dict[tuple[str, str], float] = {}
        placed: dict[tuple[str, str], str] = {}
        kinds = dict(ctx.graph.nodes(data="kind"))
        # When a service's own calls got troubled: its callers' troubled calls to it from
        # then on are it passing that trouble up (its callees' delay, their timeouts).
        is_client = calls["role"].astype(str).str.startswith("client_")
        callers = calls["service"].astype(str).where(is_client, calls["peer"].astype(str))
        calling_since = calls["onset"].astype(float).groupby(callers).min()
        slack = max(float(ctx.step), 1.0)
        # More failed calls where the share that failed did not move (it is measured beside
        # the count) is more calls, not trouble on them.
        ratio_rows = a[
            a["role"].isin(("client_error_ratio", "edge_error_ratio")) & (a["direction"] == "up")
        ]
        ratio_moved = set(
            zip(ratio_rows["service"].astype(str), ratio_rows["peer"].astype(str), strict=True)
        )
        ratio_known = ctx.has("edge_error_ratio") or ctx.has("client_error_ratio")
        for r in calls.itertuples(index=False):
            svc, peer = str(r.service), str(r.peer)
            pair = (svc, peer) if str(r.role).startswith("client_") else (peer, svc)
            if kinds.get(pair[1]) == "database":
                continue  # slow or failing queries are the database's story (db_overload)
            score_, peak, base = (float(v) for v in (r.score, r.peak, r.baseline))  # type: ignore[arg-type]
            w = score_ / (score_ + 8.0)
            rise = peak - base
            callee_rise = float(server_rise.get(pair[1], 0.0))
            if str(r.role).endswith("latency") and rise > 0:
                w *= min(1.0, max(0.0, 1.0 - callee_rise / rise))
            elif callee_rise > 0:
                # Failed calls to a server that got slower itself: timeouts on it.
                w *= 0.3
            if pair[1] in erring:
                w *= 0.3
            if (
                ratio_known
                and r.role in ("client_errors", "edge_errors")
                and r.modality == "metrics"
                and (svc, peer) not in ratio_moved
            ):
                w *= 0.3
            since = calling_since.get(pair[1])
            if since is not None and float(since) <= float(r.onset) + slack:  # type: ignore[arg-type]
                w *= 0.3
            if w > weight.get(pair, -1.0):
                weight[pair], placed[pair] = w, svc
        total = sum(weight.values())
        # A call whose server was as slow by itself leaves nothing for the network.
        troubled = [pair for pair in placed if weight[pair] > 0.0]
        cover = _coverage(ctx, troubled, kinds)
        touched: dict[str, float] = {}
        count: dict[str, int] = {}
        strongest: dict[str, float] = {}
        for pair in troubled:
            at = placed[pair]
            for side, node in enumerate(pair):
                strongest[node] = max(strongest.get(node, 0.0), weight[pair])
                # A delay in front of a service slows the calls of all its callers, one on a
                # caller's way out all of its calls: an end whose other calls on the same
                # side stayed fast is the less likely one.
                near = (1.0 if node == at else 0.95) * (0.5 + 0.5 * cover[(node, side)])
                touched[node] = touched.get(node, 0.0) + weight[pair] * near
                count[node] = count.get(node, 0) + 1
        findings = []
        for svc, n in sorted(touched.items(), key=lambda kv: (-kv[1], kv[0])):
            # Among several troubled calls, the suspect is one most of them share; one call
            # alone names it only when it carries most of the trouble (a delay on one pod
            # behind a single caller, beside a faint wobble elsewhere).
            if count[svc] < 2 and sum(w > 0.0 for w in weight.values()) > 1 and n < 0.5 * total:
                continue
            mine = calls[(calls["service"] == svc) | (calls["peer"] == svc)]
            slow = mine[~mine["role"].isin(_FAILED)]
            # Slow calls whose server was as slow by itself are a slow server, not a slow
            # network; timeouts (client errors) carry no latency to compare and count as they
            # are. A service whose own calls are troubled is slower because of them.
            calling = any(p[0] == svc and weight[p] > 0.5 for p in placed)
            own_rise = 0.0 if calling else max(0.0, float(server_rise.get(svc, 0.0)))
            rise = _rise(slow)
            served_slow = rise > 0 and own_rise > config.own_share * rise
            if served_slow or (rise <= 0 and slow.shape[0] == mine.shape[0]):
                continue
            share = min(1.0, n / total) if total > 0 else 0.0
            # As strong as its strongest call the servers do not fully explain.
            score = share * strongest[svc] * (1.0 - (own_rise / rise if rise > 0 else 0.0))
            ev: list[Evidence] = ctx.anomalies_evidence(mine, 3)
            findings.append(
                self.finding(
                    svc,
                    score,
                    ev,
                    features={"share": share, "own_rise": own_rise / rise if rise > 0 else 0.0},
                    onset=float(mine["onset"].min()),
                )
            )
        for f in findings:
            t = transit.get(f.service)
            if t is None or t.score <= f.score:
                transit[f.service] = f
            else:
                transit[f.service] = replace(t, evidence=(*t.evidence, *f.evidence[:2]))
        findings = list(transit.values())
        return self.found(
            findings, "" if findings else "the slow calls' servers were slow themselves"
        )


def _transit_findings(pattern: NetworkDelayPattern, ctx: PatternContext) -> dict[str, Finding]:
    """Per service, a finding from the calls answered by it that spent longer outside its
    server (``transit_latency``, laid at its door by the span detector: some of its
    instances and not the others, or most of its callers alike): as strong as the
    strongest of them; its own work did not move by construction."""
    a = ctx.anomalies
    if a.empty:
        return {}
    rows = a[(a["role"] == "transit_latency") & (a["direction"] == "up")]
    out: dict[str, Finding] = {}
    for svc, mine in rows.groupby(rows["service"].astype(str), sort=True):
        mine = mine.sort_values("score", ascending=False)
        s = float(mine["score"].astype(float).max())
        out[str(svc)] = pattern.finding(
            str(svc),
            s / (s + 8.0),
            ctx.anomalies_evidence(mine, 3),
            features={"share": 1.0, "own_rise": 0.0},
            onset=float(mine["onset"].astype(float).min()),
        )
    return out


def _coverage(
    ctx: PatternContext, troubled: list[tuple[str, str]], kinds: dict[str, object]
) -> dict[tuple[str, int], float]:
    """Per end of a troubled call (``(caller, 0)``, ``(callee, 1)``): the share of that
    service's calls on the same side (all its calls out, all its callers' calls in,
    between services as the topology knows them) that are troubled."""
    g = ctx.graph
    hit: dict[tuple[str, int], set[tuple[str, str]]] = {}
    for pair in troubled:
        for side in (0, 1):
            hit.setdefault((pair[side], side), set()).add(pair)
    out: dict[tuple[str, int], float] = {}
    for (node, side), mine in hit.items():
        calls = set(mine)
        if node in g and side == 0:
            calls |= {(node, v) for v in g.successors(node) if kinds.get(v) in (None, "service")}
        elif node in g:
            calls |= {(u, node) for u in g.predecessors(node) if kinds.get(u) in (None, "service")}
        out[(node, side)] = len(mine) / len(calls)
    return out


def _rise(rows: object) -> float:
    """The largest rise (peak minus baseline) among anomaly rows, 0 when none."""
    import pandas as pd

    if not isinstance(rows, pd.DataFrame) or rows.empty:
        return 0.0
    return float((rows["peak"].astype(float) - rows["baseline"].astype(float)).max())

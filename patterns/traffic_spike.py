"""Traffic spike: request rate far above baseline at an entry point first, then
saturation downstream.

Signals: ``request_rate`` (and ``edge_rate``), with latency/errors of the
services it feeds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import networkx as nx
import numpy as np
import pandas as pd

from correlator.model import Evidence
from correlator.pattern import ALERT_OWN_SYMPTOMS, BasePattern, PatternContext, PatternResult
from correlator.topology import (
    MATERIAL,
    aimed_surges,
    demand_rises,
    rate_rises,
    trouble_began,
)

__all__ = ["TrafficSpikeConfig", "TrafficSpikePattern"]


@dataclass(frozen=True)
class TrafficSpikeConfig:
    """Thresholds of the traffic-spike pattern."""

    min_ratio: float = 1.5
    """Peak request rate over baseline that counts as a spike."""
    full_ratio: float = 3.0
    """Ratio at which the spike counts fully."""
    min_good_ratio: float = 1.25
    """Peak rate of *successful* requests over baseline a spike must also show (a rise
    made only of failing requests is retries)."""
    min_sources: int = 3
    """Without request rates: the fewest services whose own trouble began at once, none
    of it explained by its calls, that count as load arriving from one entry point."""
    min_share: float = 0.5
    """... and the least share of all services with trouble of their own they must be."""
    retried_share: float = 0.6
    """What is left of the score when the service was failing more than a sampling step
    before its request rate rose (retries make part of the rise)."""


class TrafficSpikePattern(BasePattern):
    """More traffic than usual arriving at an entry point."""

    name = "traffic_spike"
    cause = "traffic_spike"
    needs = ("request_rate",)
    config_class = TrafficSpikeConfig
    description = "request rate far above baseline at an entry point, then saturation"

    def evaluate(self, ctx: PatternContext, config: TrafficSpikeConfig) -> PatternResult:
        """Score services whose request rate rose first and most, entry points favoured."""
        if not ctx.has("request_rate"):
            return self._overloaded_at_once(ctx, config)
        a = ctx.anomalies
        up = a[(a["role"] == "request_rate") & (a["direction"] == "up")]
        if up.empty:
            return self.no_match("no request rate rose above its baseline")
        # Against the busiest the baseline ran, not its median: traffic that swings (a
        # daily shape, a short baseline on the rise) is not a spike until it leaves that.
        base = pd.Series(
            [
                _baseline_high(ctx, str(r["service"]), float(r["onset"]), float(r["baseline"]))
                for r in up.to_dict("records")
            ],
            index=up.index,
        ).clip(lower=1e-9)
        up = up.assign(ratio=up["peak"].astype(float) / base)
        up = up[up["ratio"] >= config.min_ratio]
        if up.empty:
            return self.no_match(f"no request rate rose more than {config.min_ratio}x")
        # Retries: a rate that rose after the service's own failures is callers
        # asking again, not more demand. Onsets are known to a sampling step: rising in the
        # same step as the errors is not after them.
        demand = demand_rises(a, ctx.onset_slack)
        up = up[up["service"].isin(list(demand.index))]
        if up.empty:
            return self.no_match("request rates rose only with errors or from callers retrying")
        first = float(up["onset"].min())
        ratio = dict(zip(up["service"].astype(str), up["ratio"].astype(float), strict=True))
        extra = dict(
            zip(
                up["service"].astype(str),
                up["peak"].astype(float) - up["baseline"].astype(float),
                strict=True,
            )
        )
        # Whether a caller's other callees kept their usual rate is judged on every rise,
        # retries too: a callee whose rate rose with its errors did not keep its rate.
        every_ratio, every_extra = rate_rises(a)
        passes_on = aimed_surges(ctx.graph, every_ratio | ratio, every_extra | extra)
        began = _first_trouble(ctx)
        fails = a[a["role"].isin(_OWN_FAILING) & (a["direction"] == "up")]
        fails = fails[fails["score"].astype(float) >= MATERIAL]
        failed_at = fails.groupby(fails["service"].astype(str))["onset"].min().astype(float)
        findings = []
        for row in up.sort_values("onset").to_dict("records"):
            svc = str(row["service"])
            good = _good_ratio(ctx, svc)
            if good is not None and good < config.min_good_ratio:
                # More requests but no more successful ones: retries or rejected junk.
                continue
            callers = list(ctx.graph.predecessors(svc)) if svc in ctx.graph else []
            callers_up = [c for c in callers if c in ratio]
            # Callers that only passed on extra traffic aimed at this service: the surge
            # entered there but was meant for this one, which counts as its entry point;
            # aimed at several callees, most of all at the one that took the most of it.
            # Callers that took their share of the same surge (a route that calls it
            # twice, directly and through another callee) do not make it forwarded.
            aimed = [c for c in callers_up if svc in passes_on.get(c, set())]
            shared = {d for c in aimed for d in passes_on[c]}
            if aimed and set(callers_up) <= set(aimed) | shared:
                entry = extra[svc] / max(max(extra[d] for d in shared), 1e-9)
            else:
                entry = 1.0 if not callers else (0.3 if not callers_up else 0.0)
            if svc in passes_on:
                # It forwarded a surge aimed at a callee: not where the surge came from.
                continue
            size = min(1.0, (row["ratio"] - 1.0) / max(config.full_ratio - 1.0, 1e-6))
            early = float(np.exp(-(float(row["onset"]) - first) / 120.0))
            downstream = (
                [
                    d
                    for d in ctx.graph.successors(svc)
                    if len(ctx.anomalies_of(d, ("latency", "error_ratio", "cpu", "cpu_throttled")))
                ]
                if svc in ctx.graph
                else []
            )
            score = 0.35 * size + 0.3 * entry + 0.2 * early
            failing = failed_at.get(svc)
            if failing is not None and failing < float(row["onset"]) - float(ctx.step):
                # Failing more than a sampling step before its requests rose (rates read
                # alike): callers asking again are at least part of the rise.
                score *= config.retried_share
            if ctx.alert_hurt_before(float(row["onset"])):
                # The alerted service was already failing or slow before the surge began:
                # the surge cannot be what hurt it.
                score *= 0.5
            score += 0.15 * (
                1.0 if downstream or len(ctx.anomalies_of(svc, ("latency", "cpu"))) else 0.0
            )
            ev: list[Evidence] = [
                ctx.metric_evidence(
                    row,
                    f"request rate of {svc} rose {row['ratio']:.1f}x "
                    f"({row['baseline']:.1f} -> {row['peak']:.1f}/s)",
                )
            ]
            sat = ctx.anomalies_of(svc, ("latency", "cpu", "cpu_throttled", "error_ratio"))
            ev += ctx.anomalies_evidence(sat, 2)
            if downstream:
                ev.append(
                    Evidence(
                        kind="topology",
                        summary="saturating downstream: " + ", ".join(sorted(downstream)[:8]),
                        service=svc,
                        data={"downstream": sorted(downstream)},
                    )
                )
            findings.append(
                self.finding(
                    svc,
                    score,
                    ev,
                    features={
                        "ratio": float(row["ratio"]),
                        "entry": entry,
                        "early": early,
                        "good_ratio": float(good) if good is not None else 0.0,
                    },
                    onset=float(row["onset"]),
                    covers=_fed(ctx, svc, began, float(row["onset"]) - ctx.onset_slack),
                )
            )
        return self.found(findings)

    def _overloaded_at_once(self, ctx: PatternContext, config: TrafficSpikeConfig) -> PatternResult:
        """Without request rates, what load arriving looks like: several services slow,
        failing or logging their own trouble at once, none because of its calls (each
        saturated by itself), all fed by one entry point. A failure spreads from one
        place up its callers; a surge saturates many places at the same time."""
        own = _own_rows(ctx)
        if own.empty:
            return self.not_evaluated("no request_rate signal, and no service's own trouble")
        began = trouble_began(own).sort_values()
        # The most services whose trouble began within one stretch (onsets are known to a
        # few sampling steps).
        width = max(120.0, 4.0 * float(ctx.step))
        t = began.to_numpy(dtype=np.float64)
        ends = np.searchsorted(t, t + width, side="right")
        i = int(np.argmax(ends - np.arange(len(t))))
        together = {str(x) for x in began.index[i : ends[i]]}
        if len(together) < max(config.min_sources, config.min_share * len(began)):
            return self.no_match("no request_rate signal, and trouble did not begin at once")
        g = ctx.graph
        slack = ctx.onset_slack

        def explained(s: str) -> bool:
            """Its calls were in trouble when its own began (or a callee was, with it)."""
            if s in g and any(c in together for c in g.successors(s) if c != s):
                return True
            by = float(began[s]) + slack
            return any(
                c != s and bool((rows["onset"].astype(float) <= by).any())
                for c, rows in ctx.troubled_calls(s).items()
            )

        sources = sorted(s for s in together if not explained(s))
        # ... and each saying it has more than it can take, not merely failing.
        sources = [
            s
            for s in sources
            if len(ctx.lines_saying(_OVERLOAD, _LOG_ROLES, service=s))
            or ctx.failures_saying(s, _OVERLOAD, float(began[s]) - slack) >= 2
        ]
        if len(sources) < config.min_sources:
            return self.no_match(
                "no request_rate signal; trouble began at once, but only "
                f"{len(sources)} service(s) struggled by themselves saying they shed load"
            )
        # Capacity lost (connections refused, nodes unreachable) leaves the rest overloaded
        # too: that is fewer servers, not more demand.
        since = float(t[i]) - slack
        lost = [
            s
            for s in began.index.astype(str)
            if len(ctx.lines_saying(_LOST, _LOG_ROLES, service=s))
            or ctx.failures_saying(s, _LOST, since) >= 2
        ]
        if 2 * len(lost) >= len(sources):
            return self.no_match(
                "no request_rate signal; services overloaded at once, but connections were "
                f"refused too ({', '.join(lost[:4])}): capacity lost, not more demand"
            )
        entries = [n for n in g if g.in_degree(n) == 0 or n == ctx.alert.service]
        first = _first_trouble(ctx)
        size = min(1.0, len(sources) / (2.0 * config.min_sources))
        share = len(together) / max(len(began), 1)
        rows = own[own["service"].astype(str).isin(sources)].sort_values("score", ascending=False)
        shown = ctx.anomalies_evidence(rows.drop_duplicates("service"), 3)
        findings = []
        for e in entries:
            if not set(sources) <= set(nx.descendants(g, e)) | {e}:
                continue
            callers = [c for c in g.predecessors(e) if c != e]
            entry = 1.0 if not callers else 0.5
            # The surge reaches its entry point first: struggling soonest, most likely it.
            early = float(np.exp(-max(0.0, float(began[e]) - t[i]) / width)) if e in began else 0.0
            score = 0.3 * size + 0.25 * entry + 0.15 * share + 0.15 * early
            ev: list[Evidence] = [
                Evidence(
                    kind="topology",
                    summary=f"{len(together)} services began to struggle within "
                    f"{width:.0f}s, {len(sources)} of them by themselves and saying they "
                    f"shed load ({', '.join(sources[:6])}), all fed by {e}; request rates "
                    "are not measured",
                    service=e,
                    data={"together": sorted(together), "sources": sources},
                )
            ]
            ev += shown
            findings.append(
                self.finding(
                    e,
                    score,
                    ev,
                    features={"entry": entry, "sources": float(len(sources)), "share": share},
                    onset=float(began.iloc[i]),
                    covers=_fed(ctx, e, first, since, together),
                )
            )
        if not findings:
            return self.no_match("no request_rate signal; no one entry point feeds them all")
        return self.found(findings)


#: What a service says when more arrives than it can serve.
_OVERLOAD = re.compile(
    r"overload|queue (is )?full|too many (concurrent )?requests|shedding|rejected|"
    r"rate.?limit|throttl|resource.?exhausted|server (is )?busy|backpressure|capacity",
    re.IGNORECASE,
)
#: What a caller says when the servers it calls are gone (not merely busy).
_LOST = re.compile(
    r"connection refused|ECONNREFUSED|no route to host|host is unreachable|"
    r"node \S+ is unreachable|NotReady",
    re.IGNORECASE,
)
_LOG_ROLES = ("log_template", "log_notice", "log_errors")
#: A service's own failures (its answers, not its calls).
_OWN_FAILING = ("error_rate", "error_ratio", "span_errors")
#: More load arriving: what a surge brings, not trouble of the service's own.
_LOAD = ("request_rate", "edge_rate", "client_rate", "span_rate")
#: Rows a caller keeps about its calls to another (``peer``): that one's trouble.
_CALLS_OUT = ("log_errors", "log_template", "client_latency", "client_errors", "client_error_ratio")
#: Falling rows that are trouble (a target or pod gone).
_GONE = ("up", "pod_ready")

#: What a service shows of its own when more load arrives than it can serve: what it
#: shows when it hurts, and its new notices ("request queue full, shedding load").
_OWN = (*ALERT_OWN_SYMPTOMS, "log_notice")


def _own_rows(ctx: PatternContext) -> pd.DataFrame:
    """Rising rows of the services' own trouble (their own latency, errors, saturation or
    notices: not their calls)."""
    a = ctx.anomalies
    own = a[a["role"].isin(_OWN) & (a["direction"] == "up")]
    peer, svc = own["peer"].astype(str), own["service"].astype(str)
    return own[(peer == "") | (peer == svc)]


def _first_trouble(ctx: PatternContext) -> pd.Series:
    """Per service, when any trouble of its own began: its own symptoms, its saturation
    and resources, its callers' failing calls to it, series no role knows. Not more
    load arriving (that is what a surge brings), and not its calls to others."""
    a = ctx.anomalies
    role, peer, svc = a["role"].astype(str), a["peer"].astype(str), a["service"].astype(str)
    gone = (a["direction"] == "down") & role.isin(_GONE)
    rows = a[
        ((a["direction"] == "up") | gone)
        & ~role.isin(_LOAD)
        & ~(role.isin(_CALLS_OUT) & (peer != "") & (peer != svc))
    ]
    return trouble_began(rows) if len(rows) else pd.Series(dtype=float)


def _fed(
    ctx: PatternContext,
    svc: str,
    began: pd.Series,
    since: float,
    among: set[str] | None = None,
) -> list[str]:
    """The services downstream of ``svc`` (or ``among`` them) none of whose trouble began
    before its surge had: what the surge accounts for (a calibration feature reads them
    as the finding's, see :attr:`correlator.model.Finding.covers`). A service already in
    trouble before it is not the surge's doing."""
    if svc not in ctx.graph:
        return []
    down = nx.descendants(ctx.graph, svc) if among is None else among - {svc}
    return sorted(str(d) for d, at in began.items() if d in down and float(at) >= since)


def _baseline_high(ctx: PatternContext, svc: str, onset: float, median: float) -> float:
    """The 90th percentile of a request rate before its onset (its median if too short)."""
    req = ctx.series("request_rate", svc)
    t, v = req.index.to_numpy(dtype=np.float64), req.to_numpy(dtype=np.float64)
    base = v[(t >= ctx.window.baseline_start) & (t < onset) & ~np.isnan(v)]
    if len(base) < 5:
        return median
    return max(float(np.percentile(base, 90)), median)


def _good_ratio(ctx: PatternContext, svc: str) -> float | None:
    """Peak of (requests - errors) per second in the window over its baseline median."""
    req = ctx.series("request_rate", svc)
    if req.empty:
        return None
    err = ctx.series("error_rate", svc).reindex(req.index).fillna(0.0)
    good = (req - err).clip(lower=0.0)
    w = ctx.window
    base = good[(good.index >= w.baseline_start) & (good.index < w.start)]
    now = good[(good.index >= w.start - 300.0) & (good.index <= w.end)]
    if base.empty or now.empty or float(base.median()) <= 0:
        return None
    return float(now.max()) / float(base.median())

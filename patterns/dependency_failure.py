"""Dependency failure: a callee (external API, cache, database, service) failing or slow
as its callers see it, while the callers' own resources are fine.

Signals: edge metrics into the callee (``edge_errors``, ``edge_latency``,
``edge_rate``: the service-graph connector, Istio), client spans of callers
(errors and durations per ``peer``), the callers' resource signals, and
``up`` (Prometheus' scrape health): a service every instance of which stopped
answering its scrapes is down, a failing dependency of whoever calls it, however
well instrumented it is. A callee nobody instruments (a cache, an external API)
may show only in its callers' error lines that name it (``named_by_callers``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from correlator.model import Evidence, format_time
from correlator.pattern import BasePattern, PatternContext, PatternResult, rows_by
from correlator.roles import CAUSE_ROLES
from correlator.topology import instrumented

__all__ = ["DependencyFailureConfig", "DependencyFailurePattern"]

_EDGE = ("edge_errors", "edge_error_ratio", "edge_latency")


@dataclass(frozen=True)
class DependencyFailureConfig:
    """Thresholds of the dependency-failure pattern."""

    min_span_error_ratio: float = 0.2
    """Share of callers' client spans to a peer that must fail to count from traces."""
    blame_instrumented: bool = False
    """Also blame callees that report their own server-side signals (by default those
    are left to the other patterns and the root-service ranking)."""


class DependencyFailurePattern(BasePattern):
    """Callers see a dependency fail; the dependency is the suspect."""

    name = "dependency_failure"
    cause = "dependency_failure"
    needs = ("edge_errors", "edge_latency", "edge_rate", "up")
    config_class = DependencyFailureConfig
    description = "a callee failing/slow seen from callers' client spans and edge metrics"

    def evaluate(self, ctx: PatternContext, config: DependencyFailureConfig) -> PatternResult:
        """Score callees by how their callers see them, discounting callers' own trouble."""
        spans = ctx.telemetry.spans
        has_spans = bool(len(spans)) and (spans["kind"] == 3).any()
        down = _whole_service_down(ctx) if ctx.has("up") else {}
        if not (any(ctx.has(r) for r in _EDGE) or has_spans or down):
            return self.not_evaluated(
                "no edge metrics (service-graph connector, Istio), no client spans and no "
                "scrape health (up): calls between services cannot be seen"
            )
        a = ctx.anomalies
        edge = a[a["role"].isin(_EDGE)]
        span_bad = _span_errors(spans, config) if has_spans else pd.DataFrame()
        callees = set(edge["service"]) | (set(span_bad.index) if len(span_bad) else set())
        callees |= set(down)
        own = instrumented(ctx.telemetry)
        # A callee nobody instruments (a cache, an external API) may show only in its
        # callers' error lines naming it.
        not_services = [n for n, k in ctx.graph.nodes(data="kind") if k not in (None, "service")]
        named = a[(a["role"] == "named_by_callers") & (a["direction"] == "up")]
        named = named[~named["service"].isin(list(own)) | named["service"].isin(not_services)]
        callees |= set(named["service"].astype(str))
        findings = []
        edges_of = rows_by(edge, edge["service"].astype(str))
        named_of = rows_by(named, named["service"].astype(str))
        for callee in sorted(callees):
            e = edges_of.get(str(callee), edge.iloc[0:0]).sort_values("score", ascending=False)
            edge_strength = float(e["score"].max() / (e["score"].max() + 8.0)) if len(e) else 0.0
            callers_seen = set(e["peer"]) - {""}
            ev: list[Evidence] = ctx.anomalies_evidence(e, 3)
            said = named_of.get(str(callee), named.iloc[0:0])
            log_strength = 0.0
            if len(said):
                s_ = float(said["score"].astype(float).max())
                log_strength = s_ / (s_ + 8.0)
                callers_seen |= set(said["peer"].astype(str)) - {""}
                ev += ctx.anomalies_evidence(said.sort_values("score", ascending=False), 2)
            span_strength = 0.0
            if len(span_bad) and callee in span_bad.index:
                row = span_bad.loc[callee]
                span_strength = float(min(1.0, row["ratio"] / 0.5))
                callers_seen |= set(row["callers"])
                ev.append(
                    Evidence(
                        kind="trace",
                        summary=f"{row['errors']:.0f} of {row['calls']:.0f} client calls to "
                        f"{callee} failed ({row['ratio']:.0%})",
                        service=callee,
                        data={"callers": sorted(row["callers"])},
                    )
                )
            if callee in down:
                at, seconds = down[callee]
                ev.insert(
                    0,
                    Evidence(
                        kind="metric",
                        summary=f"{callee} was down: every instance of it failed its scrapes "
                        f"(up == 0) for {seconds:.0f} s from {format_time(at)}",
                        service=callee,
                        signal="up",
                        query=ctx.query("up"),
                        url=ctx.link("up"),
                        data={"down_at": at, "down_seconds": seconds},
                    ),
                )
                # Its callers' error logs that name it saw it too.
                namers = ctx.anomalies_of(callee, ("named_by_callers",))
                callers_seen |= set(namers["peer"].dropna().astype(str)) - {""}
            for c in sorted(callers_seen)[:2]:
                ev += ctx.trace_evidence(c, peer=callee, limit=2)
            callers = set(ctx.graph.predecessors(callee)) if callee in ctx.graph else callers_seen
            reach = len(callers_seen) / max(len(callers), 1)
            # Callers busy with their own trouble (resources, deploys) weaken the case.
            own_trouble = sum(
                1 for c in callers_seen if len(ctx.anomalies_of(c, CAUSE_ROLES - {"request_rate"}))
            ) / max(len(callers_seen), 1)
            # Something inside it moved: its resources, or new errors in its own logs.
            callee_inner = (
                len(ctx.anomalies_of(callee, CAUSE_ROLES - {"request_rate"}))
                + len(ctx.anomalies_of(callee, ("log_template", "log_errors")))
            ) > 0
            kind = (
                ctx.graph.nodes[callee].get("kind", "service") if callee in ctx.graph else "service"
            )
            seen_down = 1.0 if callee in down else 0.0
            seen = max(edge_strength, span_strength, seen_down, log_strength)
            # How clearly it failed, as far as its callers all saw it and had no trouble
            # of their own: a faint change seen by its only caller stays faint.
            score = seen * (0.5 + 0.25 * min(1.0, reach) + 0.25 * (1.0 - own_trouble))
            if kind == "service" and callee in own and not (config.blame_instrumented or seen_down):
                # A service seen from inside too: if its own server side hurts, what went
                # wrong is inside it (another pattern, or an unknown cause, names it); if it
                # does not, the trouble sits between caller and callee (network, sidecar,
                # client). Either way not a failing dependency.
                continue
            if callee_inner:
                score -= 0.15
            if score <= 0.2:
                continue
            ev += ctx.log_evidence(callee)
            onset = float(e["onset"].min()) if len(e) else None
            if callee in down:
                onset = min(down[callee][0], onset if onset is not None else np.inf)
            findings.append(
                self.finding(
                    callee,
                    score,
                    ev,
                    features={
                        "edge": edge_strength,
                        "spans": span_strength,
                        "reach": reach,
                        "down": seen_down,
                        "logs": log_strength,
                    },
                    onset=onset,
                )
            )
        return self.found(findings, "" if findings else "no callee looks failing from outside")


def _span_errors(spans: pd.DataFrame, config: DependencyFailureConfig) -> pd.DataFrame:
    """Per peer of client spans: calls, errors, error ratio and callers (failing peers only)."""
    c = spans[(spans["kind"] == 3) & spans["peer"].notna()]
    if c.empty:
        return pd.DataFrame()
    c = c.assign(err=(c["status"] == 2).astype(float))
    g = c.groupby("peer")
    out = pd.DataFrame(
        {
            "calls": g["err"].size(),
            "errors": g["err"].sum(),
            "callers": g["service"].agg(lambda s: sorted(set(s))),
        }
    )
    out["ratio"] = out["errors"] / out["calls"]
    return out[(out["ratio"] >= config.min_span_error_ratio) & (out["errors"] >= 3)]


def _whole_service_down(ctx: PatternContext) -> dict[str, tuple[float, float]]:
    """Services every instance of which failed its scrapes (``up`` 0) for at least two
    samples in a row after the baseline, having answered before: when that began and for
    how long. One instance down (a zone, a rollout) leaves others serving: not down."""
    raw = ctx.raw
    up = raw[(raw["role"] == "up") & raw["service"].notna()]
    if up.empty:
        return {}
    out: dict[str, tuple[float, float]] = {}
    # Per service and sample time, the best any instance did: 0 only when all were down.
    best = up.groupby([up["service"].astype(str), "ts"], sort=True)["value"].max()
    names = best.index.get_level_values(0).to_numpy(dtype=object)
    times = best.index.get_level_values(1).to_numpy(dtype=float)
    values = best.to_numpy(dtype=float)
    bounds = np.flatnonzero(np.r_[True, names[1:] != names[:-1], True])
    for lo, hi in itertools.pairwise(bounds.tolist()):
        svc, t, v = names[lo], times[lo:hi], values[lo:hi]
        before = v[(t < ctx.window.start) & ~np.isnan(v)]
        in_window = (t >= ctx.window.start - 300.0) & (t <= ctx.window.end)
        if not len(before) or float(before.max()) < 1.0 or not in_window.any():
            continue
        ts = t[in_window]
        zero = (v[in_window] < 0.5).astype(int)
        runs = np.flatnonzero(np.diff(np.r_[0, zero, 0]))
        spans = [(int(a), int(b)) for a, b in zip(runs[::2], runs[1::2], strict=True) if b - a >= 2]
        if not spans:
            continue
        a, b = max(spans, key=lambda x: x[1] - x[0])
        step = float(np.median(np.diff(ts))) if len(ts) > 1 else float(ctx.step)
        out[str(svc)] = (float(ts[a]), float(ts[b - 1] - ts[a]) + step)
    return out

"""Deployment: a version or generation change on the suspect shortly before its onset.

Signals: ``version`` (build-info / ``target_info`` versions), ``deploy_generation``
(kube-state-metrics ``metadata.generation``), and the ``version`` column of
spans. A change counts when a version absent from the baseline appears, or the
generation rises, at most ``max_lead_seconds`` before the service's trouble
began (and not more than ``max_lag_seconds`` after it). A service whose trouble came
with more demand (its callers got more requests themselves) counts for less: traffic
overran it, whatever was deployed. A rollout seen more than a step after the alert
started counts ``LATE``: it cannot be what made the alert fire.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from correlator.model import Evidence, format_time
from correlator.pattern import BasePattern, PatternContext, PatternResult
from correlator.roles import CAUSE_ROLES, SYMPTOM_ROLES
from correlator.topology import LATE, demand_rises

__all__ = ["DeploymentConfig", "DeploymentPattern"]


@dataclass(frozen=True)
class DeploymentConfig:
    """Thresholds of the deployment pattern."""

    max_lead_seconds: float = 1200.0
    """How long before the onset a deploy may have happened and still be blamed."""
    max_lag_seconds: float = 120.0
    """How long after the onset a change may appear (rollouts and sampling lag)."""
    alert_symptom_score: float = 8.0
    """The symptom score the alert lends its own service when no symptom was detected
    there (8 is a half-strength symptom)."""
    min_lag_slack_seconds: float = 15.0
    """A change seen after the onset by more than one step (at least this) counts less
    the later it came."""
    grace_seconds: float = 60.0
    """A deploy this close before the onset counts fully (rollout and sampling lag)."""
    decay_seconds: float = 300.0
    """Beyond the grace, the deploy's weight decays with this time constant."""
    load_share: float = 0.5
    """How much of the score more demand on the service (more requests its callers got
    themselves, not retries), arriving no later than its trouble, takes away: a service
    overrun by traffic is hurt by the traffic, whatever was deployed."""


@dataclass(frozen=True)
class _Change:
    service: str
    at: float
    old: str
    new: str
    how: str


class DeploymentPattern(BasePattern):
    """A deploy (new version or generation) on a service shortly before it went wrong."""

    name = "deployment"
    cause = "deployment"
    needs = ("version", "deploy_generation")
    config_class = DeploymentConfig
    description = "version/generation change on the suspect shortly before its onset"

    def evaluate(self, ctx: PatternContext, config: DeploymentConfig) -> PatternResult:
        """Blame deploys that precede a service's anomaly onset."""
        spans = ctx.telemetry.spans
        has_span_versions = bool(len(spans)) and spans["version"].notna().any()
        if not (ctx.has("version") or ctx.has("deploy_generation") or has_span_versions):
            return self.not_evaluated(
                "no version or deploy_generation signal and no span versions: "
                "deploys cannot be seen (export *_build_info, target_info or kube-state-metrics)"
            )
        changes = _version_changes(ctx) + _generation_changes(ctx)
        if has_span_versions:
            changes += _span_changes(ctx)
        if not changes:
            return self.no_match("no deploy in the window")
        best: dict[str, _Change] = {}
        for ch in sorted(changes, key=lambda c: c.at):
            best.setdefault(ch.service, ch)
        demand = demand_rises(ctx.anomalies, ctx.onset_slack)
        demand_of = {str(k): float(v) for k, v in demand["strength"].items()}
        demand_at = {str(k): float(v) for k, v in demand["onset"].items()}
        # A version shows up at most about one scrape (one step) after the rollout.
        slack = max(ctx.step, config.min_lag_slack_seconds)
        findings = []
        for svc, ch in best.items():
            anom = ctx.anomalies_of(svc)
            if anom.empty:
                continue
            # When its trouble began decides (below): an earlier wobble of something else
            # (a noise row minutes before the rollout) does not rule the deploy out.
            onset = float(anom["onset"].min())
            symptoms = anom[anom["role"].isin(SYMPTOM_ROLES)]
            if not symptoms.empty:
                sym = float(symptoms["score"].max())
                onset = float(symptoms["onset"].min())
            elif svc == ctx.alert.service:
                # The alert itself says this service hurts, even when the rise was too
                # small for the detector (a p95 alert over a mean, a tight threshold).
                sym = config.alert_symptom_score
            else:
                # A rollout moves resources (new pods) by itself; only hurt requests count:
                # its own, or (half) its callers' when they began to hurt after the deploy
                # and after its own resources moved (a release that burns more CPU slows its
                # callers before it errs itself). More requests alone are callers retrying.
                moved = anom[anom["role"].isin(list(CAUSE_ROLES - {"request_rate"}))]
                if moved.empty:
                    continue
                since = max(ch.at, float(moved["onset"].min())) - max(ctx.step, 15.0)
                hurt = _callers_hurt_after(ctx, svc, since)
                if hurt is None:
                    continue
                sym, onset = 0.5 * hurt[0], hurt[1]
            lead = onset - ch.at
            if lead > config.max_lead_seconds or lead < -config.max_lag_seconds:
                continue
            sym_strength = sym / (sym + 8.0)
            # A bad release hurts as soon as its pods take traffic; trouble that began
            # many minutes after a deploy is more often something else.
            closeness = float(
                np.exp(-max(lead - config.grace_seconds, 0.0) / max(config.decay_seconds, 1.0))
            )
            if lead < 0:
                # Seen after the trouble began: a release cannot hurt before it runs; beyond
                # the slack of one scrape the deploy looks more like a response.
                closeness *= float(np.exp(-max(-lead - slack, 0.0) / slack))
            # Closeness weighs the whole score too: however clear the trouble, a deploy
            # many minutes before it is weak evidence (half at about eight minutes).
            score = (0.3 + 0.35 * sym_strength + 0.35 * closeness) * float(np.sqrt(closeness))
            load = 0.0
            if svc in demand_at and demand_at[svc] <= onset + ctx.onset_slack:
                load = demand_of[svc]
                score *= 1.0 - config.load_share * load
            # Deployed after the alert had started (beyond the same slack): it cannot be
            # what made the alert fire.
            started = ctx.alert.starts_at
            if started and ch.at > started + slack:
                score *= LATE
            if ctx.alert_hurt_before(ch.at):
                # The alerted service was failing or slow before this deploy: it cannot be
                # what hurt it (a rollout during an incident is often a response to it).
                score *= 0.5
            ev: list[Evidence] = [
                Evidence(
                    kind="deploy",
                    summary=(
                        f"{svc} changed {ch.how} {ch.old or '?'} -> {ch.new} at "
                        f"{format_time(ch.at)}, {lead:+.0f}s before its trouble began"
                    ),
                    service=svc,
                    signal="version" if ch.how == "version" else "deploy_generation",
                    onset=ch.at,
                    query=ctx.query("version" if ch.how == "version" else "deploy_generation"),
                    data={"old": ch.old, "new": ch.new, "lead_seconds": round(lead, 1)},
                )
            ]
            ev += ctx.anomalies_evidence(anom, 3)
            ev += ctx.log_evidence(svc) + ctx.trace_evidence(svc)
            findings.append(
                self.finding(
                    svc,
                    score,
                    ev,
                    features={"lead": lead, "symptom": sym_strength, "load": load},
                    onset=onset,
                )
            )
        return self.found(findings, "" if findings else "deploys seen, none before an anomaly")


def _version_changes(ctx: PatternContext) -> list[_Change]:
    raw = ctx.raw
    v = raw[(raw["role"] == "version") & raw["version"].notna()]
    if v.empty:
        return []
    v = v[pd.to_numeric(v["value"], errors="coerce").fillna(1.0) > 0]
    first = v.groupby(["service", "version"])["ts"].agg(["min", "max"]).reset_index()
    first = first.dropna(subset=["min"]).sort_values(["service", "min"], kind="stable")
    out = []
    cutoff = ctx.window.start - 1800.0
    services = first["service"].to_numpy(dtype=object)
    seen = first["min"].to_numpy(dtype=np.float64)
    versions = [str(x) for x in first["version"].tolist()]
    bounds = np.flatnonzero(np.r_[True, services[1:] != services[:-1], True]).tolist()
    # Per service, its versions by first sight: those seen by the cutoff (or the first one)
    # are the old ones, the first seen after it is the change.
    for lo, hi in itertools.pairwise(bounds):
        bar = max(cutoff, float(seen[lo:hi].min()))
        old = [versions[i] for i in range(lo, hi) if seen[i] <= bar]
        new = [i for i in range(lo, hi) if seen[i] > bar]
        if not new:
            continue
        i = new[0]
        out.append(
            _Change(str(services[lo]), float(seen[i]), ", ".join(old), versions[i], "version")
        )
    return out


def _generation_changes(ctx: PatternContext) -> list[_Change]:
    raw = ctx.raw
    g = raw[raw["role"] == "deploy_generation"]
    if g.empty:
        return []
    g = g.groupby(["service", "ts"])["value"].max().reset_index().sort_values("ts")
    out = []
    for svc, grp in g.groupby("service"):
        vals = grp["value"].astype(float).to_numpy()
        ts = grp["ts"].astype(float).to_numpy()
        up = np.flatnonzero(np.diff(vals) > 0)
        up = up[ts[up + 1] >= ctx.window.start - 1800.0]
        if up.size:
            i = int(up[0])
            out.append(
                _Change(
                    str(svc), float(ts[i + 1]), f"{vals[i]:g}", f"{vals[i + 1]:g}", "generation"
                )
            )
    return out


def _span_changes(ctx: PatternContext) -> list[_Change]:
    s = ctx.telemetry.spans
    s = s[s["version"].notna() & (s["kind"] == 2)]
    if s.empty:
        return []
    first = s.groupby(["service", "version"])["start"].agg(["min", "count"]).reset_index()
    out = []
    for svc, grp in first.groupby("service"):
        if len(grp) < 2:
            continue
        grp = grp.sort_values("min")
        old, new = grp.iloc[0], grp.iloc[-1]
        out.append(
            _Change(
                str(svc), float(new["min"]), str(old["version"]), str(new["version"]), "version"
            )
        )
    return out


def _callers_hurt_after(ctx: PatternContext, svc: str, since: float) -> tuple[float, float] | None:
    """The strongest symptom score among ``svc``'s direct callers that began at or after
    ``since`` (only their calls to ``svc`` where those are seen one by one), and the
    earliest such onset; None when no caller hurt then."""
    if svc not in ctx.graph:
        return None
    best, first = 0.0, np.inf
    for caller in ctx.graph.predecessors(svc):
        sym = ctx.caller_trouble(str(caller), svc, SYMPTOM_ROLES)
        sym = sym[sym["onset"].astype(float) >= since]
        if len(sym):
            best = max(best, float(sym["score"].max()))
            first = min(first, float(sym["onset"].min()))
    return (best, first) if best > 0 else None

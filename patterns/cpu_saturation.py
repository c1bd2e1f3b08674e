"""CPU saturation: a service's own CPU use or throttling rose, and it slowed down.

Signals: ``cpu`` (cores used), ``cpu_throttled`` (CFS throttling), with the
latency or errors of the service (or of its callers). A stress process, a hot
loop or a noisy neighbour shows as CPU (or throttling) rising *before or with*
the service's symptoms, without more requests to explain it: CPU that rose with
the request rate is load, not a cause (the traffic-spike pattern judges that).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from correlator.model import Evidence
from correlator.pattern import (
    BasePattern,
    PatternContext,
    PatternResult,
    rows_by,
    said_strength,
)
from correlator.roles import SYMPTOM_ROLES
from correlator.topology import MATERIAL, demand_rises

__all__ = ["CpuSaturationConfig", "CpuSaturationPattern"]


@dataclass(frozen=True)
class CpuSaturationConfig:
    """Thresholds of the CPU-saturation pattern."""

    lag: float = 60.0
    """Seconds after the service's first symptom within which a CPU rise still counts as
    a cause (onsets are known to a sampling step)."""
    load_share: float = 0.5
    """How much of the score a rise of demand on the same service (more requests that
    are not retries) takes away: busy because busier is load, not saturation."""
    elsewhere_share: float = 0.7
    """How much of the score errors of the service that name a callee failing for other
    callers too take away (its trouble is that callee's)."""


class CpuSaturationPattern(BasePattern):
    """A service starved of CPU by something other than more requests."""

    name = "cpu_saturation"
    cause = "cpu_saturation"
    needs = ("cpu", "cpu_throttled")
    config_class = CpuSaturationConfig
    description = "CPU use or throttling up on a service before its latency, without more demand"

    def evaluate(self, ctx: PatternContext, config: CpuSaturationConfig) -> PatternResult:
        """Score services whose CPU rose no later than their (or their callers') symptoms."""
        if not (ctx.has("cpu") or ctx.has("cpu_throttled")):
            return self.not_evaluated(
                "no cpu or cpu_throttled signal (cAdvisor container_cpu_usage_seconds_total)"
            )
        a = ctx.anomalies
        up = a[a["role"].isin(("cpu", "cpu_throttled")) & (a["direction"] == "up")]
        if up.empty:
            return self.no_match("no service's CPU use or throttling rose")
        demand = demand_rises(a, ctx.onset_slack)
        errors = _call_errors(ctx)
        findings = []
        # Each service's rising CPU rows, strongest first (as anomalies_of gives them).
        up = up.sort_values("score", ascending=False, kind="stable")
        up_of = rows_by(up, up["service"].astype(str))
        demand_of = demand["strength"].to_dict() if len(demand) else {}
        demand_at = demand["onset"].to_dict() if len(demand) else {}
        # More requests that callers made (retries, a caller calling more) load it as much.
        made = demand_rises(a, ctx.onset_slack, pushed=set())
        made_of = made["strength"].to_dict() if len(made) else {}
        made_at = made["onset"].to_dict() if len(made) else {}
        for svc, cpu in sorted(up_of.items()):
            scores = cpu["score"].to_numpy(dtype=np.float64)
            onsets = cpu["onset"].to_numpy(dtype=np.float64)
            at = float(onsets.min())
            hurt, hurt_at = _hurt(ctx, svc)
            if hurt_at is not None and at > hurt_at + config.lag:
                continue  # CPU that rose after the trouble is what the trouble did
            peak = float(scores.max())
            strength = peak / (peak + 8.0)
            # More demand is what made the CPU rise only if it came no later than the CPU
            # did, in strength (onsets are known to the slack): requests that rose after it
            # are callers retrying what the starved service could no longer answer.
            strong_at = float(onsets[scores >= 0.5 * peak].min())
            load = (
                float(demand_of.get(svc, 0.0))
                if float(demand_at.get(svc, np.inf)) <= strong_at + ctx.onset_slack
                else 0.0
            )
            if svc in made_at and float(made_at[svc]) <= at + float(ctx.step):
                # ... when they came no later than the CPU did (retries after it are its effect)
                load = max(load, float(made_of[svc]))
            if hurt_at is not None and hurt_at < at:
                # Its requests rose with its CPU after its trouble began: callers retrying
                # it, and the CPU is what serving them cost.
                load = max(load, _busier(ctx, svc, hurt_at, at + float(ctx.step)))
            # CPU that follows something else happening to the service (memory climbing:
            # the collector thrashes; pods lost: the survivors take their share) is an
            # effect of that, judged by its own pattern.
            # Memory that climbs (however slowly it crossed its bar) makes the collector burn
            # CPU; pods lost or restarting make the survivors busier.
            other = ctx.anomalies_of(svc, _OTHER_CAUSES)
            keep = (other["direction"].to_numpy() == "up") | (
                other["onset"].to_numpy(dtype=np.float64) <= at
            )
            before = (
                float(other["score"].to_numpy(dtype=np.float64)[keep].max()) if keep.any() else 0.0
            )
            lost = ctx.pods_lost_by(at + float(ctx.step))
            effect = max(before / (before + 8.0), lost)
            # Its trouble is its calls to another service that fails others too (its
            # errors name that service): the CPU is what waiting and retrying cost.
            elsewhere = _failing_elsewhere(errors, svc, at + config.lag)
            score = strength * max(hurt, 0.3) * (1.0 - config.load_share * load) * (1.0 - effect)
            score *= 1.0 - config.elsewhere_share * elsewhere
            if ctx.alert_hurt_before(at):
                # The alerted service was failing or slow before this CPU rose: whatever
                # the CPU did, it is not what hurt it.
                score *= 0.5
            ev: list[Evidence] = ctx.anomalies_evidence(cpu, 2)
            ev += ctx.log_evidence(svc)
            findings.append(
                self.finding(
                    svc,
                    score,
                    ev,
                    features={"cpu": strength, "hurt": hurt, "load": load},
                    onset=at,
                )
            )
        return self.found(findings, "" if findings else "CPU rose only after the symptoms")


def _busier(ctx: PatternContext, svc: str, since: float, by: float) -> float:
    """How strongly (0..1) the service's request rate rose between ``since`` and ``by``."""
    rows = ctx.anomalies_of(svc, ("request_rate",))
    rows = rows[(rows["direction"] == "up") & rows["onset"].astype(float).between(since, by)]
    if rows.empty:
        return 0.0
    best = float(rows["score"].astype(float).max())
    return best / (best + 8.0)


#: Causes of their own that make CPU rise as an effect.
_OTHER_CAUSES = ("memory", "memory_ratio", "oom_kills", "restarts", "pod_ready", "up")


#: A service's errors about its calls (client side, or its log lines naming the callee;
#: its calls as the callee's ``edge_errors`` rows keep them count too).
_CALL_ERRORS = ("client_errors", "client_error_ratio", "log_errors", "log_template")


def _failing_elsewhere(
    errors: tuple[dict[str, pd.DataFrame], dict[str, list[tuple[str, float]]]],
    svc: str,
    until: float,
) -> float:
    """How strongly (0..1) ``svc``'s errors, begun by ``until``, name a callee that other
    callers also find failing (``errors``: :func:`_call_errors`)."""
    mine, troubled = errors
    rows = mine.get(svc)
    if rows is None:
        return 0.0
    strongest: dict[str, float] = {}
    for callee, at, score in zip(
        rows["peer"].tolist(), rows["onset"].tolist(), rows["score"].tolist(), strict=True
    ):
        if at <= until:
            strongest[callee] = max(strongest.get(callee, score), score)
    best = 0.0
    for callee, score in strongest.items():
        others = {c for c, at in troubled.get(str(callee), ()) if at <= until}
        if others - {svc, str(callee), ""}:
            best = max(best, said_strength(float(score)))
    return best


def _call_errors(
    ctx: PatternContext,
) -> tuple[dict[str, pd.DataFrame], dict[str, list[tuple[str, float]]]]:
    """Per service, its rising error rows that name a callee (``peer``, ``onset``,
    ``score``), its failing calls kept at the callee included; per callee, who is
    troubled by it and since when (errors naming it, its namers and its edges by
    caller)."""
    a = ctx.anomalies
    up = a[a["direction"] == "up"]
    peer, svc = up["peer"].astype(str), up["service"].astype(str)
    errs = up[up["role"].isin(_CALL_ERRORS) & (peer != "") & (peer != svc)]
    # Its failing calls as the callee's edge rows keep them (service-graph metrics, spans):
    # the caller in ``peer``.
    edges = up[up["role"].isin(("edge_errors", "edge_error_ratio")) & (peer != "") & (peer != svc)]
    frame = pd.DataFrame(
        {
            "service": pd.concat([errs["service"], edges["peer"]]).astype(str),
            "peer": pd.concat([errs["peer"], edges["service"]]).astype(str),
            "onset": pd.concat([errs["onset"], edges["onset"]]).astype(float),
            "score": pd.concat([errs["score"], edges["score"]]).astype(float),
        }
    )
    mine = rows_by(frame, "service")
    troubled: dict[str, list[tuple[str, float]]] = {}
    for s_, p_, at in zip(frame["service"], frame["peer"], frame["onset"], strict=True):
        troubled.setdefault(p_, []).append((s_, at))
    told = up[up["role"].isin(("named_by_callers", "edge_errors", "edge_error_ratio"))]
    for s_, p_, at in zip(
        told["service"].astype(str),
        told["peer"].astype(str),
        told["onset"].astype(float),
        strict=True,
    ):
        troubled.setdefault(s_, []).append((p_, at))
    return mine, troubled


def _hurt(ctx: PatternContext, svc: str) -> tuple[float, float | None]:
    """How much the service, or a caller of it (through its calls to the service, where
    those are seen one by one), hurts (0..1), and since when."""
    names = [svc, *(ctx.graph.predecessors(svc) if svc in ctx.graph else ())]
    best, first = 0.0, None
    for name in names:
        # A caller's pain counts only through its calls to the service, where seen.
        sym = (
            ctx.anomalies_of(name, SYMPTOM_ROLES)
            if name == svc
            else ctx.caller_trouble(name, svc, SYMPTOM_ROLES)
        )
        if len(sym):
            scores = sym["score"].to_numpy(dtype=np.float64)
            s = float(scores.max())
            share = 1.0 if name == svc else 0.7  # a caller's pain is one step removed
            best = max(best, share * s / (s + 8.0))
            # Dated by trouble of some weight: one stray timeout logged a while before
            # does not make the CPU's rise come after the trouble.
            dated = sym["onset"].to_numpy(dtype=np.float64)[scores >= MATERIAL]
            if len(dated):
                at = float(dated.min())
                first = at if first is None else min(first, at)
    return best, first

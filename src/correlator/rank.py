"""Ranking: pattern findings and root-service likelihood -> calibrated, ranked findings.

Every candidate (a pattern's finding, or an ``unknown``-cause finding for each
of the most likely root services) gets the features of
:data:`correlator.calibration.FEATURES`; the calibration model maps them to
the probability that the candidate is right. Candidates naming the same
service and cause are merged (best score, evidence of both); the result is
sorted best first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from correlator.calibration import Calibration, load_calibration
from correlator.model import Evidence, Finding
from correlator.pattern import PatternContext
from correlator.topology import (
    PASSED,
    UPSTREAM_OF_ALERT,
    fired_by,
    trouble_began,
    upstream_only,
)

__all__ = ["UNKNOWN", "candidate_features", "rank"]

#: The cause word when no pattern explains the root service.
UNKNOWN = "unknown"


def _unknown_findings(ctx: PatternContext, top: int) -> list[Finding]:
    out = []
    for r in ctx.roots[:top]:
        anom = ctx.anomalies_of(r.service)
        rows: list[Any] = anom.head(3).to_dict("records")
        ev: list[Evidence] = [ctx.metric_evidence(row) for row in rows]
        ev += ctx.log_evidence(r.service) + ctx.trace_evidence(r.service)
        out.append(
            Finding(
                service=r.service,
                cause=UNKNOWN,
                confidence=0.0,
                evidence=tuple(ev),
                pattern="",
                score=0.0,
                onset=r.onset,
            )
        )
    return out


def candidate_features(ctx: PatternContext, findings: Sequence[Finding]) -> list[dict[str, float]]:
    """The calibration features of each candidate: generic, so that any pattern (a
    third-party one too) earns its confidence from what every finding has.

    Topology position (``root*``, ``strength``, ``onset_first``), the pattern's own
    score and its rivals (``pattern*``, ``best_other_pattern``,
    ``same_service_rival``, ``service_patterns``), the breadth of the evidence
    (``modalities``: how many of metrics, spans and logs show the service moving;
    ``evidence_kinds``; ``covers``; ``covered``: the best score of a finding at another
    service that accounts for this one's, as a zone failure accounts for the errors of the
    services it took pods from), and how sure the data can be (``baseline``: the
    share of a full 30-minute baseline the data held; ``crowd``: how many services
    moved at all; ``coarse``: how coarse the samples are, up to 5 minutes, where onsets
    order nothing), and ``late``: the service's trouble began only after the alert fired
    (it cannot have caused it).
    """
    roots = {r.service: r for r in ctx.roots}
    top = ctx.roots[0].score if ctx.roots else 0.0
    second = ctx.roots[1].score if len(ctx.roots) > 1 else 0.0
    first_onset = min((r.onset for r in ctx.roots if r.onset is not None), default=None)
    modalities = _modalities(ctx)
    crowd = min(len(ctx.roots), 50) / 50.0
    baseline = min(max(ctx.baseline_seconds, 0.0) / 1800.0, 1.0)
    coarse = min(max(float(ctx.step), 0.0) / 300.0, 1.0)
    per_service: dict[str, int] = {}
    for f in findings:
        if f.cause != UNKNOWN and f.score >= 0.5:
            per_service[f.service] = per_service.get(f.service, 0) + 1
    best_pattern = max((f.score for f in findings if f.cause != UNKNOWN), default=0.0)
    fired = fired_by(ctx.alert.starts_at, ctx.step)
    start = trouble_began(ctx.anomalies)
    rows = []
    for f in findings:
        # A finding that accounts for several services (a zone) stands as the best of them.
        mine = [roots[s] for s in (f.service, *f.covers) if s in roots]
        r = max(mine, key=lambda x: x.score) if mine else None
        others = [g.score for g in findings if g is not f and g.cause != UNKNOWN]
        rival = max(
            (
                g.score
                for g in findings
                if g is not f
                and g.cause != UNKNOWN
                and g.service == f.service
                and g.cause != f.cause
            ),
            default=0.0,
        )
        is_pattern = f.cause != UNKNOWN
        covered = max(
            (
                g.score
                for g in findings
                if g.service != f.service and f.service in g.covers and g.cause != UNKNOWN
            ),
            default=0.0,
        )
        early = (
            r is not None
            and r.onset is not None
            and first_onset is not None
            and r.onset <= first_onset + max(float(ctx.step), 1.0)
        )
        began = min(
            (float(start[s]) for s in (f.service, *f.covers) if s in start.index), default=None
        )
        rows.append(
            {
                "root": r.score if r else 0.0,
                "root_top": 1.0 if r is not None and r.rank == 1 else 0.0,
                "root_rank_inv": 1.0 / r.rank if r else 0.0,
                "root_margin": (r.score - (second if r.rank == 1 else top)) if r else -top,
                "pattern": f.score if is_pattern else 0.0,
                "unknown": 0.0 if is_pattern else 1.0,
                "best_other_pattern": max(others, default=0.0),
                "service_patterns": float(per_service.get(f.service, 0)),
                "strength": r.strength if r else 0.0,
                # The best pattern's score (not a flag: a lone weak finding is not a strong one).
                "pattern_top": f.score if is_pattern and f.score >= best_pattern else 0.0,
                "same_service_rival": rival,
                "onset_first": 1.0 if early else 0.0,
                "modalities": max((modalities.get(s, 0) for s in (f.service, *f.covers)), default=0)
                / 3.0,
                "evidence_kinds": min(len({e.kind for e in f.evidence}), 4) / 4.0,
                "covers": min(len(f.covers), 5) / 5.0,
                "covered": covered,
                "baseline": baseline,
                "crowd": crowd,
                "coarse": coarse,
                "late": 1.0 if fired is not None and began is not None and began > fired else 0.0,
            }
        )
    return rows


def _modalities(ctx: PatternContext) -> dict[str, int]:
    """Per service, how many modalities (metrics, spans, logs...) show it moving."""
    a = ctx.anomalies
    if a.empty or "modality" not in a.columns:
        return {}
    counts = a.groupby(a["service"].astype(str))["modality"].nunique()
    return {str(k): int(v) for k, v in counts.items()}


def rank(
    ctx: PatternContext,
    findings: Sequence[Finding],
    calibration: Calibration | None = None,
    top_n: int = 5,
    unknown_roots: int | None = None,
) -> list[Finding]:
    """Calibrate, merge and sort candidates; at most ``top_n`` come back.

    ``unknown_roots``: how many of the likeliest root services stand as candidates
    with cause ``unknown`` (by default ``top_n``, so that up to ``top_n`` root
    services can be reported even when no pattern explains them)."""
    unknown_roots = top_n if unknown_roots is None else unknown_roots
    cal = calibration or load_calibration()
    above = upstream_only(ctx.graph, ctx.alert.service)
    # A caller's own trouble does not make the service it calls hurt; only more demand
    # from it can (see topology.UPSTREAM_OF_ALERT).
    cands = [
        replace(f, score=f.score * UPSTREAM_OF_ALERT)
        if f.service in above and f.cause != "traffic_spike"
        else f
        for f in findings
        if f.score > 0.0
    ]
    # Trouble that came and went (a rollout's brief strain, a blip) long before the alert
    # stopped firing is not what keeps it firing.
    cands = [
        replace(f, score=f.score * PASSED) if ctx.passed_while_alert_held(f.service) else f
        for f in cands
    ] + _unknown_findings(ctx, unknown_roots)
    if not cands:
        return []
    feats = candidate_features(ctx, cands)
    probs = cal.predict(feats, [(f.service, f.cause) for f in cands])
    merged: dict[tuple[str, str], Finding] = {}
    for f, x, p in zip(cands, feats, probs, strict=True):
        g = replace(f, confidence=float(p), features={**f.features, **x})
        key = (g.service, g.cause)
        old = merged.get(key)
        if old is None:
            merged[key] = g
        else:
            best, other = (g, old) if g.confidence > old.confidence else (old, g)
            extra = tuple(e for e in other.evidence if e not in best.evidence)
            merged[key] = replace(best, evidence=best.evidence + extra)
    out = sorted(merged.values(), key=lambda f: (-f.confidence, -f.score, f.service, f.cause))
    return out[:top_n]

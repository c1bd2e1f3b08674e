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

from correlator.calibration import CAUSE_FEATURES, Calibration, load_calibration
from correlator.model import Evidence, Finding
from correlator.pattern import PatternContext

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
    """The calibration features of each candidate."""
    roots = {r.service: r for r in ctx.roots}
    top = ctx.roots[0].score if ctx.roots else 0.0
    second = ctx.roots[1].score if len(ctx.roots) > 1 else 0.0
    per_service: dict[str, int] = {}
    for f in findings:
        if f.cause != UNKNOWN and f.score >= 0.5:
            per_service[f.service] = per_service.get(f.service, 0) + 1
    best_pattern = max((f.score for f in findings if f.cause != UNKNOWN), default=0.0)
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
        row = {
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
        }
        for cause in CAUSE_FEATURES:
            row[f"p_{cause}"] = f.score if f.cause == cause else 0.0
        rows.append(row)
    return rows


def rank(
    ctx: PatternContext,
    findings: Sequence[Finding],
    calibration: Calibration | None = None,
    top_n: int = 5,
    unknown_roots: int = 3,
) -> list[Finding]:
    """Calibrate, merge and sort candidates; at most ``top_n`` come back."""
    cal = calibration or load_calibration()
    cands = [f for f in findings if f.score > 0.0] + _unknown_findings(ctx, unknown_roots)
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

"""Memory leak: working set climbing steadily towards the limit, then OOM kills and restarts.

Signals: ``memory`` (working set), ``memory_limit``, ``oom_kills``, ``restarts``,
and the service's own log lines that say its memory ran out (a JVM's
``OutOfMemoryError`` or GC-overhead warning, Python's ``MemoryError``, Go's
``runtime: out of memory``, ``Cannot allocate memory``), which are as good as a
kill and show a leak where no memory metric is scraped.
A leak is a *climb*, not a step: the pattern checks that the working set rose
over most of the steps before its peak. A climb that hurts nothing (no OOM
kill or restart, no errors or latency on the service) is discounted: memory
grows for many harmless reasons (caches warming, a bigger working set).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from correlator.model import Evidence
from correlator.pattern import BasePattern, PatternContext, PatternResult, said_strength
from correlator.roles import SYMPTOM_ROLES

__all__ = ["MemoryLeakConfig", "MemoryLeakPattern"]

#: How long (seconds) before a climb's detected onset its leak may already have hurt: a
#: slow climb is seen late; trouble that began earlier still came from something else.
LEAD = 600.0

#: What runtimes and kernels write when memory runs out (JVM, Python, Go, Node, C++, libc).
_OUT_OF_MEMORY = re.compile(
    r"out ?of ?memory|outofmemory|\boom(?:killed|_killed|-killed)?\b|memoryerror"
    r"|cannot allocate memory|heap space|gc overhead|bad_alloc|allocation failed"
    r"|memory limit (?:exceeded|reached)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class MemoryLeakConfig:
    """Thresholds of the memory-leak pattern."""

    near_limit: float = 0.8
    """Working set as a fraction of the limit that counts as close to it."""
    min_rising: float = 0.6
    """Fraction of steps, from the onset to the peak, on which memory must rise."""
    unhurt_discount: float = 0.6
    """How much of the score is lost when the service neither errs, slows nor gets killed."""


class MemoryLeakPattern(BasePattern):
    """A service whose memory climbs until it is killed."""

    name = "memory_leak"
    cause = "memory_leak"
    needs = ("memory", "memory_limit", "oom_kills", "restarts")
    config_class = MemoryLeakConfig
    description = "working set trending up toward the limit, OOM kills, restarts"

    def evaluate(self, ctx: PatternContext, config: MemoryLeakConfig) -> PatternResult:
        """Score services with a rising working set, OOM kills or restarts."""
        oom = ctx.lines_saying(_OUT_OF_MEMORY)
        if not (ctx.has("memory") or ctx.has("oom_kills") or len(oom)):
            return self.not_evaluated(
                "no memory or oom_kills signal (cAdvisor container_memory_working_set_bytes)"
            )
        a = ctx.anomalies
        cand = set(a.loc[a["role"].isin(("memory", "memory_ratio", "oom_kills")), "service"])
        cand |= set(oom["service"].astype(str))
        findings = []
        for svc in sorted(cand):
            mem = ctx.anomalies_of(svc, ("memory_ratio", "memory"))
            kills = ctx.anomalies_of(svc, ("oom_kills", "restarts"))
            said = oom[oom["service"].astype(str) == svc]
            ev: list[Evidence] = []
            rising, ratio = 0.0, float("nan")
            if len(mem):
                row = mem.iloc[0]
                ev.append(ctx.metric_evidence(row.to_dict()))
                rising = _rising_fraction(ctx, svc, float(row["onset"]))
                ratio = _peak_ratio(ctx, svc)
            ev += ctx.anomalies_evidence(kills, 2)
            trend = min(1.0, rising / config.min_rising) if rising else 0.0
            near = 0.0 if np.isnan(ratio) else min(1.0, max(0.0, ratio / config.near_limit))
            killed = 1.0 if len(kills) else 0.0
            if len(said):
                # The service wrote that its memory ran out: as good as a kill when the
                # lines are clearly new, in proportion when faint.
                killed = max(killed, said_strength(float(said["score"].astype(float).max())))
                ev += ctx.anomalies_evidence(said, 2)
            # Memory that climbs while the service serves fine (and nothing is killed) is
            # growth, not the cause of an alert: only a leak that hurts counts fully.
            sym = ctx.anomalies_of(svc, SYMPTOM_ROLES)
            if len(mem):
                # Trouble that began long before the climb is not the climb's doing.
                sym = sym[sym["onset"].astype(float) >= float(mem["onset"].min()) - LEAD]
            hurt = float(sym["score"].max()) if len(sym) else 0.0
            hurt = max(killed, hurt / (hurt + 8.0))
            if svc == ctx.alert.service and ctx.alert_reads("memory", "memory_ratio"):
                # The page itself is about this service's memory: what it hurt is the alert.
                hurt = 1.0
            # A leak that climbs to its limit and hurts is one before anything is killed:
            # alerts often fire on the slowdown first.
            score = min(1.0, 0.45 * trend + 0.3 * near + 0.35 * killed) * (
                1.0 - config.unhurt_discount * (1.0 - hurt)
            )
            if not np.isnan(ratio):
                ev.append(
                    Evidence(
                        kind="metric",
                        summary=f"{svc} working set peaked at {ratio:.0%} of its memory limit",
                        service=svc,
                        signal="memory",
                        query=ctx.query("memory"),
                        url=ctx.link("memory"),
                        data={"peak_ratio": round(ratio, 4), "rising_fraction": round(rising, 3)},
                    )
                )
            ev += ctx.log_evidence(svc)
            first = mem if len(mem) else pd.concat([kills, said])
            onset = float(first["onset"].astype(float).min())
            findings.append(
                self.finding(
                    svc,
                    score,
                    ev,
                    features={"trend": trend, "near_limit": near, "killed": killed, "hurt": hurt},
                    onset=onset,
                )
            )
        return self.found(findings, "" if findings else "no service's memory climbed")


def _rising_fraction(ctx: PatternContext, svc: str, onset: float) -> float:
    """Share of steps from ``onset - 10 min`` to the peak on which memory rose."""
    s = ctx.series("memory", svc)
    s = s[(s.index >= onset - 600.0) & (s.index <= ctx.window.end)]
    if len(s) < 4:
        return 0.0
    peak_at = s.idxmax()
    s = s[s.index <= peak_at]
    if len(s) < 4:
        return 0.0
    d = np.diff(s.to_numpy(dtype=float))
    return float(np.mean(d > 0))


def _peak_ratio(ctx: PatternContext, svc: str) -> float:
    r = ctx.series("memory_ratio", svc)
    r = r[(r.index >= ctx.window.start - 600.0) & (r.index <= ctx.window.end)]
    if r.empty:
        return float("nan")
    raw = ctx.raw
    per_pod = raw[(raw["role"] == "memory") & (raw["service"] == svc) & raw["pod"].notna()]
    lim = raw[(raw["role"] == "memory_limit") & (raw["service"] == svc) & raw["pod"].notna()]
    if len(per_pod) and len(lim):
        m = per_pod.groupby("pod")["value"].max()
        limit = lim.groupby("pod")["value"].max()
        both = (m / limit).dropna()
        if len(both):
            return float(both.max())
    return float(r.max())

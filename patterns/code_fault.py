"""Code fault: a service's own requests fail or throw, with no deploy, load or resource change.

Signals: errors of the service as its own spans, logs and metrics show them
(``span_errors``, ``log_errors``, ``log_template``, ``error_ratio``,
``error_rate``). A bug reached by some requests (an exception in 2 % of them,
a wrong value that only callers log) shows as errors that begin at the service,
while its resources and traffic stay as they were. Errors seen in more than one
modality (spans and logs, or metrics) count more.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from correlator.model import Evidence
from correlator.pattern import BasePattern, PatternContext, PatternResult, rows_by
from correlator.roles import CAUSE_ROLES

__all__ = ["CodeFaultConfig", "CodeFaultPattern"]

#: Its own errors, and (a wrong value fails nobody's request by its own measure) the errors
#: its callers log naming it.
_ERRORS = (
    "span_errors",
    "log_errors",
    "log_template",
    "error_ratio",
    "error_rate",
    "named_by_callers",
)


@dataclass(frozen=True)
class CodeFaultConfig:
    """Thresholds of the code-fault pattern."""

    resource_share: float = 1.0
    """How much of the score a change of the service's own resources, pods or traffic
    (begun no later than its errors) takes away: then something happened *to* it."""


class CodeFaultPattern(BasePattern):
    """Errors or exceptions that begin at a service whose resources did not move."""

    name = "code_fault"
    cause = "code_fault"
    needs = ("error_rate",)
    config_class = CodeFaultConfig
    description = "exceptions or failing requests at a service, no deploy, load or resource change"

    def evaluate(self, ctx: PatternContext, config: CodeFaultConfig) -> PatternResult:
        """Score services whose own errors (any modality) are their first trouble."""
        a = ctx.anomalies
        err = a[a["role"].isin(_ERRORS) & (a["direction"] == "up")]
        if err.empty:
            if not (ctx.has("error_rate") or len(ctx.telemetry.spans) or len(ctx.telemetry.logs)):
                return self.not_evaluated("no errors to read: no error_rate, spans or logs")
            return self.no_match("no service's errors rose")
        findings = []
        by_service = rows_by(err, err["service"].astype(str))
        # The strongest word of the callers about each service (topology.named_by_callers).
        told = a[a["role"] == "named_by_callers"]
        named_max = told.groupby(told["peer"].astype(str))["score"].max().to_dict()
        for svc, rows in sorted(by_service.items()):
            mine = rows.sort_values("score", ascending=False)
            at = float(mine["onset"].min())
            s = float(mine["score"].max())
            # Failing calls are read up to the strongest error: a faint early blip (one
            # stray error line) must not make the calls that fail with it look "after".
            upto = max(at, float(mine["onset"].iloc[0])) + ctx.onset_slack
            modalities = set(mine["modality"].astype(str))
            breadth = min(len(modalities), 3) / 3.0
            # What happened to the service is dated against its own errors; its callers'
            # words about it come from their clocks (log lines, a sampling step apart).
            roles = mine["role"].to_numpy(dtype=object)
            onsets = mine["onset"].to_numpy(dtype=np.float64)
            scores = mine["score"].to_numpy(dtype=np.float64)
            own = roles != "named_by_callers"
            at_own = float(onsets[own].min()) if own.any() else at
            changed = _strongest_by(ctx.anomalies_of(svc, CAUSE_ROLES), at_own + ctx.onset_slack)
            changed = changed / (changed + 8.0)
            # Pods or nodes lost anywhere by then (a zone going down) fail requests too.
            changed = max(changed, ctx.pods_lost_by(at_own + float(ctx.step)))
            # Errors that are the service's calls failing (timeouts, refused connections to
            # a dependency or across the network), as it or its callees record the calls,
            # are not its own code's.
            failing = max(
                (_strongest_by(r, upto) for c, r in ctx.troubled_calls(svc).items() if c != svc),
                default=0.0,
            )
            # So are errors its own logs blame on another service ("invalid response from X").
            peers = mine["peer"].astype(str).to_numpy(dtype=object)
            blamed = (mine["modality"].to_numpy(dtype=object) == "logs") & own
            blamed &= (peers != "") & (peers != svc)
            failing = max(failing, float(scores[blamed].max()) if blamed.any() else 0.0)
            # ... as strongly as the blame carries over to them (see topology.named_by_callers).
            failing = max(failing, float(named_max.get(svc, 0.0)))
            failing = failing / (failing + 8.0)
            # ... and requests whose traces show its call below failing with them.
            failing = max(failing, ctx.errors_passed_on(svc, at - ctx.onset_slack))
            score = (s / (s + 8.0)) * (0.6 + 0.4 * breadth)
            score *= (1.0 - config.resource_share * changed) * (1.0 - failing)
            ev: list[Evidence] = ctx.anomalies_evidence(mine, 3)
            ev += ctx.trace_evidence(svc) + ctx.log_evidence(svc)
            findings.append(
                self.finding(
                    svc,
                    score,
                    ev,
                    features={
                        "errors": s / (s + 8.0),
                        "modalities": breadth,
                        "changed": changed,
                        "failing_calls": failing,
                    },
                    onset=at,
                )
            )
        return self.found(findings)


def _strongest_by(rows: pd.DataFrame, until: float) -> float:
    """The strongest score among ``rows`` begun by ``until`` (0 when none)."""
    if not len(rows):
        return 0.0
    scores = rows["score"].to_numpy(dtype=np.float64)
    began = rows["onset"].to_numpy(dtype=np.float64) <= until
    return float(scores[began].max()) if began.any() else 0.0

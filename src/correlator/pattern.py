"""The pattern plugin API: cause checkers the engine runs after detection.

A pattern is a class with a ``name``, the ``cause`` word it names, the
catalog roles it ``needs``, a ``config_class`` (a frozen dataclass of
thresholds, each field documented) and an ``evaluate`` method (a worked,
tested example is in ``docs/plugins.md``)::

    class MyPattern(BasePattern):
        name = "disk_pressure"
        cause = "disk_pressure"
        needs = ("disk_used",)
        config_class = MyConfig

        def evaluate(self, ctx: PatternContext, config: MyConfig) -> PatternResult:
            if not ctx.has("disk_used"):
                return self.not_evaluated("no disk_used signal")
            ...
            return self.found([self.finding("svc", score=0.8, evidence=[])])

Register it in your package's ``pyproject.toml``::

    [project.entry-points."correlator.patterns"]
    disk_pressure = "mypkg.disk:MyPattern"

The built-ins (``patterns/*.py``) use this same group. ``evaluate`` returns a
:class:`PatternResult` *value*: ``ok`` with candidate findings (a raw
``score`` in 0..1 and ``features``; the ranker calibrates the confidence),
``no_data`` when the signals are absent, ``not_evaluated`` when it cannot
judge (missing data is not a "no"), ``error`` when it failed.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import networkx as nx
import numpy as np
import pandas as pd

from correlator.catalog import Catalog
from correlator.detect import series_index
from correlator.errors import ConfigError, CorrelatorError
from correlator.model import Alert, Evidence, Finding, Outcome, Telemetry, Window, format_time
from correlator.roles import CLIENT_ROLES, GENERIC
from correlator.topology import RootScore, dating_weight, over_by, trouble_ended

#: One call's trouble, on the caller (client side) or on the callee (edges, by caller).
_CALL_ROLES = (*CLIENT_ROLES.values(), *CLIENT_ROLES)

_T = TypeVar("_T")

__all__ = [
    "BasePattern",
    "Pattern",
    "PatternContext",
    "PatternResult",
    "config_for",
    "load_patterns",
    "rows_by",
    "said_strength",
]


#: What a service itself shows when it hurts (see :meth:`PatternContext.alert_hurt_before`).
ALERT_OWN_SYMPTOMS = (
    "latency",
    "error_rate",
    "error_ratio",
    "span_latency",
    "span_errors",
    "log_errors",
    "log_template",
)


def rows_by(frame: pd.DataFrame, key: str | pd.Series) -> dict[str, pd.DataFrame]:
    """``frame``'s rows per value of ``key`` (a column name or a series along it), in the
    frame's order: look them up per candidate instead of scanning the frame each time."""
    groups = frame.groupby(key, sort=False).indices
    return {str(k): frame.iloc[v] for k, v in groups.items()}


def said_strength(score: float) -> float:
    """How much rising lines that say a thing outright (a service writing that its memory
    ran out) count, 0..1: as much as the event itself once clearly new (score 8 and up),
    in proportion when faint."""
    return min(1.0, 2.0 * score / (score + 8.0))


@dataclass
class PatternContext:
    """Everything a pattern may read: the alert, the data, detection and topology.

    ``signals`` is the aggregated per (role, service, peer, ts) frame from
    :func:`correlator.detect.aggregate`; ``raw`` is the collected signal frame
    with its dimensions (pod, node, zone, version...).
    """

    alert: Alert
    window: Window
    telemetry: Telemetry
    catalog: Catalog
    anomalies: pd.DataFrame
    graph: nx.DiGraph
    roots: list[RootScore]
    signals: pd.DataFrame
    step: float
    queries: Mapping[str, str] = field(default_factory=dict)
    links: Mapping[str, str] = field(default_factory=dict)
    baseline_seconds: float = float("inf")
    """Seconds of normal data before the alert's window (short baselines are less sure)."""
    series_rows: Mapping[tuple[str, str, str], Any] | None = None
    """Row positions of each series of ``signals`` (:func:`correlator.detect.series_index`),
    when the caller has them; else made on first use."""

    @property
    def onset_slack(self) -> float:
        """Seconds within which two onsets count as one time.

        A metric's onset sits on the query grid and its rates average over a window
        of about two steps, so it can read up to two steps after the change; logs and
        spans time a change to the record. Two onsets closer than this are concurrent.
        """
        return 2.0 * float(self.step)

    def alert_hurt_before(self, onset: float) -> bool:
        """Whether the alerted service's own errors or latency (not its calls' wobbles,
        not its callers' words) clearly began before ``onset``: what began later cannot
        be what hurt it."""
        began = self.memo("_alert_hurt_since", self._alert_hurt_since)
        return began < onset - 2.0 * self.onset_slack

    def _alert_hurt_since(self) -> float:
        """When the alerted service's own trouble began (``inf``: none of weight)."""
        svc = self.alert.service
        if not svc:
            return float("inf")
        mine = self.anomalies_of(svc, ALERT_OWN_SYMPTOMS)
        mine = mine[mine["direction"] == "up"]
        if mine.empty:
            return float("inf")
        # Dated by a row of some weight for its trouble (as topology.trouble_began dates
        # it), and the fainter rows that lead into it without a gap (log lines timing the
        # first failures): a few slow sampled spans minutes before a surge a hundred times
        # stronger did not hurt it yet.
        scores = mine["score"].astype(float)
        mine = mine[scores >= 3.0]
        if mine.empty:
            return float("inf")
        weight = max(3.0, float(dating_weight(float(scores.max()))))
        onsets = mine["onset"].astype(float)
        began = float(onsets[mine["score"].astype(float) >= weight].min())
        gap = max(float(self.step), 30.0)
        for at in sorted(onsets[onsets < began], reverse=True):
            if began - at > gap:
                break
            began = at
        return began

    def passed_while_alert_held(self, service: str) -> bool:
        """Whether all of ``service``'s trouble was over long before the alert's
        (:func:`correlator.topology.over_by`): it came and went while the alert held."""
        a = self.alert
        over = over_by(a.status, a.ends_at, float(self.window.end), float(self.step))
        ended = self.memo("_trouble_ended", lambda: trouble_ended(self.anomalies))
        return float(ended.get(service, np.inf)) < over

    @property
    def raw(self) -> pd.DataFrame:
        """The collected signal frame (``SIGNAL_COLUMNS``)."""
        return self.telemetry.signals

    def alert_reads(self, *roles: str) -> bool:
        """Whether the rule that fired reads a metric the catalog knows as one of ``roles``
        (from the alert's ``generatorURL``; ``False`` when it does not say)."""
        from correlator.alerts import alert_metrics

        names = set(alert_metrics(self.alert))
        names |= {re.sub(r"_(bucket|count|sum)$", "", n) for n in names}
        return any(spec.metric in names for role in roles for spec in self.catalog.specs(role))

    def has(self, role: str) -> bool:
        """Whether any series of ``role`` was collected."""
        return role in self._roles

    @property
    def _roles(self) -> set[str]:
        cached = self.__dict__.get("_role_cache")
        if cached is None:
            roles = set(self.raw["role"].unique()) if len(self.raw) else set()
            roles |= set(self.signals["role"].unique()) if len(self.signals) else set()
            self.__dict__["_role_cache"] = roles
            cached = roles
        return typing.cast(set[str], cached)

    def root(self, service: str) -> RootScore | None:
        """The root-likelihood entry of a service, if it is anomalous."""
        for r in self.roots:
            if r.service == service:
                return r
        return None

    def root_score(self, service: str) -> float:
        """Root likelihood of ``service`` (0 when it shows no anomaly)."""
        r = self.root(service)
        return r.score if r else 0.0

    def series(self, role: str, service: str, peer: str = "") -> pd.Series:
        """One aggregated series (value indexed by ts), empty when absent.

        Built once per key: patterns ask for the same series of a service many times.
        Treat it as read-only."""
        done: dict[tuple[str, str, str], pd.Series] = self.memo("_series_done", dict)
        key = (role, service, peer)
        out = done.get(key)
        if out is None:
            index = self.memo("_series_index", self._build_series_index)
            rows = index.get(key)
            if rows is None:
                out = pd.Series(dtype=float)
            else:
                ts, values = self.memo("_signal_arrays", self._build_signal_arrays)
                t, v = ts[rows], values[rows]
                order = np.argsort(t, kind="stable")
                out = pd.Series(v[order], index=pd.Index(t[order], name="ts"), name="value")
            done[key] = out
        return out

    def anomalies_of(self, service: str, roles: Iterable[str] | None = None) -> pd.DataFrame:
        """Anomaly rows of a service (optionally of some roles), strongest first.

        Kept per (service, roles): patterns ask for the same rows many times (each
        caller of each candidate). Treat the frame as read-only."""
        index = self.memo("_anomaly_index", self._build_anomaly_index)
        sub: pd.DataFrame | None = index.get(service)
        if sub is None:
            return self._no_rows()
        if roles is None:
            return sub
        wanted = tuple(roles)
        done: dict[tuple[str, tuple[str, ...]], pd.DataFrame] = self.memo("_anomalies_done", dict)
        key = (service, wanted)
        out = done.get(key)
        if out is None:
            keep = set(wanted)
            mask = np.fromiter((r in keep for r in sub["role"].tolist()), bool, len(sub))
            if mask.all():
                out = sub
            elif not mask.any():
                out = self._no_rows()
            else:
                out = sub.iloc[np.flatnonzero(mask)]
            done[key] = out
        return out

    def _no_rows(self) -> pd.DataFrame:
        """The anomaly table's columns, no rows."""
        return self.memo("_no_rows", lambda: self.anomalies.iloc[0:0])

    def memo(self, name: str, build: Callable[[], _T]) -> _T:
        """``build()`` once per context: what a pattern derives from the data and reads
        per candidate (an index, a lookup). Names are shared by every pattern: prefix
        yours with the pattern's name."""
        kept: dict[str, Any] = self.__dict__.setdefault("_memos", {})  # not a field: not copied
        if name not in kept:
            kept[name] = build()
        value: _T = kept[name]
        return value

    def _build_series_index(self) -> Mapping[Any, Any]:
        if self.series_rows is not None:
            return self.series_rows
        return series_index(self.signals)

    def _build_signal_arrays(self) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        s = self.signals
        return s["ts"].to_numpy(dtype=np.float64), s["value"].to_numpy(dtype=np.float64)

    def _build_anomaly_index(self) -> dict[str, pd.DataFrame]:
        a = self.anomalies
        if a.empty:
            return {}
        # One sort, then each service's rows (strongest first).
        return rows_by(a.sort_values("score", ascending=False, kind="stable"), "service")

    def query(self, role: str) -> str | None:
        """The query that shows ``role`` in its backend."""
        return self.queries.get(role) or self.telemetry.queries.get(role)

    def link(self, role: str) -> str | None:
        """A link to the query of ``role`` in the backend's UI, when configured."""
        return self.links.get(role) or self.telemetry.links.get(role)

    def pods_lost_by(self, at: float) -> float:
        """How strongly any service or node lost pods, targets or readiness by ``at`` (0..1):
        then errors, load and CPU elsewhere are what losing them did."""
        onsets, best = self.memo("_lost_rows", self._build_lost_rows)
        i = int(np.searchsorted(onsets, at, side="right"))
        if i == 0:
            return 0.0
        s = float(best[i - 1])
        return s / (s + 8.0)

    def caller_trouble(self, caller: str, callee: str, roles: Iterable[str]) -> pd.DataFrame:
        """The rows of ``caller``'s trouble that can be about its calls to ``callee``.

        Where its calls are seen one by one (its client side, or the edges its callees
        record), only its troubled calls to ``callee``: a caller hurt by its calls to
        another service is that service's story. Otherwise its own rows of ``roles``
        (its symptoms, whatever they are about)."""
        seen = self.troubled_calls(caller)
        if seen:
            return seen.get(callee, self._no_rows())
        return self.anomalies_of(caller, roles)

    def troubled_calls(self, caller: str) -> Mapping[str, pd.DataFrame]:
        """Per callee, the rows that show ``caller``'s calls to it in trouble: its client
        side and the edges its callees record (upward moves of the call roles)."""
        calls = self.memo("_troubled_calls", self._build_troubled_calls)
        return calls.get(caller, {})

    def _build_troubled_calls(self) -> dict[str, dict[str, pd.DataFrame]]:
        a = self.anomalies
        if a.empty:
            return {}
        calls = a[
            a["role"].isin(_CALL_ROLES) & (a["direction"] == "up") & (a["peer"].astype(str) != "")
        ]
        client = calls["role"].astype(str).str.startswith("client_")
        svc, peer = calls["service"].astype(str), calls["peer"].astype(str)
        calls = calls.assign(_caller=svc.where(client, peer), _callee=peer.where(client, svc))
        out: dict[str, dict[str, pd.DataFrame]] = {}
        for key, rows in calls.groupby(["_caller", "_callee"]).indices.items():
            caller, callee = typing.cast(tuple[str, str], key)
            out.setdefault(str(caller), {})[str(callee)] = calls.iloc[rows]
        return out

    def _build_warning_lines(self) -> dict[str, pd.DataFrame]:
        """Per service, its warning and error lines from 10 min before the window, by time."""
        logs = self.telemetry.logs
        if logs is None or logs.empty:
            return {}
        ts = logs["ts"].astype(float)
        m = pd.to_numeric(logs["severity"], errors="coerce") >= 13
        m &= (ts >= self.window.start - 600) & (ts <= self.window.end)
        return rows_by(logs[m].sort_values("ts", kind="stable"), "service")

    def failures_saying(self, service: str, pattern: re.Pattern[str], since: float) -> int:
        """How many of ``service``'s failed spans from ``since`` on say what ``pattern``
        matches in their error ("request queue full")."""
        mine = self._spans_of(service)
        if mine is None:
            return 0
        failed = mine[(mine["status"] == 2) & (mine["start"].astype(float) >= since)]
        return int(failed["error"].astype(str).map(lambda t: bool(pattern.search(t))).sum())

    def _spans_of(self, service: str) -> pd.DataFrame | None:
        """The service's spans (``None`` when it has none)."""

        def build() -> dict[str, pd.DataFrame]:
            spans = self.telemetry.spans
            return {} if spans is None or spans.empty else rows_by(spans, "service")

        return self.memo("_spans_by_service", build).get(service)

    def _build_lost_rows(self) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """Onsets of lost pods, targets or readiness, sorted, and the strongest score by each."""
        a = self.anomalies
        lost = a[a["role"].isin(("pod_ready", "up", "node_ready")) & (a["direction"] == "down")]
        lost = lost.sort_values("onset")
        onsets = lost["onset"].to_numpy(dtype=np.float64)
        best = np.maximum.accumulate(lost["score"].to_numpy(dtype=np.float64))
        return onsets, best

    def lines_saying(
        self,
        pattern: re.Pattern[str],
        roles: Iterable[str] = ("log_template", "log_errors"),
        service: str | None = None,
    ) -> pd.DataFrame:
        """Rising log rows (of ``roles``; of ``service`` when given) whose line or template
        says what ``pattern`` matches ("OutOfMemoryError", "too many clients")."""
        a = self.anomalies if service is None else self.anomalies_of(service)
        rows = a[a["role"].isin(list(roles)) & (a["direction"] == "up")]
        if rows.empty:
            return rows
        hit = rows["signal"].astype(str).map(lambda t: bool(pattern.search(t)))
        return rows[hit.astype(bool)]

    def errors_passed_on(self, service: str, since: float) -> float:
        """Share (0..1) of the traces in which ``service`` failed from ``since`` on where its
        own call to another service failed: errors passed on from below (or the calls
        themselves failing), not its own code's. 0 with fewer than three such traces."""
        mine = self._spans_of(service)
        if mine is None:
            return 0.0
        mine = mine[(mine["status"] == 2) & (mine["start"].astype(float) >= since)]
        traces = set(mine["trace_id"])
        if len(traces) < 3:
            return 0.0
        calls = mine[(mine["kind"] == 3) & ~mine["peer"].astype(str).isin(("", "None", service))]
        return len(set(calls["trace_id"])) / len(traces)

    def anomalies_evidence(self, rows: pd.DataFrame, limit: int = 3) -> list[Evidence]:
        """Evidence for the first ``limit`` anomaly rows of a frame (see :meth:`metric_evidence`)."""
        head = rows.iloc[:limit]
        columns = [str(c) for c in head.columns]
        # As to_dict("records"), at a third of its cost (this runs per candidate).
        records = [dict(zip(columns, v, strict=True)) for v in head.to_numpy(dtype=object)]
        return [self.metric_evidence(r) for r in records]

    def metric_evidence(self, row: Mapping[Any, Any], summary: str | None = None) -> Evidence:
        """Evidence for one anomaly row (any modality): the signal, when it moved, the query."""
        role = str(row["role"])
        svc = str(row["service"])
        peer = str(row.get("peer") or "")
        modality = str(row.get("modality") or "metrics")
        signal = str(row.get("signal") or "")
        if role.startswith("client_"):
            what = f"{role.removeprefix('client_')} of calls from {svc} to {peer}"
        elif role == GENERIC:
            what = f"series {signal} of {svc}"
        else:
            what = f"{role} of {svc}" + (f" called by {peer}" if peer else "")
        told = str(row.get("evidence") or "")
        text = summary or (
            f"{told} (score {float(row['score']):.1f})"
            if told
            else f"{what} went {row['direction']} at {format_time(float(row['onset']))}: "
            f"{_fmt(float(row['baseline']))} -> {_fmt(float(row['peak']))} "
            f"(score {float(row['score']):.1f})"
        )
        return Evidence(
            kind=_EVIDENCE_KIND.get(modality, modality),
            summary=text,
            service=svc,
            signal=signal if role == GENERIC and signal else role,
            onset=float(row["onset"]),
            query=self.query(_base_role(role)),
            url=self.link(_base_role(role)),
            data={
                "baseline": _num(row["baseline"]),
                "peak": _num(row["peak"]),
                "score": _num(row["score"]),
                "direction": str(row["direction"]),
                **({"peer": peer} if peer else {}),
            },
        )

    def log_evidence(self, service: str, limit: int = 3) -> list[Evidence]:
        """Sample warning/error log lines of a service in the window, earliest first."""
        sel = self.memo("_warning_lines", self._build_warning_lines).get(service)
        if sel is None:
            return []
        # Distinct messages first: three copies of one line tell less than three lines.
        sel = sel.drop_duplicates("body").head(limit)
        rows: list[Any] = list(sel.itertuples(index=False))
        return [
            Evidence(
                kind="log",
                summary=f"{format_time(float(r.ts))} {r.level or ''} {str(r.body)[:300]}".strip(),
                service=service,
                onset=float(r.ts),
                data={"trace_id": r.trace_id} if isinstance(r.trace_id, str) and r.trace_id else {},
            )
            for r in rows
        ]

    def trace_evidence(
        self, service: str, peer: str | None = None, limit: int = 3
    ) -> list[Evidence]:
        """Trace ids of failing (else slowest) spans of a service (to ``peer`` when given)."""
        sel = self._spans_of(service)
        if sel is None:
            return []
        if peer is not None:
            sel = sel[sel["peer"] == peer]
        if sel.empty:
            return []
        failing = sel[sel["status"] == 2]
        chosen = failing if not failing.empty else sel.sort_values("duration", ascending=False)
        chosen = chosen.drop_duplicates("trace_id").head(limit)
        out = []
        picked: list[Any] = list(chosen.itertuples(index=False))
        for r in picked:
            what = "failed" if r.status == 2 else f"took {float(r.duration):.3f}s"
            err = f": {r.error}" if isinstance(r.error, str) and r.error else ""
            target = f" -> {r.peer}" if isinstance(r.peer, str) and r.peer else ""
            out.append(
                Evidence(
                    kind="trace",
                    summary=f"trace {r.trace_id}: {r.service} {r.name}{target} {what}{err}",
                    service=service,
                    onset=float(r.start),
                    data={"trace_id": r.trace_id, "span_id": r.span_id},
                )
            )
        return out


#: The evidence kind of each detector modality.
_EVIDENCE_KIND = {"metrics": "metric", "spans": "trace", "logs": "log"}


def _base_role(role: str) -> str:
    return {
        "error_ratio": "error_rate",
        "edge_error_ratio": "edge_errors",
        "memory_ratio": "memory",
        "client_errors": "edge_errors",
        "client_error_ratio": "edge_errors",
        "client_latency": "edge_latency",
    }.get(role, role)


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return round(f, 6) if np.isfinite(f) else None


def _fmt(v: float) -> str:
    if not np.isfinite(v):
        return "n/a"
    a = abs(v)
    if a >= 1e9:
        return f"{v / 1e9:.2f}G"
    if a >= 1e6:
        return f"{v / 1e6:.1f}M"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.4f}"


@dataclass(frozen=True)
class PatternResult:
    """What one pattern evaluation came to."""

    outcome: Outcome
    findings: tuple[Finding, ...] = ()
    reason: str = ""


@runtime_checkable
class Pattern(Protocol):
    """The contract of a cause pattern (see the module docstring)."""

    name: ClassVar[str]
    cause: ClassVar[str]
    needs: ClassVar[tuple[str, ...]]
    config_class: ClassVar[type[Any]]

    def evaluate(self, ctx: PatternContext, config: Any) -> PatternResult:
        """Judge the context; return findings or why it could not."""
        ...


class BasePattern:
    """Convenience base: result constructors and a finding builder."""

    name: ClassVar[str] = ""
    cause: ClassVar[str] = ""
    needs: ClassVar[tuple[str, ...]] = ()
    config_class: ClassVar[type[Any]]
    description: ClassVar[str] = ""

    def not_evaluated(self, reason: str) -> PatternResult:
        """The pattern cannot judge (missing inputs); ``reason`` says which."""
        return PatternResult(Outcome.NOT_EVALUATED, (), reason)

    def no_match(self, reason: str) -> PatternResult:
        """The pattern looked and found nothing."""
        return PatternResult(Outcome.OK, (), reason)

    def found(self, findings: Sequence[Finding], reason: str = "") -> PatternResult:
        """Candidate findings (an empty list means "looked, nothing")."""
        return PatternResult(Outcome.OK, tuple(findings), reason)

    def finding(
        self,
        service: str,
        score: float,
        evidence: Sequence[Evidence],
        features: Mapping[str, float] | None = None,
        onset: float | None = None,
        zone: str | None = None,
        covers: Sequence[str] = (),
    ) -> Finding:
        """A candidate finding for this pattern's cause (confidence set by the ranker).

        ``covers``: other services the finding accounts for (see :class:`Finding`).
        """
        return Finding(
            service=service,
            cause=self.cause,
            confidence=0.0,
            evidence=tuple(evidence),
            pattern=self.name,
            score=float(max(0.0, min(1.0, score))),
            features=dict(features or {}),
            onset=onset,
            zone=zone,
            covers=tuple(c for c in covers if c != service),
        )


def config_for(pattern: type[Any] | Any, options: Mapping[str, Any] | None) -> Any:
    """The pattern's config: its ``config_class`` defaults overridden by ``options``.

    Unknown options and values of the wrong type raise :class:`ConfigError`
    naming the pattern, the option and the fix.
    """
    name = getattr(pattern, "name", type(pattern).__name__)
    cls = pattern.config_class
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, raw in (options or {}).items():
        if key not in fields:
            raise ConfigError(
                f"patterns.options.{name}.{key}: unknown option; "
                f"{name} knows {', '.join(sorted(fields)) or 'no options'}"
            )
        want = hints.get(key)
        values[key] = _coerce(name, key, raw, want)
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"patterns.options.{name}: {exc}; fix the option values") from exc


def _coerce(pattern: str, key: str, raw: Any, want: Any) -> Any:
    where = f"patterns.options.{pattern}.{key}"
    if want is bool:
        if isinstance(raw, bool):
            return raw
        raise ConfigError(f"{where}: {raw!r} is not true/false; write true or false")
    if want is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        raise ConfigError(f"{where}: {raw!r} is not a whole number; write e.g. {key}: 3")
    if want is float:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return float(raw)
        raise ConfigError(f"{where}: {raw!r} is not a number; write e.g. {key}: 0.5")
    if want is str:
        if isinstance(raw, str):
            return raw
        raise ConfigError(f"{where}: {raw!r} is not text")
    return raw


def load_patterns(enabled: Sequence[str] | None = None) -> dict[str, Any]:
    """Installed pattern classes by name (entry-point group ``correlator.patterns``).

    A plugin that fails to load raises :class:`CorrelatorError` naming it;
    an ``enabled`` name that is not installed raises :class:`ConfigError`.
    """
    from correlator.plugins import PATTERN_GROUP, load_group

    found = load_group(PATTERN_GROUP)
    for name, cls in found.items():
        for attr in ("cause", "needs", "config_class", "evaluate"):
            if not hasattr(cls, attr):
                raise CorrelatorError(
                    f"pattern plugin {name!r} ({cls!r}) lacks {attr!r}; "
                    "a pattern needs name, cause, needs, config_class and evaluate"
                )
    if enabled is None:
        return found
    unknown = [n for n in enabled if n not in found]
    if unknown:
        raise ConfigError(
            f"patterns.enabled: {', '.join(unknown)} not installed; "
            f"installed: {', '.join(sorted(found))}"
        )
    return {n: found[n] for n in enabled}

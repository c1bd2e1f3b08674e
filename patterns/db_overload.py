"""Database overload: connections near the limit, long transactions or locks, callers slow.

Signals: ``db_connections`` with ``db_max_connections``, ``db_tx_duration``,
``db_locks`` (postgres_exporter), edge latency into the database, and
database client spans (``db.system``) of its callers. A caller that ran a
locking statement (``LOCK TABLE``, ``ALTER``, ``TRUNCATE``, ``VACUUM``...) it
never ran in the baseline, shortly before the database's calls slowed, is
named as the one that took the lock (its span names the statement). Where no
database metric is scraped, the database's own log lines (or its callers' errors
about it) that say it is at its limits (PostgreSQL's ``too many clients``,
MySQL's ``Too many connections``, lock-wait and statement timeouts, a client
pool that ran dry) tell the same story from the logs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from correlator.model import Evidence, format_time
from correlator.pattern import (
    BasePattern,
    PatternContext,
    PatternResult,
    rows_by,
    said_strength,
)

__all__ = ["DbOverloadConfig", "DbOverloadPattern"]

_DB_ROLES = ("db_connections", "db_tx_duration", "db_locks")
#: A caller's view of its calls to a database, and the database's view of each caller.
_DB_CALLS = (
    "client_latency",
    "client_errors",
    "client_error_ratio",
    "edge_latency",
    "edge_errors",
    "edge_error_ratio",
)

#: First words of statements that lock tables others read or write (PostgreSQL, MySQL).
_LOCKING = frozenset(
    {"LOCK", "ALTER", "TRUNCATE", "VACUUM", "REINDEX", "CLUSTER", "DROP", "OPTIMIZE", "FLUSH"}
)
#: What databases (and their client pools) say when at their limits: PostgreSQL, MySQL,
#: HikariCP, SQLAlchemy, statement and lock timeouts.
_AT_LIMIT = re.compile(
    r"too many (?:clients|connections)|remaining connection slots|max_connections"
    r"|connection pool (?:exhausted|timed? ?out)|pool exhausted|queuepool limit"
    r"|connection is not available|lock wait timeout|deadlock|could not obtain lock"
    r"|canceling statement due to (?:statement|lock) timeout",
    re.IGNORECASE,
)
#: Log rows about a database: its own lines, and its callers' errors naming it.
_LOG_ROLES = ("log_template", "log_errors", "named_by_callers")
#: How long before the database's calls suffered a locking statement may have run.
_LOCK_LEAD = 600.0


@dataclass(frozen=True)
class DbOverloadConfig:
    """Thresholds of the database-overload pattern."""

    saturation: float = 0.8
    """Connections in use as a fraction of max_connections that counts as saturated."""
    min_caller_fraction: float = 0.3
    """Fraction of a database's callers that must be slow or failing for full weight."""


class DbOverloadPattern(BasePattern):
    """A database at its limits, dragging its callers down."""

    name = "db_overload"
    cause = "db_overload"
    needs = ("db_connections", "db_max_connections", "db_tx_duration", "db_locks")
    config_class = DbOverloadConfig
    description = "connections near max, transactions/locks up, db-calling services slow"

    def evaluate(self, ctx: PatternContext, config: DbOverloadConfig) -> PatternResult:
        """Score every database node by saturation and by how its callers suffer."""
        has_metrics = any(ctx.has(r) for r in _DB_ROLES)
        dbs = {n for n, k in ctx.graph.nodes(data="kind") if k == "database"}
        if has_metrics:
            s = ctx.signals
            dbs |= set(s.loc[s["role"].isin(_DB_ROLES), "service"].unique())
        if not dbs:
            return self.not_evaluated(
                "no database metrics (postgres_exporter pg_*) and no database in the topology"
            )
        findings = []
        for db in sorted(dbs):
            f = self._judge(ctx, config, db)
            if f is not None:
                findings.append(f)
            findings += self._one_caller(ctx, config, db)
            findings += self._lock_taker(ctx, db)
        return self.found(findings, "" if findings else "no database looks overloaded")

    def _lock_taker(self, ctx: PatternContext, db: str) -> list:  # type: ignore[type-arg]
        """A service that ran a statement which locks tables (``LOCK``, ``ALTER``,
        ``TRUNCATE``, ``VACUUM``...) on the database, one it never ran in the baseline,
        shortly before the database's callers' calls slowed or failed: its maintenance
        job or migration holds the lock the others wait on. The calls that suffer most
        are often other services' (they query the locked table more), so this names the
        service whose statement began it."""
        spans = ctx.telemetry.spans
        if spans is None or spans.empty:
            return []
        calls = _calls_of(ctx, db)
        if calls.empty:
            return []
        trouble = float(calls["onset"].min())
        client = _client_spans(ctx).get(db)
        if client is None:
            return []
        verb = client["name"].astype(str).str.strip().str.split().str[0].str.upper()
        locking = client[verb.isin(_LOCKING)]
        if locking.empty:
            return []
        start = locking["start"].astype(float)
        # Before the trouble (to a sampling step or two after it: metric onsets lag).
        near = locking[(start >= trouble - _LOCK_LEAD) & (start <= trouble + ctx.onset_slack)]
        out = []
        for svc, mine in near.groupby(near["service"].astype(str)):
            names = set(mine["name"].astype(str))
            before = locking[
                (locking["service"].astype(str) == svc)
                & locking["name"].astype(str).isin(names)
                & (locking["start"].astype(float) < trouble - _LOCK_LEAD)
            ]
            if len(before):
                continue  # a job it runs all the time: routine, not this incident's
            first = mine.sort_values("start").iloc[0]
            hurt = sorted(
                set(np.where(calls["service"].astype(str) == db, calls["peer"], calls["service"]))
                - {"", "None", db}
            )
            ev: list[Evidence] = [
                Evidence(
                    kind="trace",
                    summary=(
                        f"{svc} ran {str(first['name'])[:120]} on {db} at "
                        f"{format_time(float(first['start']))}, "
                        f"{max(0.0, trouble - float(first['start'])):.0f} s before calls to "
                        f"{db} slowed or failed; it never ran that in the baseline"
                    ),
                    service=str(svc),
                    onset=float(first["start"]),
                    data={
                        "database": db,
                        "statement": str(first["name"])[:120],
                        "trace_id": str(first["trace_id"]),
                    },
                )
            ]
            ev += ctx.anomalies_evidence(calls, 3)
            ev += ctx.log_evidence(str(svc))
            out.append(
                self.finding(
                    str(svc),
                    0.6 + 0.3 * min(1.0, len(hurt) / 2.0),
                    ev,
                    features={"db_signal": 0.0, "lock": 1.0, "hurt_callers": float(len(hurt))},
                    onset=float(first["start"]),
                )
            )
        return out

    def _one_caller(self, ctx: PatternContext, config: DbOverloadConfig, db: str) -> list:  # type: ignore[type-arg]
        """Services whose own calls to a shared database got slow or failed while most of
        its other callers' did not: its tables or queries (a lock, a missing index), not
        the database as a whole."""
        if db not in ctx.graph:
            return []
        callers = [c for c in ctx.graph.predecessors(db) if c != db]
        if len(callers) < 2:
            return []
        calls = _calls_of(ctx, db)
        calls = calls[
            ((calls["peer"].astype(str) == db) & calls["service"].isin(callers))
            | ((calls["service"].astype(str) == db) & calls["peer"].isin(callers))
        ]
        if calls.empty:
            return []
        who = np.where(calls["service"].astype(str) == db, calls["peer"], calls["service"])
        strength = calls.groupby(pd.Series(who, index=calls.index).astype(str))["score"].max()
        # Callers whose DB calls moved far less than the most troubled one's are wobbles
        # (a busy host), not the story.
        strength = strength[strength >= 0.75 * float(strength.max())]
        frac = len(strength) / len(callers)
        if frac > config.min_caller_fraction + 0.2:
            return []  # most callers: the database itself (judged above)
        out = []
        for svc, sc in strength.items():
            mine = calls[pd.Series(who, index=calls.index).astype(str) == svc]
            s = float(sc) / (float(sc) + 8.0)
            ev: list[Evidence] = ctx.anomalies_evidence(mine, 3)
            ev.append(
                Evidence(
                    kind="topology",
                    summary=(
                        f"only {len(strength)} of {len(callers)} services calling {db} saw "
                        f"their calls slow or failing: {', '.join(sorted(strength.index))}"
                    ),
                    service=str(svc),
                    data={"database": db, "callers": sorted(callers)},
                )
            )
            ev += ctx.trace_evidence(str(svc), peer=db, limit=2)
            out.append(
                self.finding(
                    str(svc),
                    (0.4 + 0.4 * s) * (1.0 - frac),
                    ev,
                    features={"db_signal": 0.0, "callers": frac, "own_calls": s},
                    onset=float(mine["onset"].min()),
                )
            )
        return out

    def _judge(self, ctx: PatternContext, config: DbOverloadConfig, db: str):  # type: ignore[no-untyped-def]
        ev: list[Evidence] = []
        inner = ctx.anomalies_of(db, _DB_ROLES)
        inner_strength = (
            float(inner["score"].max() / (inner["score"].max() + 8.0)) if len(inner) else 0.0
        )
        ev += ctx.anomalies_evidence(inner, 3)
        said = ctx.lines_saying(_AT_LIMIT, _LOG_ROLES, service=db)
        if len(said):
            # The database said so itself: as good as a saturated pool when clearly new.
            s_ = said_strength(float(said["score"].astype(float).max()))
            inner_strength = max(inner_strength, s_)
            ev += ctx.anomalies_evidence(said, 2)
        sat = _saturation(ctx, db)
        if sat is not None and sat[0] >= config.saturation:
            ev.insert(
                0,
                Evidence(
                    kind="metric",
                    summary=(
                        f"{db}: {sat[1]:.0f} of {sat[2]:.0f} connections in use "
                        f"({sat[0]:.0%}) at {format_time(sat[3])}"
                    ),
                    service=db,
                    signal="db_connections",
                    onset=sat[3],
                    query=ctx.query("db_connections"),
                    url=ctx.link("db_connections"),
                    data={"used": sat[1], "max": sat[2]},
                ),
            )
        sat_score = 0.0 if sat is None else max(0.0, min(1.0, (sat[0] - 0.5) / 0.4))
        callers = list(ctx.graph.predecessors(db)) if db in ctx.graph else []
        hurt = []
        # The database's rows about one caller (edges, by caller): that caller is hurt.
        about = set(ctx.anomalies_of(db)["peer"].tolist())
        for c in callers:
            if len(ctx.anomalies_of(c, ("latency", "error_ratio"))) or c in about:
                hurt.append(c)
        edge = ctx.anomalies_of(db, ("edge_latency", "edge_error_ratio", "edge_errors"))
        ev += ctx.anomalies_evidence(edge, 2)
        caller_frac = len(hurt) / len(callers) if callers else 0.0
        caller_score = min(1.0, caller_frac / max(config.min_caller_fraction, 1e-6))
        db_signal = max(inner_strength, sat_score)
        if db_signal < 0.3 and edge.empty:
            return None
        if db_signal < 0.3 and not (len(inner) or len(said)):
            # Only slow calls seen from outside: that is a failing dependency, not an overload.
            return None
        score = 0.55 * db_signal + 0.3 * caller_score + 0.15 * (1.0 if len(inner) >= 2 else 0.0)
        if _load_from_above(ctx, db, inner):
            # More demand arrived from upstream first: the database is a victim of traffic.
            score *= 0.5
        for c in hurt[:2]:
            ev += ctx.trace_evidence(c, peer=db, limit=2)
        if hurt:
            ev.append(
                Evidence(
                    kind="topology",
                    summary=f"{len(hurt)} of {len(callers)} callers of {db} slow or failing: "
                    + ", ".join(sorted(hurt)[:8]),
                    service=db,
                    data={"callers": sorted(hurt)},
                )
            )
        onset = (
            float(inner["onset"].min())
            if len(inner)
            else (float(edge["onset"].min()) if len(edge) else None)
        )
        return self.finding(
            db,
            score,
            ev,
            features={"db_signal": db_signal, "callers": caller_frac},
            onset=onset,
        )


def _calls_of(ctx: PatternContext, db: str) -> pd.DataFrame:
    """Rising rows of calls to or from ``db`` (its callers' client side, its edges), in
    the anomaly table's order."""

    def build() -> tuple[pd.DataFrame, dict[Any, Any], dict[Any, Any]]:
        a = ctx.anomalies
        rows = a[a["role"].isin(_DB_CALLS) & (a["direction"] == "up")]
        to = rows.groupby(rows["peer"].astype(str), sort=False).indices
        of = rows.groupby(rows["service"].astype(str), sort=False).indices
        return rows, to, of

    rows, to, of = ctx.memo("db_overload_calls", build)
    return rows.iloc[np.union1d(to.get(db, _NONE), of.get(db, _NONE))]


_NONE = np.zeros(0, dtype=np.int64)


def _client_spans(ctx: PatternContext) -> dict[str, pd.DataFrame]:
    """Client spans by the service they call."""

    def build() -> dict[str, pd.DataFrame]:
        spans = ctx.telemetry.spans
        client = spans[spans["kind"] == 3]
        return rows_by(client, client["peer"].astype(str))

    found: dict[str, pd.DataFrame] = ctx.memo("db_overload_client_spans", build)
    return found


def _load_from_above(ctx: PatternContext, db: str, inner: pd.DataFrame) -> bool:
    """Whether request rates of services upstream of ``db`` rose no later than it did."""
    if db not in ctx.graph or inner.empty:
        return False
    import networkx as nx

    a = ctx.anomalies
    up = a[(a["role"] == "request_rate") & (a["direction"] == "up")]
    if up.empty:
        return False
    ups = nx.ancestors(ctx.graph, db)
    first = float(inner["onset"].min())
    hit = up[up["service"].isin(list(ups)) & (up["onset"] <= first + 60.0)]
    return bool(len(hit))


def _saturation(ctx: PatternContext, db: str) -> tuple[float, float, float, float] | None:
    """(peak used/max, used, max, when) over the window, or None without both series."""
    used = ctx.series("db_connections", db)
    mx = ctx.series("db_max_connections", db)
    if used.empty or mx.empty:
        return None
    used = used[(used.index >= ctx.window.start - 600) & (used.index <= ctx.window.end)]
    if used.empty:
        return None
    limit = float(pd.Series(mx).max())
    if limit <= 0:
        return None
    # The index is timestamps (float seconds); the position of the peak, skipping NaN as
    # idxmax does, names the time without leaving float.
    when = float(used.index.to_numpy(dtype=float)[np.nanargmax(used.to_numpy(dtype=float))])
    peak = float(used.max())
    return peak / limit, peak, limit, when

"""The span detector: per operation and per call edge, what changed after the baseline.

:class:`SpanDetector` (entry point ``spans``) compares the spans after
``DetectInput.baseline_end`` with those before it, per service and operation
(server, internal and consumer spans) and per call edge (client and producer
spans, keyed by the callee: the child span's service, else ``peer``):

* ``span_errors`` / ``client_errors``: the share of spans with status ERROR;
  an operation too new to have a baseline of its own is held against its
  service's;
* ``span_latency`` / ``client_latency``: how many spans are slower than the
  baseline's own p95 (and p50), for the span's duration and, for operations,
  its *exclusive* duration (minus its children: the time spent in the service
  itself, which separates a slow service from a slow dependency);
* ``span_rate``: the operation's share of all spans (a share, so that trace
  sampling, which thins both periods alike, cancels); operations that appear
  or vanish are the extreme case.

Every test is a count against the baseline's rate (:mod:`._stats`), so the
scores share one scale with each other (and with the log detector's), 4 being
clearly anomalous as for a metric's z; a count test grows with how many spans
there are rather than with the size of the change, which the engine allows for
when it weighs them against metrics (``correlator.topology.COUNT_TEST_WEIGHT``).
Nothing is measured in absolute units: a rank against the baseline's own quantile is
the same test at 2 ms as at 2 s. Sampled traces are fine as long as each
period is sampled without regard to the outcome (or both alike).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd

from correlator.detector import DetectInput, DetectOutput, anomaly_frame
from correlator.model import ANOMALY_COLUMNS, Gap, empty_frame, format_time

from ._stats import (
    EARLIER_SPLITS,
    LOG_SPLITS,
    MIN_EVENTS,
    best_of_splits,
    bucket_matrix,
    bucket_width,
    count_score,
    cusum_onset,
    first_event,
    format_share,
    rank_score,
)

__all__ = ["SpanConfig", "SpanDetector"]

_T = TypeVar("_T")

#: What makes two rows the same anomaly, whatever split found it.
_KEYS = ("service", "role", "signal", "peer", "direction")

_CLIENT_KINDS = (3, 4)
_ERROR = 2


@dataclass(frozen=True)
class SpanConfig:
    """Settings of the span detector."""

    min_score: float = 2.0
    """Rows weaker than this are left out (the engine applies its own threshold)."""
    min_events: int = MIN_EVENTS
    """Fewest events of interest (errors, slow spans, spans) a row may rest on."""
    quantile: float = 0.95
    """The latency quantile reported (and the upper of the two exceedance tests)."""
    short_baseline: float = 300.0
    """A baseline of spans covering less than this many seconds is reported as a gap."""
    split_baseline: float = 60.0
    """The least baseline (seconds) an earlier split must leave before it when the
    baseline ends at the alert (the data began only minutes before the window)."""


class SpanDetector:
    """Anomalies of operations and call edges from spans (see the module docstring)."""

    name = "spans"
    modality = "spans"

    def __init__(self, config: SpanConfig | None = None) -> None:
        self.config = config or SpanConfig()

    def detect(self, data: DetectInput) -> DetectOutput:
        """Rows of the anomaly table for the spans in ``data.telemetry.spans``."""
        spans = _prepare(data.telemetry.spans, data.window.baseline_start, data.window.end)
        if spans.empty:
            return DetectOutput(empty_frame(ANOMALY_COLUMNS))
        split = float(data.baseline_end)
        gaps = _baseline_gaps(spans, split, self.config.short_baseline)
        if not (spans["t"].to_numpy() >= split).any():
            return DetectOutput(empty_frame(ANOMALY_COLUMNS), gaps)
        spans["key"], spans["parent_key"] = _span_keys(spans)
        spans["exclusive"] = _exclusive(spans)
        spans["callee"] = _callee(spans)
        spans["transit"], spans["callee_pod"] = _transit_columns(spans)
        first = float(spans["t"].min())
        # Data that began only minutes before the window puts the baseline's end at the
        # alert: a fault that began a minute or two before it is on the "before" side, so
        # splits a minute or two back are tried too, on whatever baseline precedes them.
        # So do traces that began only minutes before the split (sampled traces kept for a
        # shorter time than the metrics): a five-minute-back split leaves them no baseline.
        at_alert = split > float(data.window.start) or (
            split - first < min(EARLIER_SPLITS, default=0.0) + self.config.short_baseline
        )
        backs, least = (
            (LOG_SPLITS, self.config.split_baseline)
            if at_alert
            else (EARLIER_SPLITS, self.config.short_baseline)
        )
        splits = [split] + [split - back for back in backs if split - back - first >= least]
        # Operations and call edges are grouped once; each split only re-marks "after".
        groups = _Context(spans, split, float(data.window.end), float(data.step), self.config)
        parts = {key: _groups(groups, edges) for key, edges in (("ops", False), ("edges", True))}
        parts["transit"] = _transit_groups(groups, ("callee", "callee_pod"))
        parts["transit_callers"] = _transit_groups(groups, ("callee", "service"))
        parts["transit_all"] = _transit_groups(groups, ("callee",))
        shared: dict[tuple[str, str], Any] = {}
        found = [self._at(spans, parts, at, data, shared) for at in splits]
        out = best_of_splits(found, self.config.min_score, _KEYS)
        if out.empty:
            return DetectOutput(empty_frame(ANOMALY_COLUMNS), gaps)
        out["modality"] = self.modality
        return DetectOutput(anomaly_frame(out), gaps)

    def _at(
        self,
        spans: pd.DataFrame,
        parts: dict[str, tuple[pd.DataFrame, list[str]]],
        split: float,
        data: DetectInput,
        shared: dict[tuple[str, str], Any],
    ) -> pd.DataFrame:
        """Every row with the baseline ending at ``split`` (``parts``: :func:`_groups`)."""
        spans = spans.assign(after=spans["t"].to_numpy() >= split)
        marked = {
            key: (part.assign(after=part["t"].to_numpy() >= split), keys)
            for key, (part, keys) in parts.items()
        }
        ctx = _Context(
            spans, split, float(data.window.end), float(data.step), self.config, marked, shared
        )
        rows = [
            *_errors(ctx, edges=False),
            *_errors(ctx, edges=True),
            *_latency(ctx, edges=False),
            *_latency(ctx, edges=True),
            *_rates(ctx),
            *_transit(ctx),
        ]
        rows = [r for r in rows if not r.empty]
        return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


# --------------------------------------------------------------------------- preparation


def _prepare(raw: pd.DataFrame, start: float, end: float) -> pd.DataFrame:
    """The columns the tests need, typed; rows without a time or service dropped."""
    if raw is None or raw.empty or not {"service", "start", "duration"} <= set(raw.columns):
        return pd.DataFrame()

    def col(name: str, default: Any = None) -> pd.Series:
        return raw[name] if name in raw.columns else pd.Series(default, index=raw.index)

    frame = pd.DataFrame(
        {
            "trace_id": col("trace_id").astype(object),
            "span_id": col("span_id").astype(object),
            "parent": col("parent_span_id").astype(object),
            "service": col("service").astype(object),
            "name": col("name", "").astype(object).fillna("").astype(str),
            "kind": pd.to_numeric(col("kind", 0), errors="coerce").fillna(0).astype(np.int64),
            "t": pd.to_numeric(col("start"), errors="coerce"),
            "duration": pd.to_numeric(col("duration"), errors="coerce"),
            "failed": pd.to_numeric(col("status", 0), errors="coerce").fillna(0).eq(_ERROR),
            "peer": col("peer").astype(object),
            "error": col("error").astype(object),
            "pod": col("pod").astype(object),
        }
    )
    keep = frame["t"].notna() & frame["duration"].notna() & frame["service"].notna()
    # Slack of a second at the end: span starts are rounded differently by each backend.
    keep &= (frame["t"] >= start) & (frame["t"] <= end + 1.0)
    frame = frame[keep]
    # A span delivered twice (two sources, two searches) counts once.
    if frame["span_id"].notna().any():
        dup = frame.duplicated(["trace_id", "span_id"]) & frame["span_id"].notna()
        frame = frame[~dup]
    return frame.reset_index(drop=True)


def _baseline_gaps(spans: pd.DataFrame, split: float, short: float) -> list[Gap]:
    before = spans.loc[spans["t"] < split, "t"]
    if before.empty:
        return [
            Gap(
                "spans",
                f"no spans before {format_time(split)}: span timings and error shares "
                "had no baseline to be judged against",
            )
        ]
    covered = split - float(before.min())
    if covered < short:
        return [
            Gap(
                "spans",
                f"short baseline of spans: {covered / 60:.1f} min ({len(before)} spans) "
                f"before {format_time(split)}; span anomalies rest on it",
            )
        ]
    return []


def _span_keys(spans: pd.DataFrame) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Integer keys of each span and of its parent (``-1``: none), unique within the frame.

    Span ids are unique only within a trace, so a key is the (trace, span id) pair.
    """
    trace, _ = pd.factorize(spans["trace_id"])
    ids, _ = pd.factorize(pd.concat([spans["span_id"], spans["parent"]], ignore_index=True))
    n = len(spans)
    width = int(ids.max()) + 2 if len(ids) else 1
    own = np.where(ids[:n] >= 0, trace.astype(np.int64) * width + ids[:n], -1)
    parent = np.where(ids[n:] >= 0, trace.astype(np.int64) * width + ids[n:], -1)
    return own.astype(np.int64), parent.astype(np.int64)


def _exclusive(spans: pd.DataFrame) -> npt.NDArray[np.float64]:
    """Each span's duration minus its children's (at least 0: children may overlap)."""
    dur = spans["duration"].to_numpy(dtype=np.float64)
    own, parent = spans["key"].to_numpy(), spans["parent_key"].to_numpy()
    has_parent = parent >= 0
    if not has_parent.any():
        return dur
    children = pd.Series(dur[has_parent]).groupby(parent[has_parent]).sum()
    found = children.reindex(own).to_numpy(dtype=np.float64)
    return np.asarray(np.maximum(dur - np.nan_to_num(found), 0.0), dtype=np.float64)


def _callee(spans: pd.DataFrame) -> pd.Series:
    """For client/producer spans: the service of the child span, else ``peer``; else None."""
    client = spans["kind"].isin(_CLIENT_KINDS).to_numpy()
    out = pd.Series(None, index=spans.index, dtype=object)
    if not client.any():
        return out
    parent = spans["parent_key"].to_numpy()
    kids = parent >= 0
    child_service = pd.Series(spans["service"].to_numpy()[kids], index=parent[kids])
    child_service = child_service[~child_service.index.duplicated()]
    found = child_service.reindex(spans["key"].to_numpy()[client]).to_numpy(dtype=object)
    own = spans["service"].to_numpy(dtype=object)[client]
    peer = spans["peer"].to_numpy(dtype=object)[client]
    usable = pd.notna(found) & (found != own)
    callee = np.where(usable, found, peer)
    keep = np.asarray(pd.notna(callee) & (callee != own), dtype=bool)
    out[client] = np.where(keep, callee, np.full(len(callee), None, dtype=object))
    return out


def _transit_columns(spans: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """For client spans answered by a server span we hold: the time the call spent
    outside the server (client duration minus the server span's: network, proxies,
    queues, never the server's own work), and the answering instance (its pod)."""
    transit = pd.Series(np.nan, index=spans.index, dtype=np.float64)
    pod = pd.Series(None, index=spans.index, dtype=object)
    client = spans["kind"].isin(_CLIENT_KINDS).to_numpy()
    server = spans["kind"].isin((2, 5)).to_numpy() & (spans["parent_key"].to_numpy() >= 0)
    if not (client.any() and server.any()):
        return transit, pod
    kids = pd.DataFrame(
        {
            "duration": spans["duration"].to_numpy(dtype=np.float64)[server],
            "pod": spans["pod"].to_numpy(dtype=object)[server],
        },
        index=spans["parent_key"].to_numpy()[server],
    )
    kids = kids[~kids.index.duplicated()]
    found = kids.reindex(spans["key"].to_numpy()[client])
    gap = spans["duration"].to_numpy(dtype=np.float64)[client] - found["duration"].to_numpy()
    transit[client] = np.maximum(gap, 0.0)
    pod[client] = found["pod"].to_numpy(dtype=object)
    return transit, pod


# --------------------------------------------------------------------------- tests


@dataclass(frozen=True)
class _Context:
    spans: pd.DataFrame
    split: float
    end: float
    step: float
    config: SpanConfig
    parts: dict[str, tuple[pd.DataFrame, list[str]]] = field(default_factory=dict)
    """Spans of operations and of edges with their group codes, made once."""
    shared: dict[tuple[str, str], Any] = field(default_factory=dict)
    """What does not depend on the split (each group's keys), kept across splits."""

    @property
    def span(self) -> float:
        return max(self.end - self.split, 1.0)

    @property
    def base_span(self) -> float:
        before = self.spans.loc[~self.spans["after"], "t"]
        return max(self.split - float(before.min()), 1.0) if len(before) else 1.0


def _groups(ctx: _Context, edges: bool) -> tuple[pd.DataFrame, list[str]]:
    """The spans of operations (``edges=False``) or of calls to a callee, with a group code."""
    key = "edges" if edges else "ops"
    cached = ctx.parts.get(key)
    if cached is not None:
        return cached
    s = ctx.spans
    if edges:
        part = s[s["kind"].isin(_CLIENT_KINDS) & s["callee"].notna()]
        keys = ["service", "callee"]
    else:
        part = s[~s["kind"].isin(_CLIENT_KINDS)]
        keys = ["service", "name"]
    part = part.copy()
    part["code"] = part.groupby(keys, sort=False).ngroup().to_numpy(dtype=np.int64)
    ctx.parts[key] = (part, keys)
    return part, keys


def _once(ctx: _Context, key: tuple[str, str], build: Callable[[], _T]) -> _T:
    """``build()`` once for all the splits (what does not depend on where they fall)."""
    if key not in ctx.shared:
        ctx.shared[key] = build()
    value: _T = ctx.shared[key]
    return value


def _group_keys(ctx: _Context, name: str) -> pd.DataFrame:
    """Each group's keys (indexed by code, sorted) of part ``name``."""
    part, keys = ctx.parts[name]
    return _once(ctx, ("keys", name), lambda: part.groupby("code", sort=True)[keys].first())


def _dense_codes(ctx: _Context, name: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.intp]]:
    """Part ``name``'s group codes, sorted, and each span's position among them."""
    part, _keys = ctx.parts[name]
    codes = part["code"].to_numpy(dtype=np.int64)
    return _once(ctx, ("codes", name), lambda: np.unique(codes, return_inverse=True))


def _onsets(
    ctx: _Context,
    part: pd.DataFrame,
    chosen: npt.NDArray[np.int64],
    bad: pd.Series,
    p0: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Onset and end (seconds) of groups ``chosen`` (codes), from their events after the split."""
    after = part[part["after"]]
    width = bucket_width(len(after), ctx.span, floor=1.0)
    n_buckets = int(np.ceil(ctx.span / width)) + 1
    pos = np.full(int(part["code"].max()) + 1, -1, dtype=np.int64)
    pos[chosen] = np.arange(len(chosen))
    codes = pos[after["code"].to_numpy(dtype=np.int64)]
    bucket = ((after["t"].to_numpy() - ctx.split) // width).astype(np.int64)
    shape = (len(chosen), n_buckets)
    n = bucket_matrix(codes, bucket, np.ones(len(after)), shape)
    k = bucket_matrix(codes, bucket, bad[after.index].to_numpy(dtype=np.float64), shape)
    first, last = cusum_onset(k, n, p0)
    onset = np.asarray(ctx.split + first * width, dtype=np.float64)
    hit = bad[after.index].to_numpy(dtype=np.float64) > 0
    onset = first_event(onset, codes, after["t"].to_numpy(dtype=np.float64), hit)
    end = np.asarray(np.minimum(ctx.split + (last + 1) * width, ctx.end), dtype=np.float64)
    return onset, end


def _top_error(part: pd.DataFrame, mask: pd.Series) -> pd.Series:
    """The most frequent error text of each group's failed spans after the split."""
    failed = part[mask & part["error"].notna()]
    if failed.empty:
        return pd.Series(dtype=object)
    counts = failed.groupby(["code", "error"], sort=False).size().reset_index(name="n")
    counts = counts.sort_values(["code", "n"], ascending=[True, False], kind="stable")
    top = counts.drop_duplicates("code").set_index("code")["error"].astype(str)
    return top.str.split("\n", n=1).str[0]  # evidence is one line


def _errors(ctx: _Context, edges: bool) -> list[pd.DataFrame]:
    part, _keys = _groups(ctx, edges)
    if part.empty:
        return []
    after = part["after"]
    name = "edges" if edges else "ops"
    uniq, dense = _dense_codes(ctx, name)
    is_after = after.to_numpy(dtype=bool)
    failed = part["failed"].to_numpy(dtype=bool)

    def count(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
        return np.bincount(dense[mask], minlength=len(uniq)).astype(np.float64)

    per = pd.DataFrame(
        {
            "n": count(is_after),
            "k": count(failed & is_after),
            "n0": count(~is_after),
            "k0": count(failed & ~is_after),
        },
        index=pd.Index(uniq, name="code"),
    )
    per = per.join(_group_keys(ctx, name))
    # Too new for a baseline of its own: held against its service's (a new failing operation).
    svc = per.groupby("service")[["k0", "n0"]].transform("sum")
    own = per["n0"] >= ctx.config.min_events
    per["ref_k0"] = np.where(own, per["k0"], svc["k0"])
    per["ref_n0"] = np.where(own, per["n0"], svc["n0"])
    per["score"] = count_score(per["k"], per["n"], per["ref_k0"], per["ref_n0"])
    per = per[(per["score"] >= ctx.config.min_score) & (per["k"] >= ctx.config.min_events)]
    if per.empty:
        return []
    p0 = ((per["ref_k0"] + 0.5) / (per["ref_n0"] + 1.0)).to_numpy()
    codes = per.index.to_numpy(dtype=np.int64)
    onset, end = _onsets(ctx, part, codes, part["failed"], p0)
    err = _top_error(part, part["failed"] & after).reindex(per.index)
    share0 = per["ref_k0"] / per["ref_n0"].where(per["ref_n0"] > 0)
    share = per["k"] / per["n"]
    texts = []
    for row, e, own_base in zip(
        per.itertuples(), err.tolist(), own.reindex(per.index).tolist(), strict=True
    ):
        what = (
            f"{row.service} calls to {row.callee}"
            if edges
            else f"{row.name} spans of {row.service}"
        )
        before = (
            f"{format_share(row.k0, row.n0)} before"
            if own_base
            else f"a new operation; {format_share(row.ref_k0, row.ref_n0)} of the service's before"
        )
        why = f": {str(e)[:160]}" if isinstance(e, str) and e else ""
        texts.append(f"{format_share(row.k, row.n)} {what} failed ({before}){why}")
    return [
        pd.DataFrame(
            {
                "service": per["service"].to_numpy(),
                "role": "client_errors" if edges else "span_errors",
                "onset": onset,
                "end": end,
                "score": per["score"].to_numpy(),
                "direction": "up",
                "baseline": (
                    (per["ref_k0"] / ctx.base_span).to_numpy() if edges else share0.to_numpy()
                ),
                "peak": (per["k"] / ctx.span).to_numpy() if edges else share.to_numpy(),
                "peer": per["callee"].to_numpy() if edges else "",
                "signal": (
                    ("calls to " + per["callee"].astype(str)).to_numpy()
                    if edges
                    else per["name"].to_numpy()
                ),
                "evidence": texts,
            }
        )
    ]


def _latency(ctx: _Context, edges: bool) -> list[pd.DataFrame]:
    part, _keys = _groups(ctx, edges)
    if part.empty:
        return []
    q = ctx.config.quantile
    measures = ["duration"] if edges else ["duration", "exclusive"]
    best: pd.DataFrame | None = None
    own_work = pd.Series(np.nan, index=np.sort(part["code"].unique()))
    for measure in measures:
        scored = _exceedance(ctx, "edges" if edges else "ops", measure, q)
        if measure == "exclusive":
            own_work = scored["score"]
        if best is None:
            best = scored
        else:
            better = (scored["score"] > best["score"]).to_numpy()
            best = pd.DataFrame(
                {c: np.where(better, scored[c], best[c]) for c in best.columns}, index=best.index
            )
    assert best is not None
    per = best.join(_group_keys(ctx, "edges" if edges else "ops"))
    per = per[(per["score"] >= ctx.config.min_score) & (per["k"] >= ctx.config.min_events)]
    if per.empty:
        return []
    codes = per.index.to_numpy(dtype=np.int64)
    # The onset of a slowdown: spans above the baseline's threshold, group by group.
    threshold = pd.Series(per["threshold"].to_numpy(), index=codes)
    values = np.where(
        part["code"].map(per["measure"]).eq("exclusive"), part["exclusive"], part["duration"]
    )
    bad = pd.Series(
        values > part["code"].map(threshold).to_numpy(dtype=np.float64), index=part.index
    )
    p0 = ((per["k0"] + 0.5) / (per["n0"] + 1.0)).to_numpy()
    onset, end = _onsets(ctx, part, codes, bad, p0)
    texts = []
    for row in per.itertuples():
        what = f"{row.service} calls to {row.callee}" if edges else f"{row.name} on {row.service}"
        if row.measure == "exclusive":
            measure = f"p{round(q * 100)} exclusive time (own work, children excluded)"
        else:
            measure = f"p{round(q * 100)}"
        texts.append(
            f"{measure} of {what} rose {row.base_q:.3g} s -> {row.win_q:.3g} s "
            f"({format_share(row.k, row.n)} spans slower than the baseline's "
            f"{row.label}, {format_share(row.k0, row.n0)} before)"
            + (
                "; its exclusive time did not move: the time is spent in what it calls"
                if own_work.get(row.Index, np.nan) < ctx.config.min_score
                else ""
            )
        )
    return [
        pd.DataFrame(
            {
                "service": per["service"].to_numpy(),
                "role": "client_latency" if edges else "span_latency",
                "onset": onset,
                "end": end,
                "score": per["score"].to_numpy(),
                "direction": "up",
                "baseline": per["base_q"].to_numpy(),
                "peak": per["win_q"].to_numpy(),
                "peer": per["callee"].to_numpy() if edges else "",
                "signal": (
                    ("calls to " + per["callee"].astype(str)).to_numpy()
                    if edges
                    else per["name"].to_numpy()
                ),
                "evidence": texts,
            }
        )
    ]


def _exceedance(
    ctx: _Context,
    name: str,
    measure: str,
    q: float,
    exact: bool = False,
    pools: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], int] | None = None,
) -> pd.DataFrame:
    """Per group of part ``name``: spans after the split above the baseline's p50 and
    p``q``, scored.

    A rank test against the baseline's own quantiles: scale-free, and robust
    to the long tails durations have. The stronger of the two tests is kept.
    ``pools``: judge each group against a pooled baseline instead of its own, as
    ``(pool of each group, pool of each span, number of pools)``.
    """
    part, _keys = ctx.parts[name]
    values = part[measure].to_numpy(dtype=np.float64)
    after = part["after"].to_numpy(dtype=bool)
    codes, dense = _dense_codes(ctx, name)
    g = len(codes)
    of_group, of_span, n_pools = pools if pools is not None else (np.arange(g), dense, g)
    known = ~np.isnan(values)
    base_mask, win_mask = known & ~after, known & after
    out = pd.DataFrame(index=pd.Index(codes, name="code"))
    pool_q = _group_quantile(of_span[base_mask], values[base_mask], n_pools, q)
    out["base_q"] = pool_q[of_group]
    out["win_q"] = _group_quantile(dense[win_mask], values[win_mask], g, q)
    nf = np.bincount(dense[after], minlength=g).astype(np.float64)
    n0f = np.bincount(of_span[~after], minlength=n_pools).astype(np.float64)[of_group]
    enough = n0f >= ctx.config.min_events
    best = np.zeros(g)
    cols: dict[str, Any] = {}
    for label, level in (("p50", 0.5), (f"p{round(q * 100)}", q)):
        pool_thr = (
            pool_q
            if level == q
            else _group_quantile(of_span[base_mask], values[base_mask], n_pools, level)
        )
        thr = pool_thr[of_group]
        with np.errstate(invalid="ignore"):
            above_win = values > thr[dense]
            above_base = values > pool_thr[of_span]
        kf = np.bincount(dense[above_win & after], minlength=g).astype(np.float64)
        k0f = np.bincount(of_span[above_base & ~after], minlength=n_pools).astype(np.float64)
        k0f = k0f[of_group]
        score = np.where(enough, count_score(kf, nf, k0f, n0f), 0.0)
        if exact:
            score = np.where(enough, np.maximum(score, rank_score(kf, nf, k0f, n0f)), 0.0)
        better = score > best
        for name, value in (("k", kf), ("n", nf), ("k0", k0f), ("n0", n0f), ("threshold", thr)):
            cols[name] = np.where(better, value, cols[name]) if name in cols else value
        cols["label"] = (
            np.where(better, label, cols["label"]) if "label" in cols else np.full(g, label)
        )
        best = np.maximum(score, best)
    out["score"] = best
    for name in ("k", "n", "k0", "n0", "threshold", "label"):
        out[name] = cols[name]
    out["measure"] = measure
    return out


def _group_quantile(
    codes: npt.NDArray[np.int64], values: npt.NDArray[np.float64], groups: int, q: float
) -> npt.NDArray[np.float64]:
    """The ``q`` quantile of ``values`` per group code in ``range(groups)`` (linear
    interpolation, as ``numpy.quantile``); NaN for a group with no values."""
    out = np.full(groups, np.nan)
    if len(values) == 0:
        return out
    order = np.lexsort((values, codes))
    ordered = values[order]
    counts = np.bincount(codes, minlength=groups)
    starts = np.cumsum(counts) - counts
    has = counts > 0
    pos = (counts[has] - 1) * q
    lo = np.floor(pos).astype(np.int64)
    hi = np.ceil(pos).astype(np.int64)
    frac = pos - lo
    first = starts[has]
    low, high = ordered[first + lo], ordered[first + hi]
    out[has] = low + (high - low) * frac
    return out


def _transit_groups(ctx: _Context, keys: tuple[str, ...]) -> tuple[pd.DataFrame, list[str]]:
    """Answered calls (see :func:`_transit_columns`) grouped by ``keys``, with a code."""
    s = ctx.spans
    part = s[s["transit"].notna() & s["callee"].notna() & s["callee_pod"].notna()].copy()
    part["code"] = part.groupby(list(keys), sort=False).ngroup().to_numpy(dtype=np.int64)
    return part, list(keys)


def _transit(ctx: _Context) -> list[pd.DataFrame]:
    """Calls that spend longer between caller and server, laid at the server's door.

    The time a call spends outside its server (see :func:`_transit_columns`) is the
    network's, a proxy's or a queue's. It is the answering service's own when it grew
    on calls to some of its instances and not the others (a delay on one pod's
    network), or on the calls of two or more of its callers alike (every way into it).
    A caller whose own network is slow slows its calls to every instance of everything
    it calls: those stay the caller's (``client_latency``). Where too few calls reach
    each instance or come from each caller to judge them one by one, the callee's calls
    are judged together, and laid at its door when the late ones came from two or more
    of its callers, most of those that called it.
    """
    cfg = ctx.config
    pods_part, _keys = ctx.parts.get("transit", (pd.DataFrame(), []))
    if pods_part.empty:
        return []
    q = cfg.quantile

    def scored(name: str) -> pd.DataFrame:
        per = _exceedance(ctx, name, "transit", q, exact=True).join(_group_keys(ctx, name))
        per["passed"] = (per["score"] >= cfg.min_score) & (per["k"] >= cfg.min_events)
        # Judged: enough calls on both sides of the split to say whether it grew.
        per["seen"] = (per["n"] >= cfg.min_events) & (per["n0"] >= cfg.min_events)
        return per

    pods = _pooled_baseline(ctx, scored("transit"), pods_part)
    callers = scored("transit_callers")
    by_pod = pods.groupby("callee").agg(passed=("passed", "sum"), seen=("seen", "sum"))
    by_caller = callers.groupby("callee").agg(passed=("passed", "sum"), seen=("seen", "sum"))
    # Some instances and not the others; or two callers or more, most of those we see.
    partial = set(by_pod.index[(by_pod["passed"] > 0) & (by_pod["passed"] < by_pod["seen"])])
    shared = set(
        by_caller.index[(by_caller["passed"] >= 2) & (2 * by_caller["passed"] >= by_caller["seen"])]
    )
    per = pods[pods["passed"] & pods["callee"].isin(partial | shared)]
    out = []
    if not per.empty:
        texts = [
            f"calls to {row.callee} answered by {row.callee_pod} spent longer outside the "
            f"server (client span minus the server's): p{round(q * 100)} {row.base_q:.3g} s "
            f"-> {row.win_q:.3g} s ({format_share(row.k, row.n)} above the baseline's "
            f"{row.label}, {format_share(row.k0, row.n0)} before)"
            + ("; its other instances' calls did not" if row.callee in partial else "")
            for row in per.itertuples()
        ]
        signal = "calls answered by " + per["callee_pod"].astype(str)
        out.append(_transit_rows(ctx, pods_part, per, signal, texts))
    all_part, _keys = ctx.parts.get("transit_all", (pd.DataFrame(), []))
    if all_part.empty:
        return out
    whole = scored("transit_all")
    whole = whole[whole["passed"] & ~whole["callee"].isin(partial | shared)]
    if whole.empty:
        return out
    # Judged together: the late calls must come from two or more callers, most of those
    # that called it (one caller's slow network stays its own).
    late = all_part["after"] & (
        all_part["transit"].to_numpy()
        > all_part["code"].map(whole["threshold"]).to_numpy(dtype=np.float64)
    )
    late_from = all_part[late].groupby("callee")["service"].nunique()
    calling = all_part[all_part["after"]].groupby("callee")["service"].nunique()
    ways = whole["callee"].map(late_from).fillna(0)
    whole = whole[(ways >= 2) & (2 * ways >= whole["callee"].map(calling).fillna(0))]
    if whole.empty:
        return out
    texts = [
        f"calls to {row.callee} from {int(ways[i])} callers spent longer outside its server "
        f"(client span minus the server's): p{round(q * 100)} {row.base_q:.3g} s -> "
        f"{row.win_q:.3g} s ({format_share(row.k, row.n)} above the baseline's {row.label}, "
        f"{format_share(row.k0, row.n0)} before; too few calls to judge each instance or "
        f"caller alone)"
        for i, row in zip(whole.index, whole.itertuples(), strict=True)
    ]
    signal = "calls answered by " + whole["callee"].astype(str)
    out.append(_transit_rows(ctx, all_part, whole, signal, texts))
    return out


def _pooled_baseline(ctx: _Context, pods: pd.DataFrame, part: pd.DataFrame) -> pd.DataFrame:
    """Instances with too few calls of their own before the split (a new pod, or one the
    trace sample rarely reached) judged against the calls to all instances of the same
    service before it: the time outside the server is the network's, alike for sibling
    instances until one's changes. Each such instance is then judged as the others are."""
    cfg = ctx.config
    thin = pods.index[(pods["n0"] < cfg.min_events) & (pods["n"] >= cfg.min_events)]
    if thin.empty:
        return pods
    callee, names = pd.factorize(part["callee"].astype(str))
    codes, dense = _dense_codes(ctx, "transit")
    of_group = np.zeros(len(codes), dtype=np.int64)
    of_group[dense] = callee  # an instance's calls all go to one service
    pooled = _exceedance(
        ctx, "transit", "transit", cfg.quantile, exact=True, pools=(of_group, callee, len(names))
    )
    best = pooled.loc[thin]
    best = best[best["n0"] >= cfg.min_events]
    pods = pods.copy()
    hit = best[best["score"] > 0.0]
    for col in ("k", "n", "k0", "n0", "threshold", "base_q"):
        pods.loc[hit.index, col] = hit[col].to_numpy()
    pods.loc[hit.index, "label"] = (hit["label"] + " of its sibling instances").to_numpy()
    pods.loc[best.index, "score"] = best["score"].to_numpy()
    pods.loc[best.index, "passed"] = (
        (best["score"] >= cfg.min_score) & (best["k"] >= cfg.min_events)
    ).to_numpy()
    pods.loc[best.index, "seen"] = True
    return pods


def _transit_rows(
    ctx: _Context, part: pd.DataFrame, per: pd.DataFrame, signal: pd.Series, texts: list[str]
) -> pd.DataFrame:
    """``transit_latency`` rows for the passing groups ``per`` of ``part``, dated."""
    codes = per.index.to_numpy(dtype=np.int64)
    threshold = part["code"].map(per["threshold"])
    bad = pd.Series(
        part["transit"].to_numpy() > threshold.to_numpy(dtype=np.float64), index=part.index
    )
    p0 = ((per["k0"] + 0.5) / (per["n0"] + 1.0)).to_numpy()
    onset, end = _onsets(ctx, part, codes, bad, p0)
    return pd.DataFrame(
        {
            "service": per["callee"].to_numpy(),
            "role": "transit_latency",
            "onset": onset,
            "end": end,
            "score": per["score"].to_numpy(),
            "direction": "up",
            "baseline": per["base_q"].to_numpy(),
            "peak": per["win_q"].to_numpy(),
            "peer": "",
            "signal": signal.to_numpy(),
            "evidence": texts,
        }
    )


def _rates(ctx: _Context) -> list[pd.DataFrame]:
    """Each operation's share of all spans, before and after (sampling cancels in a share)."""
    part, keys = _groups(ctx, edges=False)
    if part.empty:
        return []
    total = float(ctx.spans["after"].sum())
    total0 = float((~ctx.spans["after"]).sum())
    if total0 == 0:
        return []
    by = part.groupby("code", sort=True)
    per = pd.DataFrame(
        {"k": by["after"].sum(), "k0": (~part["after"]).groupby(part["code"]).sum()}
    ).astype(np.float64)
    per = per.join(by[keys].first())
    up = count_score(per["k"], total, per["k0"], total0, "up")
    down = count_score(per["k"], total, per["k0"], total0, "down")
    per["direction"] = np.where(up >= down, "up", "down")
    per["score"] = np.maximum(up, down)
    enough = np.where(per["direction"] == "up", per["k"], per["k0"]) >= ctx.config.min_events
    # A share that fell while the operation's own sampled spans came about as often is
    # the others' rise, not its own change (shares add up to one); likewise a share that
    # rose while its spans did not come more often. Its own rate must move the same way.
    own = np.where(
        per["direction"] == "up",
        count_score(per["k"], ctx.span, per["k0"], ctx.base_span, "up"),
        count_score(per["k"], ctx.span, per["k0"], ctx.base_span, "down"),
    )
    per = per[(per["score"] >= ctx.config.min_score) & enough & (own >= ctx.config.min_score)]
    if per.empty:
        return []
    codes = per.index.to_numpy(dtype=np.int64)
    p0 = ((per["k0"] + 0.5) / (total0 + 1.0)).to_numpy()
    onset, end = _rate_onsets(ctx, part, per, p0)
    rate0 = per["k0"] / ctx.base_span
    rate = per["k"] / ctx.span
    texts = []
    for row, r0, r1 in zip(per.itertuples(), rate0.tolist(), rate.tolist(), strict=True):
        if row.k0 == 0:
            news = "a new operation: "
        elif row.k == 0:
            news = "the operation vanished: "
        else:
            news = ""
        texts.append(
            f"{news}{row.name} on {row.service}: {format_share(row.k, total)} sampled spans "
            f"after {format_time(ctx.split)} ({r1:.3g}/s), {format_share(row.k0, total0)} "
            f"before ({r0:.3g}/s)"
        )
    del codes
    return [
        pd.DataFrame(
            {
                "service": per["service"].to_numpy(),
                "role": "span_rate",
                "onset": onset,
                "end": end,
                "score": per["score"].to_numpy(),
                "direction": per["direction"].to_numpy(),
                "baseline": rate0.to_numpy(),
                "peak": rate.to_numpy(),
                "peer": "",
                "signal": per["name"].to_numpy(),
                "evidence": texts,
            }
        )
    ]


def _rate_onsets(
    ctx: _Context, part: pd.DataFrame, per: pd.DataFrame, p0: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Onsets of share changes: buckets of the group's spans against all spans."""
    all_after = ctx.spans[ctx.spans["after"]]
    width = bucket_width(len(all_after), ctx.span, floor=1.0)
    n_buckets = int(np.ceil(ctx.span / width)) + 1
    codes = per.index.to_numpy(dtype=np.int64)
    pos = np.full(int(part["code"].max()) + 1, -1, dtype=np.int64)
    pos[codes] = np.arange(len(codes))
    after = part[part["after"]]
    bucket = ((after["t"].to_numpy() - ctx.split) // width).astype(np.int64)
    shape = (len(codes), n_buckets)
    k = bucket_matrix(pos[after["code"].to_numpy()], bucket, np.ones(len(after)), shape)
    totals = np.bincount(
        ((all_after["t"].to_numpy() - ctx.split) // width).astype(np.int64).clip(0, n_buckets - 1),
        minlength=n_buckets,
    ).astype(np.float64)
    n = np.broadcast_to(totals, shape)
    down = (per["direction"] == "down").to_numpy()
    # A drop is a rise of the spans the operation no longer has: flip it.
    k = np.where(down[:, None], n * p0[:, None] * 2 - k, k)
    first, last = cusum_onset(k, n, p0)
    onset = np.asarray(ctx.split + first * width, dtype=np.float64)
    end = np.asarray(np.minimum(ctx.split + (last + 1) * width, ctx.end), dtype=np.float64)
    return onset, end

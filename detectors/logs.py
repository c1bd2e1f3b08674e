"""The log detector: error lines and new message templates, per service.

:class:`LogDetector` (entry point ``logs``) compares the log records after
``DetectInput.baseline_end`` with those before it:

* ``log_errors``: error and fatal records (and, in the lines, exception text at
  any level). With per-severity counts (``Telemetry.log_counts`` when the
  engine collected them from :meth:`~correlator.sources.LogSource.log_counts`)
  the test is on the *share* of a service's records that are errors, so a
  traffic surge alone is not an error surge; with lines only, on their rate
  per second against the baseline's;
* ``log_template``: message templates never seen in the service's baseline (or
  far more frequent now), of error records or exception text; ``log_notice`` the
  same for other templates (a "slow request" warning is news, not an error).
  The miner masks what varies between lines of one template (uuids, ip
  addresses, hex ids, quoted strings, numbers), so ``took 925 ms`` and
  ``took 1013 ms`` are one template and a new exception text is a new one.

Scores come from :func:`correlator.detectors._stats.count_score`, the scale the
span detector and metric z-scores share. A log source that delivered nothing
from before the fault is a gap, never "everything is new".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt
import pandas as pd

from correlator.detect import grid_step
from correlator.detector import DetectInput, DetectOutput, anomaly_frame
from correlator.model import ANOMALY_COLUMNS, Gap, empty_frame, format_time

from ._stats import (
    LOG_SPLITS,
    MIN_EVENTS,
    best_of_splits,
    bucket_matrix,
    bucket_width,
    count_score,
    cusum_onset,
    first_event,
    format_share,
)

__all__ = ["LogConfig", "LogDetector", "mine", "template_of"]

#: What makes two rows the same anomaly, whatever split found it.
_KEYS = ("service", "role", "signal", "direction")

_ERROR = 17
#: What varies between lines of one template, masked in this order. They run over the
#: distinct first lines joined by newlines, so none may match across a newline.
_MASKS = (
    (re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"), "<uuid>"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<ip>"),
    (re.compile(r"\b0[xX][0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}\b"), "<hex>"),
    (re.compile(r"\"[^\"\n]*\"|'[^'\n]*'"), "<str>"),
    (re.compile(r"[-+]?\d+(?:[.,]\d+)*"), "<n>"),
    (re.compile(r"[ \t\r\f\v]+"), " "),
)  # fmt: skip
_EXCEPTION = re.compile(r"\b(?:exception|traceback|panic)\b|\w(?:Exception|Error)\b", re.IGNORECASE)
_DIGITS = str.maketrans("123456789", "000000000")
_LINE = 500  # characters of a body's first line a template is made from


@dataclass(frozen=True)
class LogConfig:
    """Settings of the log detector."""

    min_score: float = 2.0
    """Rows weaker than this are left out (the engine applies its own threshold)."""
    min_events: int = MIN_EVENTS
    """Fewest records an anomaly may rest on."""
    short_baseline: float = 300.0
    """A baseline of logs covering less than this many seconds is reported as a gap."""
    split_baseline: float = 60.0
    """The least baseline (seconds) an earlier split must leave before it: the count test
    weighs what it covers, and sparse logs (warnings and errors only) may hold only a
    few minutes before a fault that began shortly before the alert."""
    max_template: int = 200
    """Templates are cut to this many characters."""
    template_rise: float = 4.0
    """How many times more often than in the baseline a known template must come to count
    (a template never seen before counts from ``min_events`` lines)."""


def template_of(bodies: pd.Series) -> pd.Series:
    """The message template of each body: its first line with the variable parts masked."""
    return mine(bodies)[0]


def mine(bodies: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Each body's template, and whether it names an exception, a traceback or a panic.

    Both work on the distinct first lines once (joined by newlines, so each
    regex makes one pass over all of them instead of one call per line).
    """
    codes, uniques = pd.factorize(bodies.fillna("").astype(str))
    # Every digit as 0 first: no mask (nor the exception words) tells digits apart, and
    # lines that differ only in numbers (most do) then become one before any regex runs.
    firsts = [
        u.split("\n", 1)[0][:_LINE].translate(_DIGITS) for u in np.asarray(uniques, dtype=object)
    ]
    again, distinct = pd.factorize(pd.Series(firsts, dtype=object))
    codes = np.asarray(again, dtype=np.intp)[codes] if len(codes) else np.zeros(0, dtype=np.intp)
    texts = [str(t) for t in np.asarray(distinct, dtype=object)]
    if not texts:
        empty = pd.Series([], index=bodies.index, dtype=object)
        return empty, pd.Series([], index=bodies.index, dtype=bool)
    joined = "\n".join(texts)
    starts = np.cumsum([0] + [len(t) + 1 for t in texts[:-1]])
    hits = np.asarray([m.start() for m in _EXCEPTION.finditer(joined)], dtype=np.int64)
    flags = np.zeros(len(texts), dtype=bool)
    flags[np.searchsorted(starts, hits, side="right") - 1] = True
    for pattern, token in _MASKS:
        joined = pattern.sub(token, joined)
    templates = np.array([t.strip() for t in joined.split("\n")], dtype=object)
    return (
        pd.Series(templates[codes], index=bodies.index, dtype=object),
        pd.Series(flags[codes], index=bodies.index, dtype=bool),
    )


class LogDetector:
    """Error-record and new-template anomalies from logs (see the module docstring)."""

    name = "logs"
    modality = "logs"

    def __init__(self, config: LogConfig | None = None) -> None:
        self.config = config or LogConfig()

    def detect(self, data: DetectInput) -> DetectOutput:
        """Rows of the anomaly table for ``data.telemetry.logs`` (and its log counts, if any)."""
        window = data.window
        split = float(data.baseline_end)
        lines = _prepare(
            data.telemetry.logs, window.baseline_start, window.end, self.config.max_template
        )
        counts = _counts(data.telemetry.log_counts, window.baseline_start, window.end)
        first = min((float(f["ts"].min()) for f in (lines, counts) if not f.empty), default=None)
        if first is None:
            return DetectOutput(empty_frame(ANOMALY_COLUMNS))
        gaps: list[Gap] = []
        if first >= split:
            gaps.append(
                Gap(
                    "logs",
                    f"no log records before {format_time(split)}: error counts and message "
                    "templates had no baseline to be judged against",
                )
            )
            return DetectOutput(empty_frame(ANOMALY_COLUMNS), gaps)
        covered = split - max(first, window.baseline_start)
        if covered < self.config.short_baseline:
            gaps.append(
                Gap(
                    "logs",
                    f"short baseline of logs: {covered / 60:.1f} min before "
                    f"{format_time(split)}; log anomalies rest on it",
                )
            )
        start = max(first, window.baseline_start)
        splits = [split] + [
            split - back
            for back in LOG_SPLITS
            if split - back - start >= self.config.split_baseline
        ]
        found = [
            self._at(at, start, float(window.end), lines, counts, gaps if at == split else [])
            for at in splits
        ]
        out = best_of_splits(found, self.config.min_score, _KEYS)
        if out.empty:
            return DetectOutput(empty_frame(ANOMALY_COLUMNS), gaps)
        out["modality"] = self.modality
        out["peer"] = _named_peers(out, _known_services(data))
        return DetectOutput(anomaly_frame(out), gaps)

    def _at(
        self,
        split: float,
        start: float,
        end: float,
        lines: pd.DataFrame,
        counts: pd.DataFrame,
        gaps: list[Gap],
    ) -> pd.DataFrame:
        """Every row with the baseline ending at ``split``; what it could not judge goes
        to ``gaps``."""
        ctx = _Context(split, start, end, self.config)
        parts = [_errors(ctx, lines, counts)]
        # Lines are warnings and worse: counts that reach back with none of those before the
        # split say the baseline had none (every template after it is new), not that its
        # lines are missing.
        quiet_before = False
        if not counts.empty and (counts["ts"] < split).any():
            warn = counts["severity"] >= 13
            before = counts["ts"] < split
            # ... when the counts tell severities apart (they see the warnings after it).
            quiet_before = float(counts.loc[warn & ~before, "count"].sum()) > 0.0
            quiet_before &= float(counts.loc[warn & before, "count"].sum()) == 0.0
        if not lines.empty and ((lines["ts"] < split).any() or quiet_before):
            parts.append(_templates(ctx, lines))
        elif not lines.empty:
            # Counts reach back, lines do not: every template would look new.
            gaps.append(
                Gap(
                    "logs",
                    f"no log lines before {format_time(split)} (only counts): new message "
                    "templates were not judged",
                )
            )
        parts = [p for p in parts if not p.empty]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _known_services(data: DetectInput) -> set[str]:
    """Every service and node name the investigation knows of."""
    tel = data.telemetry
    names: set[str] = set(tel.node_kinds)
    for frame, col in ((tel.spans, "service"), (tel.spans, "peer"), (tel.logs, "service")):
        if frame is not None and col in frame.columns:
            names.update(str(v) for v in frame[col].dropna().unique().tolist())
    names.update(str(n) for edge in tel.edges for n in edge[:2])
    return {n for n in names if len(n) > 2}


def _named_peers(rows: pd.DataFrame, known: set[str]) -> list[str]:
    """For each row, another service its message names ("call to reviews failed: ..."), else "".

    A wrong answer that only callers log is a caller's error line naming the
    callee: ``peer`` carries that name so topology can follow it. Runs over the
    anomaly rows (a few), never over log lines.
    """
    if not known:
        return [""] * len(rows)
    pattern = re.compile(
        r"(?<![\w./-])("
        + "|".join(re.escape(n) for n in sorted(known, key=len, reverse=True))
        + r")(?![\w/-])"
    )
    out = []
    for service, text in zip(rows["service"].tolist(), rows["evidence"].tolist(), strict=True):
        # Look only at the quoted message, not at the service the sentence is about.
        quoted = str(text).split('"', 1)[1] if '"' in str(text) else ""
        named = [
            m.group(1)
            for m in pattern.finditer(quoted)
            if m.group(1) != service and _about_a_call(quoted, m.start(1), m.end(1))
        ]
        out.append(named[0] if named else "")
    return out


#: What makes a service's name in a line a call to it: what comes before ("call to X",
#: "calling X", "from X", host='X', http://X) ...
_CALL_BEFORE = re.compile(
    r"(?:\b(?:to|from|calling|call|called|host|upstream|service|dependency|backend|server|"
    r"peer|connect|connecting|connection|dial|dialing|lookup|reach|reaching|query|querying|"
    r"request|requesting|via|contacting)\W{0,3}|[/@])$",
    re.IGNORECASE,
)
#: ... or after it ("X: unexpected status", X:8080, X.shop.svc, "X failed", "X timed out").
_CALL_AFTER = re.compile(
    r"^(?::|\.[a-z]|/|\s+(?:failed|fails|unavailable|timed|timeout|returned|responded|refused|"
    r"rejected|unreachable|errored|is\s+down|is\s+unavailable|not\s+reachable))",
    re.IGNORECASE,
)


def _about_a_call(text: str, start: int, end: int) -> bool:
    """Whether the service name at ``text[start:end]`` is named as the other end of a call,
    not as a word of the message ("has no currency for region HR")."""
    return bool(_CALL_BEFORE.search(text[max(0, start - 24) : start])) or bool(
        _CALL_AFTER.match(text[end : end + 24])
    )


@dataclass(frozen=True)
class _Context:
    split: float
    start: float
    end: float
    config: LogConfig

    @property
    def span(self) -> float:
        return max(self.end - self.split, 1.0)

    @property
    def base_span(self) -> float:
        return max(self.split - self.start, 1.0)


def _prepare(raw: pd.DataFrame, start: float, end: float, max_template: int) -> pd.DataFrame:
    if raw is None or raw.empty or not {"ts", "service"} <= set(raw.columns):
        return pd.DataFrame(columns=["ts", "service", "severity", "body", "template", "error_like"])
    frame = pd.DataFrame(
        {
            "ts": pd.to_numeric(raw["ts"], errors="coerce"),
            "service": raw["service"].astype(object),
            "severity": pd.to_numeric(
                raw["severity"] if "severity" in raw else pd.Series(0, index=raw.index),
                errors="coerce",
            )
            .fillna(0)
            .astype(np.int64),
            "body": raw["body"].astype(object).fillna("").astype(str) if "body" in raw else "",
        }
    )
    keep = frame["ts"].notna() & frame["service"].notna() & (frame["service"] != "")
    keep &= (frame["ts"] >= start) & (frame["ts"] <= end + 1.0)
    frame = frame[keep].reset_index(drop=True)
    frame["template"], frame["error_like"] = mine(frame["body"])
    frame["template"] = frame["template"].str.slice(0, max_template)
    return frame


def _counts(raw: object, start: float, end: float) -> pd.DataFrame:
    """A ``ts, service, severity, count`` frame, or an empty one."""
    if not isinstance(raw, pd.DataFrame) or raw.empty:
        return pd.DataFrame(columns=["ts", "service", "severity", "count"])
    if not {"ts", "service", "severity", "count"} <= set(raw.columns):
        return pd.DataFrame(columns=["ts", "service", "severity", "count"])
    frame = pd.DataFrame(
        {
            "ts": pd.to_numeric(raw["ts"], errors="coerce"),
            "service": raw["service"].astype(object),
            "severity": pd.to_numeric(raw["severity"], errors="coerce").fillna(0),
            "count": pd.to_numeric(raw["count"], errors="coerce").fillna(0.0),
        }
    )
    keep = frame["ts"].notna() & frame["service"].notna() & (frame["count"] > 0)
    keep &= (frame["ts"] >= start) & (frame["ts"] <= end + 1.0)
    return frame[keep].reset_index(drop=True)


def _onsets(
    ctx: _Context,
    services: pd.Index,
    t: npt.NDArray[np.float64],
    service: pd.Series,
    k_weight: npt.NDArray[np.float64],
    n_weight: npt.NDArray[np.float64] | None,
    p0: npt.NDArray[np.float64],
    resolution: float = 0.0,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Onset and end of each group in ``services`` from events after the split.

    ``n_weight=None``: the exposure is time (``p0`` per second); else the
    exposure per event (``p0`` per unit of it). ``resolution``: seconds per count
    bucket when the events are counts (buckets are whole numbers of those).
    """
    after = t >= ctx.split
    width = bucket_width(int(after.sum()), ctx.span, floor=max(1.0, resolution))
    if resolution > 0:
        width = float(np.ceil(width / resolution - 1e-9) * resolution)
    n_buckets = int(np.ceil(ctx.span / width)) + 1
    codes = services.get_indexer(pd.Index(service.to_numpy()[after])).astype(np.int64)
    bucket = ((t[after] - ctx.split) // width).astype(np.int64)
    shape = (len(services), n_buckets)
    k = bucket_matrix(codes, bucket, k_weight[after], shape)
    if n_weight is None:
        n = np.full(shape, width)
    else:
        n = bucket_matrix(codes, bucket, n_weight[after], shape)
    first, last = cusum_onset(k, n, p0)
    onset = np.asarray(ctx.split + first * width, dtype=np.float64)
    onset = first_event(onset, codes, t[after], k_weight[after] > 0)
    end = np.asarray(np.minimum(ctx.split + (last + 1) * width, ctx.end), dtype=np.float64)
    return onset, end


def _errors(ctx: _Context, lines: pd.DataFrame, counts: pd.DataFrame) -> pd.DataFrame:
    """Per service: error records, as a share of all records (counts) or a rate (lines)."""
    shares = not counts.empty and bool((counts["severity"] < _ERROR).any())
    if shares or (lines.empty and not counts.empty):
        # Counts of errors only (no other level counted) are judged as a rate, like lines.
        t = counts["ts"].to_numpy(dtype=np.float64)
        service = counts["service"]
        total = counts["count"].to_numpy(dtype=np.float64)
        bad = np.where(counts["severity"].to_numpy() >= _ERROR, total, 0.0)
        resolution = grid_step(t)
    elif not lines.empty:
        t = lines["ts"].to_numpy(dtype=np.float64)
        service = lines["service"]
        total = np.ones(len(lines))
        bad = ((lines["severity"] >= _ERROR) | lines["error_like"]).to_numpy(dtype=np.float64)
        resolution = 0.0
    else:
        return pd.DataFrame()
    after = t >= ctx.split
    frame = pd.DataFrame(
        {"service": service.to_numpy(), "after": after, "bad": bad, "total": total}
    )
    per = pd.DataFrame(
        frame.groupby(["service", "after"])[["bad", "total"]].sum().unstack("after", fill_value=0.0)
    )
    pairs = cast(list[tuple[str, bool]], per.columns.to_list())
    per.columns = pd.Index([f"{a}_{'w' if b else 'b'}" for a, b in pairs])
    for col in ("bad_w", "bad_b", "total_w", "total_b"):
        if col not in per:
            per[col] = 0.0
    if shares:
        n, n0 = per["total_w"], per["total_b"]
        # A service with too few records of its own before the split (a quiet one that
        # only logs when in trouble) has no share to compare: its errors are judged as
        # a rate, against the time the source covered.
        by_time = per["total_b"] < ctx.config.min_events
        n = n.where(~by_time, ctx.span)
        n0 = n0.where(~by_time, ctx.base_span)
    else:
        n = pd.Series(ctx.span, index=per.index)
        n0 = pd.Series(ctx.base_span, index=per.index)
        by_time = pd.Series(True, index=per.index)
    per["score"] = count_score(per["bad_w"], n, per["bad_b"], n0)
    per["by_time"] = by_time
    per = per[(per["score"] >= ctx.config.min_score) & (per["bad_w"] >= ctx.config.min_events)]
    if per.empty:
        return pd.DataFrame()
    services = pd.Index(per.index)
    timed = per["by_time"].to_numpy(dtype=bool)
    p0 = ((per["bad_b"] + 0.5) / (n0[per.index] + np.where(timed, 0.0, 1.0))).to_numpy()
    onset = np.zeros(len(per))
    end = np.zeros(len(per))
    for mask, weight in ((timed, None), (~timed, total)):
        if mask.any():
            onset[mask], end[mask] = _onsets(
                ctx, services[mask], t, service, bad, weight, p0[mask], resolution
            )
    example = _example(lines, ctx, services)
    texts = []
    for svc, row in per.iterrows():
        said = example.get(str(svc))
        quote = f': "{said}"' if said else ""
        if not row.by_time:
            texts.append(
                f"{format_share(row.bad_w, row.total_w)} log records of {svc} were errors after "
                f"{format_time(ctx.split)} ({format_share(row.bad_b, row.total_b)} before){quote}"
            )
        else:
            texts.append(
                f"{int(row.bad_w)} error records of {svc} in {ctx.span / 60:.0f} min after "
                f"{format_time(ctx.split)} ({row.bad_w / ctx.span:.3g}/s), {int(row.bad_b)} in "
                f"{ctx.base_span / 60:.0f} min before ({row.bad_b / ctx.base_span:.3g}/s){quote}"
            )
    return pd.DataFrame(
        {
            "service": services.to_numpy(),
            "role": "log_errors",
            "onset": onset,
            "end": end,
            "score": per["score"].to_numpy(),
            "direction": "up",
            "baseline": (per["bad_b"] / ctx.base_span).to_numpy(),
            "peak": (per["bad_w"] / ctx.span).to_numpy(),
            "peer": "",
            "signal": "error records",
            "evidence": texts,
        }
    )


def _example(lines: pd.DataFrame, ctx: _Context, services: pd.Index) -> dict[str, str]:
    """The most frequent error-like body of each service after the split."""
    if lines.empty:
        return {}
    after = lines[(lines["ts"] >= ctx.split) & lines["service"].isin(services)]
    bad = after[(after["severity"] >= _ERROR) | after["error_like"]]
    if bad.empty:
        return {}
    top = bad.groupby(["service", "body"]).size().reset_index(name="n")
    top = top.sort_values(["service", "n"], ascending=[True, False]).drop_duplicates("service")
    return {
        str(s): str(b).split("\n", 1)[0][:200]
        for s, b in zip(top["service"], top["body"], strict=True)
    }


def _templates(ctx: _Context, lines: pd.DataFrame) -> pd.DataFrame:
    """Templates of a service that became more frequent after the split: never seen in
    its baseline, or seen there at a far lower rate.

    A count test, not "never seen": the split is where the baseline is taken to end,
    not where the fault began, so the first lines of a fault that began a little
    earlier fall before it; a template seen once before and forty times after is
    still the news.
    """
    if lines.empty:
        return pd.DataFrame()
    lines = lines.assign(after=lines["ts"] >= ctx.split)
    later = lines[lines["after"]]
    if len(later) < ctx.config.min_events:
        return pd.DataFrame()
    # Only templates seen often enough after the split are summed up (most are not).
    sizes = later.groupby(["service", "template"], sort=False)["ts"].transform("size")
    often = later[sizes.to_numpy() >= ctx.config.min_events]
    if often.empty:
        return pd.DataFrame()
    per = often.groupby(["service", "template"], sort=False).agg(
        k=("ts", "size"), first=("ts", "min"), last=("ts", "max"), body=("body", "first"),
        severity=("severity", "max"), error_like=("error_like", "any"),
    )  # fmt: skip
    per = per[per["k"] >= ctx.config.min_events]
    if per.empty:
        return pd.DataFrame()
    before = lines[~lines["after"]].groupby(["service", "template"], sort=False).size()
    per["k0"] = before.reindex(per.index).fillna(0.0).to_numpy(dtype=np.float64)
    # Against the service's own lines when it had enough before (a share: more traffic
    # brings more of every template), else against the time covered.
    services = per.index.get_level_values("service")
    n = later.groupby("service").size().reindex(services).to_numpy(dtype=np.float64)
    n0 = (
        lines[~lines["after"]]
        .groupby("service")
        .size()
        .reindex(services)
        .fillna(0.0)
        .to_numpy(dtype=np.float64)
    )
    own = n0 >= ctx.config.min_events
    n = np.where(own, n, ctx.span)
    n0 = np.where(own, n0, ctx.base_span)
    per["score"] = count_score(per["k"], n, per["k0"], n0)
    # Materiality is relative: a template that was there all along must now come several
    # times as often (as a share of the service's lines, or per second).
    ratio = (per["k"] / n) / ((per["k0"] + 0.5) / n0)
    per = per[(per["score"] >= ctx.config.min_score) & (ratio >= ctx.config.template_rise)]
    per = per.reset_index()
    if per.empty:
        return pd.DataFrame()
    # Dated where the template's rate changed, not by its first line after the split: a
    # line of it that comes now and then (a stray failed call) long before the rest does
    # not date the change (see cusum_onset).
    keys = pd.Index(per["service"].astype(str) + "\x1f" + per["template"].astype(str))
    line_key = often["service"].astype(str) + "\x1f" + often["template"].astype(str)
    p0 = ((per["k0"] + 0.5) / ctx.base_span).to_numpy(dtype=np.float64)
    per["first"], _ = _onsets(
        ctx,
        keys,
        often["ts"].to_numpy(dtype=np.float64),
        line_key,
        np.ones(len(often)),
        None,
        p0,
    )
    texts = []
    for r in per.itertuples():
        seen = (
            f"never in the {ctx.base_span / 60:.0f} min before"
            if r.k0 == 0
            else f"x{r.k0:.0f} in the {ctx.base_span / 60:.0f} min before"
        )
        texts.append(
            f"{'new' if r.k0 == 0 else 'more frequent'} log template on {r.service}: "
            f'"{r.template}" x{r.k:.0f} after {format_time(ctx.split)}, {seen} '
            f'(e.g. "{str(r.body).split(chr(10), 1)[0][:160]}")'
        )
    return pd.DataFrame(
        {
            "service": per["service"].to_numpy(),
            # An error or exception template is trouble; another (a "slow request" warning,
            # a new info line) is news about the service, not an error.
            "role": np.where(
                (per["severity"] >= _ERROR) | per["error_like"].astype(bool),
                "log_template",
                "log_notice",
            ),
            "onset": per["first"].to_numpy(dtype=np.float64),
            "end": per["last"].to_numpy(dtype=np.float64),
            "score": per["score"].to_numpy(),
            "direction": "up",
            "baseline": (per["k0"] / ctx.base_span).to_numpy(),
            "peak": (per["k"] / ctx.span).to_numpy(),
            "peer": "",
            "signal": per["template"].to_numpy(),
            "evidence": texts,
        }
    )

"""Spans and logs from OTLP/JSON files that services append to (``otlp_files``).

:class:`OtlpFilesAdapter` implements :class:`~correlator.sources.TraceSource`,
:class:`~correlator.sources.LogSource` and
:class:`~correlator.sources.LogCountSource` over ``*.traces.otlp.jsonl`` and
``*.logs.otlp.jsonl`` files (each optionally ``.gz``) under a folder, or one
such file: one OTLP ``ExportTraceServiceRequest`` / ``ExportLogsServiceRequest``
per line, as the OpenTelemetry file exporter and ``correlator demo`` write
them.

Such files grow forever, so a read touches only the lines of the asked time
range: every line's span start (log record) times are found with one regular
expression, without parsing its JSON; in a plain file a binary search over byte
offsets finds where the range begins (lines are written roughly in time order:
``slack`` seconds of disorder are allowed), and reading stops ``slack`` seconds
of lines past its end. Only lines holding times in the range are parsed, and
their spans or records are clipped to it. Gzip files cannot be searched and are
scanned, still without parsing the lines outside the range.

Bounded: at most ``max_spans`` spans / ``max_logs`` records are kept per period
(baseline, window), shared evenly among the files; what a cap, a garbled line
or the deadline left unread is named (file and line) in the frame's
``attrs["warnings"]``, which the investigation reports as a gap. A missing
folder is a :class:`~correlator.sources.SourceError` (a gap), never a crash.
"""

from __future__ import annotations

import gzip
import json
import re
import threading
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, Self

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from correlator.model import Alert, Window
from correlator.otlp import LogCollector, OtlpError, SpanCollector
from correlator.sources import SourceError

from .bundle import count_logs, sample_logs, sample_spans

__all__ = [
    "SUFFIXES",
    "Clipped",
    "OtlpFilesAdapter",
    "OtlpFilesSettings",
    "clip_file",
    "find_files",
    "iter_clipped",
]

Kind = Literal["traces", "logs"]

#: File name endings per kind (plain first).
SUFFIXES: dict[str, tuple[str, str]] = {
    "traces": (".traces.otlp.jsonl", ".traces.otlp.jsonl.gz"),
    "logs": (".logs.otlp.jsonl", ".logs.otlp.jsonl.gz"),
}
# The times a line holds, found without parsing it: span starts, log record times
# (``"timeUnixNano"`` with its quote is not ``observedTimeUnixNano``).
_TIME_RE: dict[str, re.Pattern[bytes]] = {
    "traces": re.compile(rb'"start(?:TimeUnixNano|_time_unix_nano)"\s*:\s*"?(\d+)'),
    "logs": re.compile(rb'"(?:timeUnixNano|time_unix_nano)"\s*:\s*"?(\d+)'),
}
_SEARCH_STOP = 64 * 1024  # a binary search stops when its range is this small (bytes)
_CHECK_EVERY = 512  # lines between deadline checks
_MAX_NOTES = 3  # garbled lines named per file (then counted)


class OtlpFilesSettings(BaseModel):
    """Settings of an ``otlp_files`` backend (``backends: {otlp: {adapter: otlp_files, path: ...}}``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("otlp_files", description="the backends: key (set from it)")
    path: str = Field(
        description="a folder of *.traces.otlp.jsonl / *.logs.otlp.jsonl[.gz] files, or one file"
    )
    slack: float = Field(
        300.0, ge=0, description="seconds of time disorder allowed between lines of a file"
    )
    max_spans: int = Field(
        200_000, ge=1, description="spans read per period (baseline, window), over all files"
    )
    max_logs: int = Field(
        200_000, ge=1, description="log records read per period (baseline, window), over all files"
    )


def find_files(path: Path, kind: Kind) -> list[Path]:
    """The ``kind`` files under ``path`` (a folder), or ``[path]`` for a file of that kind.

    Raises :class:`FileNotFoundError` when ``path`` does not exist.
    """
    if path.is_file():
        return [path] if path.name.endswith(SUFFIXES[kind]) else []
    if not path.is_dir():
        raise FileNotFoundError(str(path))
    return sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(SUFFIXES[kind]))


@dataclass
class Clipped:
    """What :func:`clip_file` read: requests clipped to the range, and what it could not read."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    items: int = 0
    """Spans or records kept."""
    warnings: list[str] = field(default_factory=list)
    lines_read: int = 0
    """Lines looked at (their times), parsed or not."""
    lines_parsed: int = 0


def _times(line: bytes, kind: str) -> list[int]:
    return [int(m) for m in _TIME_RE[kind].findall(line)]


def _open(path: Path) -> IO[bytes]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def _seek_before(fh: IO[bytes], size: int, kind: str, target_ns: int) -> int:
    """A line start at or before the first line whose times reach ``target_ns`` (plain files).

    Binary search on the largest time of the line at each probe; a line with no
    time counts as late, so the search errs towards reading more.
    """
    lo, hi = 0, size
    while hi - lo > _SEARCH_STOP:
        mid = (lo + hi) // 2
        fh.seek(mid)
        fh.readline()  # the rest of the line the probe fell in
        pos = fh.tell()
        if pos >= hi:
            hi = mid
            continue
        times = _times(fh.readline(), kind)
        if times and max(times) < target_ns:
            lo = pos
        else:
            hi = mid
    return lo


def _line_number(path: Path, offset: int) -> int:
    """The 1-based number of the line starting at byte ``offset`` (counted only for messages)."""
    count = 1
    with path.open("rb") as fh:
        left = offset
        while left > 0:
            chunk = fh.read(min(left, 1 << 20))
            if not chunk:
                break
            count += chunk.count(b"\n")
            left -= len(chunk)
    return count


def _clip_request(
    obj: Mapping[str, Any], kind: str, lo: int, hi: int
) -> tuple[dict[str, Any] | None, int]:
    """The request with only the spans (records) whose time is in ``[lo, hi]`` ns."""
    if kind == "traces":
        groups_key, scopes_key, items_key, time_key = (
            "resourceSpans", "scopeSpans", "spans", "startTimeUnixNano",
        )  # fmt: skip
    else:
        groups_key, scopes_key, items_key, time_key = (
            "resourceLogs", "scopeLogs", "logRecords", "timeUnixNano",
        )  # fmt: skip
    groups_out = []
    kept = 0
    for group in obj.get(groups_key) or ():
        scopes_out = []
        for scope in group.get(scopes_key) or ():
            items = [it for it in scope.get(items_key) or () if lo <= _item_ns(it, time_key) <= hi]
            if items:
                kept += len(items)
                scopes_out.append({**scope, items_key: items})
        if scopes_out:
            groups_out.append({**group, scopes_key: scopes_out})
    if not groups_out:
        return None, 0
    return {groups_key: groups_out}, kept


def _item_ns(item: Mapping[str, Any], key: str) -> int:
    # A log record without its own time has the time it was observed.
    return int(item.get(key) or 0) or int(item.get("observedTimeUnixNano") or 0)


def clip_file(
    path: Path,
    kind: Kind,
    start: float,
    end: float,
    *,
    slack: float = 300.0,
    cap: int | None = None,
    deadline: float | None = None,
    open_end: bool = False,
) -> Clipped:
    """Requests of one OTLP/JSON file, clipped to spans (records) in ``[start, end]``.

    Reads only the lines around the range (see the module docstring). ``cap``
    bounds the spans (records) kept; ``deadline`` (:func:`time.monotonic`)
    stops the read early. Whatever was not read, and every garbled line, is a
    warning naming the file and line; nothing here raises for bad content.
    """
    out = Clipped()
    lo_ns, hi_ns = _ns(start), _ns(end) - (1 if open_end else 0)
    stop_ns = hi_ns + _ns(slack)
    garbled: list[int] = []
    plain = not path.name.endswith(".gz")
    try:
        fh = _open(path)
    except OSError as exc:
        out.warnings.append(f"{path}: cannot read: {exc.strerror or exc}")
        return out
    n = in_range = 0
    stride = 1
    held: list[tuple[int, int, dict[str, Any]]] = []  # (line of the range, items, request)
    with fh:
        offset = 0
        lineno: int | None = 1
        try:
            if plain:
                size = path.stat().st_size
                offset = _seek_before(fh, size, kind, lo_ns - _ns(slack))
                fh.seek(offset)
                lineno = 1 if offset == 0 else None  # counted only if a message needs it
            for raw in fh:
                here = offset
                offset += len(raw)
                n += 1
                line_at = (lineno + n - 1) if lineno is not None else None
                if n % _CHECK_EVERY == 0 and deadline is not None and time.monotonic() > deadline:
                    out.warnings.append(
                        f"{path}: stopped at the deadline; lines from "
                        f"{_where(path, here, line_at)} on were not read"
                    )
                    break
                if not raw.endswith(b"\n"):
                    break  # a line the writer is still appending
                times = _times(raw, kind)
                if not times:
                    if raw.strip() and not _is_json_object(raw):
                        garbled.append(line_at if line_at is not None else -here - 1)
                    continue
                if min(times) > stop_ns:
                    break
                if max(times) < lo_ns or min(times) > hi_ns:
                    continue
                # Over the cap, keep every ``stride``-th line of the range (the stride
                # doubles each time the cap is passed): the whole range stays covered,
                # evenly, and a skipped line is never parsed.
                in_range += 1
                if (in_range - 1) % stride:
                    continue
                out.lines_parsed += 1
                try:
                    obj = json.loads(raw)
                    clipped, kept = _clip_request(obj, kind, lo_ns, hi_ns)
                except (ValueError, TypeError, AttributeError):
                    garbled.append(line_at if line_at is not None else -here - 1)
                    continue
                if clipped is None:
                    continue
                held.append((in_range - 1, kept, clipped))
                out.items += kept
                while cap is not None and out.items > cap and len(held) > 1:
                    stride *= 2
                    held = [h for h in held if h[0] % stride == 0]
                    out.items = sum(h[1] for h in held)
        except (OSError, EOFError, zlib.error) as exc:
            out.warnings.append(f"{path}: cannot read past byte {offset}: {exc}")
    out.lines_read = n
    out.requests = [h[2] for h in held]
    if stride > 1:
        out.warnings.append(
            f"{path}: {out.items} {_noun(kind)} kept from 1 in {stride} of the "
            f"{in_range} lines of {_fmt(start)} to {_fmt(end)} (the cap of {cap})"
        )
    for where in garbled[:_MAX_NOTES]:
        shown = f"line {where}" if where > 0 else f"line {_line_number(path, -where - 1)}"
        out.warnings.append(f"{path}:{shown.removeprefix('line ')}: not an OTLP/JSON line, skipped")
    if len(garbled) > _MAX_NOTES:
        out.warnings.append(f"{path}: {len(garbled) - _MAX_NOTES} more garbled lines skipped")
    return out


def _ns(seconds: float) -> int:
    # Whole seconds and the fraction apart: a float of unix nanoseconds loses the last digits.
    whole = int(seconds // 1)
    return whole * 1_000_000_000 + round((seconds - whole) * 1e9)


def _is_json_object(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except ValueError:
        return False


def _where(path: Path, offset: int, line: int | None) -> str:
    return f"line {line if line is not None else _line_number(path, offset)}"


def _noun(kind: str) -> str:
    return "spans" if kind == "traces" else "log records"


def _fmt(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class OtlpFilesAdapter:
    """Traces and logs from OTLP/JSON files on this machine (see the module docstring).

    ``settings``: an :class:`OtlpFilesSettings`, or a path (folder or file).
    """

    Settings = OtlpFilesSettings
    display_name = "OTLP files"
    name = "otlp_files"
    local = True
    """Reads files here: the engine bounds it by the investigation's deadline."""

    def __init__(self, settings: OtlpFilesSettings | str | Path) -> None:
        if not isinstance(settings, OtlpFilesSettings):
            settings = OtlpFilesSettings(path=str(settings))
        self.settings = settings
        self.name = settings.name
        self.path = Path(settings.path)
        # logs() and log_counts() of one investigation read the same lines: parse once.
        self._lock = threading.Lock()
        self._memo: dict[tuple[Any, ...], tuple[pd.DataFrame, tuple[str, ...]]] = {}

    def bind(self, alert: Alert) -> Self:
        """Itself: every call says what it reads."""
        return self

    def close(self) -> None:
        """Nothing to release."""

    # -- reading ----------------------------------------------------------------------

    def _files(self, kind: Kind) -> list[Path]:
        try:
            return find_files(self.path, kind)
        except FileNotFoundError:
            raise SourceError(
                f"OTLP files at {self.path}: no such file or folder; set "
                f"backends.{self.name}.path to where the services write "
                f"*{SUFFIXES[kind][0]} files"
            ) from None
        except OSError as exc:
            raise SourceError(f"OTLP files at {self.path}: cannot list: {exc}") from None

    def read(
        self, kind: Kind, window: Window, deadline: float | None = None
    ) -> tuple[pd.DataFrame, list[str]]:
        """Span (``kind="traces"``) or log rows over ``[baseline_start, end]``, and warnings.

        Each period is read separately with its share of the cap, so a busy
        window cannot crowd out the baseline (or the reverse).
        """
        files = self._files(kind)
        if not files:
            return _empty(kind), [
                f"no *{SUFFIXES[kind][0]}[.gz] files at {self.path}: nothing to read"
            ]
        key = (kind, window, tuple(_stat(p) for p in files))
        with self._lock:
            if key in self._memo:
                frame, notes = self._memo[key]
                return frame, list(notes)
        cap = self.settings.max_spans if kind == "traces" else self.settings.max_logs
        share = max(1, cap // len(files))
        periods = [(window.start, window.end, False)]
        if window.baseline_start < window.start:
            # The window ends inclusive; the baseline stops just before it starts.
            periods.append((window.baseline_start, window.start, True))
        collector: SpanCollector | LogCollector = (
            SpanCollector() if kind == "traces" else LogCollector()
        )
        warnings: list[str] = []
        for path in files:
            for start, end, open_end in periods:
                got = clip_file(
                    path,
                    kind,
                    start,
                    end,
                    slack=self.settings.slack,
                    cap=share,
                    deadline=deadline,
                    open_end=open_end,
                )
                warnings.extend(got.warnings)
                for request in got.requests:
                    try:
                        collector.add(request)
                    except (OtlpError, ValueError, TypeError, AttributeError) as exc:
                        warnings.append(f"{path}: a request is not valid OTLP/JSON: {exc}")
        frame = collector.frame()
        with self._lock:
            self._memo = {key: (frame, tuple(warnings))}  # the latest read only
        return frame, warnings

    # -- TraceSource ------------------------------------------------------------------

    def spans(
        self,
        window: Window,
        services: Sequence[str] | None = None,
        limit: int = 200,
        *,
        deadline: float | None = None,
    ) -> pd.DataFrame:
        """Spans of at most ``limit`` traces per period, evenly spaced (like bundles)."""
        frame, warnings = self.read("traces", window, deadline)
        out = sample_spans(frame, window, services, limit)
        notes = [*warnings, *out.attrs.get("warnings", ())]
        if notes:
            out.attrs["warnings"] = notes
        return out

    # -- LogSource --------------------------------------------------------------------

    def logs(
        self,
        window: Window,
        services: Sequence[str] | None = None,
        min_severity: int = 13,
        limit: int = 5000,
        *,
        deadline: float | None = None,
    ) -> pd.DataFrame:
        """Records at or above ``min_severity``, at most ``limit``, each period a share."""
        frame, warnings = self.read("logs", window, deadline)
        out = sample_logs(frame, window, services, min_severity, limit)
        notes = [*warnings, *out.attrs.get("warnings", ())]
        if notes:
            out.attrs["warnings"] = notes
        return out

    def log_counts(
        self, window: Window, step: float, services: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Records of every severity per ``step``-second bucket, service and severity."""
        frame, _ = self.read("logs", window)
        return count_logs(frame, window, step, services)


def _stat(path: Path) -> tuple[str, int, int]:
    try:
        st = path.stat()
    except OSError:
        return (str(path), -1, -1)
    return (str(path), st.st_size, st.st_mtime_ns)


def _empty(kind: str) -> pd.DataFrame:
    return (SpanCollector() if kind == "traces" else LogCollector()).frame()


def iter_clipped(
    path: Path, kind: Kind, start: float, end: float, *, slack: float = 300.0
) -> Iterator[tuple[Path, Clipped]]:
    """:func:`clip_file` for every ``kind`` file at ``path`` (a folder or a file)."""
    for f in find_files(path, kind):
        yield f, clip_file(f, kind, start, end, slack=slack)

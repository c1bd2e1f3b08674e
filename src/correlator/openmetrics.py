"""OpenMetrics text with timestamps: a fast reader and a writer.

The reader turns a whole exposition into :class:`Series` (labels once per
series, numpy arrays of timestamps and values). It is vectorised: line and
field boundaries are found with numpy over the raw bytes, the values and
timestamps are parsed by pandas' C CSV reader, and only the label block of
each *distinct* series is parsed in Python. A 10M-sample file parses in a few
seconds.

The writer formats families the way ``promtool tsdb create-blocks-from
openmetrics`` accepts them: families grouped, each series' points in time
order, ``# EOF`` last.

Exception tree: malformed input raises :class:`OpenMetricsError` with a
1-based line number; :mod:`correlator.bundle` turns it into a
:class:`~correlator.errors.BundleError` naming the file.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd

from correlator.errors import CorrelatorError

__all__ = [
    "MS_THRESHOLD",
    "Family",
    "Metrics",
    "OpenMetricsError",
    "Series",
    "format_family",
    "format_sample",
    "format_value",
    "parse_labels",
    "parse_openmetrics",
    "render",
]

#: Timestamps above this are taken for milliseconds (1e11 s is the year 5138).
MS_THRESHOLD = 1e11

_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)', re.S)
_UNESCAPE_RE = re.compile(r"\\(.)", re.S)
_HIST_SUFFIXES = ("_bucket", "_count", "_sum", "_created", "_gcount", "_gsum")
_COUNTER_SUFFIXES = ("_total", "_created")
_SUMMARY_SUFFIXES = ("_count", "_sum", "_created")


class OpenMetricsError(CorrelatorError):
    """Malformed OpenMetrics text; ``line`` is 1-based (``None`` for the whole file)."""

    def __init__(self, problem: str, line: int | None = None) -> None:
        self.problem = problem
        self.line = line
        super().__init__(f"line {line}: {problem}" if line is not None else problem)


@dataclass(frozen=True)
class Series:
    """One time series: its sample name, labels, and points sorted by time."""

    name: str
    labels: Mapping[str, str]
    ts: npt.NDArray[np.float64]
    values: npt.NDArray[np.float64]

    def get(self, label: str) -> str:
        """A label value, ``""`` when absent (PromQL semantics)."""
        if label == "__name__":
            return self.name
        return self.labels.get(label, "")


@dataclass(frozen=True)
class Metrics:
    """A parsed exposition: series, and the declared family types/help/units."""

    series: tuple[Series, ...]
    types: Mapping[str, str] = field(default_factory=dict)
    help: Mapping[str, str] = field(default_factory=dict)
    units: Mapping[str, str] = field(default_factory=dict)
    has_eof: bool = True

    @property
    def sample_count(self) -> int:
        """Total number of samples over all series."""
        return sum(len(s.ts) for s in self.series)

    def by_name(self) -> dict[str, list[Series]]:
        """Series grouped by sample name."""
        out: dict[str, list[Series]] = {}
        for s in self.series:
            out.setdefault(s.name, []).append(s)
        return out

    def to_frame(self) -> pd.DataFrame:
        """A long frame: ``name``, ``labels`` (a hashable sorted tuple), ``ts``, ``value``."""
        if not self.series:
            return pd.DataFrame({"name": [], "labels": [], "ts": [], "value": []})
        lengths = [len(s.ts) for s in self.series]
        names = np.repeat(np.array([s.name for s in self.series], dtype=object), lengths)
        keys = np.empty(len(self.series), dtype=object)
        for i, s in enumerate(self.series):
            keys[i] = tuple(sorted(s.labels.items()))
        return pd.DataFrame(
            {
                "name": names,
                "labels": np.repeat(keys, lengths),
                "ts": np.concatenate([s.ts for s in self.series]),
                "value": np.concatenate([s.values for s in self.series]),
            }
        )


# --------------------------------------------------------------------------- reading


def parse_labels(block: str, line: int | None = None) -> dict[str, str]:
    """Parse the inside of ``{...}`` (``a="x",b="y\\"z"``) into a dict."""
    out: dict[str, str] = {}
    pos = 0
    text = block.strip()
    if text.endswith(","):
        text = text[:-1]
    while pos < len(text):
        m = _LABEL_RE.match(text, pos)
        if m is None:
            raise OpenMetricsError(f"bad label set {{{block}}}", line)
        name, raw = m.group(1), m.group(2)
        if name in out:
            raise OpenMetricsError(f"label {name!r} appears twice in {{{block}}}", line)
        out[name] = _unescape(raw) if "\\" in raw else raw
        pos = m.end()
    return out


def _unescape(raw: str) -> str:
    return _UNESCAPE_RE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), raw)


def _split_series(text: str, line: int | None) -> tuple[str, dict[str, str]]:
    brace = text.find("{")
    if brace < 0:
        name, labels = text, {}
    else:
        if not text.endswith("}"):
            raise OpenMetricsError(
                f"cannot read sample {text!r}: every sample needs 'name{{labels}} value timestamp'",
                line,
            )
        name, labels = text[:brace], parse_labels(text[brace + 1 : -1], line)
    if not _NAME_RE.match(name):
        raise OpenMetricsError(
            f"bad metric name {name!r}: every sample needs 'name{{labels}} value timestamp'",
            line,
        )
    return name, labels


def _parse_comment(
    text: str, lineno: int, types: dict[str, str], helps: dict[str, str], units: dict[str, str]
) -> bool:
    """Handle a ``#`` line; returns True for ``# EOF``."""
    if text.rstrip() == "# EOF":
        return True
    parts = text.split(" ", 3)
    if len(parts) >= 3 and parts[1] in ("TYPE", "HELP", "UNIT"):
        fam = parts[2]
        rest = parts[3] if len(parts) > 3 else ""
        if parts[1] == "TYPE":
            types[fam] = rest.strip()
        elif parts[1] == "HELP":
            helps[fam] = _unescape(rest) if "\\" in rest else rest
        else:
            units[fam] = rest.strip()
        return False
    # Other comments are not OpenMetrics, but Prometheus text allows them: ignore.
    return False


def parse_openmetrics(data: bytes | str, require_eof: bool = True) -> Metrics:
    """Parse OpenMetrics text in which every sample carries a timestamp (seconds).

    Raises :class:`OpenMetricsError` (with the 1-based line) for a sample
    without a timestamp, millisecond timestamps, a bad value, bad labels,
    text after ``# EOF``, or a missing ``# EOF`` when ``require_eof``.
    """
    buf = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if not buf:
        if require_eof:
            raise OpenMetricsError("empty file; OpenMetrics text ends with '# EOF'")
        return Metrics((), has_eof=False)
    if not buf.endswith(b"\n"):
        buf += b"\n"
    arr = np.frombuffer(buf, dtype=np.uint8)
    ends = np.flatnonzero(arr == 10)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    # Strip a trailing \r (CRLF files).
    cr = (ends > starts) & (arr[np.maximum(ends - 1, 0)] == 13)
    ends = ends - cr.astype(ends.dtype)
    nonempty = ends > starts
    first = np.zeros(len(starts), dtype=np.uint8)
    first[nonempty] = arr[starts[nonempty]]
    is_comment = nonempty & (first == ord("#"))

    types: dict[str, str] = {}
    helps: dict[str, str] = {}
    units: dict[str, str] = {}
    eof_line: int | None = None
    for i in np.flatnonzero(is_comment):
        text = buf[starts[i] : ends[i]].decode("utf-8", "replace")
        if _parse_comment(text, int(i) + 1, types, helps, units):
            eof_line = int(i) + 1
            break
    is_sample = nonempty & ~is_comment
    if eof_line is not None:
        after = np.flatnonzero(nonempty[eof_line:])
        if len(after):
            raise OpenMetricsError("text after '# EOF'", eof_line + 1 + int(after[0]))
        is_sample[eof_line:] = False
    elif require_eof:
        raise OpenMetricsError(
            "missing '# EOF': OpenMetrics text must end with a '# EOF' line", len(starts)
        )

    idx = np.flatnonzero(is_sample)
    if len(idx) == 0:
        return Metrics((), types, helps, units, eof_line is not None)
    s_starts, s_ends = starts[idx], ends[idx]

    # Exemplars (' # {...}') and '#' inside label values: parse those lines slowly.
    hashes = np.flatnonzero(arr == ord("#"))
    slow = np.zeros(len(idx), dtype=bool)
    if len(hashes):
        pos = np.searchsorted(hashes, s_starts)
        inside = pos < len(hashes)
        inside[inside] = hashes[pos[inside]] < s_ends[inside]
        slow = inside

    spaces = np.flatnonzero(arr == 32)
    k = np.searchsorted(spaces, s_ends)  # spaces before each line's end
    sp1 = spaces[np.maximum(k - 1, 0)] if len(spaces) else np.zeros_like(k)
    sp2 = spaces[np.maximum(k - 2, 0)] if len(spaces) else np.zeros_like(k)
    bad = (k < 2) | (sp2 < s_starts) | (sp1 < s_starts) | (sp2 + 1 >= sp1) | (sp1 + 1 >= s_ends)
    fast = ~slow & ~bad
    # A line whose last-but-one space is inside the label block has no timestamp;
    # caught when its series text fails to parse (it would not end in '}').

    names: list[str] = []
    labelsets: list[dict[str, str]] = []
    ts_parts: list[npt.NDArray[np.float64]] = []
    val_parts: list[npt.NDArray[np.float64]] = []
    line_parts: list[npt.NDArray[np.int64]] = []
    codes_parts: list[npt.NDArray[np.int64]] = []

    f_idx = np.flatnonzero(fast)
    if len(f_idx):
        fs, f1, f2, fe = s_starts[f_idx], sp1[f_idx], sp2[f_idx], s_ends[f_idx]
        keys = [buf[a:b] for a, b in zip(fs.tolist(), f2.tolist(), strict=True)]
        codes, uniques = pd.factorize(np.array(keys, dtype=object))
        del keys
        vals, tss = _parse_numbers(arr, f2 + 1, fe, idx[f_idx])
        first_line = np.full(len(uniques), -1, dtype=np.int64)
        order = np.arange(len(codes))[::-1]
        first_line[codes[order]] = idx[f_idx][order] + 1
        for u, key in enumerate(uniques):
            name, labels = _split_series(key.decode("utf-8", "replace"), int(first_line[u]))
            names.append(name)
            labelsets.append(labels)
        ts_parts.append(tss)
        val_parts.append(vals)
        line_parts.append(idx[f_idx] + 1)
        codes_parts.append(codes.astype(np.int64))

    s_idx = np.flatnonzero(~fast)
    if len(s_idx):
        lookup: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {
            (n, tuple(sorted(lb.items()))): i
            for i, (n, lb) in enumerate(zip(names, labelsets, strict=True))
        }
        sl_codes, sl_ts, sl_vals, sl_lines = [], [], [], []
        for j in s_idx.tolist():
            lineno = int(idx[j]) + 1
            text = buf[s_starts[j] : s_ends[j]].decode("utf-8", "replace")
            name, labels, value, ts = _parse_line_slow(text, lineno)
            key = (name, tuple(sorted(labels.items())))
            code = lookup.get(key)
            if code is None:
                code = len(names)
                lookup[key] = code
                names.append(name)
                labelsets.append(labels)
            sl_codes.append(code)
            sl_ts.append(ts)
            sl_vals.append(value)
            sl_lines.append(lineno)
        ts_parts.append(np.array(sl_ts, dtype=np.float64))
        val_parts.append(np.array(sl_vals, dtype=np.float64))
        line_parts.append(np.array(sl_lines, dtype=np.int64))
        codes_parts.append(np.array(sl_codes, dtype=np.int64))

    all_ts = np.concatenate(ts_parts)
    all_vals = np.concatenate(val_parts)
    all_lines = np.concatenate(line_parts)
    all_codes = np.concatenate(codes_parts)
    big = all_ts > MS_THRESHOLD
    if big.any():
        raise OpenMetricsError(
            f"timestamp {all_ts[big][0]:.0f} looks like milliseconds; "
            "OpenMetrics timestamps are seconds (divide by 1000)",
            int(all_lines[big][0]),
        )
    # Sort by (series, ts); the stable sort keeps file order for equal timestamps.
    order = np.lexsort((all_ts, all_codes))
    all_codes, all_ts, all_vals = all_codes[order], all_ts[order], all_vals[order]
    bounds = np.flatnonzero(np.diff(all_codes)) + 1
    cuts = np.concatenate(([0], bounds, [len(all_codes)]))
    series: list[Series] = []
    for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True):
        c = int(all_codes[a])
        series.append(Series(names[c], labelsets[c], all_ts[a:b], all_vals[a:b]))
    return Metrics(tuple(series), types, helps, units, eof_line is not None)


def _parse_numbers(
    arr: npt.NDArray[np.uint8],
    begin: npt.NDArray[np.int64],
    end: npt.NDArray[np.int64],
    lines: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Parse 'value ts' for many lines at once with pandas' C reader."""
    # Gather the bytes [begin, end] (end = the newline) of every line into one buffer.
    marks = np.zeros(len(arr) + 1, dtype=np.int8)
    np.add.at(marks, begin, 1)
    np.add.at(marks, end + 1, -1)
    mask = np.cumsum(marks[:-1], dtype=np.int8) > 0
    chunk = arr[mask]
    # Lines ending in \r had their end moved back: make sure each row ends with \n.
    chunk = chunk.copy()
    chunk[np.cumsum(end - begin + 1) - 1] = 10
    frame = pd.read_csv(
        io.BytesIO(chunk.tobytes()),
        sep=" ",
        header=None,
        names=["v", "t"],
        dtype=str,
        engine="c",
        keep_default_na=False,
        na_filter=False,
    )
    vals = _to_float(frame["v"].to_numpy(dtype=object), lines, "value")
    tss = _to_float(frame["t"].to_numpy(dtype=object), lines, "timestamp")
    return vals, tss


_SPECIAL = {"NaN": math.nan, "+Inf": math.inf, "-Inf": -math.inf, "Inf": math.inf}


def _to_float(
    raw: npt.NDArray[np.object_], lines: npt.NDArray[np.int64], what: str
) -> npt.NDArray[np.float64]:
    try:
        return raw.astype(np.float64)
    except (ValueError, TypeError):
        pass
    out = np.empty(len(raw), dtype=np.float64)
    for i, text in enumerate(raw.tolist()):
        try:
            out[i] = _SPECIAL[text] if text in _SPECIAL else float(text)
        except (ValueError, TypeError):
            raise OpenMetricsError(f"bad {what} {text!r}", int(lines[i]) + 1) from None
    return out


def _parse_line_slow(text: str, lineno: int) -> tuple[str, dict[str, str], float, float]:
    """Parse one sample line with a full scanner (labels may hold spaces, '#', exemplars)."""
    pos = 0
    n = len(text)
    while pos < n and text[pos] not in "{ ":
        pos += 1
    name = text[:pos]
    labels: dict[str, str] = {}
    if pos < n and text[pos] == "{":
        j = pos + 1
        in_q = False
        while j < n:
            ch = text[j]
            if in_q:
                if ch == "\\":
                    j += 1
                elif ch == '"':
                    in_q = False
            elif ch == '"':
                in_q = True
            elif ch == "}":
                break
            j += 1
        if j >= n:
            raise OpenMetricsError(f"unterminated label set in {text!r}", lineno)
        labels = parse_labels(text[pos + 1 : j], lineno)
        pos = j + 1
    if not _NAME_RE.match(name):
        raise OpenMetricsError(f"bad metric name {name!r}", lineno)
    rest = text[pos:].split(" # ", 1)[0].split()
    if len(rest) < 2:
        raise OpenMetricsError(
            "sample has no timestamp; every sample in a bundle needs "
            "'name{labels} value timestamp' (seconds)",
            lineno,
        )
    if len(rest) > 2:
        raise OpenMetricsError(f"unexpected text after the timestamp in {text!r}", lineno)
    try:
        value = _SPECIAL[rest[0]] if rest[0] in _SPECIAL else float(rest[0])
    except ValueError:
        raise OpenMetricsError(f"bad value {rest[0]!r}", lineno) from None
    try:
        ts = float(rest[1])
    except ValueError:
        raise OpenMetricsError(f"bad timestamp {rest[1]!r}", lineno) from None
    return name, labels, value, ts


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class Family:
    """A metric family to write.

    ``samples`` are ``(sample_name, labels, ts, value)``; sample names carry
    their suffix (``_total``, ``_bucket``...).
    """

    name: str
    type: str
    samples: tuple[tuple[str, Mapping[str, str], float, float], ...]
    help: str = ""
    unit: str = ""


def format_value(value: float) -> str:
    """A float as OpenMetrics text (``NaN``, ``+Inf``, integers without ``.0``)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_sample(name: str, labels: Mapping[str, str], ts: float, value: float) -> str:
    """One sample line (with a trailing newline)."""
    if labels:
        inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
        return f"{name}{{{inner}}} {format_value(value)} {format_value(ts)}\n"
    return f"{name} {format_value(value)} {format_value(ts)}\n"


def _le_key(labels: Mapping[str, str]) -> float:
    for key in ("le", "quantile"):
        if key in labels:
            try:
                return float(labels[key])
            except ValueError:
                return math.inf
    return 0.0


def format_family(family: Family) -> str:
    """A family's ``# TYPE``/``# UNIT``/``# HELP`` lines and samples, sorted.

    Samples are ordered by series (labels without ``le``/``quantile``), then
    time, then suffix and bucket bound, so every point of a histogram stays
    together, as OpenMetrics asks.
    """
    out = [f"# TYPE {family.name} {family.type}\n"]
    if family.unit:
        out.append(f"# UNIT {family.name} {family.unit}\n")
    if family.help:
        out.append(f"# HELP {family.name} {_escape(family.help)}\n")

    def key(s: tuple[str, Mapping[str, str], float, float]) -> tuple[object, ...]:
        name, labels, ts, _ = s
        base = tuple(sorted((k, v) for k, v in labels.items() if k not in ("le", "quantile")))
        suffix = name[len(family.name) :]
        rank = _HIST_SUFFIXES.index(suffix) if suffix in _HIST_SUFFIXES else -1
        return (base, ts, rank, _le_key(labels))

    for name, labels, ts, value in sorted(family.samples, key=key):
        out.append(format_sample(name, labels, ts, value))
    return "".join(out)


def render(families: Iterable[Family], eof: bool = True) -> Iterator[str]:
    """Text chunks for ``families`` (one per family), then ``# EOF``."""
    for fam in families:
        yield format_family(fam)
    if eof:
        yield "# EOF\n"

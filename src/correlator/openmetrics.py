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


_TAIL = 48  # bytes searched backwards from a line's end for 'value timestamp'
_FIELD = 32  # widest value or timestamp read by the fast path
_CHUNK = 1 << 20  # lines per vectorised block (bounds memory)


def _hash_lines(buf: bytes, starts: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """Lines holding a '#' anywhere (comments, exemplars): found with bytes.find."""
    marks = np.zeros(len(starts), dtype=bool)
    pos = buf.find(b"#")
    hits: list[int] = []
    while pos >= 0:
        hits.append(pos)
        pos = buf.find(b"#", pos + 1)
    if hits:
        marks[np.searchsorted(starts, np.asarray(hits), side="right") - 1] = True
    return marks


def _tail_spaces(
    rows: npt.NDArray[np.uint8], starts: npt.NDArray[np.int64], ends: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Positions of the last two spaces of each line, and whether both were found.

    ``rows`` is a sliding-window view of the padded buffer: ``rows[p]`` holds
    the ``_TAIL`` bytes that end just before buffer position ``p``.
    """
    window = rows[ends][:, ::-1]  # window[:, j] is the byte at end - 1 - j
    is_sp = window == 32
    lens = ends - starts
    is_sp &= np.arange(_TAIL)[None, :] < lens[:, None]
    r = np.arange(len(ends))
    k1 = is_sp.argmax(axis=1)
    found1 = is_sp[r, k1]
    is_sp[r, k1] = False
    k2 = is_sp.argmax(axis=1)
    found2 = is_sp[r, k2]
    return ends - 1 - k1, ends - 1 - k2, found1 & found2


def _fixed_floats(
    rows: npt.NDArray[np.uint8], begin: npt.NDArray[np.int64], length: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64] | None:
    """Parse the byte ranges as floats at once (None when one does not parse).

    ``rows[p + _TAIL]`` starts with the ``_FIELD`` bytes at buffer position ``p``.
    """
    block = rows[begin + _TAIL][:, :_FIELD].copy()
    block[np.arange(_FIELD)[None, :] >= length[:, None]] = 0
    try:
        return block.view(f"S{_FIELD}").ravel().astype(np.float64)
    except ValueError:
        return None


def parse_openmetrics(data: bytes | str, require_eof: bool = True) -> Metrics:
    """Parse OpenMetrics text in which every sample carries a timestamp (seconds).

    Raises :class:`OpenMetricsError` (with the 1-based line) for a sample
    without a timestamp, millisecond timestamps, a bad value, bad labels,
    text after ``# EOF``, or a missing ``# EOF`` when ``require_eof``.
    """
    buf = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if not buf or buf.isspace():
        if require_eof:
            raise OpenMetricsError("empty file; OpenMetrics text ends with '# EOF'")
        return Metrics((), has_eof=False)
    if not buf.endswith(b"\n"):
        buf += b"\n"
    arr = np.frombuffer(buf, dtype=np.uint8)
    ends = np.flatnonzero(arr == 10).astype(np.int64)
    # Padded so that every line's tail window and every field stay in bounds;
    # rows[p] are the _TAIL bytes before padded position p (= buffer position p - _TAIL).
    padded = np.zeros(len(arr) + 2 * _TAIL, dtype=np.uint8)
    padded[_TAIL : _TAIL + len(arr)] = arr
    rows = np.lib.stride_tricks.sliding_window_view(padded, _TAIL)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    # Strip a trailing \r (CRLF files).
    cr = (ends > starts) & (arr[np.maximum(ends - 1, 0)] == 13)
    ends = ends - cr.astype(np.int64)
    nonempty = ends > starts
    has_hash = _hash_lines(buf, starts)
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

    names: list[str] = []
    labelsets: list[dict[str, str]] = []
    key_codes: dict[bytes, int] = {}
    ts_parts: list[npt.NDArray[np.float64]] = []
    val_parts: list[npt.NDArray[np.float64]] = []
    line_parts: list[npt.NDArray[np.int64]] = []
    codes_parts: list[npt.NDArray[np.int64]] = []
    slow_lines: list[int] = []

    for c0 in range(0, len(idx), _CHUNK):
        cidx = idx[c0 : c0 + _CHUNK]
        cs, ce = starts[cidx], ends[cidx]
        sp1, sp2, ok = _tail_spaces(rows, cs, ce)
        vlen, tlen = sp1 - sp2 - 1, ce - sp1 - 1
        ok &= ~has_hash[cidx] & (sp2 > cs) & (vlen > 0) & (tlen > 0)
        ok &= (vlen <= _FIELD) & (tlen <= _FIELD)
        fast = np.flatnonzero(ok)
        slow_lines.extend((cidx[~ok] + 1).tolist())
        if len(fast) == 0:
            continue
        vals = _fixed_floats(rows, sp2[fast] + 1, vlen[fast])
        tss = _fixed_floats(rows, sp1[fast] + 1, tlen[fast])
        if vals is None or tss is None:
            # Something like '+Inf' numpy cannot read, or a bad number: parse slowly.
            slow_lines.extend((cidx[fast] + 1).tolist())
            continue
        keys = [buf[a:b] for a, b in zip(cs[fast].tolist(), sp2[fast].tolist(), strict=True)]
        codes, uniques = pd.factorize(np.array(keys, dtype=object))
        del keys
        fast_lines = cidx[fast] + 1
        remap = np.empty(len(uniques), dtype=np.int64)
        first_at = np.zeros(len(uniques), dtype=np.int64)
        first_at[codes[::-1]] = np.arange(len(codes) - 1, -1, -1)  # last write wins
        for u, key in enumerate(uniques):
            code = key_codes.get(key)
            if code is None:
                lineno = int(fast_lines[first_at[u]])
                name, labels = _split_series(key.decode("utf-8", "replace"), lineno)
                code = key_codes[key] = len(names)
                names.append(name)
                labelsets.append(labels)
            remap[u] = code
        ts_parts.append(tss)
        val_parts.append(vals)
        line_parts.append(fast_lines)
        codes_parts.append(remap[codes])

    if slow_lines:
        lookup: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {
            (n, tuple(sorted(lb.items()))): i
            for i, (n, lb) in enumerate(zip(names, labelsets, strict=True))
        }
        sl_codes, sl_ts, sl_vals = [], [], []
        for lineno in slow_lines:
            text = buf[starts[lineno - 1] : ends[lineno - 1]].decode("utf-8", "replace")
            name, labels, value, ts = _parse_line_slow(text, lineno)
            key = (name, tuple(sorted(labels.items())))
            code = lookup.get(key)
            if code is None:
                code = lookup[key] = len(names)
                names.append(name)
                labelsets.append(labels)
            sl_codes.append(code)
            sl_ts.append(ts)
            sl_vals.append(value)
        ts_parts.append(np.array(sl_ts, dtype=np.float64))
        val_parts.append(np.array(sl_vals, dtype=np.float64))
        line_parts.append(np.array(slow_lines, dtype=np.int64))
        codes_parts.append(np.array(sl_codes, dtype=np.int64))

    all_ts = np.concatenate(ts_parts)
    all_vals = np.concatenate(val_parts)
    all_lines = np.concatenate(line_parts)
    all_codes = np.concatenate(codes_parts)
    big = all_ts > MS_THRESHOLD
    if big.any():
        first_bad = int(np.argmin(np.where(big, all_lines, np.iinfo(np.int64).max)))
        raise OpenMetricsError(
            f"timestamp {all_ts[first_bad]:.0f} looks like milliseconds; "
            "OpenMetrics timestamps are seconds (divide by 1000)",
            int(all_lines[first_bad]),
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
        value = float(rest[0])  # float() reads NaN, +Inf, -Inf
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

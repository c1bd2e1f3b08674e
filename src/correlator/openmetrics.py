"""OpenMetrics text with timestamps: a fast, lean reader and a writer.

The reader streams an exposition in blocks of a few megabytes and keeps the
samples *columnar*: one array of timestamps and one of values, ordered by
series (and by time within a series), with an offsets array; labels are
parsed once per distinct series. Per block, numpy finds the lines and their
last two spaces (``name{labels} value timestamp``), and pandas' C CSV reader
turns the fields into a categorical key and two float columns without a
Python object per sample. Blocks are tokenised on two threads (both release
the GIL); anything unusual in a block (exemplars, ``#`` in a label, CRLF
line ends, values pandas does not read) is parsed line by line, so what the
fast path accepts is exactly what the careful path accepts.

``keep`` (a predicate on sample names) drops the series nobody asked for as
early as possible: whole families whose every sample is unwanted are skipped
at the byte level, and single unwanted series are dropped per block. Memory
is about 16 bytes per kept sample plus a few blocks in flight.

The writer formats families the way ``promtool tsdb create-blocks-from
openmetrics`` accepts them: families grouped, each series' points in time
order, ``# EOF`` last.

Exception tree: malformed input raises :class:`OpenMetricsError` with a
1-based line number; :mod:`correlator.bundle` turns it into a
:class:`~correlator.errors.BundleError` naming the file.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import csv
import ctypes
import io
import itertools
import json
import math
import mmap
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

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
    "load_metrics",
    "parse_labels",
    "parse_openmetrics",
    "read_openmetrics",
    "render",
    "save_metrics",
    "trim_heap",
]

#: Timestamps above this are taken for milliseconds (1e11 s is the year 5138).
MS_THRESHOLD = 1e11

_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)', re.S)
_UNESCAPE_RE = re.compile(r"\\(.)", re.S)
_HIST_SUFFIXES = ("_bucket", "_count", "_sum", "_created", "_gcount", "_gsum")
_COUNTER_SUFFIXES = ("_total", "_created")
_SUMMARY_SUFFIXES = ("_count", "_sum", "_created")
#: Sample-name suffixes a family of each type may use (OpenMetrics).
_TYPE_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": _COUNTER_SUFFIXES,
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": _SUMMARY_SUFFIXES,
    "info": ("_info",),
    "stateset": (),
    "gauge": (),
    "unknown": (),
}

Float64s = npt.NDArray[np.float64]


class Readable(Protocol):
    """A binary stream ``read_openmetrics`` can read (files, ``gzip.open``, ``io.BytesIO``)."""

    def readinto(self, buffer: Any, /) -> int | None:
        """Fill ``buffer``; the number of bytes read (0 at the end)."""


Int64s = npt.NDArray[np.int64]


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
    ts: Float64s
    values: Float64s

    def get(self, label: str) -> str:
        """A label value, ``""`` when absent (PromQL semantics)."""
        if label == "__name__":
            return self.name
        return self.labels.get(label, "")


def _empty_f64() -> Float64s:
    return np.zeros(0, dtype=np.float64)


@dataclass(frozen=True, eq=False)
class Metrics:
    """A parsed exposition, one array pair per series, and the family types/help/units.

    Series ``i`` is named ``names[i]`` with ``labels[i]``; its points are
    ``times[i]`` and ``values[i]`` (time order; equal timestamps keep file
    order). Series are numbered in order of first appearance. Series scraped
    at the same instants share one (read-only) ``times`` array, so timestamps
    cost almost nothing and ``times[i] is times[j]`` tells that two series
    line up. :attr:`series` gives the same data as :class:`Series`.
    """

    names: tuple[str, ...] = ()
    labels: tuple[Mapping[str, str], ...] = ()
    times: tuple[Float64s, ...] = ()
    values: tuple[Float64s, ...] = ()
    types: Mapping[str, str] = field(default_factory=dict)
    help: Mapping[str, str] = field(default_factory=dict)
    units: Mapping[str, str] = field(default_factory=dict)
    has_eof: bool = True

    def __len__(self) -> int:
        return len(self.names)

    @property
    def sample_count(self) -> int:
        """Total number of samples over all series."""
        return sum(len(v) for v in self.values)

    @cached_property
    def series(self) -> tuple[Series, ...]:
        """Every series as a :class:`Series` (the arrays are shared, not copied)."""
        return tuple(
            Series(*parts)
            for parts in zip(self.names, self.labels, self.times, self.values, strict=True)
        )

    @cached_property
    def memo(self) -> dict[str, Any]:
        """Scratch space for readers of these metrics (e.g. evaluation plans)."""
        return {}

    @cached_property
    def index(self) -> Mapping[str, tuple[int, ...]]:
        """Series numbers by sample name."""
        out: dict[str, list[int]] = {}
        for i, name in enumerate(self.names):
            out.setdefault(name, []).append(i)
        return {k: tuple(v) for k, v in out.items()}

    def release_pages(self) -> None:
        """Hand back the resident pages of memory-mapped arrays (see :func:`load_metrics`).

        The data stays valid: the kernel reads pages back from the file (its
        page cache) when they are next touched. A reader calls this after a
        pass over the data so the process does not go on holding the whole
        file in its resident memory. Does nothing for arrays in memory.
        """
        seen: set[int] = set()
        for arrays in (self.values, self.times):
            for arr in arrays[:1] + arrays[-1:]:
                mapped = _mapping_of(arr)
                if mapped is not None and id(mapped) not in seen:
                    seen.add(id(mapped))
                    with contextlib.suppress(OSError, ValueError):  # closed; not supported
                        mapped.madvise(mmap.MADV_DONTNEED)

    def by_name(self) -> dict[str, list[Series]]:
        """Series grouped by sample name."""
        every = self.series
        return {name: [every[i] for i in ids] for name, ids in self.index.items()}

    def to_frame(self) -> pd.DataFrame:
        """A long frame: ``name``, ``labels`` (a hashable sorted tuple), ``ts``, ``value``."""
        if not self.names:
            return pd.DataFrame({"name": [], "labels": [], "ts": [], "value": []})
        lengths = [len(v) for v in self.values]
        keys = np.empty(len(self.names), dtype=object)
        for i, labels in enumerate(self.labels):
            keys[i] = tuple(sorted(labels.items()))
        return pd.DataFrame(
            {
                "name": np.repeat(np.array(self.names, dtype=object), lengths),
                "labels": np.repeat(keys, lengths),
                "ts": np.concatenate(self.times),
                "value": np.concatenate(self.values),
            }
        )


@dataclass(frozen=True)
class NameFilter:
    """Which sample names to keep: exact ``names`` or a full match of one of ``patterns``.

    Besides answering per name, it lets the reader skip a whole family at
    the byte level: a family ``F`` can be skipped when no wanted name starts
    with ``F`` and, for each pattern, a literal every match must contain
    (``literals``) does not occur in the family's text.
    """

    names: frozenset[str] = frozenset()
    patterns: tuple[str, ...] = ()

    @cached_property
    def _compiled(self) -> tuple[re.Pattern[str], ...]:
        return tuple(re.compile(p) for p in self.patterns)

    @cached_property
    def literals(self) -> tuple[bytes, ...] | None:
        """Per pattern, a literal its matches contain (``None``: some pattern has none)."""
        out = []
        for pattern in self.patterns:
            core = pattern.removeprefix("^").removesuffix("$")
            for lead in (".+", ".*"):
                core = core.removeprefix(lead)
            for tail in (".+", ".*"):
                core = core.removesuffix(tail)
            if not core or _has_meta(core):
                return None
            out.append(re.sub(r"\\(.)", r"\1", core).encode())
        return tuple(out)

    def __call__(self, name: str) -> bool:
        return name in self.names or any(p.fullmatch(name) for p in self._compiled)

    def may_start_with(self, prefix: str) -> bool:
        """Whether a wanted exact name starts with ``prefix``."""
        return any(n.startswith(prefix) for n in self.names)

    @property
    def key(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """A hashable identity (for caches)."""
        return tuple(sorted(self.names)), self.patterns


def _has_meta(text: str) -> bool:
    unescaped = re.sub(r"\\.", "", text)
    return any(ch in unescaped for ch in ".^$*+?{}[]|()")


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
    text: str, types: dict[str, str], helps: dict[str, str], units: dict[str, str]
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


_BLOCK = 8 << 20  # bytes read and tokenised at once (smaller blocks overlap better)
#: Values per slab the reader stores samples in (64 MiB: above malloc's largest mmap
#: threshold, so a slab is its own mapping and is handed back to the system when freed).
_SLAB = 8 << 20
_EMPTY, _COMMENT, _FAST, _SLOW = 0, 1, 2, 3
_DTYPES: Any = {"k": "category", "v": np.float64, "t": np.float64}


@dataclass
class _Tokens:
    """One block's lines: where they are, what they are, and the fast path's fields."""

    starts: Int64s
    ends: Int64s
    kind: npt.NDArray[np.int8]
    codes: npt.NDArray[np.int64]
    cats: list[str]
    values: Float64s
    ts: Float64s


def _hash_marks(buf: bytearray, starts: Int64s) -> npt.NDArray[np.bool_]:
    """Lines holding a '#' anywhere (comments, exemplars): found with bytearray.find."""
    marks = np.zeros(len(starts), dtype=bool)
    hits: list[int] = []
    pos = buf.find(b"#")
    while pos >= 0:
        hits.append(pos)
        pos = buf.find(b"#", pos + 1)
    if hits:
        marks[np.searchsorted(starts, np.asarray(hits, dtype=np.int64), side="right") - 1] = True
    return marks


_LOCAL = threading.local()


def _scratch(n: int) -> npt.NDArray[np.bool_]:
    """A boolean work array of length ``n``, kept per thread (no page faults per block)."""
    have: npt.NDArray[np.bool_] | None = getattr(_LOCAL, "mask", None)
    if have is None or len(have) < n:
        have = _LOCAL.mask = np.empty(max(n, _BLOCK + (1 << 16)), dtype=bool)
    return have[:n]


def _tokenize(buf: bytearray) -> _Tokens:
    """Split a block of whole lines; sample lines go through pandas' C reader when they can.

    Runs on a worker thread: numpy and pandas release the GIL. ``buf`` is
    modified in place (the fast lines' last two spaces become ``\\x01``) and
    restored if the fast path gives up.
    """
    arr = np.frombuffer(buf, dtype=np.uint8)
    mark = _scratch(len(arr))
    np.less_equal(arr, 32, out=mark)  # one pass; tabs and other controls are dropped next
    pos = np.flatnonzero(mark)
    byte = arr[pos]
    sep = (byte == 32) | (byte == 10)
    if not sep.all():
        pos, byte = pos[sep], byte[sep]
    k = np.flatnonzero(byte == 10)
    ends = pos[k]
    n = len(ends)
    starts = np.empty(n, dtype=np.int64)
    if n:
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
    spaces = np.diff(k, prepend=-1) - 1
    nonempty = ends > starts
    first = np.zeros(n, dtype=np.uint8)
    first[nonempty] = arr[starts[nonempty]]
    kind = np.full(n, _EMPTY, dtype=np.int8)
    comment = nonempty & (first == 35)
    kind[comment] = _COMMENT
    sample = nonempty & ~comment
    kind[sample] = _SLOW
    fast = sample & (spaces >= 2) & ~_hash_marks(buf, starts)
    sp1 = pos[np.maximum(k - 1, 0)]
    sp2 = pos[np.maximum(k - 2, 0)]
    fast &= (sp2 > starts) & (sp1 > sp2 + 1) & (ends > sp1 + 1)
    none = np.zeros(0, dtype=np.int64)
    nothing = _Tokens(starts, ends, kind, none, [], _empty_f64(), _empty_f64())
    rows = np.flatnonzero(fast)
    if len(rows) == 0 or buf.find(b"\x01") >= 0:
        return nothing
    s1, s2 = sp1[rows], sp2[rows]
    arr[s1] = 1
    arr[s2] = 1
    try:
        frame = pd.read_csv(
            io.BytesIO(buf),
            sep="\x01",
            header=None,
            names=["k", "v", "t"],
            dtype=_DTYPES,
            quoting=csv.QUOTE_NONE,
            lineterminator="\n",
            keep_default_na=False,
            na_values={"v": ["NaN", ""], "t": [""]},
            skip_blank_lines=False,
            engine="c",
            low_memory=False,
            encoding_errors="replace",
        )
    except (ValueError, TypeError, OverflowError, pd.errors.ParserError):
        frame = None
    arr[s1] = 32
    arr[s2] = 32
    if frame is None or len(frame) != n:
        return nothing
    kind[rows] = _FAST
    key = frame["k"]
    return _Tokens(
        starts,
        ends,
        kind,
        key.cat.codes.to_numpy().astype(np.int64),
        [str(c) for c in key.cat.categories],
        frame["v"].to_numpy(dtype=np.float64),
        frame["t"].to_numpy(dtype=np.float64),
    )


@dataclass
class _Block:
    """A block of whole lines ready to tokenise, with what was cut out of it."""

    buf: bytearray
    cut_at: Int64s
    """Kept-line indexes at which cut lines were removed (sorted)."""
    cut_before: Int64s
    """Cut lines before each of ``cut_at`` (cumulative)."""

    def line_of(self, rows: Int64s | int) -> Int64s:
        """Block-relative 0-based file line of kept rows."""
        r = np.asarray(rows, dtype=np.int64)
        if len(self.cut_at) == 0:
            return r
        i = np.searchsorted(self.cut_at, r, side="right") - 1
        return r + np.where(i >= 0, self.cut_before[np.maximum(i, 0)], 0)


def _line_heads(buf: bytearray, byte: int) -> list[int]:
    """Offsets of the lines of ``buf`` that start with ``byte`` (one-byte finds are fast)."""
    heads = []
    needle = bytes((byte,))
    pos = buf.find(needle)
    while pos >= 0:
        if pos == 0 or buf[pos - 1] == 10:
            heads.append(pos)
        pos = buf.find(needle, pos + 1)
    return heads


class _Skipper:
    """Cuts families nobody wants out of a block before it is tokenised."""

    def __init__(self, keep: NameFilter | None) -> None:
        self.keep = keep
        self.family: str | None = None
        self.ftype = ""
        self.eof = False
        self._wanted: dict[tuple[str, str], bool] = {}

    def _family_wanted(self, family: str, ftype: str) -> bool:
        key = (family, ftype)
        if key not in self._wanted:
            keep = self.keep
            assert keep is not None
            suffixes = _TYPE_SUFFIXES.get(ftype)
            self._wanted[key] = (
                suffixes is None
                or keep.literals is None
                or keep.may_start_with(family)
                or any(keep(family + s) for s in ("", *suffixes))
            )
        return self._wanted[key]

    def block(self, buf: bytearray) -> _Block:
        """Track families over ``buf``; remove runs of lines that are all unwanted samples."""
        nothing = np.zeros(0, dtype=np.int64)
        if self.keep is None or self.eof:
            return _Block(buf, nothing, nothing)
        heads = _line_heads(buf, ord("#"))
        cuts: list[tuple[int, int]] = []
        seg_start = 0
        for head in [*heads, len(buf)]:
            if head > seg_start and not self.eof and self._skippable(buf, seg_start, head):
                cuts.append((seg_start, head))
            if head == len(buf):
                break
            eol = buf.find(b"\n", head)
            text = bytes(buf[head:eol]).decode("utf-8", "replace")
            if text.rstrip() == "# EOF":
                self.eof = True
            parts = text.split(" ")
            if len(parts) >= 4 and parts[1] == "TYPE":
                self.family, self.ftype = parts[2], parts[3].strip()
            seg_start = eol + 1
        if not cuts:
            return _Block(buf, nothing, nothing)
        kept = bytearray()
        at, before = [], []
        prev, removed = 0, 0
        kept_lines = 0
        for a, b in cuts:
            kept_lines += buf.count(b"\n", prev, a)
            kept += buf[prev:a]
            removed += buf.count(b"\n", a, b)
            at.append(kept_lines)
            before.append(removed)
            prev = b
        kept += buf[prev:]
        return _Block(kept, np.asarray(at, dtype=np.int64), np.asarray(before, dtype=np.int64))

    def _skippable(self, buf: bytearray, a: int, b: int) -> bool:
        keep, family = self.keep, self.family
        if keep is None or family is None or self._family_wanted(family, self.ftype):
            return False
        lines = buf.count(b"\n", a, b)
        needle = b"\n" + family.encode()
        starting = (
            buf.count(needle, a - 1, b)
            if a
            else (int(buf.startswith(needle[1:])) + buf.count(needle, 0, b))
        )
        if starting != lines:
            return False
        return not any(buf.find(lit, a, b) >= 0 for lit in keep.literals or ())


class _Assembler:
    """Collects tokenised blocks in file order into a columnar :class:`Metrics`."""

    def __init__(self, keep: Callable[[str], bool] | None) -> None:
        self.keep = keep
        self.lines = 0
        self.eof_line: int | None = None
        self.types: dict[str, str] = {}
        self.helps: dict[str, str] = {}
        self.units: dict[str, str] = {}
        self.names: list[str] = []
        self.labelsets: list[dict[str, str]] = []
        self.keys: dict[str, int] = {}
        self.lookup: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
        self.vparts: list[list[tuple[int, int, int]]] = []
        """Per series, where its values are: ``(slab, start, end)`` in file order."""
        self.tparts: list[list[Float64s]] = []
        self.interned: dict[bytes, Float64s] = {}
        self.slabs: list[Float64s] = []
        self.used = 0
        """Values written into the last slab."""

    def _register(self, name: str, labels: dict[str, str]) -> int:
        if self.keep is not None and not self.keep(name):
            return -1
        ident = (name, tuple(sorted(labels.items())))
        gid = self.lookup.get(ident)
        if gid is None:
            gid = self.lookup[ident] = len(self.names)
            self.names.append(name)
            self.labelsets.append(labels)
            self.vparts.append([])
            self.tparts.append([])
        return gid

    def _key(self, key: str, line: int) -> int:
        gid = self.keys.get(key)
        if gid is None:
            if self.keep is not None:
                brace = key.find("{")
                if not self.keep(key if brace < 0 else key[:brace]):
                    self.keys[key] = -1
                    return -1
            name, labels = _split_series(key, line)
            gid = self.keys[key] = self._register(name, labels)
        return gid

    def feed(self, block: _Block, tok: _Tokens) -> None:
        """Add one block (blocks must come in file order)."""
        buf, kind = block.buf, tok.kind
        n = len(kind)
        base = self.lines + 1

        def lineno(row: int) -> int:
            return base + int(block.line_of(row))

        if self.eof_line is not None:
            after = np.flatnonzero(kind != _EMPTY)
            if len(after):
                raise OpenMetricsError("text after '# EOF'", lineno(int(after[0])))
        cut = n
        for i in np.flatnonzero(kind == _COMMENT).tolist():
            text = bytes(buf[tok.starts[i] : tok.ends[i]]).decode("utf-8", "replace")
            if _parse_comment(text, self.types, self.helps, self.units):
                self.eof_line = lineno(i)
                after = np.flatnonzero(kind[i + 1 :] != _EMPTY)
                if len(after):
                    raise OpenMetricsError("text after '# EOF'", lineno(i + 1 + int(after[0])))
                cut = i
                break
        kinds = kind[:cut]
        parts_rows: list[Int64s] = []
        parts_gid: list[Int64s] = []
        parts_ts: list[Float64s] = []
        parts_val: list[Float64s] = []
        fast = np.flatnonzero(kinds == _FAST)
        slow = np.flatnonzero(kinds == _SLOW).tolist()
        # Series are registered (numbered, checked) in file order, fast and slow lines alike.
        heads: list[tuple[int, int]] = []  # (row, category code) or (row, -1 - slow index)
        ncat = len(tok.cats)
        cat_gid = np.full(ncat, -1, dtype=np.int64)
        if len(fast):
            codes = tok.codes[fast]
            first = np.full(ncat, -1, dtype=np.int64)
            first[codes[::-1]] = fast[::-1]
            present = np.flatnonzero(first >= 0)
            heads = list(zip(first[present].tolist(), present.tolist(), strict=True))
        heads += [(row, -1 - k) for k, row in enumerate(slow)]
        heads.sort()
        slow_gid = [0] * len(slow)
        slow_ts = np.empty(len(slow), dtype=np.float64)
        slow_val = np.empty(len(slow), dtype=np.float64)
        for row, ref in heads:
            if ref >= 0:
                cat_gid[ref] = self._key(tok.cats[ref], lineno(row))
                continue
            text = bytes(buf[tok.starts[row] : tok.ends[row]]).decode("utf-8", "replace")
            name, labels, one_value, one_ts = _parse_line_slow(text, lineno(row))
            k = -1 - ref
            slow_gid[k] = self._register(name, labels)
            slow_ts[k], slow_val[k] = one_ts, one_value
        if len(fast):
            parts_rows.append(fast)
            parts_gid.append(cat_gid[tok.codes[fast]])
            parts_ts.append(tok.ts[fast])
            parts_val.append(tok.values[fast])
        if slow:
            parts_rows.append(np.asarray(slow, dtype=np.int64))
            parts_gid.append(np.asarray(slow_gid, dtype=np.int64))
            parts_ts.append(slow_ts)
            parts_val.append(slow_val)
        self.lines += n + (int(block.cut_before[-1]) if len(block.cut_before) else 0)
        if not parts_rows:
            return
        rows = np.concatenate(parts_rows)
        gid = np.concatenate(parts_gid)
        ts = np.concatenate(parts_ts)
        val = np.concatenate(parts_val)
        if len(parts_rows) > 1:
            order = np.argsort(rows, kind="stable")
            rows, gid, ts, val = rows[order], gid[order], ts[order], val[order]
        kept = gid >= 0
        big = kept & (ts > MS_THRESHOLD)
        if big.any():
            j = int(np.argmax(big))
            raise OpenMetricsError(
                f"timestamp {ts[j]:.0f} looks like milliseconds; "
                "OpenMetrics timestamps are seconds (divide by 1000)",
                lineno(int(rows[j])),
            )
        if not kept.all():
            gid, ts, val = gid[kept], ts[kept], val[kept]
        if len(gid):
            self._store(gid, ts, val)

    def _intern(self, ts: Float64s) -> Float64s:
        """One shared read-only array per distinct timestamp sequence."""
        key = ts.tobytes()
        have = self.interned.get(key)
        if have is None:
            have = self.interned[key] = ts.copy() if ts.base is not None else ts
            have.flags.writeable = False
        return have

    def _slab(self, n: int) -> tuple[int, Float64s]:
        """A slab with room for ``n`` more values, and where they go in it."""
        if not self.slabs or self.used + n > len(self.slabs[-1]):
            self.slabs.append(np.empty(max(n, _SLAB), dtype=np.float64))
            self.used = 0
        at = self.used
        self.used += n
        return at, self.slabs[-1]

    def _store(self, gid: Int64s, ts: Float64s, val: Float64s) -> None:
        """Append a block's samples to their series (file order kept within a series).

        The values go, sorted by series, into the current slab: a block's last series
        and the next block's first (the same series, in a file sorted by series) are
        then side by side, and :meth:`finish` hands out slices of the slab.
        """
        order = np.argsort(gid, kind="stable")
        gid, ts = gid[order], ts[order]
        at, slab = self._slab(len(gid))
        slab[at : at + len(gid)] = val[order]
        heads = np.flatnonzero(gid[1:] != gid[:-1]) + 1
        bounds = [0, *heads.tolist(), len(gid)]
        gids = gid[bounds[:-1]].tolist()
        vparts, tparts, intern = self.vparts, self.tparts, self._intern
        k = len(self.slabs) - 1
        for g, a, b in zip(gids, bounds[:-1], bounds[1:], strict=True):
            vparts[g].append((k, at + a, at + b))
            tparts[g].append(intern(ts[a:b]))

    def _values(self, parts: list[tuple[int, int, int]]) -> Float64s:
        """A series' values: a slice of a slab when its parts lie end to end in one."""
        k, start, end = parts[0]
        for kk, a, b in parts[1:]:
            if kk != k or a != end:
                slabs = self.slabs
                return np.concatenate([slabs[s][a:b] for s, a, b in parts])
            end = b
        return self.slabs[k][start:end]

    def finish(self, require_eof: bool) -> Metrics:
        """Check ``# EOF`` and join each series' parts (time order within each)."""
        if self.eof_line is None and require_eof:
            if self.lines == 0:
                raise OpenMetricsError("empty file; OpenMetrics text ends with '# EOF'")
            raise OpenMetricsError(
                "missing '# EOF': OpenMetrics text must end with a '# EOF' line", self.lines
            )
        joined: dict[tuple[int, ...], Float64s] = {}
        ordered: dict[int, bool] = {}
        times: list[Float64s] = []
        values: list[Float64s] = []
        empty = _empty_f64()
        empty.flags.writeable = False
        if self.slabs and self.used <= len(self.slabs[-1]) // 2:
            # A small exposition (or a big one's last few blocks) need not hold a whole slab.
            self.slabs[-1] = self.slabs[-1][: self.used].copy()
        for g in range(len(self.names)):
            tp, vp = self.tparts[g], self.vparts[g]
            self.tparts[g], self.vparts[g] = [], []
            if not tp:
                ts, val = empty, empty
            elif len(tp) == 1:
                ts, val = tp[0], self._values(vp)
            else:
                key = tuple(id(t) for t in tp)
                ts = joined.get(key)  # type: ignore[assignment]
                if ts is None:
                    ts = joined[key] = self._intern(np.concatenate(tp))
                val = self._values(vp)
            sorted_ = ordered.get(id(ts))
            if sorted_ is None:
                sorted_ = ordered[id(ts)] = bool(np.all(ts[1:] >= ts[:-1]))
            if not sorted_:
                order = np.argsort(ts, kind="stable")
                ts, val = self._intern(ts[order]), val[order]
            val.flags.writeable = False
            times.append(ts)
            values.append(val)
        self.interned.clear()
        self.slabs.clear()  # the series' values hold the slabs they are slices of
        return Metrics(
            tuple(self.names),
            tuple(self.labelsets),
            tuple(times),
            tuple(values),
            self.types,
            self.helps,
            self.units,
            self.eof_line is not None,
        )


def _blocks(stream: Readable, size: int) -> Iterator[bytearray]:
    """Whole-line blocks of about ``size`` bytes, each ending with a newline."""
    carry = b""
    eof = False
    while not eof:
        buf = bytearray(size + len(carry))
        buf[: len(carry)] = carry
        got = len(carry)
        with memoryview(buf) as view:
            while got < len(buf):
                n = stream.readinto(view[got:])
                if not n:
                    eof = True
                    break
                got += n
        del buf[got:]
        if eof:
            if not buf:
                return
            if not buf.endswith(b"\n"):
                buf += b"\n"  # the last line may lack its newline
        cut = buf.rfind(b"\n")
        if cut < 0:
            carry = bytes(buf)
            continue
        carry = bytes(buf[cut + 1 :])
        del buf[cut + 1 :]
        if buf.find(b"\r") >= 0:  # CRLF line ends
            buf = bytearray(buf.replace(b"\r\n", b"\n"))
        yield buf


def read_openmetrics(
    stream: Readable,
    require_eof: bool = True,
    keep: NameFilter | Callable[[str], bool] | None = None,
    threads: int = 2,
    block_size: int = _BLOCK,
) -> Metrics:
    """Read OpenMetrics text with timestamps from a binary stream, block by block.

    ``keep`` selects sample names (others are skipped, without checking
    them); a :class:`NameFilter` also lets whole families be skipped unread.
    ``threads`` tokenise blocks concurrently. Raises :class:`OpenMetricsError`
    (with the 1-based line) for a sample without a timestamp, millisecond
    timestamps, a bad value, bad labels, text after ``# EOF``, or a missing
    ``# EOF`` when ``require_eof``.
    """
    asm = _Assembler(keep)
    skipper = _Skipper(keep if isinstance(keep, NameFilter) else None)
    read = 0
    if threads <= 1:
        for raw in _blocks(stream, block_size):
            read += len(raw)
            block = skipper.block(raw)
            asm.feed(block, _tokenize(block.buf))
    else:
        with cf.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="openmetrics") as pool:
            inflight: list[tuple[_Block, cf.Future[_Tokens]]] = []
            try:
                for raw in _blocks(stream, block_size):
                    read += len(raw)
                    block = skipper.block(raw)
                    inflight.append((block, pool.submit(_tokenize, block.buf)))
                    if len(inflight) > threads:
                        done, fut = inflight.pop(0)
                        asm.feed(done, fut.result())
                while inflight:
                    done, fut = inflight.pop(0)
                    asm.feed(done, fut.result())
            finally:
                for _, fut in inflight:
                    fut.cancel()
    metrics = asm.finish(require_eof)
    if read >= _TRIM_AFTER:
        del asm, skipper
        trim_heap()
    return metrics


#: Text read after which the reader hands malloc's free memory back (see :func:`trim_heap`).
_TRIM_AFTER = 64 << 20


def trim_heap() -> None:
    """Give the memory malloc holds free back to the system (glibc's ``malloc_trim``).

    A big parse frees its blocks' buffers and temporaries (on the worker
    threads' arenas too) between long-lived objects; malloc keeps those pages
    resident for reuse, and what the engine allocates next mostly does not
    reuse them. Elsewhere (no glibc) this does nothing.
    """
    with contextlib.suppress(Exception):
        trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
        if trim is not None:
            trim(0)


def parse_openmetrics(
    data: bytes | str,
    require_eof: bool = True,
    keep: NameFilter | Callable[[str], bool] | None = None,
) -> Metrics:
    """Parse OpenMetrics text in which every sample carries a timestamp (seconds).

    Same as :func:`read_openmetrics` on the text in memory.
    """
    buf = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if not buf.strip():
        if require_eof:
            raise OpenMetricsError("empty file; OpenMetrics text ends with '# EOF'")
        return Metrics(has_eof=False)
    threads = 2 if len(buf) > 2 * _BLOCK else 1
    return read_openmetrics(io.BytesIO(buf), require_eof, keep, threads=threads)


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


# --------------------------------------------------------------------------- saving parsed


#: Version of the layout :func:`save_metrics` writes (bump when it changes).
SAVED_FORMAT = 1
_SAVED_FILES = ("values.npy", "offsets.npy", "times.npy", "time_offsets.npy", "time_of.npy")


def _write_npy(
    path: Path, parts: Iterable[npt.NDArray[Any]] | npt.NDArray[Any], total: int, dtype: Any
) -> None:
    """Write arrays one after the other as one ``.npy`` file (no joined copy in memory)."""
    with path.open("wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": (total,)}
        )
        if isinstance(parts, np.ndarray):
            parts = [parts]
        for part in parts:
            fh.write(np.ascontiguousarray(part, dtype=dtype).data)


def save_metrics(metrics: Metrics, folder: str | Path) -> None:
    """Write parsed metrics into ``folder`` (existing) for :func:`load_metrics`.

    The layout is columnar: every series' values in one ``.npy`` file with an
    offsets array, every distinct timestamp array once (with, per series,
    which one it uses), and names, labels and family metadata in JSON.
    """
    out = Path(folder)
    n = len(metrics)
    which: dict[int, int] = {}
    distinct: list[Float64s] = []
    time_of = np.empty(n, dtype=np.int64)
    for i, ts in enumerate(metrics.times):
        k = which.get(id(ts))
        if k is None:
            k = which[id(ts)] = len(distinct)
            distinct.append(ts)
        time_of[i] = k
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum([len(v) for v in metrics.values], out=offsets[1:])
    toffsets = np.zeros(len(distinct) + 1, dtype=np.int64)
    np.cumsum([len(t) for t in distinct], out=toffsets[1:])
    _write_npy(out / "values.npy", metrics.values, int(offsets[-1]), np.float64)
    _write_npy(out / "offsets.npy", offsets, len(offsets), np.int64)
    _write_npy(out / "times.npy", distinct, int(toffsets[-1]), np.float64)
    _write_npy(out / "time_offsets.npy", toffsets, len(toffsets), np.int64)
    _write_npy(out / "time_of.npy", time_of, n, np.int64)
    meta = {
        "format": SAVED_FORMAT,
        "names": list(metrics.names),
        "labels": [dict(labels) for labels in metrics.labels],
        "types": dict(metrics.types),
        "help": dict(metrics.help),
        "units": dict(metrics.units),
        "has_eof": metrics.has_eof,
    }
    (out / "metrics.json").write_text(json.dumps(meta, separators=(",", ":")), encoding="utf-8")


def _mapping_of(arr: npt.NDArray[Any]) -> mmap.mmap | None:
    """The ``mmap`` behind a (view of a) memory-mapped array, if any."""
    base: Any = arr
    while base is not None:
        if isinstance(base, mmap.mmap):
            return base if hasattr(mmap, "MADV_DONTNEED") else None
        base = getattr(base, "_mmap", None) or getattr(base, "base", None)
    return None


def _load_npy(path: Path, dtype: Any, mmap: bool) -> npt.NDArray[Any]:
    arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    if arr.dtype != np.dtype(dtype) or arr.ndim != 1:
        raise ValueError(f"{path.name}: expected a 1-d {np.dtype(dtype)} array")
    plain: npt.NDArray[Any] = arr.view(np.ndarray)
    plain.flags.writeable = False
    return plain


def _check_offsets(offsets: Int64s, length: int, what: str) -> None:
    if len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != length:
        raise ValueError(f"{what}: offsets do not span the data")
    if len(offsets) > 1 and bool((np.diff(offsets) < 0).any()):
        raise ValueError(f"{what}: offsets go backwards")


def _str_map(obj: Any) -> dict[str, str]:
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in obj.items()
    ):
        raise ValueError("expected an object of strings")
    return obj


def load_metrics(folder: str | Path, mmap: bool = True) -> Metrics:
    """Metrics written by :func:`save_metrics` (arrays memory-mapped when ``mmap``).

    Every array is checked against the others; anything inconsistent (a
    truncated or edited file) raises ``ValueError`` or ``OSError``.
    """
    src = Path(folder)
    meta = json.loads((src / "metrics.json").read_text(encoding="utf-8"))
    if not isinstance(meta, dict) or meta.get("format") != SAVED_FORMAT:
        raise ValueError("metrics.json: unknown format")
    names, labels = meta["names"], meta["labels"]
    if not isinstance(names, list) or not isinstance(labels, list) or len(names) != len(labels):
        raise ValueError("metrics.json: names and labels do not match")
    if not all(isinstance(x, str) for x in names):
        raise ValueError("metrics.json: names must be strings")
    labelsets = tuple(_str_map(x) for x in labels)
    n = len(names)
    values = _load_npy(src / "values.npy", np.float64, mmap)
    offsets = _load_npy(src / "offsets.npy", np.int64, False)
    times = _load_npy(src / "times.npy", np.float64, mmap)
    toffsets = _load_npy(src / "time_offsets.npy", np.int64, False)
    time_of = _load_npy(src / "time_of.npy", np.int64, False)
    if len(offsets) != n + 1 or len(time_of) != n:
        raise ValueError("offsets or time_of do not match the series")
    _check_offsets(offsets, len(values), "values")
    _check_offsets(toffsets, len(times), "times")
    k = len(toffsets) - 1
    if n and (int(time_of.min()) < 0 or int(time_of.max()) >= k):
        raise ValueError("time_of points outside the timestamp arrays")
    if n and not np.array_equal(np.diff(offsets), np.diff(toffsets)[time_of]):
        raise ValueError("a series does not have as many values as timestamps")
    bounds = toffsets.tolist()
    distinct = [times[a:b] for a, b in itertools.pairwise(bounds)]
    vb = offsets.tolist()
    return Metrics(
        tuple(names),
        labelsets,
        tuple(distinct[k] for k in time_of.tolist()),
        tuple(values[a:b] for a, b in itertools.pairwise(vb)),
        _str_map(meta.get("types", {})),
        _str_map(meta.get("help", {})),
        _str_map(meta.get("units", {})),
        bool(meta.get("has_eof", True)),
    )


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

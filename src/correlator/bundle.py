"""Scenario bundles: read, write and validate one incident's telemetry on disk.

The format is described in ``scenario-bundle.md`` (``correlator-scenario/1``)::

    <name>/
      scenario.json        required
      metrics.om[.gz]      required: OpenMetrics text with timestamps, ending in # EOF
      logs.otlp.jsonl[.gz] optional: OTLP/JSON ExportLogsServiceRequest per line
      traces.otlp.jsonl[.gz] optional: OTLP/JSON ExportTraceServiceRequest per line
      topology.json        optional
      catalog.json         optional

Every problem in a bundle is a :class:`~correlator.errors.BundleError` naming
the file, the line (when there is one) and what to fix; never a traceback.
``scenario.json`` is checked when the bundle is read; the data files are
parsed (and checked) the first time they are asked for, then cached: in
memory for the bundle's lifetime, and on disk (see :func:`cache_dir`) so the
next process skips the parse. Parsed metrics, once on disk, are read back
from there (memory-mapped) by the process that parsed them too, as the next
process would read them. ``CORRELATOR_CACHE_DIR=`` (empty) turns the disk
cache off.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
import pandas as pd

from correlator.alerts import AlertFormatError
from correlator.alerts import parse_alert as parse_json_alert
from correlator.catalog import Catalog, default_catalog
from correlator.errors import BundleError, ConfigError, CorrelatorError, UserInputError
from correlator.fingerprint import alert_fingerprint
from correlator.model import LOG_COLUMNS, SPAN_COLUMNS, Alert, parse_time
from correlator.openmetrics import (
    Metrics,
    NameFilter,
    OpenMetricsError,
    load_metrics,
    read_openmetrics,
    save_metrics,
    trim_heap,
)
from correlator.otlp import LogCollector, OtlpError, SpanCollector

__all__ = [
    "CACHE_ENV",
    "CATALOG_FILE",
    "FORMAT",
    "LOGS_FILE",
    "METRICS_FILE",
    "MIN_BASELINE",
    "SCENARIO_FILE",
    "TOPOLOGY_FILE",
    "TRACES_FILE",
    "Bundle",
    "cache_dir",
    "find_bundles",
    "parse_alert",
    "prune_cache",
    "read_bundle",
    "validate_bundle",
    "write_bundle",
]

FORMAT = "correlator-scenario/1"
SCENARIO_FILE = "scenario.json"
METRICS_FILE = "metrics.om"
LOGS_FILE = "logs.otlp.jsonl"
TRACES_FILE = "traces.otlp.jsonl"
TOPOLOGY_FILE = "topology.json"
CATALOG_FILE = "catalog.json"
#: Normal behaviour a bundle's window should hold before the fault (seconds). Writers aim
#: for it; readers accept less (a short baseline is a gap in the report, never a refusal).
MIN_BASELINE = 30 * 60
_NODE_KINDS = ("service", "database", "cache", "queue", "external")


# --------------------------------------------------------------------------- writing


def _open_write(path: Path, compress: bool) -> IO[str]:
    if compress:
        return gzip.open(path, "wt", encoding="utf-8", compresslevel=6)
    return path.open("w", encoding="utf-8")


def _place(dest: Path, name: str, compress: bool) -> Path:
    """The path to write ``name`` to; removes the other (plain/gz) variant."""
    plain, gz = dest / name, dest / (name + ".gz")
    target, other = (gz, plain) if compress else (plain, gz)
    if other.exists():
        other.unlink()
    return target


def write_bundle(
    dest: str | Path,
    scenario: Mapping[str, Any],
    metrics_lines: Iterable[str],
    logs: Iterable[Mapping[str, Any]] | None = None,
    traces: Iterable[Mapping[str, Any]] | None = None,
    topology: Mapping[str, Any] | None = None,
    catalog: Mapping[str, Any] | None = None,
    compress: bool = False,
) -> Path:
    """Write a bundle folder at ``dest`` and return its path.

    ``metrics_lines`` are OpenMetrics text chunks written in order (``# EOF``
    is appended when the text does not end with it); ``logs`` and ``traces``
    are ``ExportLogsServiceRequest`` / ``ExportTraceServiceRequest`` dicts,
    one per line. ``compress`` gzips the three data files. ``scenario`` gets
    ``"format": "correlator-scenario/1"`` when it has no ``format``.
    """
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    doc = dict(scenario)
    doc.setdefault("format", FORMAT)
    (out / SCENARIO_FILE).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")

    with _open_write(_place(out, METRICS_FILE, compress), compress) as fh:
        tail = ""
        for chunk in metrics_lines:
            if not chunk:
                continue
            fh.write(chunk)
            tail = (tail + chunk)[-64:]
        stripped = tail.rstrip()
        if not (stripped == "# EOF" or stripped.endswith("\n# EOF")):
            if tail and not tail.endswith("\n"):
                fh.write("\n")
            fh.write("# EOF\n")
        elif not tail.endswith("\n"):
            fh.write("\n")

    for name, items in ((LOGS_FILE, logs), (TRACES_FILE, traces)):
        if items is None:
            for stale in (out / name, out / (name + ".gz")):
                if stale.exists():
                    stale.unlink()
            continue
        with _open_write(_place(out, name, compress), compress) as fh:
            for item in items:
                fh.write(json.dumps(item, separators=(",", ":")))
                fh.write("\n")

    for name, obj in ((TOPOLOGY_FILE, topology), (CATALOG_FILE, catalog)):
        path = out / name
        if obj is None:
            if path.exists():
                path.unlink()
            continue
        path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    return out


# --------------------------------------------------------------------------- parse cache

#: Environment variable naming the parse cache folder; empty turns the cache off.
CACHE_ENV = "CORRELATOR_CACHE_DIR"
#: Data files smaller than this (gzip files count five times) are parsed every time.
CACHE_MIN_BYTES = 2 << 20
#: The cache is pruned to this size, least recently used entries first.
CACHE_MAX_BYTES = 4 << 30
_CACHE_FORMAT = 1
_ENTRY_FILE = "entry.json"
_FRAME_FILE = "frame.json"
_KINDS = ("metrics", "logs", "spans")
_STALE_TMP = 3600.0
_log = logging.getLogger("correlator.cache")
T = TypeVar("T")


def cache_dir() -> Path | None:
    """The folder parsed data files are kept in between runs (``None``: no cache).

    ``CORRELATOR_CACHE_DIR`` names it (empty: no cache); else
    ``$XDG_CACHE_HOME/correlator``, else ``~/.cache/correlator``. An entry is
    keyed by the data file's path, size, times and inode, the name filter and
    the parser's code, so a changed file (or parser) is parsed again; a
    corrupt, missing or unwritable cache only costs the parse.
    """
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return Path(value).expanduser() if value.strip() else None
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "correlator"
    try:
        return Path.home() / ".cache" / "correlator"
    except RuntimeError:  # no home folder
        return None


@functools.cache
def _code_version() -> str:
    """A digest of the code that parses data files: new code, new entries."""
    from correlator import __version__, openmetrics, otlp

    digest = hashlib.sha256(f"{__version__} {np.__version__} {pd.__version__}".encode())
    for path in (openmetrics.__file__, otlp.__file__, __file__):
        try:
            digest.update(Path(str(path)).read_bytes())
        except (OSError, TypeError):
            digest.update(str(path).encode())
    return f"{_CACHE_FORMAT}-{digest.hexdigest()[:16]}"


def _identity(source: Path, kind: str, extra: Any) -> dict[str, Any]:
    """What a cache entry stands for (JSON-normal, so it compares with a stored one)."""
    st = source.stat()
    ident = {
        "kind": kind,
        "path": str(source.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
        "inode": st.st_ino,
        "device": st.st_dev,
        "extra": extra,
        "code": _code_version(),
    }
    normal: dict[str, Any] = json.loads(json.dumps(ident, sort_keys=True))
    return normal


def _entry_name(ident: Mapping[str, Any]) -> str:
    text = json.dumps(ident, sort_keys=True).encode()
    return f"{ident['kind']}-{hashlib.sha256(text).hexdigest()[:40]}"


def _is_entry(path: Path) -> bool:
    kind, _, digest = path.name.partition("-")
    return kind in _KINDS and len(digest) == 40 and all(c in "0123456789abcdef" for c in digest)


def _worth_caching(source: Path) -> bool:
    try:
        size = source.stat().st_size
    except OSError:
        return False
    return size * (5 if source.suffix == ".gz" else 1) >= CACHE_MIN_BYTES


def _cached(
    source: Path,
    kind: str,
    extra: Any,
    parse: Callable[[], T],
    save: Callable[[T, Path], None],
    load: Callable[[Path], T],
    reload: bool = False,
) -> T:
    """``parse()``, or what an earlier parse of the same file left in the cache.

    Never fails because of the cache: an entry that cannot be read is
    removed and the file parsed; an entry that cannot be written is skipped.
    ``reload``: once a parse is stored, return what ``load`` reads back from
    the entry rather than the parse itself (for values ``load`` maps from the
    file instead of reading into memory: the parse's memory is handed back,
    and the process then holds what a later process reading the cache would).
    """
    root = cache_dir()
    if root is None or not _worth_caching(source):
        return parse()
    try:
        ident = _identity(source, kind, extra)
    except (OSError, ValueError):
        return parse()
    entry = root / _entry_name(ident)
    try:
        found = entry.is_dir()
    except OSError:  # e.g. a cache folder this user may not read
        found = False
    if found:
        try:
            value = load(entry)
        except Exception as exc:  # corrupt, truncated or foreign: parse again
            _log.debug("cache entry %s unreadable (%s); parsing %s", entry, exc, source)
            shutil.rmtree(entry, ignore_errors=True)
        else:
            _touch(entry)
            return value
    value = parse()
    try:
        if _identity(source, kind, extra) != ident:  # the file changed meanwhile
            return value
        _store(root, entry, ident, value, save)
    except Exception as exc:  # unwritable, full disk, value not cacheable
        _log.debug("cannot cache %s in %s: %s", source, root, exc)
        return value
    if reload:
        try:
            value = load(entry)
        except Exception as exc:  # e.g. pruned meanwhile: keep the parse
            _log.debug("cannot read back cache entry %s: %s", entry, exc)
        else:
            trim_heap()  # the parse is freed: hand back the pages it leaves free
    return value


def _touch(entry: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(entry)


def _store(
    root: Path, entry: Path, ident: Mapping[str, Any], value: T, save: Callable[[T, Path], None]
) -> None:
    """Write an entry into a temporary folder, then rename it into place (atomic)."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        save(value, tmp)
        (tmp / _ENTRY_FILE).write_text(json.dumps(ident, sort_keys=True), encoding="utf-8")
        os.rename(tmp, entry)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    prune_cache(root, keep=entry)


def _entry_valid(entry: Path) -> bool:
    """Whether an entry's data file still exists unchanged (and the parser is the same)."""
    try:
        ident = json.loads((entry / _ENTRY_FILE).read_text(encoding="utf-8"))
        return bool(_identity(Path(ident["path"]), ident["kind"], ident["extra"]) == ident)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _size(folder: Path) -> int:
    total = 0
    for f in folder.iterdir():
        with contextlib.suppress(OSError):
            total += f.stat().st_size
    return total


def prune_cache(root: Path, keep: Path | None = None, limit: int | None = None) -> None:
    """Drop entries whose data file changed or is gone, then the least recently used
    ones until the cache holds at most ``limit`` bytes (default :data:`CACHE_MAX_BYTES`).

    Only entries this module wrote are touched, whatever else the folder holds.
    """
    limit = CACHE_MAX_BYTES if limit is None else limit
    now = time.time()
    live: list[tuple[float, int, Path]] = []
    total = 0
    for child in root.iterdir():
        try:
            if child.name.startswith(".tmp-") and child.is_dir():
                if now - child.stat().st_mtime > _STALE_TMP:
                    shutil.rmtree(child, ignore_errors=True)
                continue
            if not _is_entry(child) or not child.is_dir():
                continue
            if child != keep and not _entry_valid(child):
                shutil.rmtree(child, ignore_errors=True)
                continue
            size = _size(child)
            total += size
            if child != keep:
                live.append((child.stat().st_mtime, size, child))
        except OSError:
            continue
    for _, size, child in sorted(live):
        if total <= limit:
            break
        shutil.rmtree(child, ignore_errors=True)
        total -= size


def _save_frame(frame: pd.DataFrame, folder: Path) -> None:
    """A logs or spans frame as ``.npy`` columns and JSON text columns."""
    text: dict[str, list[str | None]] = {}
    for i, name in enumerate(frame.columns):
        col = frame[name]
        if col.dtype == object:
            values = col.tolist()
            if not all(v is None or isinstance(v, str) for v in values):
                raise ValueError(f"column {name} holds values other than text")
            text[str(name)] = values
        else:
            np.save(folder / f"col{i}.npy", col.to_numpy(), allow_pickle=False)
    meta = {"rows": len(frame), "columns": [str(c) for c in frame.columns], "text": text}
    (folder / _FRAME_FILE).write_text(json.dumps(meta, separators=(",", ":")), encoding="utf-8")


def _load_frame(folder: Path, expected: Sequence[str]) -> pd.DataFrame:
    meta = json.loads((folder / _FRAME_FILE).read_text(encoding="utf-8"))
    rows, columns, text = meta["rows"], meta["columns"], meta["text"]
    if columns != list(expected) or not isinstance(rows, int) or not isinstance(text, dict):
        raise ValueError("the saved frame does not have the expected columns")
    data: dict[str, Any] = {}
    for i, name in enumerate(columns):
        if name in text:
            values = text[name]
            if not isinstance(values, list) or len(values) != rows:
                raise ValueError(f"{name}: expected {rows} values")
            data[name] = pd.Series(values, dtype=object)
        else:
            arr = np.load(folder / f"col{i}.npy", allow_pickle=False)
            if arr.ndim != 1 or len(arr) != rows:
                raise ValueError(f"{name}: expected {rows} values")
            data[name] = arr
    return pd.DataFrame(data, columns=columns)


# --------------------------------------------------------------------------- reading


def _data_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[io.BufferedIOBase]:
    """A data file (plain or gzip) open for reading; a failed read is a BundleError."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as fh:
            yield fh
    except (OSError, EOFError) as exc:
        raise BundleError(str(path), f"cannot read the file: {exc}") from exc


def _read_bytes(path: Path) -> bytes:
    with _opened(path) as fh:
        return fh.read()


def _read_lines(path: Path) -> Iterator[bytes]:
    """The lines of a file (plain or gzip), one at a time, without their ``\\n``."""
    with _opened(path) as fh:
        for raw in fh:
            yield raw[:-1] if raw.endswith(b"\n") else raw


def _iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """``(line number, object)`` for each non-empty line; bad JSON is a BundleError.

    The file is read line by line: never held whole, as bytes or as text.
    """
    for lineno, raw in enumerate(_read_lines(path), start=1):
        line = raw.decode("utf-8", "replace")
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise BundleError(
                str(path), f"not valid JSON: {err.msg} (column {err.colno})", lineno
            ) from None
        if not isinstance(obj, dict):
            raise BundleError(str(path), "each line must be one JSON object", lineno)
        yield lineno, obj


def _load_json(path: Path) -> Any:
    text = _read_bytes(path).decode("utf-8", "replace")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise BundleError(
            str(path), f"not valid JSON: {err.msg} (column {err.colno})", err.lineno
        ) from None


def _time(value: Any, path: Path, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise BundleError(str(path), f"{what} must be an RFC 3339 time, got {value!r}")
    try:
        ts = parse_time(value)
    except ValueError:
        raise BundleError(
            str(path), f"{what} {value!r} is not an RFC 3339 time (e.g. 2026-03-02T09:00:00Z)"
        ) from None
    if ts > 1e11:
        raise BundleError(str(path), f"{what} {value!r} looks like milliseconds; use seconds")
    return ts


def parse_alert(obj: Any, source: str, where: str = "alert") -> Alert:
    """An Alertmanager API v2 alert object as an :class:`Alert` (BundleError when malformed).

    The one parser (:func:`correlator.alerts.parse_alert`); a bundle's alerts
    must carry their fingerprint, since it is the id users investigate.
    """
    try:
        return parse_json_alert(obj, source=source, where=where, require_fingerprint=True)
    except AlertFormatError as exc:
        raise BundleError(source, exc.problem) from None


@dataclass(frozen=True)
class Bundle:
    """One scenario bundle; data files are parsed on first access and cached."""

    path: Path
    scenario: Mapping[str, Any]
    name: str
    description: str
    window: tuple[float, float]
    alerts: tuple[Alert, ...]
    truth: Mapping[str, Any] | None
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def file(self, name: str) -> Path | None:
        """The path of a data file (plain or ``.gz``), or ``None``."""
        return _data_file(self.path, name)

    def _lock(self, what: str) -> threading.Lock:
        lock: threading.Lock = self._cache.setdefault(f"lock:{what}", threading.Lock())
        return lock

    @property
    def metrics(self) -> Metrics:
        """The parsed ``metrics.om``, every series."""
        return self.metrics_for(None)

    def metrics_for(self, keep: NameFilter | None) -> Metrics:
        """The parsed ``metrics.om`` with at least the series ``keep`` selects (all: ``None``).

        Parsed once per bundle: a parse that covers the request is reused, so
        concurrent callers asking for the same names share one parse.
        """
        with self._lock("metrics"):
            have: tuple[NameFilter | None, Metrics] | None = self._cache.get("metrics")
            if have is not None and _covers(have[0], keep):
                return have[1]
            if have is not None and keep is not None and have[0] is not None:
                keep = NameFilter(have[0].names | keep.names, have[0].patterns + keep.patterns)
            metrics = _read_metrics(self.path, keep)
            self._cache["metrics"] = (keep, metrics)
            return metrics

    @property
    def logs(self) -> pd.DataFrame:
        """``logs.otlp.jsonl`` as a frame with ``model.LOG_COLUMNS`` (empty when absent)."""
        with self._lock("logs"):
            if "logs" not in self._cache:
                self._cache["logs"] = _read_otlp(self.file(LOGS_FILE), LogCollector())
            frame: pd.DataFrame = self._cache["logs"]
        return frame

    @property
    def spans(self) -> pd.DataFrame:
        """``traces.otlp.jsonl`` as a frame with ``model.SPAN_COLUMNS`` (empty when absent)."""
        with self._lock("spans"):
            if "spans" not in self._cache:
                self._cache["spans"] = _read_otlp(self.file(TRACES_FILE), SpanCollector())
            frame: pd.DataFrame = self._cache["spans"]
        return frame

    @property
    def topology(self) -> dict[str, Any] | None:
        """``topology.json`` (checked), or ``None``."""
        if "topology" not in self._cache:
            self._cache["topology"] = _read_topology(self.path / TOPOLOGY_FILE)
        return self._cache["topology"]  # type: ignore[no-any-return]

    @property
    def catalog_extra(self) -> tuple[Catalog, bool] | None:
        """The bundle's own ``catalog.json`` and its ``replace`` flag, or ``None``."""
        if "catalog_extra" not in self._cache:
            path = self.path / CATALOG_FILE
            extra: tuple[Catalog, bool] | None = None
            if path.is_file():
                data = _load_json(path)
                try:
                    extra = Catalog.from_json(data, where=str(path))
                except ConfigError as exc:
                    raise BundleError(str(path), str(exc).removeprefix(f"{path}: ")) from exc
            self._cache["catalog_extra"] = extra
        return self._cache["catalog_extra"]  # type: ignore[no-any-return]

    def merged_catalog(self, base: Catalog) -> Catalog:
        """``base`` extended (or replaced) by the bundle's ``catalog.json``."""
        extra = self.catalog_extra
        return base if extra is None else base.merged(extra[0], replace=extra[1])

    @property
    def catalog(self) -> Catalog:
        """The default catalog, extended (or replaced) by the bundle's ``catalog.json``."""
        if "catalog" not in self._cache:
            self._cache["catalog"] = self.merged_catalog(default_catalog())
        return self._cache["catalog"]  # type: ignore[no-any-return]


def _covers(have: NameFilter | None, want: NameFilter | None) -> bool:
    """Whether a parse made with ``have`` holds every series ``want`` selects."""
    if have is None:
        return True
    if want is None:
        return False
    return want.names <= have.names and set(want.patterns) <= set(have.patterns)


def _read_metrics(folder: Path, keep: NameFilter | None = None) -> Metrics:
    path = _data_file(folder, METRICS_FILE)
    if path is None:
        raise BundleError(
            str(folder / METRICS_FILE), "missing required file metrics.om (or metrics.om.gz)"
        )
    return _cached(
        path,
        "metrics",
        keep.key if keep is not None else None,
        lambda: _parse_metrics(path, keep),
        save_metrics,
        load_metrics,
        # The entry's arrays are memory-mapped: the process holds the file's pages
        # only while they are read (see Metrics.release_pages), not the parse's copy.
        reload=True,
    )


def _parse_metrics(path: Path, keep: NameFilter | None) -> Metrics:
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as fh:
            return read_openmetrics(fh, keep=keep)
    except OpenMetricsError as exc:
        raise BundleError(str(path), exc.problem, exc.line) from exc
    except (OSError, EOFError, zlib.error) as exc:
        raise BundleError(str(path), f"cannot read the file: {exc}") from exc


def _read_otlp(path: Path | None, collector: LogCollector | SpanCollector) -> pd.DataFrame:
    if path is None:
        return collector.frame()
    kind, columns = (
        ("logs", LOG_COLUMNS) if isinstance(collector, LogCollector) else ("spans", SPAN_COLUMNS)
    )
    return _cached(
        path,
        kind,
        None,
        lambda: _parse_otlp(path, collector),
        _save_frame,
        lambda entry: _load_frame(entry, columns),
    )


def _parse_otlp(path: Path, collector: LogCollector | SpanCollector) -> pd.DataFrame:
    for lineno, obj in _iter_jsonl(path):
        try:
            collector.add(obj)
        except (OtlpError, AttributeError, TypeError, ValueError) as exc:
            raise BundleError(str(path), f"not a valid OTLP/JSON request: {exc}", lineno) from exc
    return collector.frame()


def _read_topology(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    data = _load_json(path)
    if not isinstance(data, dict):
        raise BundleError(str(path), 'topology must be an object with "nodes" and "edges"')
    for i, node in enumerate(data.get("nodes", [])):
        if not isinstance(node, dict) or not isinstance(node.get("id"), str):
            raise BundleError(str(path), f'nodes[{i}] needs a string "id"')
        kind = node.get("kind", "service")
        if kind not in _NODE_KINDS:
            raise BundleError(
                str(path),
                f"nodes[{i}] ({node['id']}): kind {kind!r} must be one of {', '.join(_NODE_KINDS)}",
            )
    for i, edge in enumerate(data.get("edges", [])):
        if not (
            isinstance(edge, dict)
            and isinstance(edge.get("source"), str)
            and isinstance(edge.get("target"), str)
        ):
            raise BundleError(str(path), f'edges[{i}] needs string "source" and "target"')
    return data


def read_bundle(path: str | Path) -> Bundle:
    """Read a bundle folder (``scenario.json`` is checked now; data files when used).

    Raises :class:`BundleError` naming the file, line and problem.
    """
    folder = Path(path)
    if folder.is_file() and folder.name == SCENARIO_FILE:
        folder = folder.parent
    if not folder.is_dir():
        raise BundleError(str(folder), "no such bundle folder")
    spath = folder / SCENARIO_FILE
    if not spath.is_file():
        raise BundleError(str(spath), "missing required file scenario.json; is this a bundle?")
    doc = _load_json(spath)
    if not isinstance(doc, dict):
        raise BundleError(str(spath), "scenario.json must hold a JSON object")
    fmt = doc.get("format")
    if fmt != FORMAT:
        raise BundleError(
            str(spath),
            f"unknown format {fmt!r}; this version of correlator reads {FORMAT!r}",
            _line_of(spath, '"format"'),
        )
    if _data_file(folder, METRICS_FILE) is None:
        raise BundleError(
            str(folder / METRICS_FILE), "missing required file metrics.om (or metrics.om.gz)"
        )
    window = doc.get("window")
    if not isinstance(window, dict) or "start" not in window or "end" not in window:
        raise BundleError(
            str(spath), 'needs "window": {"start": ..., "end": ...}', _line_of(spath, '"window"')
        )
    start = _time(window["start"], spath, "window.start")
    end = _time(window["end"], spath, "window.end")
    if end <= start:
        raise BundleError(
            str(spath), "window.end must be after window.start", _line_of(spath, '"window"')
        )
    raw_alerts = doc.get("alerts")
    if not isinstance(raw_alerts, list) or not raw_alerts:
        raise BundleError(
            str(spath),
            'needs "alerts": a list of one or more Alertmanager API v2 alerts',
            _line_of(spath, '"alerts"'),
        )
    alerts = []
    for i, raw in enumerate(raw_alerts):
        try:
            alerts.append(parse_alert(raw, str(folder), where=f"alerts[{i}]"))
        except BundleError as exc:
            raise BundleError(str(spath), exc.problem, _alert_line(spath, i)) from exc
    truth = doc.get("truth")
    if truth is not None and not isinstance(truth, dict):
        raise BundleError(str(spath), '"truth" must be an object', _line_of(spath, '"truth"'))
    if truth and "start" in truth:
        _time(truth["start"], spath, "truth.start")  # validated here; a short baseline is fine
    return Bundle(
        path=folder,
        scenario=doc,
        name=str(doc.get("name") or folder.name),
        description=str(doc.get("description", "")),
        window=(start, end),
        alerts=tuple(alerts),
        truth=truth,
    )


def _line_of(path: Path, needle: str) -> int | None:
    """1-based line of the first occurrence of ``needle`` in a text file (for messages)."""
    try:
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if needle in line:
                return i
    except (OSError, UnicodeDecodeError):
        return None
    return None


def _alert_line(path: Path, index: int) -> int | None:
    """1-based line where ``alerts[index]`` begins (best effort)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    pos = text.find('"alerts"')
    if pos < 0:
        return None
    pos = text.find("[", pos)
    depth, count = 0, -1
    in_str = esc = False
    for j in range(pos + 1, len(text)):
        ch = text[j]
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"':
            in_str = True
        elif ch in "{[":
            if depth == 0 and ch == "{":
                count += 1
                if count == index:
                    return text.count("\n", 0, j) + 1
            depth += 1
        elif ch in "}]":
            if depth == 0:
                break
            depth -= 1
    return None


def validate_bundle(path: str | Path) -> list[BundleError]:
    """Every problem found in a bundle (empty when it is valid).

    Reads all files, so it is as slow as an investigation's collect stage.
    Each problem names its file and line. Checks beyond what reading needs:
    alert fingerprints match the labels, and sample timestamps lie in the window.
    """
    problems: list[BundleError] = []
    try:
        bundle = read_bundle(path)
    except BundleError as exc:
        return [exc]
    spath = str(bundle.path / SCENARIO_FILE)
    for i, alert in enumerate(bundle.alerts):
        expected = alert_fingerprint(alert.labels)
        if alert.fingerprint != expected:
            problems.append(
                BundleError(
                    spath,
                    f"alerts[{i}] fingerprint {alert.fingerprint} does not match its labels "
                    f"(Alertmanager computes {expected}); posted to Alertmanager it gets a new id",
                    _alert_line(bundle.path / SCENARIO_FILE, i),
                )
            )
        if alert.starts_at and not bundle.window[0] <= alert.starts_at <= bundle.window[1]:
            problems.append(BundleError(spath, f"alerts[{i}] startsAt is outside the window"))
    checks: list[tuple[str, Any]] = [
        ("metrics", lambda: bundle.metrics),
        ("logs", lambda: bundle.logs),
        ("spans", lambda: bundle.spans),
        ("topology", lambda: bundle.topology),
        ("catalog", lambda: bundle.catalog),
    ]
    for _, check in checks:
        try:
            check()
        except BundleError as exc:
            problems.append(exc)
        except CorrelatorError as exc:  # pragma: no cover - defensive
            problems.append(BundleError(str(bundle.path), str(exc)))
    if "metrics" in bundle._cache:
        metrics: Metrics = bundle.metrics
        if not metrics.sample_count:
            problems.append(BundleError(str(bundle.file(METRICS_FILE)), "no samples"))
        else:
            lo = min(float(t[0]) for t in metrics.times if len(t))
            hi = max(float(t[-1]) for t in metrics.times if len(t))
            start, end = bundle.window
            if hi < start or lo > end:
                problems.append(
                    BundleError(
                        str(bundle.file(METRICS_FILE)),
                        "no sample lies inside scenario.json's window",
                    )
                )
    return problems


def find_bundles(path: str | Path) -> list[Path]:
    """Bundle folders at ``path``: the folder itself, or bundles below it (two levels)."""
    root = Path(path)
    if (root / SCENARIO_FILE).is_file():
        return [root]
    if not root.is_dir():
        raise UserInputError(f"{root}: no such folder; give a bundle folder or a folder of bundles")
    found: list[Path] = []
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        if (child / SCENARIO_FILE).is_file():
            found.append(child)
        else:
            found.extend(
                sorted(g for g in child.iterdir() if g.is_dir() and (g / SCENARIO_FILE).is_file())
            )
    return found


def copy_bundle(src: str | Path, dest: str | Path) -> Path:
    """Copy a bundle folder (used by tests and the CLI's ``scenarios export``)."""
    return Path(shutil.copytree(src, dest, dirs_exist_ok=True))

"""Record incidents from the live demo as scenario bundles (``correlator demo record``).

:func:`record_incident` runs the whole recording: it waits until the demo has
run quietly for a baseline, injects a fault through :mod:`correlator.demo.faults`,
waits for Alertmanager to hold an alert that started after it, lets the
incident run a while longer, clears the fault (always, also on an error or
Ctrl-C) and writes the bundle with :func:`write_bundle`:

* ``metrics.om.gz``: every series the demo's scrape jobs expose, read back
  from Prometheus as the raw samples it stored (an instant query of a range
  vector returns them with their own timestamps), grouped into OpenMetrics
  families with the types and help Prometheus learned from the targets
  (``/api/v1/metadata``), ``# EOF`` last: what ``promtool tsdb
  create-blocks-from openmetrics`` takes back;
* ``traces.otlp.jsonl.gz`` / ``logs.otlp.jsonl.gz``: the services' OTLP/JSON
  files clipped to the window (:mod:`correlator.adapters.otlp_files`), thinned
  by trace id when they hold more than ``max_spans`` spans, so whole traces
  and the log records of the same traces stay, in the same share in the
  baseline and the incident;
* ``scenario.json``: the window, the alerts exactly as ``GET /api/v2/alerts``
  returned them, and the truth from the injector's ``faults.jsonl``.

A bundle is written to a temporary folder beside its destination and renamed
into place when complete: nothing half-written is left behind.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from correlator.bundle import write_bundle as write_bundle_files
from correlator.errors import CorrelatorError, UserInputError
from correlator.escape import promql_regex
from correlator.openmetrics import Family

__all__ = [
    "DEFAULT_KINDS",
    "RecordError",
    "Sample",
    "families",
    "read_metrics",
    "record_incident",
    "record_plan",
    "write_bundle",
]

#: The fault kinds of the demo (its faults module is the authority when present).
DEFAULT_KINDS = (
    "exception", "wrong_return", "latency", "cpu_hog", "memory_leak",
    "db_lock", "bad_deploy", "traffic_spike", "dependency_down",
)  # fmt: skip
#: Scrape jobs of the monitoring itself, not of the shop.
INFRA_JOBS = ("prometheus", "alertmanager")
_NAMES_PER_QUERY = 40
_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_gcount", "_gsum", "_info")
_ALLOWED = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum"),
    "info": ("_info",),
}


class RecordError(CorrelatorError):
    """A recording could not be made; the message says why and what to do."""


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Sample:
    """One series read back from Prometheus: sample name, labels and its raw points."""

    name: str
    labels: Mapping[str, str]
    points: tuple[tuple[float, float], ...]


def _api(client: httpx.Client, url: str, path: str, params: Any) -> Any:
    try:
        response = client.get(url.rstrip("/") + path, params=params)
    except httpx.HTTPError as exc:
        raise RecordError(
            f"Prometheus at {url}: {type(exc).__name__}: {exc}; is the demo running?"
        ) from exc
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error") if isinstance(body, dict) else response.text[:200]
        raise RecordError(f"Prometheus at {url}{path}: {response.status_code}: {error}")
    return body.get("data")


def _wanted(name: str) -> bool:
    # Alert state and recording rules (``level:metric:op``) are derived, not exposed.
    return not name.startswith("ALERTS") and ":" not in name and not name.endswith("_created")


def _selector(names: Sequence[str] | None, exclude_jobs: Sequence[str]) -> str:
    cond = f"__name__=~{promql_regex(names)}" if names else '__name__=~".+"'
    if exclude_jobs:
        cond += f",job!~{promql_regex(exclude_jobs)}"
    return "{" + cond + "}"


def read_metrics(
    prometheus_url: str,
    start: float,
    end: float,
    *,
    exclude_jobs: Sequence[str] = INFRA_JOBS,
    client: httpx.Client | None = None,
) -> tuple[list[Sample], dict[str, dict[str, str]]]:
    """Every scraped series with samples in ``[start, end]``, raw, and the metadata by name.

    Series come from every job but ``exclude_jobs``; alert-state series,
    recording rules (names with ``:``) and ``_created`` series are left out.
    Samples are the ones Prometheus stored, with their own timestamps.
    """
    own = client is None
    client = client or httpx.Client(timeout=60.0)
    try:
        match = _selector(None, exclude_jobs)
        names = _api(
            client,
            prometheus_url,
            "/api/v1/label/__name__/values",
            {"match[]": match, "start": f"{start:.3f}", "end": f"{end:.3f}"},
        )
        names = sorted(n for n in names or () if _wanted(n))
        meta_raw = _api(client, prometheus_url, "/api/v1/metadata", {}) or {}
        meta = {
            name: {k: str(v) for k, v in entries[0].items()}
            for name, entries in meta_raw.items()
            if entries
        }
        rng = max(1, int(end - start + 1))
        out: list[Sample] = []
        for i in range(0, len(names), _NAMES_PER_QUERY):
            query = f"{_selector(names[i : i + _NAMES_PER_QUERY], exclude_jobs)}[{rng}s]"
            data = _api(client, prometheus_url, "/api/v1/query", {"query": query, "time": end})
            for series in (data or {}).get("result") or ():
                labels = dict(series["metric"])
                name = labels.pop("__name__")
                points = tuple(
                    (float(ts), float(v)) for ts, v in series.get("values") or () if ts >= start
                )
                if points:
                    out.append(Sample(name, labels, points))
        return out, meta
    finally:
        if own:
            client.close()


#: Series Prometheus adds to every scrape (no target exposes them): gauges.
SCRAPE_SERIES = (
    "up", "scrape_duration_seconds", "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling", "scrape_series_added",
)  # fmt: skip


def _family_of(
    name: str, meta: Mapping[str, Mapping[str, str]], bases: set[str]
) -> tuple[str, str]:
    """``(family, type)`` of a sample name, from Prometheus' metadata or the name's shape."""
    if name in SCRAPE_SERIES:
        return name, "gauge"
    kind = meta.get(name, {}).get("type")
    if kind == "counter":
        # OpenMetrics counters are ``<family>_total``; a counter without it stays untyped.
        return (name[:-6], "counter") if name.endswith("_total") else (name, "unknown")
    if kind in ("gauge", "unknown", "stateset"):
        return name, kind
    if kind == "summary":
        return name, "summary"
    for suffix in _SUFFIXES:
        if not name.endswith(suffix):
            continue
        base = name[: -len(suffix)]
        base_kind = meta.get(base, {}).get("type")
        if base_kind in _ALLOWED and suffix in _ALLOWED[base_kind]:
            return base, base_kind
    if kind is None:
        # No metadata (a backfilled server): what the name says.
        if name.endswith("_total"):
            return name[:-6], "counter"
        for suffix in ("_bucket", "_count", "_sum"):
            if name.endswith(suffix) and name[: -len(suffix)] in bases:
                return name[: -len(suffix)], "histogram"
    return name, "unknown" if kind in (None, "histogram", "info") else kind


def families(samples: Iterable[Sample], meta: Mapping[str, Mapping[str, str]]) -> list[Family]:
    """The samples as OpenMetrics families (grouped, typed, with help), sorted by name.

    A counter, gauge or untyped series that is zero throughout is left out
    (it shows nothing; histogram buckets always stay, their quantiles need
    every bound), except ``up``.
    """
    samples = list(samples)
    bases = {s.name[:-7] for s in samples if s.name.endswith("_bucket") and "le" in s.labels}
    grouped: dict[str, tuple[str, list[tuple[str, Mapping[str, str], float, float]]]] = {}
    for s in samples:
        family, kind = _family_of(s.name, meta, bases)
        if family in grouped and grouped[family][0] != kind:
            family, kind = s.name, "unknown"  # two types claim one name: keep it untyped
        flat = kind in ("counter", "gauge", "unknown") and s.name != "up"
        if flat and all(v == 0 for _, v in s.points):
            continue
        rows = grouped.setdefault(family, (kind, []))[1]
        rows.extend((s.name, s.labels, ts, v) for ts, v in s.points)
    out = []
    for family in sorted(grouped):
        kind, rows = grouped[family]
        entry = meta.get(family) or meta.get(family + "_total") or {}
        unit = entry.get("unit", "")
        out.append(
            Family(
                family,
                kind,
                tuple(rows),
                help=entry.get("help", ""),
                unit=unit if unit and family.endswith("_" + unit) else "",
            )
        )
    return out


# --------------------------------------------------------------------------- spans and logs


def _trace_share(trace_id: str | None, ratio: float) -> bool:
    """Whether a trace is kept at ``ratio`` (by its id, the same in every file)."""
    if ratio >= 1 or not trace_id:
        return True
    try:
        return int(trace_id[-8:], 16) < ratio * 0x1_0000_0000
    except ValueError:
        return True


def _thin(requests: list[dict[str, Any]], kind: str, ratio: float) -> Iterator[dict[str, Any]]:
    groups_key, scopes_key, items_key = (
        ("resourceSpans", "scopeSpans", "spans")
        if kind == "traces"
        else ("resourceLogs", "scopeLogs", "logRecords")
    )
    for request in requests:
        if ratio >= 1:
            yield request
            continue
        groups = []
        for group in request.get(groups_key) or ():
            scopes = []
            for scope in group.get(scopes_key) or ():
                items = [
                    it
                    for it in scope.get(items_key) or ()
                    if _trace_share(it.get("traceId"), ratio)
                ]
                if items:
                    scopes.append({**scope, items_key: items})
            if scopes:
                groups.append({**group, scopes_key: scopes})
        if groups:
            yield {groups_key: groups}


def read_otlp(
    otlp_dir: str | Path, start: float, end: float, *, max_spans: int = 12_000
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str], float]:
    """Trace and log requests of the demo's OTLP files in ``[start, end]``, thinned to fit.

    Returns ``(traces, logs, warnings, ratio)``: over ``max_spans`` spans,
    only traces whose id falls in a ``ratio`` share are kept, with their log
    records (records without a trace are all kept).
    """
    from correlator.adapters.otlp_files import iter_clipped

    folder = Path(otlp_dir)
    if not folder.is_dir():
        raise RecordError(f"the demo's OTLP folder {folder} does not exist; is the demo running?")
    traces: list[dict[str, Any]] = []
    logs: list[dict[str, Any]] = []
    warnings: list[str] = []
    spans = 0
    for _, got in iter_clipped(folder, "traces", start, end):
        traces += got.requests
        spans += got.items
        warnings += got.warnings
    for _, got in iter_clipped(folder, "logs", start, end):
        logs += got.requests
        warnings += got.warnings
    ratio = min(1.0, max_spans / spans) if spans else 1.0
    return list(_thin(traces, "traces", ratio)), list(_thin(logs, "logs", ratio)), warnings, ratio


# --------------------------------------------------------------------------- bundle


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@contextlib.contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A temporary folder beside ``out`` that becomes ``out`` when the block succeeds."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; a bundle is for everyone
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_bundle(
    state: Mapping[str, Any],
    *,
    start: float,
    end: float,
    alerts: list[dict[str, Any]],
    truth: dict[str, Any] | None,
    out: Path,
    name: str,
    description: str,
    max_spans: int = 12_000,
    exclude_jobs: Sequence[str] = INFRA_JOBS,
) -> Path:
    """Write the demo's telemetry over ``[start, end]`` as a scenario bundle at ``out``.

    ``state`` is the demo's ``state.json`` (``prometheus_url``, ``otlp_dir``);
    ``alerts`` are Alertmanager API v2 alert objects, written as given;
    ``truth`` (``service``, ``cause``, ``start`` as unix seconds or RFC 3339,
    and any other keys) is written with ``start`` as RFC 3339. Data files are
    gzipped. Returns ``out``.
    """
    out = Path(out)
    samples, meta = read_metrics(state["prometheus_url"], start, end, exclude_jobs=exclude_jobs)
    if not samples:
        raise RecordError(
            f"Prometheus at {state['prometheus_url']} has no samples in "
            f"{_rfc3339(start)}..{_rfc3339(end)}; is it scraping the demo?"
        )
    fams = families(samples, meta)
    traces: list[dict[str, Any]] = []
    logs: list[dict[str, Any]] = []
    notes: list[str] = []
    ratio = 1.0
    if state.get("otlp_dir"):
        traces, logs, notes, ratio = read_otlp(state["otlp_dir"], start, end, max_spans=max_spans)
    scenario: dict[str, Any] = {
        "name": name,
        "description": description,
        "window": {"start": _rfc3339(start), "end": _rfc3339(end)},
        "alerts": alerts,
        "recording": {
            "source": "correlator demo",
            "trace_share": round(ratio, 4),
            "series": len(samples),
            "samples": sum(len(s.points) for s in samples),
            **({"warnings": notes} if notes else {}),
        },
    }
    if truth is not None:
        doc = dict(truth)
        if isinstance(doc.get("start"), int | float):
            doc["start"] = _rfc3339(float(doc["start"]))
        scenario["truth"] = doc
    from correlator.openmetrics import render

    with _staged(out) as tmp:
        write_bundle_files(tmp, scenario, render(fams), logs=logs or None, traces=traces or None)
        for plain in [p for p in tmp.iterdir() if p.name.endswith((".om", ".jsonl"))]:
            # gzip's best level: 6 % smaller than the default on these files.
            with plain.open("rb") as src, gzip.open(f"{plain}.gz", "wb", 9) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            plain.unlink()
    return out


# --------------------------------------------------------------------------- recording


def _default_state_dir() -> Path:
    try:
        from correlator.demo.state import default_state_dir
    except ImportError:  # pragma: no cover - the shop is not installed
        env = os.environ.get("CORRELATOR_DEMO_DIR")
        if env:
            return Path(env).expanduser()
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(base) / "correlator" / "demo"
    return Path(default_state_dir())


def fault_kinds() -> tuple[str, ...]:
    """The demo's fault kinds."""
    try:
        from correlator.demo.faults import FAULT_KINDS
    except ImportError:  # pragma: no cover - the shop is not installed
        return DEFAULT_KINDS
    return tuple(FAULT_KINDS)


def load_state(state_dir: str | Path) -> dict[str, Any]:
    """The running demo's ``state.json``; a clear error when there is none."""
    path = Path(state_dir) / "state.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError(
            f"no demo runs from {state_dir} (no state.json); start one with `correlator demo up` "
            "or pass --state-dir"
        ) from None
    except (OSError, ValueError) as exc:
        raise UserInputError(f"{path}: cannot read the demo's state: {exc}") from None
    missing = [k for k in ("prometheus_url", "alertmanager_url", "services") if k not in state]
    if missing:
        raise UserInputError(f"{path}: not a running demo's state (no {', '.join(missing)})")
    return dict(state)


def _truth_records(state_dir: Path) -> list[dict[str, Any]]:
    """Every fault of ``faults.jsonl`` in its final state (last line of each id)."""
    out: dict[str, dict[str, Any]] = {}
    path = state_dir / "faults.jsonl"
    with contextlib.suppress(FileNotFoundError), path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh):
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                out[str(rec.get("id", n))] = rec
    return list(out.values())


def quiet_since(state: Mapping[str, Any], state_dir: Path) -> float:
    """When the demo last had no fault: its start, or the last fault's clearing."""
    records = _truth_records(state_dir)
    active = [r for r in records if not r.get("cleared_at")]
    if active:
        listed = ", ".join(f"{r.get('kind')} on {r.get('service')}" for r in active)
        raise UserInputError(
            f"a fault is active ({listed}); clear it first with `correlator demo fault --clear`"
        )
    cleared = [float(r["cleared_at"]) for r in records]
    return max([float(state.get("started_at") or 0), *cleared])


def _parse_time(text: str) -> float:
    text = text.replace("Z", "+00:00")
    # Alertmanager prints nanoseconds; Python takes microseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    return datetime.fromisoformat(text).timestamp()


def current_alerts(alertmanager_url: str, client: httpx.Client) -> list[dict[str, Any]]:
    """``GET /api/v2/alerts`` as Alertmanager returns it."""
    url = alertmanager_url.rstrip("/") + "/api/v2/alerts"
    try:
        response = client.get(url)
        response.raise_for_status()
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise RecordError(f"Alertmanager at {alertmanager_url}: {exc}") from exc
    if not isinstance(body, list):
        raise RecordError(f"Alertmanager at {alertmanager_url}: /api/v2/alerts gave no list")
    return body


def alerts_since(alerts: Iterable[dict[str, Any]], since: float) -> list[dict[str, Any]]:
    """The alerts that started at or after ``since``, earliest first."""
    fresh = [a for a in alerts if a.get("startsAt") and _parse_time(a["startsAt"]) >= since]
    return sorted(fresh, key=lambda a: _parse_time(a["startsAt"]))


def record_incident(
    state_dir: str | Path,
    kind: str,
    service: str,
    *,
    instance: str | None = None,
    baseline: float = 360,
    timeout: float = 480,
    after: float = 60,
    out_dir: str | Path = "fixtures/demo",
    params: Mapping[str, Any] | None = None,
    name: str | None = None,
    settle: float = 12.0,
    say: Callable[[str], None] = lambda _: None,
) -> Path:
    """Record one incident of fault ``kind`` on ``service``; returns the bundle folder.

    Waits until the demo has run ``baseline`` seconds without a fault, injects
    the fault, waits (at most ``timeout`` seconds) for an alert that started
    after it, waits ``after`` seconds more, clears the fault, and writes the
    bundle over ``[inject - baseline, alert + after]``. The fault is cleared
    whatever happens; on a timeout nothing is written. ``settle`` seconds pass
    before the read-back, for the last scrape and the last batch of spans.
    """
    sdir = Path(state_dir)
    state = load_state(sdir)
    kinds = fault_kinds()
    if kind not in kinds:
        raise UserInputError(f"unknown fault kind {kind!r}; kinds: {', '.join(kinds)}")
    if service not in state["services"]:
        raise UserInputError(
            f"no service {service!r} in the demo; services: {', '.join(state['services'])}"
        )
    wait = quiet_since(state, sdir) + baseline - time.time()
    from correlator.demo import faults

    if wait > 0:
        say(f"baseline: waiting {wait:.0f}s for {baseline:.0f}s without a fault")
        time.sleep(wait)
    client = httpx.Client(timeout=10.0)
    record: dict[str, Any] | None = None
    try:
        injected = time.time()
        extra = {"instance": instance} if instance else {}
        record = faults.inject(sdir, kind, service, **extra, **dict(params or {}))
        injected = float(record.get("started_at") or injected)
        say(f"injected {kind} on {service}; waiting up to {timeout:.0f}s for an alert")
        deadline = time.monotonic() + timeout
        fired: list[dict[str, Any]] = []
        while not fired:
            if time.monotonic() > deadline:
                raise RecordError(
                    f"no alert fired within {timeout:.0f}s of injecting {kind} on {service}; "
                    "nothing was written (raise --timeout, or check the demo's alert rules)"
                )
            time.sleep(5)
            fired = alerts_since(current_alerts(state["alertmanager_url"], client), injected)
        first = _parse_time(fired[0]["startsAt"])
        say(f"alert {fired[0]['labels'].get('alertname')} fired {first - injected:.0f}s after")
        time.sleep(max(0.0, first + after - time.time()))
        alerts = alerts_since(current_alerts(state["alertmanager_url"], client), injected)
    finally:
        cleared = faults.clear(sdir, service)
        client.close()
    final = next((r for r in cleared if r.get("id") == record.get("id")), record)
    end = first + after
    time.sleep(max(0.0, end + settle - time.time()))
    truth = {
        "service": final["service"],
        "cause": final["cause"],
        "start": float(final["started_at"]),
        "kind": final["kind"],
        "instance": final.get("instance"),
        "cleared_at": _rfc3339(float(final["cleared_at"])) if final.get("cleared_at") else None,
        "params": final.get("params") or {},
    }
    stamp = datetime.fromtimestamp(injected, tz=UTC).strftime("%Y%m%dT%H%M%S")
    name = name or f"demo-{kind.replace('_', '-')}-{service}-{stamp}"
    description = (
        f"Recorded from the live demo: {kind} injected in {service}"
        f"{' instance ' + str(final.get('instance')) if final.get('instance') else ''} at "
        f"{_rfc3339(injected)}; {fired[0]['labels'].get('alertname')} fired "
        f"{first - injected:.0f}s later."
    )
    return write_bundle(
        state,
        start=injected - baseline,
        end=end,
        alerts=alerts or fired,
        truth=truth,
        out=Path(out_dir) / name,
        name=name,
        description=description,
    )


def record_plan(
    state_dir: str | Path,
    plan: Sequence[Mapping[str, Any]],
    *,
    out_dir: str | Path,
    say: Callable[[str], None] = print,
    **options: Any,
) -> tuple[list[Path], list[str]]:
    """Record each ``{kind, service, instance?, params?}`` of ``plan`` in turn.

    Returns the bundles written and the errors of those that failed (a failed
    recording does not stop the plan; Ctrl-C does).
    """
    written: list[Path] = []
    failed: list[str] = []
    for i, step in enumerate(plan, 1):
        kind, service = str(step["kind"]), str(step["service"])
        say(f"[{i}/{len(plan)}] {kind} on {service}")
        try:
            path = record_incident(
                state_dir,
                kind,
                service,
                instance=step.get("instance"),
                params=step.get("params"),
                out_dir=out_dir,
                say=say,
                **options,
            )
        except CorrelatorError as exc:
            failed.append(f"{kind} on {service}: {exc}")
            say(f"  failed: {exc}")
            continue
        written.append(path)
        say(f"  wrote {path}")
    return written, failed


# --------------------------------------------------------------------------- command line


def all_plan(state: Mapping[str, Any], per_kind: int = 3) -> list[dict[str, Any]]:
    """Every fault kind on ``per_kind`` services it applies to (the ``--all`` plan)."""
    services = list(state["services"])
    try:
        from correlator.demo.faults import DB_TABLES, SPIKE_TARGETS
    except ImportError:  # pragma: no cover - the shop is not installed
        DB_TABLES, SPIKE_TARGETS = {}, ()
    plan = []
    for kind in fault_kinds():
        fits = {"db_lock": list(DB_TABLES), "traffic_spike": list(SPIKE_TARGETS)}.get(kind)
        pool = [s for s in (fits or services) if s in services] or services
        # Rotate by kind so every service gets some faults.
        shift = fault_kinds().index(kind) % len(pool)
        rotated = pool[shift:] + pool[:shift]
        plan += [{"kind": kind, "service": s} for s in rotated[:per_kind]]
    return plan


def load_plan(path: Path) -> list[dict[str, Any]]:
    """A plan file: a JSON or YAML list of ``{kind, service, instance?, params?}``."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserInputError(f"--plan {path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UserInputError(f"--plan {path}: not YAML or JSON: {exc}") from None
    if not isinstance(data, list) or not all(
        isinstance(s, dict) and "kind" in s and "service" in s for s in data
    ):
        raise UserInputError(
            f"--plan {path}: give a list of {{kind: ..., service: ...}} entries "
            "(instance and params optional)"
        )
    return data


@contextlib.contextmanager
def _interrupt_on_sigterm() -> Iterator[None]:
    """SIGTERM (``kill``, a CI timeout) as Ctrl-C: the recording clears its fault on the way out."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _command() -> Any:
    import click

    @click.command("record")
    @click.argument("kind", required=False)
    @click.option("--service", help="The service to break.")
    @click.option("--instance", help="One instance of it (default: as the fault kind does).")
    @click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="Fault option.")
    @click.option("--baseline", default=360.0, show_default=True, help="Seconds before the fault.")
    @click.option("--after", default=60.0, show_default=True, help="Seconds after the alert.")
    @click.option("--timeout", default=480.0, show_default=True, help="Seconds to wait for it.")
    @click.option(
        "--out", default="fixtures/demo", show_default=True, type=click.Path(path_type=Path)
    )
    @click.option("--name", help="Bundle folder name (default: demo-<kind>-<service>-<time>).")
    @click.option("--plan", type=click.Path(path_type=Path), help="Record a list (YAML/JSON).")
    @click.option("--all", "all_", is_flag=True, help="Every fault kind on 3 services each.")
    @click.option(
        "--state-dir",
        type=click.Path(path_type=Path),
        default=None,
        help="The demo's state folder (default: $CORRELATOR_DEMO_DIR or ~/.local/state/...).",
    )
    def record(
        kind: str | None,
        service: str | None,
        instance: str | None,
        params: tuple[str, ...],
        baseline: float,
        after: float,
        timeout: float,
        out: Path,
        name: str | None,
        plan: Path | None,
        all_: bool,
        state_dir: Path | None,
    ) -> None:
        """Inject a fault in the running demo, wait for its alert, and save a scenario bundle."""
        sdir = state_dir or _default_state_dir()
        state = load_state(sdir)
        options = {"baseline": baseline, "after": after, "timeout": timeout}
        if plan is not None or all_:
            if kind or service or (plan is not None and all_):
                raise UserInputError("give either KIND --service S, or --plan FILE, or --all")
            steps = load_plan(plan) if plan is not None else all_plan(state)
            with _interrupt_on_sigterm():
                written, failed = record_plan(sdir, steps, out_dir=out, say=click.echo, **options)
            click.echo(f"recorded {len(written)} of {len(steps)} incidents into {out}")
            if failed:
                raise RecordError(f"{len(failed)} recordings failed:\n  " + "\n  ".join(failed))
            return
        if not kind or not service:
            raise UserInputError(
                "name a fault kind and a service: correlator demo record KIND --service S "
                f"(kinds: {', '.join(fault_kinds())}), or use --plan FILE / --all"
            )
        parsed: dict[str, Any] = {}
        for item in params:
            key, sep, value = item.partition("=")
            if not sep:
                raise UserInputError(f"--param {item!r}: write NAME=VALUE, e.g. --param rate=0.3")
            try:
                parsed[key] = float(value)
            except ValueError:
                parsed[key] = value
        with _interrupt_on_sigterm():
            path = record_incident(
                sdir,
                kind,
                service,
                instance=instance,
                params=parsed,
                out_dir=out,
                name=name,
                say=click.echo,
                **options,
            )
        click.echo(f"wrote {path}")

    return record


#: ``correlator demo record`` (the demo group adds it).
record = _command()

"""Faults by flag: turn one on in a running demo, turn them off, and log the truth.

:func:`inject` validates the fault, adds it to ``<state_dir>/flags.json`` (the
set of active faults, which every service and the load generator poll once a
second) and appends its truth record to ``<state_dir>/faults.jsonl``::

    {"id", "kind", "service", "instance" (or null: every instance), "cause",
     "started_at" (unix s), "cleared_at" (null while active), "params"}

:func:`clear` removes active faults and appends each record again with
``cleared_at`` set: the last line of an ``id`` is its final state.

The faults act in the services' own code paths (:mod:`correlator.demo.shop.runtime`):
an exception in a share of requests, wrong values that callers check, a sleep
before answering on one instance, a busy thread, memory kept per request, a
PostgreSQL table lock held by a second connection. ``bad_deploy`` and
``dependency_down`` are carried out by the demo's supervisor (a restart with a
new version and a bug; stopping the service's processes), ``traffic_spike`` by
the load generator.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from correlator.demo import FAULT_CAUSES
from correlator.demo.state import DemoError, running_state, write_json_atomic
from correlator.errors import UserInputError

__all__ = [
    "FAULT_KINDS",
    "FaultError",
    "active_faults",
    "clear",
    "inject",
    "parse_params",
    "truth",
]

FLAGS_FILE = "flags.json"
TRUTH_FILE = "faults.jsonl"

#: Services with a PostgreSQL table of their own (``db_lock`` locks it).
DB_TABLES: dict[str, str] = {
    "catalog": "products",
    "search": "products",
    "inventory": "stock",
    "checkout": "orders",
    "payment": "payments",
}
#: Services whose traffic the load generator can multiply (the frontend routes to them).
SPIKE_TARGETS: tuple[str, ...] = (
    "frontend",
    "search",
    "catalog",
    "cart",
    "checkout",
    "recommendation",
)
#: Kinds the supervisor carries out (it acknowledges them in state.json ``applied``).
SUPERVISED = ("bad_deploy", "dependency_down")
#: Seconds to wait for the supervisor to carry out (or undo) such a fault.
APPLY_TIMEOUT = 90.0


class FaultError(UserInputError):
    """A fault request the demo cannot carry out; the message lists what is valid."""


@dataclass(frozen=True)
class _Param:
    default: float
    low: float
    high: float
    help: str


#: Each kind's parameters: name -> default, bounds, meaning.
PARAMS: dict[str, dict[str, _Param]] = {
    "exception": {"rate": _Param(0.3, 0.01, 1.0, "share of requests that raise")},
    "wrong_return": {"rate": _Param(0.5, 0.01, 1.0, "share of answers with wrong values")},
    "latency": {"delay_ms": _Param(800, 1, 30_000, "added milliseconds per request")},
    "cpu_hog": {"threads": _Param(1, 1, 8, "busy threads in the process")},
    "memory_leak": {
        "kb_per_request": _Param(256, 1, 10_240, "KiB kept per request"),
        "max_mb": _Param(600, 10, 4096, "stop leaking beyond this many MiB"),
    },
    "db_lock": {},
    "bad_deploy": {"rate": _Param(0.3, 0.01, 1.0, "share of requests the new version fails")},
    "traffic_spike": {"factor": _Param(3.0, 1.1, 20.0, "multiplier of the request rate")},
    "dependency_down": {},
}

FAULT_KINDS: tuple[str, ...] = tuple(FAULT_CAUSES)


def parse_params(kind: str, raw: Mapping[str, Any]) -> dict[str, float]:
    """The kind's parameters with defaults filled in; :class:`FaultError` for bad ones."""
    spec = PARAMS[kind]
    out: dict[str, float] = {}
    for name, value in raw.items():
        if name not in spec:
            known = ", ".join(f"{k} ({p.help}, default {p.default:g})" for k, p in spec.items())
            raise FaultError(
                f"{kind} has no parameter {name!r}; "
                + (f"its parameters: {known}" if known else "it takes none")
            )
        p = spec[name]
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise FaultError(f"{kind}: {name}={value!r} is not a number") from None
        if not p.low <= number <= p.high:
            raise FaultError(f"{kind}: {name}={number:g} is outside {p.low:g}..{p.high:g}")
        out[name] = number
    for name, p in spec.items():
        out.setdefault(name, p.default)
    return out


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    with (state_dir / ".flags.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def active_faults(state_dir: Path) -> list[dict[str, Any]]:
    """The faults active now (the records in ``flags.json``)."""
    try:
        data = json.loads((state_dir / FLAGS_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return []
    faults = data.get("faults") if isinstance(data, dict) else None
    return [f for f in faults or [] if isinstance(f, dict)]


def _append_truth(state_dir: Path, records: list[dict[str, Any]]) -> None:
    with (state_dir / TRUTH_FILE).open("a", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, sort_keys=True) + "\n")


def _check_target(
    state: Mapping[str, Any], kind: str, service: str, instance: str | None
) -> str | None:
    services: Mapping[str, Any] = state.get("services") or {}
    if service not in services:
        raise FaultError(f"no service {service!r} in the demo; services: {', '.join(services)}")
    if kind == "db_lock" and service not in DB_TABLES:
        raise FaultError(
            f"db_lock needs a service with a database table; one of: {', '.join(DB_TABLES)}"
        )
    if kind == "traffic_spike" and service not in SPIKE_TARGETS:
        raise FaultError(
            "traffic_spike enters through the frontend; pick one of: " + ", ".join(SPIKE_TARGETS)
        )
    names = [str(i["instance"]) for i in services[service].get("instances", [])]
    if instance is None:
        # Added latency is on one instance; everything else on all of them.
        return names[0] if kind == "latency" and names else None
    if kind in ("traffic_spike", "db_lock"):
        raise FaultError(f"{kind} acts on the whole service; leave out --instance")
    if instance not in names:
        raise FaultError(f"{service} has no instance {instance!r}; instances: {', '.join(names)}")
    return instance


def inject(
    state_dir: str | Path,
    kind: str,
    service: str,
    *,
    instance: str | None = None,
    **params: float | str,
) -> dict[str, Any]:
    """Turn on fault ``kind`` in ``service`` of the demo running from ``state_dir``.

    Returns the truth record (also appended to ``faults.jsonl``). ``instance``
    limits it to one instance (``latency`` defaults to the first one). Kinds
    the supervisor carries out (``bad_deploy``, ``dependency_down``) return
    once it has (at most :data:`APPLY_TIMEOUT` seconds).
    """
    if kind not in FAULT_CAUSES:
        raise FaultError(f"unknown fault kind {kind!r}; kinds: {', '.join(FAULT_KINDS)}")
    sdir = Path(state_dir)
    state = running_state(sdir)
    inst = _check_target(state, kind, service, None if instance is None else str(instance))
    values = parse_params(kind, params)
    if kind == "bad_deploy":
        values_any: dict[str, Any] = dict(values)
        current = str(state["services"][service].get("version", "1.0.0"))
        values_any["previous_version"] = current
        values_any["version"] = _next_version(current)
    else:
        values_any = dict(values)
    with _locked(sdir):
        active = active_faults(sdir)
        for f in active:
            if f["service"] == service and f["kind"] == kind:
                raise FaultError(
                    f"{kind} is already active on {service} (since {f['started_at']:.0f}); "
                    f"clear it first: correlator demo fault --clear --service {service}"
                )
            if service == f["service"] and "dependency_down" in (kind, f["kind"]):
                raise FaultError(
                    f"{service} already has {f['kind']} active; dependency_down stops the "
                    "service, so it cannot be combined with another fault on it: clear first"
                )
        record = {
            "id": uuid.uuid4().hex[:12],
            "kind": kind,
            "service": service,
            "instance": inst,
            "cause": FAULT_CAUSES[kind],
            "started_at": round(time.time(), 3),
            "cleared_at": None,
            "params": values_any,
        }
        write_json_atomic(sdir / FLAGS_FILE, {"faults": [*active, record]})
        _append_truth(sdir, [record])
    if kind in SUPERVISED:
        _await_supervisor(sdir, str(record["id"]), APPLY_TIMEOUT)
    return record


def _next_version(version: str) -> str:
    parts = version.split(".")
    try:
        major, minor = int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return version + "-next"
    return f"{major}.{minor + 1}.0"


def _await_supervisor(state_dir: Path, fault_id: str, wait: float) -> None:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            state = running_state(state_dir)
        except UserInputError:
            raise DemoError("the demo stopped while the fault was being applied") from None
        if fault_id in (state.get("applied") or {}):
            return
        time.sleep(0.2)
    raise DemoError(
        f"the demo's supervisor did not apply fault {fault_id} within {wait:g}s; "
        f"see {state_dir / 'logs' / 'supervisor.log'}"
    )


def clear(state_dir: str | Path, service: str | None = None) -> list[dict[str, Any]]:
    """Turn off the active faults (of ``service``, or all); returns their final records."""
    sdir = Path(state_dir)
    state = running_state(sdir)
    if service is not None and service not in (state.get("services") or {}):
        raise FaultError(
            f"no service {service!r} in the demo; services: {', '.join(state['services'])}"
        )
    cleared = clear_flags(sdir, service)
    ids = [str(r["id"]) for r in cleared if r["kind"] in SUPERVISED]
    for fault_id in ids:
        _await_supervisor(sdir, f"clear:{fault_id}", APPLY_TIMEOUT)
    return cleared


def clear_flags(state_dir: Path, service: str | None = None) -> list[dict[str, Any]]:
    """Remove active faults from ``flags.json`` and close their truth records (no checks)."""
    with _locked(state_dir):
        active = active_faults(state_dir)
        keep = [f for f in active if service is not None and f["service"] != service]
        gone = [f for f in active if f not in keep]
        if not gone:
            return []
        now = round(time.time(), 3)
        cleared = [{**f, "cleared_at": now} for f in gone]
        write_json_atomic(state_dir / FLAGS_FILE, {"faults": keep})
        _append_truth(state_dir, cleared)
    return cleared


def truth(state_dir: str | Path) -> list[dict[str, Any]]:
    """Every fault of ``faults.jsonl`` in its final state (last line of each id)."""
    path = Path(state_dir) / TRUTH_FILE
    out: dict[str, dict[str, Any]] = {}
    with contextlib.suppress(FileNotFoundError), path.open(encoding="utf-8") as fh:
        for line in fh:
            with contextlib.suppress(json.JSONDecodeError):
                rec = json.loads(line)
                out[str(rec.get("id"))] = rec
    return list(out.values())

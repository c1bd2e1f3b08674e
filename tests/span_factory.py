"""Small span and log frames for the span and log detector tests (numpy-generated, seeded)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from correlator.catalog import default_catalog
from correlator.detector import DetectInput
from correlator.model import (
    LOG_COLUMNS,
    SIGNAL_COLUMNS,
    SPAN_COLUMNS,
    Alert,
    Telemetry,
    Window,
    empty_frame,
)

T0 = 1_800_000_000.0


def traces(
    start: float,
    end: float,
    n: int,
    seed: int,
    *,
    fail: float = 0.0,
    charge_latency: float = 0.050,
    error: str = "NullPointerException at ChargeService.java:42",
    op: str = "POST /charge",
    pods: Sequence[str] = (),
    delay: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """``n`` traces frontend -> checkout (``op``) -> orders-db, uniformly in ``[start, end)``.

    ``fail`` is the share of checkout spans that fail (and their frontend
    callers with them); ``charge_latency`` the median of checkout's own work.
    ``pods``: checkout's instances, answering in turn; ``delay``: seconds a pod's
    network adds to each call it answers (the caller's spans see it, checkout's not).
    """
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(start, end, n))
    ids = [f"{seed:08x}{i:024x}" for i in range(n)]
    failed = rng.random(n) < fail
    db = rng.lognormal(np.log(0.004), 0.3, n)
    own = rng.lognormal(np.log(charge_latency), 0.25, n)
    checkout = own + db
    pod = [pods[i % len(pods)] if pods else None for i in range(n)]
    transit = rng.lognormal(np.log(0.001), 0.3, n)
    transit += np.array([(delay or {}).get(p, 0.0) if p else 0.0 for p in pod])
    front = checkout + transit + rng.lognormal(np.log(0.010), 0.3, n)
    rows = []

    def add(
        suffix: str,
        parent: str | None,
        service: str,
        name: str,
        kind: int,
        dur: np.ndarray,
        offset: float,
        status: np.ndarray,
        peer: str | None = None,
        db_system: str | None = None,
        err: str | None = None,
        on_pods: bool = False,
    ) -> None:
        for i in range(n):
            rows.append(
                {
                    "trace_id": ids[i],
                    "span_id": f"{i:08x}{suffix}",
                    "parent_span_id": f"{i:08x}{parent}" if parent else None,
                    "service": service,
                    "name": name,
                    "kind": kind,
                    "start": t[i] + offset,
                    "duration": float(dur[i]),
                    "status": int(status[i]),
                    "peer": peer,
                    "db_system": db_system,
                    "zone": None,
                    "pod": pod[i] if on_pods else None,
                    "version": None,
                    "error": err if status[i] == 2 else None,
                }
            )

    st = np.where(failed, 2, 0)
    ok = np.zeros(n, dtype=int)
    add("00000001", None, "frontend", "GET /buy", 2, front, 0.0, st, err="upstream failed")
    add(
        "00000002",
        "00000001",
        "frontend",
        "POST",
        3,
        checkout + transit,
        0.001,
        st,
        "checkout",
        err="502",
    )
    add("00000003", "00000002", "checkout", op, 2, checkout, 0.002, st, err=error, on_pods=True)
    add(
        "00000004",
        "00000003",
        "checkout",
        "INSERT orders",
        3,
        db,
        0.003,
        ok,
        "orders-db",
        "postgresql",
        on_pods=True,
    )
    return pd.DataFrame(rows, columns=list(SPAN_COLUMNS))


def logs(
    start: float,
    end: float,
    n: int,
    seed: int,
    templates: Sequence[tuple[str, str, int]],
) -> pd.DataFrame:
    """``n`` log lines in ``[start, end)``; each is one of ``templates`` (service, body, severity)
    picked uniformly; ``{n}`` in a body becomes a random number, ``{id}`` a random hex id."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(start, end, n))
    pick = rng.integers(0, len(templates), n)
    rows = []
    for i in range(n):
        service, body, severity = templates[pick[i]]
        text = body.replace("{n}", str(int(rng.integers(1, 100000)))).replace(
            "{id}", f"{int(rng.integers(0, 2**63)):016x}"
        )
        rows.append(
            {
                "ts": t[i],
                "service": service,
                "severity": severity,
                "level": {9: "info", 13: "warn", 17: "error", 21: "fatal"}[severity],
                "body": text,
                "trace_id": None,
                "span_id": None,
                "zone": None,
                "pod": None,
            }
        )
    return pd.DataFrame(rows, columns=list(LOG_COLUMNS))


def detect_input(
    window: Window,
    baseline_end: float,
    spans: pd.DataFrame | None = None,
    log_frame: pd.DataFrame | None = None,
    log_counts: pd.DataFrame | None = None,
) -> DetectInput:
    """A DetectInput over these frames (no metrics); ``log_counts`` as the engine would
    attach what a ``LogCountSource`` returned."""
    tel = Telemetry()
    if log_counts is not None:
        tel.log_counts = log_counts  # type: ignore[attr-defined]
    if spans is not None:
        tel.spans = spans
    if log_frame is not None:
        tel.logs = log_frame
    alert = Alert(
        "f" * 16,
        {"alertname": "HighErrorRate", "service": "frontend"},
        starts_at=window.start + 300,
    )
    return DetectInput(
        alert=alert,
        window=window,
        telemetry=tel,
        catalog=default_catalog(),
        aggregated=empty_frame(SIGNAL_COLUMNS),
        step=15.0,
        baseline_end=baseline_end,
    )

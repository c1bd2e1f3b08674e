"""The detector contract: one modality's telemetry -> rows of the one anomaly table.

Detection is a plugin stage, on the same footing as adapters and patterns.
A detector reads what the collect stage gathered (metric signals, spans,
logs) and returns rows of :data:`correlator.model.ANOMALY_COLUMNS`; the
engine runs every enabled detector and merges their rows before topology and
patterns, so a fault that shows in one modality only (an exception in 2 % of
requests, a wrong return value that only callers log) still reaches them.

Built-ins (``metrics``, ``spans``, ``logs``) register in the entry-point group
``correlator.detectors``, the same one a third-party package uses::

    [project.entry-points."correlator.detectors"]
    queue_depth = "my_package.detectors:QueueDepthDetector"

Rules every detector follows (they are what make the rows of different
modalities comparable):

* **Scales from the data.** Durations are seconds, learned from the data's own
  sample interval (``DetectInput.step``); never a number of points.
* **Scale-free strength.** ``score`` is the deviation in units of the series'
  own baseline noise (robust z), with the noise floored by what the data can
  resolve (a counter's Poisson noise at its rate, a gauge's quantum), never by
  an absolute unit. Materiality is a relative change.
* **Baselines.** Everything normal before the onset counts; a short baseline
  is worked with (and reported through ``DetectOutput.gaps``), never refused.
* A detector that lacks its data returns an empty frame (and may say why in a
  gap); it never raises for missing data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import pandas as pd

from correlator.catalog import Catalog
from correlator.model import ANOMALY_COLUMNS, Alert, Gap, Telemetry, Window, empty_frame

__all__ = [
    "DETECTOR_GROUP",
    "MODALITIES",
    "DetectInput",
    "DetectOutput",
    "Detector",
    "anomaly_frame",
]

#: The entry-point group detectors register in.
DETECTOR_GROUP = "correlator.detectors"

#: The modalities of the built-in detectors (a plugin may name another).
MODALITIES = ("metrics", "spans", "logs")


@dataclass(frozen=True)
class DetectInput:
    """What every detector reads. Frozen: detectors must not change it.

    ``aggregated`` is the metric frame with one value per (role, service, peer,
    ts) (see :func:`correlator.detect.aggregate`); ``step`` the time grid's
    spacing in seconds, learned from the data; ``baseline_end`` the time up to
    which data is taken as normal before any onset is known (the onset of each
    series may move it earlier, never later).
    """

    alert: Alert
    window: Window
    telemetry: Telemetry
    catalog: Catalog
    aggregated: pd.DataFrame
    step: float
    baseline_end: float


@dataclass(frozen=True)
class DetectOutput:
    """A detector's rows (``ANOMALY_COLUMNS``) and what it could not judge."""

    anomalies: pd.DataFrame
    gaps: Sequence[Gap] = field(default_factory=tuple)


@runtime_checkable
class Detector(Protocol):
    """One modality's detector. ``name`` is its entry-point name."""

    name: str
    modality: str

    def detect(self, data: DetectInput) -> DetectOutput:
        """Rows of the anomaly table for ``data`` (empty when there is nothing to judge)."""
        ...


def anomaly_frame(rows: Sequence[dict[str, object]] | pd.DataFrame) -> pd.DataFrame:
    """Rows (dicts, or a frame with at least the required columns) as an anomaly table.

    Missing optional columns are filled: ``peer``, ``signal`` and ``evidence``
    with ``""``, ``modality`` with ``"metrics"``. Columns come in
    ``ANOMALY_COLUMNS`` order, rows sorted by onset then score (strongest first).
    """
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if frame.empty:
        return empty_frame(ANOMALY_COLUMNS)
    frame = frame.copy()
    for col, default in (("peer", ""), ("signal", ""), ("evidence", ""), ("modality", "metrics")):
        if col not in frame.columns:
            frame[col] = default
        else:
            frame[col] = frame[col].fillna(default)
    missing = [c for c in ANOMALY_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"anomaly rows lack columns {missing}")
    out = frame[list(ANOMALY_COLUMNS)].sort_values(
        ["onset", "score"], ascending=[True, False], kind="stable"
    )
    return out.reset_index(drop=True)


def load_detectors() -> dict[str, Detector]:
    """Every installed detector (entry-point group ``correlator.detectors``), instantiated.

    A plugin that fails to load, or does not satisfy :class:`Detector`, raises
    :class:`~correlator.errors.CorrelatorError` naming it and the fix.
    """
    from correlator.errors import CorrelatorError
    from correlator.plugins import load_group

    out: dict[str, Detector] = {}
    for name, cls in load_group(DETECTOR_GROUP).items():
        try:
            det = cls()
        except Exception as exc:  # a plugin can fail in any way
            raise CorrelatorError(
                f"detector plugin {name!r} ({cls!r}) could not be created: {exc}; "
                "fix or uninstall the package that provides it"
            ) from exc
        if not isinstance(det, Detector):
            raise CorrelatorError(
                f"detector plugin {name!r} ({cls!r}) lacks name, modality or detect(); "
                "see correlator.detector.Detector"
            )
        out[name] = det
    return out

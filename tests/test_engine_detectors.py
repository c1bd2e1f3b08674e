"""The detector stage: plugins through the entry-point group, failures as gaps, plain data."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from correlator.config import Settings, WindowSettings
from correlator.detector import load_detectors
from correlator.engine import investigate
from correlator.sources import Sources
from plugin_support import install_plugin
from synth import MemorySource, build

QUEUE_DETECTOR = """
    from correlator.detector import DetectOutput, anomaly_frame

    class QueueDetector:
        name = "queue"
        modality = "queues"

        def detect(self, data):
            at = data.alert.starts_at - 120.0
            return DetectOutput(anomaly_frame([{
                "service": "payments", "role": "queue_depth", "onset": at, "end": at + 300,
                "score": 9.0, "direction": "up", "baseline": 3.0, "peak": 400.0,
                "modality": "queues", "signal": "orders_queue_depth",
                "evidence": "orders queue of payments grew from 3 to 400 messages",
            }]))
"""

BROKEN_DETECTOR = """
    class Broken:
        name = "broken"
        modality = "metrics"

        def detect(self, data):
            raise RuntimeError("lost its marbles")
"""


def test_builtin_detectors_register_through_the_group() -> None:
    found = load_detectors()
    assert "metrics" in found and found["metrics"].modality == "metrics"


def test_third_party_detector_rows_reach_the_anomaly_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin(
        tmp_path, monkeypatch, "correlator.detectors", "queue", QUEUE_DETECTOR, "QueueDetector"
    )
    sc = build("deployment")
    inv = investigate(sc.alert, Sources.from_backends(MemorySource(sc.telemetry)))
    rows = inv.anomalies[inv.anomalies["modality"] == "queues"]
    assert list(rows["signal"]) == ["orders_queue_depth"]
    assert inv.findings[0].service == "payments"


def test_a_failing_detector_is_a_gap_and_the_others_still_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin(
        tmp_path, monkeypatch, "correlator.detectors", "broken", BROKEN_DETECTOR, "Broken"
    )
    sc = build("deployment")
    inv = investigate(sc.alert, Sources.from_backends(MemorySource(sc.telemetry)))
    assert any("detector broken: RuntimeError: lost its marbles" in g.why for g in inv.gaps)
    assert (inv.findings[0].service, inv.findings[0].cause) == ("payments", "deployment")


def test_a_short_baseline_is_reported_not_refused() -> None:
    sc = build("deployment")
    settings = Settings(window=WindowSettings(before=300, after=300, baseline=300))
    inv = investigate(sc.alert, Sources.from_backends(MemorySource(sc.telemetry)), settings)
    why = [g.why for g in inv.gaps if g.source == "baseline"]
    assert why and "min of normal data" in why[0]
    assert inv.findings


def test_analyse_does_not_change_the_callers_telemetry() -> None:
    from correlator.engine import analyse, make_window

    sc = build("deployment")
    before = dataclasses.replace(sc.telemetry)
    signals = sc.telemetry.signals
    window = make_window(sc.alert, Settings())
    analyse(sc.alert, window, 15.0, sc.telemetry)
    assert sc.telemetry.signals is signals
    assert sc.telemetry == before

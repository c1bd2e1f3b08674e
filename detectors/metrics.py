"""The metrics detector: every metric series judged against its own baseline.

A thin plugin over :func:`correlator.detect.detect` (the vectorised robust
detector; see its module docstring for how scales come from the data), plus the
alerted service's own symptoms confirmed at a lower bar
(:func:`correlator.detect.confirm_alert`).
"""

from __future__ import annotations

from dataclasses import replace

from correlator.detect import DetectConfig, confirm_alert, detect
from correlator.detector import DetectInput, DetectOutput
from correlator.promql import rate_range

__all__ = ["MetricDetector"]


class MetricDetector:
    """Anomalies of metric series (catalog roles and series no role knows)."""

    name = "metrics"
    modality = "metrics"

    def __init__(self, config: DetectConfig | None = None) -> None:
        self.config = config or DetectConfig()

    def detect(self, data: DetectInput) -> DetectOutput:
        """Rows for every series that moved, and the alerted service's own symptoms."""
        agg = data.aggregated
        if agg.empty:
            return DetectOutput(detect(agg, data.window, self.config, aggregated=agg))
        alert_at = data.alert.starts_at
        config = self.config
        if config.rate_range is None:
            # Counters were rated over this range (the Poisson noise of their counts).
            config = replace(
                config, rate_range=rate_range(data.step, data.telemetry.sample_interval)
            )
        found = detect(
            agg,
            data.window,
            config,
            step=data.step,
            aggregated=agg,
            alert_at=alert_at,
            base_end=data.baseline_end,
        )
        found = confirm_alert(
            found,
            agg,
            data.window,
            data.alert.service,
            data.step,
            alert_at,
            base_end=data.baseline_end,
        )
        return DetectOutput(found)

"""A third-party pattern earns its confidence from generic features, without calibration edits."""

from __future__ import annotations

from pathlib import Path

import pytest

from correlator.engine import investigate
from correlator.sources import Sources
from plugin_support import install_plugin
from synth import MemorySource, build

#: A pattern that names the service whose own trouble began first, with a high score.
EARLY_BIRD = """
    from dataclasses import dataclass

    from correlator.pattern import BasePattern


    @dataclass(frozen=True)
    class Config:
        pass


    class EarlyBird(BasePattern):
        name = "early_bird"
        cause = "early_bird"
        needs = ()
        config_class = Config

        def evaluate(self, ctx, config):
            if not ctx.roots:
                return self.no_match("nothing moved")
            top = ctx.roots[0]
            rows = ctx.anomalies_of(top.service)
            return self.found(
                [self.finding(top.service, 0.95, ctx.anomalies_evidence(rows, 2), onset=top.onset)]
            )
"""


def test_a_new_pattern_gets_an_honest_confidence_and_disturbs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sc = build("deployment")
    before = investigate(sc.alert, Sources.from_backends(MemorySource(sc.telemetry)))
    deploy = next(f for f in before.findings if f.cause == "deployment")
    install_plugin(
        tmp_path, monkeypatch, "correlator.patterns", "early_bird", EARLY_BIRD, "EarlyBird"
    )
    after = investigate(sc.alert, Sources.from_backends(MemorySource(sc.telemetry)))
    mine = next(f for f in after.findings if f.cause == "early_bird")
    assert mine.service == "payments"
    # A strong finding on the top root service: the calibration's generic features (pattern
    # score, topology position, onset order, breadth) give it a real confidence ...
    assert mine.confidence >= 0.2
    # ... and its mere presence barely moves the finding that was there before.
    again = next(f for f in after.findings if f.cause == "deployment")
    assert abs(again.confidence - deploy.confidence) <= 0.25
    assert again.service == deploy.service

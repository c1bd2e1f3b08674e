"""`correlator lab` tried as docs/lab.md tells a user, end to end.

Start ``correlator lab <bundle>``, take the ``export`` lines it prints, run
``correlator investigate <id>`` with them (alert from Alertmanager, metrics
from Prometheus), and compare with ``correlator investigate <id>`` with no
backend configured (the shipped bundles). The window must be the bundle's
incident (not "now") and the top finding the same.

Two bundles: one whose alert starts and ends within a few minutes of the
fault, and the zone outage, whose top finding changes when the window is
cut at the alert's start: it shows that the lab's investigation uses the
bundle's end of the alert.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from correlator import lab

pytestmark = [pytest.mark.prometheus, pytest.mark.alertmanager]

SCENARIOS = Path(__file__).resolve().parent.parent / "fixtures/scenarios"
READY_LINE = "Ctrl-C stops both servers."


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CORRELATOR_")}


def _correlator(*args: str, env: dict[str, str]) -> Any:
    proc = subprocess.run(
        [sys.executable, "-m", "correlator.cli", *args, "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture
def lab_for(request: pytest.FixtureRequest) -> Iterator[tuple[dict[str, str], list[str]]]:
    """``correlator lab`` on the bundle named by the test; yields (exports, alert ids)."""
    for binary in (lab.PROMETHEUS_BIN, lab.PROMTOOL_BIN, lab.ALERTMANAGER_BIN):
        if not Path(binary).exists():
            pytest.skip(f"{binary} missing")
    proc = subprocess.Popen(
        [sys.executable, "-m", "correlator.cli", "lab", str(SCENARIOS / request.param)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_clean_env(),
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if line.strip() == READY_LINE:
            break
    try:
        text = "\n".join(lines)
        assert READY_LINE in text, f"the lab did not start:\n{text}"
        exports = dict(re.findall(r"export (CORRELATOR_\w+_URL)=(\S+)", text))
        ids = re.findall(r"correlator investigate ([0-9a-f]{16})", text)
        yield exports, ids
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        proc.stdout.close()


@pytest.mark.parametrize(
    "lab_for", ["partner-bff-bad-deploy", "recommendations-zone-outage"], indirect=True
)
def test_investigating_through_the_lab_finds_what_the_bundle_finds(
    lab_for: tuple[dict[str, str], list[str]],
) -> None:
    exports, ids = lab_for
    assert set(exports) == {"CORRELATOR_PROMETHEUS_URL", "CORRELATOR_ALERTMANAGER_URL"}
    assert ids, "the lab names the alerts to investigate"
    through_lab_env = _clean_env() | exports
    listed = _correlator("alerts", env=through_lab_env)
    assert {a["fingerprint"] for a in listed} == set(ids)
    assert all(a["source"].startswith("alertmanager:") for a in listed)
    for alert_id in ids:
        bundled = _correlator("investigate", alert_id, env=_clean_env())
        via_lab = _correlator("investigate", alert_id, env=through_lab_env)
        # The bundle's incident, not 'now'. Read from the files, the window ends at the
        # recording's last sample; a Prometheus cannot say where its data ends.
        assert via_lab["window"]["start"] == bundled["window"]["start"], "not 'now'"
        assert bundled["window"]["end"] <= via_lab["window"]["end"]
        assert via_lab["findings"], f"{alert_id}: no finding through the lab"
        top = (via_lab["findings"][0]["service"], via_lab["findings"][0]["cause"])
        assert top == (bundled["findings"][0]["service"], bundled["findings"][0]["cause"])
        # Metrics came from Prometheus: the evidence shows the PromQL it ran.
        queries = [e.get("query", "") for f in via_lab["findings"] for e in f["evidence"]]
        assert any(" or " in q and "!=" in q for q in queries)

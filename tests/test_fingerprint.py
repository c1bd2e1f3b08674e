"""Alertmanager fingerprints, checked against known values and a real Alertmanager."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from correlator.fingerprint import alert_fingerprint

AM = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"

LABELSETS = [
    {"alertname": "HighErrorRate", "service": "checkout"},
    {"alertname": "HighLatency", "service": "payment", "severity": "page", "zone": "eu-west-1a"},
    {"alertname": "ünïcode", "team": 'a"b\\c\nd'},
    {"a": ""} | {"alertname": "Empty"},
]


def test_known_values() -> None:
    # FNV-1a 64 of the empty input is the offset basis.
    assert alert_fingerprint({}) == "cbf29ce484222325"
    # Label order does not matter; values do.
    a = alert_fingerprint({"alertname": "X", "service": "a"})
    assert a == alert_fingerprint({"service": "a", "alertname": "X"})
    assert a != alert_fingerprint({"alertname": "X", "service": "b"})
    assert len(a) == 16 and int(a, 16) >= 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not Path(AM).exists():
        pytest.skip("prometheus-alertmanager is not installed")
    tmp = tmp_path_factory.mktemp("am")
    config = tmp / "am.yml"
    config.write_text("route:\n  receiver: none\nreceivers:\n  - name: none\n")
    port = _free_port()
    proc = subprocess.Popen(
        [
            AM,
            f"--config.file={config}",
            f"--storage.path={tmp}",
            "--cluster.listen-address=",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            pytest.fail("alertmanager did not become ready")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.alertmanager
def test_matches_real_alertmanager(alertmanager: str) -> None:
    body = [{"labels": {k: v for k, v in labels.items() if v}} for labels in LABELSETS]
    r = httpx.post(f"{alertmanager}/api/v2/alerts", json=body, timeout=5)
    assert r.status_code == 200, r.text
    got = httpx.get(f"{alertmanager}/api/v2/alerts", timeout=5).json()
    real = {frozenset(a["labels"].items()): a["fingerprint"] for a in got}
    assert len(real) == len(LABELSETS)
    for labels in body:
        assert alert_fingerprint(labels["labels"]) == real[frozenset(labels["labels"].items())]

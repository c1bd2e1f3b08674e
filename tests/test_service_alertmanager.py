"""End to end with a real Alertmanager 0.25: alert -> Alertmanager -> webhook -> investigation.

Alertmanager (Debian's ``prometheus-alertmanager``) runs on 127.0.0.1 with
clustering off and a webhook receiver pointing at ``correlator serve``, which
runs as a real subprocess with bearer-token auth.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from correlator.fingerprint import alert_fingerprint
from correlator.model import format_time
from service_support import Server, free_port, running, server_env, wait_for

pytestmark = pytest.mark.alertmanager

ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
TOKEN = "am-to-correlator-token"


def _config(service_port: int, token_file: Path) -> str:
    return f"""
route:
  receiver: correlator
  group_by: [alertname, service]
  group_wait: 100ms
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: correlator
    webhook_configs:
      - url: http://127.0.0.1:{service_port}/webhook
        send_resolved: true
        max_alerts: 1000
        http_config:
          authorization:
            type: Bearer
            credentials_file: {token_file}
"""


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[tuple[str, int]]:
    if not Path(ALERTMANAGER).exists():
        pytest.skip(
            "prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager)"
        )
    service_port = free_port()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    config = tmp_path / "alertmanager.yml"
    config.write_text(_config(service_port, token_file))
    port = free_port()
    log = (tmp_path / "alertmanager.log").open("wb")
    proc = subprocess.Popen(
        [
            ALERTMANAGER,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 20, "Alertmanager to be ready")
        yield url, service_port
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _post_alert(am: str, labels: dict[str, str], starts: float, ends: float | None = None) -> None:
    alert: dict[str, Any] = {
        "labels": labels,
        "annotations": {"summary": "checkout is failing"},
        "startsAt": format_time(starts),
        "generatorURL": "http://prometheus.example/graph",
    }
    if ends is not None:
        alert["endsAt"] = format_time(ends)
    r = httpx.post(f"{am}/api/v2/alerts", json=[alert], timeout=5)
    assert r.status_code == 200, r.text


def test_alert_posted_to_alertmanager_is_investigated(
    alertmanager: tuple[str, int], tmp_path: Path
) -> None:
    am, port = alertmanager
    server = Server(
        [
            "--port",
            str(port),
            "--store",
            str(tmp_path / "store.db"),
            "--poll",
            "0.2",
            "--investigator",
            "service_support:slow_investigator",
            "--token-env",
            "AM_TOKEN",
        ],
        server_env(AM_TOKEN=TOKEN),
        tmp_path / "serve.log",
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    labels = {"alertname": "CheckoutErrors", "service": "checkout", "severity": "page"}
    starts = time.time() - 30
    with running(server):
        _post_alert(am, labels, starts)
        found: dict[str, Any] = {}

        def investigated() -> bool:
            r = httpx.get(
                f"{server.url}/api/v1/investigations?alertname=CheckoutErrors", headers=auth
            )
            items = r.json()["investigations"]
            if items and items[0]["status"] == "done":
                found.update(items[0])
                return True
            return False

        wait_for(investigated, 30, "the investigation of the alert sent by Alertmanager")
        [am_alert] = httpx.get(f"{am}/api/v2/alerts").json()
        assert found["fingerprint"] == am_alert["fingerprint"] == alert_fingerprint(labels)
        full = httpx.get(f"{server.url}/api/v1/alerts/{found['fingerprint']}", headers=auth).json()
        assert full["investigation"]["findings"][0]["service"] == "checkout"
        assert full["alert"]["labels"] == labels
        assert full["alert"]["source"] == "webhook:correlator"

        # Resolving the alert in Alertmanager marks the same investigation resolved.
        _post_alert(am, labels, starts, ends=time.time())

        def resolved() -> bool:
            r = httpx.get(f"{server.url}/api/v1/investigations/{found['id']}", headers=auth)
            return bool(r.json()["resolved"])

        wait_for(resolved, 30, "the resolved notification")
        listed = httpx.get(f"{server.url}/api/v1/investigations", headers=auth).json()
        assert listed["count"] == 1  # re-sends and the resolve did not add investigations
    text = (tmp_path / "serve.log").read_text()
    assert TOKEN not in text  # the secret is never logged
    assert '"msg": "webhook accepted"' in text

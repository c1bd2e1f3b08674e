"""The service with the real engine: a webhook alert is investigated by
``correlator.engine.investigate``, and a backend that is down becomes a reported gap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from correlator.config import Settings
from correlator.fingerprint import alert_fingerprint
from correlator.model import Alert
from correlator.service import Authenticator, ServiceConfig, WorkerSettings, create_app
from correlator.sources import Sources
from service_support import dumps, free_port, payload, serve_in_thread, wait_for
from synth import MemorySource, build

engine = pytest.importorskip("correlator.engine")


def test_real_engine_with_prometheus_down_still_finishes_with_the_gap(tmp_path: Path) -> None:
    from correlator.adapters.prometheus import PrometheusAdapter

    from correlator.http import HttpSettings

    sc = build("db_overload", root="payments")
    # A real adapter aimed at a port nobody listens on: the backend is down.
    dead = PrometheusAdapter(
        HttpSettings(
            name="prometheus", url=f"http://127.0.0.1:{free_port()}", timeout=1.0, retries=0
        )
    )
    sources = Sources.from_backends(MemorySource(sc.telemetry), dead)
    settings = Settings(source_timeout=3.0)

    def investigate(alert: Alert) -> Any:
        return engine.investigate(alert, sources, settings)

    cfg = ServiceConfig(
        store=str(tmp_path / "store.db"),
        auth=Authenticator(token="engine-token"),
        workers=WorkerSettings(concurrency=1, deadline=60, lease=10, poll=0.1),
    )
    auth = {"Authorization": "Bearer engine-token"}
    alert = sc.alert.to_json()
    alert.pop("fingerprint")  # computed from the labels, as for an old Alertmanager
    with serve_in_thread(create_app(cfg, investigate)) as url:
        r = httpx.post(f"{url}/webhook", content=dumps(payload(alert)), headers=auth)
        assert r.status_code == 200, r.text
        inv_id = r.json()["investigations"][0]
        record: dict[str, Any] = {}

        def done() -> bool:
            record.update(httpx.get(f"{url}/api/v1/investigations/{inv_id}", headers=auth).json())
            return record["status"] in ("done", "failed")

        wait_for(done, 90, "the engine's investigation")
        page = httpx.get(f"{url}/investigations/{inv_id}", headers=auth)
        metrics = httpx.get(f"{url}/metrics").text
    assert record["status"] == "done", record["error"]
    assert record["fingerprint"] == alert_fingerprint(sc.alert.labels)
    result = record["investigation"]
    # The service stores what the engine answers for the same alert.
    direct = engine.investigate(sc.alert, sources, settings).to_json()
    pairs = [(f["service"], f["cause"]) for f in result["findings"]]
    assert pairs and pairs == [(f["service"], f["cause"]) for f in direct["findings"]]
    gap_sources = {g["source"] for g in result["gaps"]}
    assert any("prometheus" in s for s in gap_sources), result["gaps"]
    assert page.status_code == 200 and pairs[0][0] in page.text
    assert "correlator_backend_errors_total" in metrics
    assert 'correlator_stage_duration_seconds_count{stage="collect"}' in metrics

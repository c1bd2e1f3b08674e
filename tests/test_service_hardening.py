"""The service under hostile or unlucky input, over real HTTP with real stores.

Bad alerts of every kind, poison rows already in the store (SQLite and a real
PostgreSQL), worker loops that die, bounded results API paging, readiness
messages, retention and the store file's mode.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from bad_alerts import corpus
from correlator.config import Settings
from correlator.model import Alert
from correlator.service import Authenticator, ServiceConfig, WorkerSettings, create_app
from correlator.service.payload import Limits
from correlator.service.store import Store, open_store
from service_support import (
    PostgresCluster,
    dumps,
    payload,
    serve_in_thread,
    slow_investigator,
    wait_for,
    webhook_alert,
)

TOKEN = "harden-token-" + "y" * 16
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _config(store: str, **kw: Any) -> ServiceConfig:
    base: dict[str, Any] = {
        "store": store,
        "auth": Authenticator(token=TOKEN),
        "workers": WorkerSettings(concurrency=2, deadline=10, lease=5, poll=0.1),
        "limits": Limits(max_alerts=1000),
        "max_body": 2 * 1024 * 1024,
    }
    base.update(kw)
    return ServiceConfig(**base)


def _status(url: str, inv_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def check() -> bool:
        r = httpx.get(f"{url}/api/v1/investigations/{inv_id}", headers=AUTH)
        out.clear()
        out.update(r.json())
        return r.status_code == 200 and out.get("status") in ("done", "failed")

    wait_for(check, 30, f"investigation {inv_id}")
    return out


@pytest.fixture(params=["sqlite", "postgres"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return cluster.database(f"h_{uuid.uuid4().hex[:10]}")


def test_every_bad_alert_kind_is_refused_clearly_and_a_good_one_is_then_investigated(
    tmp_path: Path,
) -> None:
    cases = corpus()
    assert len(cases) >= 50
    app = create_app(_config(str(tmp_path / "store.db")), slow_investigator(Settings()))
    wrong: list[str] = []
    with serve_in_thread(app) as url, httpx.Client(timeout=30) as client:
        for name, body, content_type, statuses, needle in cases:
            r = client.post(
                f"{url}/webhook",
                content=body,
                headers={**AUTH, "Content-Type": content_type},
            )
            message = r.json().get("error", "") if r.content else ""
            if r.status_code not in statuses or needle.lower() not in message.lower():
                wrong.append(f"{name}: {r.status_code} {message[:160]!r}")
        # Nothing bad was stored, and the service still investigates a good alert.
        listed = client.get(f"{url}/api/v1/investigations", headers=AUTH).json()
        assert listed["count"] == 0, listed
        good = client.post(
            f"{url}/webhook",
            content=dumps(payload(webhook_alert(name="AfterTheStorm"))),
            headers={**AUTH, "Content-Type": "application/json"},
        )
        assert good.status_code == 200, good.text
        record = _status(url, good.json()["investigations"][0])
        ready = client.get(f"{url}/readyz")
    assert not wrong, "\n".join(wrong)
    assert record["status"] == "done", record
    assert ready.status_code == 200, ready.text


def _plant_poison(store: Store, target: str) -> list[str]:
    """Rows an older version (or a damaged disk) could have left: unreadable alerts."""
    store.migrate()
    now = time.time()
    good_shape = webhook_alert()
    rows = [
        (
            "poison01",
            "1-01-01T00:00:00Z",
            json.dumps({**good_shape, "startsAt": "1-01-01T00:00:00Z"}),
        ),
        ("poison02", "not json", "{not json at all"),
        ("poison03", "a list", json.dumps(["alertname", "X"])),
        ("poison04", "no labels", json.dumps({"startsAt": "2026-03-02T10:31:00Z"})),
    ]
    sql = (
        "INSERT INTO investigations (id, fingerprint, starts_at, alertname, service, alert_json,"
        " status, resolved, received_at, attempts) VALUES (%s, %s, %s, %s, NULL, %s, 'queued', 0,"
        " %s, 0)"
    )
    if target.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(target, autocommit=True) as conn:
            for i, (inv_id, _why, alert_json) in enumerate(rows):
                conn.execute(sql, (inv_id, f"ff{i:02d}", float(i), "Poison", alert_json, now))
    else:
        with sqlite3.connect(target) as conn:
            for i, (inv_id, _why, alert_json) in enumerate(rows):
                conn.execute(
                    sql.replace("%s", "?"),
                    (inv_id, f"ff{i:02d}", float(i), "Poison", alert_json, now),
                )
    return [r[0] for r in rows]


def test_poison_rows_are_quarantined_and_never_stop_the_workers(store_target: str) -> None:
    store = open_store(store_target)
    poison = _plant_poison(store, store_target)
    app = create_app(_config(store_target), slow_investigator(Settings()), store=store)
    with serve_in_thread(app) as url:
        records = {p: _status(url, p) for p in poison}
        r = httpx.post(
            f"{url}/webhook", content=dumps(payload(webhook_alert(name="Healthy"))), headers=AUTH
        )
        assert r.status_code == 200, r.text
        good = _status(url, r.json()["investigations"][0])
        listed = httpx.get(f"{url}/api/v1/investigations?status=failed", headers=AUTH).json()
        page = httpx.get(f"{url}/investigations/poison02", headers=AUTH)
        metrics = httpx.get(f"{url}/metrics").text
        ready = httpx.get(f"{url}/readyz")
    for record in records.values():
        assert record["status"] == "failed", record
        assert record["error"].startswith("quarantined:"), record
        assert record["attempts"] == 1, record
    assert "cannot be read back" in records["poison01"]["error"]
    assert "not readable JSON" in records["poison02"]["error"]
    assert {i["id"] for i in listed["investigations"]} == set(poison)
    assert page.status_code == 200 and "quarantined" in page.text
    assert good["status"] == "done", good
    assert "correlator_investigations_quarantined 4.0" in metrics
    assert 'correlator_investigations_finished_total{outcome="quarantined"} 4.0' in metrics
    assert "correlator_worker_restarts_total 0.0" in metrics
    assert ready.status_code == 200, ready.text


class _FlakyStore:
    """A real store whose first claims raise an unexpected error (a bug, not a StoreError)."""

    def __init__(self, inner: Store, failures: int) -> None:
        self._inner = inner
        self.failures = failures

    def claim(self, owner: str, lease: float, limit: int = 1) -> Any:
        if self.failures > 0:
            self.failures -= 1
            raise ZeroDivisionError("a bug in the claim path")
        return self._inner.claim(owner, lease, limit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_worker_that_dies_is_logged_and_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = _FlakyStore(open_store(str(tmp_path / "store.db")), failures=3)
    app = create_app(
        _config(str(tmp_path / "store.db")),
        slow_investigator(Settings()),
        store=flaky,  # type: ignore[arg-type]
    )
    with caplog.at_level("ERROR", logger="correlator.service.worker"), serve_in_thread(app) as url:
        wait_for(lambda: flaky.failures == 0, 10, "the claims to fail")
        r = httpx.post(f"{url}/webhook", content=dumps(payload(webhook_alert())), headers=AUTH)
        record = _status(url, r.json()["investigations"][0])
        metrics = httpx.get(f"{url}/metrics").text
        ready = httpx.get(f"{url}/readyz")
    assert record["status"] == "done"
    assert "correlator_worker_restarts_total 3.0" in metrics
    died = [rec for rec in caplog.records if rec.getMessage() == "worker died; starting a new one"]
    assert len(died) == 3 and "ZeroDivisionError" in str(died[0].__dict__["problem"])
    assert not any(rec.exc_info for rec in died), "one line, not a traceback"
    assert ready.status_code == 200


class _SlowPingStore:
    def __init__(self, inner: Store) -> None:
        self._inner = inner

    def ping(self) -> None:
        time.sleep(6)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_results_api_bounds_offset_and_readyz_names_a_timeout(tmp_path: Path) -> None:
    store = _SlowPingStore(open_store(str(tmp_path / "store.db")))
    app = create_app(
        _config(str(tmp_path / "store.db")),
        slow_investigator(Settings()),
        store=store,  # type: ignore[arg-type]
    )
    with serve_in_thread(app) as url:
        answers = {
            offset: httpx.get(f"{url}/api/v1/investigations?offset={offset}", headers=AUTH)
            for offset in (str(2**63), "1000001", "-1", "99999999999999999999999", "1000000")
        }
        ready = httpx.get(f"{url}/readyz", timeout=20)
    for offset in (str(2**63), "1000001", "-1", "99999999999999999999999"):
        r = answers[offset]
        assert r.status_code == 400, (offset, r.text)
        assert "offset 0..1000000" in r.json()["error"]
    assert answers["1000000"].status_code == 200
    assert ready.status_code == 503
    assert "store: no answer within 5s" in ready.json()["problems"]


def test_retention_prunes_old_finished_investigations(store_target: str) -> None:
    store = open_store(store_target)
    store.migrate()
    alerts = [
        Alert(fingerprint=f"{i:04x}", labels={"alertname": "Old"}, starts_at=1000.0 + i)
        for i in range(3)
    ]
    accepted = store.accept(alerts)
    for job in store.claim("me", 30, 2):
        assert store.finish(job.id, "me", "done", {"findings": []}, None)
    # Two finished, one still queued: only finished ones received before the cutoff go.
    assert store.prune(time.time() - 3600) == 0
    assert store.prune(time.time() + 1) == 2
    left = store.query(_query())
    assert len(left) == 1 and left[0].status == "queued"
    assert left[0].id in {a.id for a in accepted}
    store.close()


def _query() -> Any:
    from correlator.service.store import Query

    return Query()


def test_retention_runs_in_the_service(tmp_path: Path) -> None:
    target = str(tmp_path / "store.db")
    cfg = _config(
        target,
        workers=WorkerSettings(concurrency=1, deadline=10, lease=5, poll=0.1, retention_days=1),
    )
    store = open_store(target)
    store.migrate()
    store.accept([Alert(fingerprint="0a0a", labels={"alertname": "Ancient"}, starts_at=5.0)])
    job = store.claim("old-replica", 30)[0]
    store.finish(job.id, "old-replica", "done", {"findings": []}, None)
    with sqlite3.connect(target) as db:
        db.execute("UPDATE investigations SET received_at = received_at - 2 * 86400")
    with serve_in_thread(create_app(cfg, slow_investigator(Settings()))) as url:

        def gone() -> bool:
            r = httpx.get(f"{url}/api/v1/investigations", headers=AUTH).json()
            return r["count"] == 0

        wait_for(gone, 10, "the old investigation to be pruned")


def test_sqlite_store_file_is_private(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "store.db"
    old = os.umask(0o022)
    try:
        store = open_store(str(target))
        store.migrate()
        store.accept([Alert(fingerprint="0b0b", labels={"alertname": "X"}, starts_at=5.0)])
    finally:
        os.umask(old)
    modes = {
        p.name: stat.S_IMODE(p.stat().st_mode)
        for p in target.parent.iterdir()
        if p.name.startswith("store.db")
    }
    store.close()
    assert modes["store.db"] == 0o600, modes
    assert all(m == 0o600 for m in modes.values()), modes


def test_text_plain_webhook_is_415(tmp_path: Path) -> None:
    app = create_app(_config(str(tmp_path / "store.db")), slow_investigator(Settings()))
    body = dumps(payload(webhook_alert()))
    with serve_in_thread(app) as url:
        plain = httpx.post(
            f"{url}/webhook", content=body, headers={**AUTH, "Content-Type": "text/plain"}
        )
        ok = httpx.post(
            f"{url}/webhook",
            content=body,
            headers={**AUTH, "Content-Type": "application/json; charset=utf-8"},
        )
    assert plain.status_code == 415 and "application/json" in plain.json()["error"]
    assert ok.status_code == 200


def test_event_loop_errors_are_one_line_each(caplog: pytest.LogCaptureFixture) -> None:
    from correlator.service.server import quiet_loop_errors

    async def main() -> None:
        loop = asyncio.get_running_loop()
        quiet_loop_errors(loop)
        for _ in range(200):
            loop.call_exception_handler(
                {
                    "message": "socket.accept() out of system resource",
                    "exception": OSError(24, "Too many open files"),
                }
            )

    with caplog.at_level("WARNING", logger="correlator.service.http"):
        asyncio.run(main())
    lines = [r for r in caplog.records if r.name == "correlator.service.http"]
    assert 1 <= len(lines) <= 5
    assert all(r.exc_info is None for r in lines)
    assert "Too many open files" in str(lines[0].__dict__["problem"])


def test_every_serve_option_is_documented() -> None:
    from correlator.service.cli import serve

    doc = (Path(__file__).resolve().parent.parent / "docs" / "service.md").read_text()
    missing = [
        opt
        for param in serve.params
        for opt in param.opts
        if opt.startswith("--") and f"`{opt}" not in doc
    ]
    assert not missing, f"document these in docs/service.md: {missing}"

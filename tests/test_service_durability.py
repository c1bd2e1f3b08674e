"""SIGKILL while alerts are queued: every accepted alert is investigated exactly once.

`correlator serve` runs as real subprocesses; the investigate callable logs a
``start`` and an ``end`` line per run, so the tests see every execution, not
only the stored results. An investigation running at the moment of the kill
is necessarily run again (its result was never stored); everything else runs
once, and every alert ends with exactly one stored result.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

import httpx

from service_support import (
    PostgresCluster,
    Server,
    dumps,
    free_port,
    payload,
    pid_alive,
    read_log,
    server_env,
    wait_for,
    webhook_alert,
)

TOKEN = "durable-token-1234"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WORKERS = 2
N_ALERTS = 30


def _server(tmp_path: Path, store: str, name: str, log: Path) -> Server:
    args = [
        "--port",
        str(free_port()),
        "--store",
        store,
        "--workers",
        str(WORKERS),
        "--lease",
        "1.5",
        "--poll",
        "0.1",
        "--replica-id",
        name,
        "--investigator",
        "service_support:slow_investigator",
        "--log-level",
        "warning",
    ]
    env = server_env(
        CORRELATOR_SERVE_TOKEN=TOKEN, SERVICE_TEST_LOG=str(log), SERVICE_TEST_SLEEP="0.25"
    )
    return Server(args, env, tmp_path / f"{name}.log")


def _post_all(urls: list[str]) -> list[str]:
    """Post N_ALERTS distinct alerts in payloads of 5, each payload to every url."""
    ids: list[str] = []
    with httpx.Client(timeout=10) as c:
        for group in range(N_ALERTS // 5):
            alerts = [
                webhook_alert(starts=1_772_000_000 + group * 5 + i, n=str(group * 5 + i))
                for i in range(5)
            ]
            for url in urls:
                r = c.post(f"{url}/webhook", content=dumps(payload(*alerts)), headers=AUTH)
                assert r.status_code == 200, r.text
            ids.extend(r.json()["investigations"])
    return ids


def _held_by(store: str, owner: str) -> set[str]:
    """Fingerprints of the rows ``owner`` had claimed and not stored a result for."""
    sql = "SELECT fingerprint FROM investigations WHERE status = 'running' AND lease_owner = "
    if store.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(store) as conn:
            return {row[0] for row in conn.execute(sql + "%s", (owner,))}
    with sqlite3.connect(store) as db:
        return {row[0] for row in db.execute(sql + "?", (owner,))}


def _check_exactly_once(
    log: Path, killed_pid: int, in_flight: set[str], records: list[dict[str, str]]
) -> None:
    """``in_flight``: what the killed replica held (claimed, result not stored) at the kill.

    Read from the store, not from the run log: a run can log its end and be killed before
    its result is stored, and then it is rightly run again.
    """
    assert len(records) == N_ALERTS
    assert {r["status"] for r in records} == {"done"}
    runs = read_log(log)
    starts = Counter(fp for kind, _, fp in runs if kind == "start")
    ends_by = Counter((pid, fp) for kind, pid, fp in runs if kind == "end")
    assert set(starts) == {r["fingerprint"] for r in records}
    # Each alert ran to its end once per replica, except one killed mid-run.
    assert all(n == 1 for n in ends_by.values()), ends_by
    killed_starts = {fp for kind, pid, fp in runs if kind == "start" and pid == killed_pid}
    killed_ends = {fp for kind, pid, fp in runs if kind == "end" and pid == killed_pid}
    # Runs cut short by the kill were held; the work held is bounded by the worker count.
    assert killed_starts - killed_ends <= in_flight
    assert 1 <= len(in_flight) <= WORKERS
    # Only what the killed replica held ran twice.
    rerun = {fp for fp, n in starts.items() if n > 1}
    assert rerun <= in_flight
    for r in records:
        # An attempt is a claim: what the killed replica held was claimed again, whether
        # or not its worker had logged the start before the kill.
        expected = 2 if r["fingerprint"] in in_flight else 1
        assert int(r["attempts"]) == expected, r


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _records(url: str) -> list[dict[str, str]]:
    r = httpx.get(f"{url}/api/v1/investigations?limit=1000", headers=AUTH)
    return list(r.json()["investigations"])


def test_sigkill_with_queued_alerts_then_restart_sqlite(tmp_path: Path) -> None:
    store = str(tmp_path / "store.db")
    log = tmp_path / "runs.log"
    first = _server(tmp_path, store, "first", log).start()
    try:
        ids = _post_all([first.url])
        assert len(set(ids)) == N_ALERTS
        wait_for(lambda: sum(k == "start" for k, _, _ in read_log(log)) >= 3, 20, "work to start")
        assert first.proc is not None
        killed_pid = first.proc.pid
        workers = _children(killed_pid)
        spawned = [p for p in workers if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(spawned) == WORKERS, "investigations run in worker processes"
        first.kill()
        in_flight = _held_by(store, "first")
        # Worker processes die with their server: none goes on with a row another takes over.
        wait_for(lambda: not any(pid_alive(p) for p in workers), 5, "worker processes to end")
    finally:
        first.stop()
    with sqlite3.connect(store) as db:
        left = db.execute("SELECT COUNT(*) FROM investigations WHERE status != 'done'").fetchone()[
            0
        ]
    assert left >= N_ALERTS // 2, "the kill should leave most alerts queued"
    second = _server(tmp_path, store, "second", log).start()
    try:
        wait_for(
            lambda: (
                all(r["status"] == "done" for r in _records(second.url))
                and len(_records(second.url)) == N_ALERTS
            ),
            60,
            "all investigations",
        )
        records = _records(second.url)
    finally:
        second.stop()
    _check_exactly_once(log, killed_pid, in_flight, records)


def test_two_replicas_on_postgresql_one_killed(tmp_path: Path, postgres: PostgresCluster) -> None:
    store = postgres.database("replicas")
    log = tmp_path / "runs.log"
    a = _server(tmp_path, store, "replica-a", log).start()
    b = _server(tmp_path, store, "replica-b", log).start()
    try:
        # Like an Alertmanager cluster: every notification reaches both replicas.
        ids = _post_all([a.url, b.url])
        assert len(set(ids)) == N_ALERTS
        assert a.proc is not None and b.proc is not None
        pids = {a.proc.pid, b.proc.pid}
        killed_pid = a.proc.pid
        wait_for(
            lambda: (
                {pid for k, pid, _ in read_log(log) if k == "start"} == pids
                and any(k == "end" and pid == killed_pid for k, pid, _ in read_log(log))
            ),
            20,
            "both replicas to work",
        )
        a.kill()
        # Read before the lease (1.5 s, renewed every 0.5 s) lapses and replica-b takes over.
        in_flight = _held_by(store, "replica-a")
        wait_for(
            lambda: (
                len(_records(b.url)) == N_ALERTS
                and all(r["status"] == "done" for r in _records(b.url))
            ),
            60,
            "all investigations",
        )
        records = _records(b.url)
    finally:
        a.stop()
        b.stop()
    _check_exactly_once(log, killed_pid, in_flight, records)
    # While both replicas lived they shared the work, never both running the same alert.
    runs = read_log(log)
    survivor = (pids - {killed_pid}).pop()
    by_survivor = {fp for k, pid, fp in runs if k == "start" and pid == survivor}
    by_killed_done = {fp for k, pid, fp in runs if k == "end" and pid == killed_pid}
    assert by_killed_done and not (by_killed_done & by_survivor)

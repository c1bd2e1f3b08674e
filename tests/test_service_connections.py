"""`correlator serve` as a subprocess against floods, slow clients and dying workers.

Half-open connections, trickled bodies, more connections than allowed, worker
processes that crash or outlive the deadline, and store passwords that must
never show in any output.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service_support import (
    PostgresCluster,
    Server,
    dumps,
    free_port,
    payload,
    running,
    server_env,
    wait_for,
    webhook_alert,
)

TOKEN = "conn-token-" + "z" * 16
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def _server(tmp_path: Path, *extra: str, name: str = "serve", **env: str) -> Server:
    args = [
        "--port",
        str(free_port()),
        "--store",
        str(tmp_path / f"{name}.db"),
        "--poll",
        "0.1",
        "--investigator",
        "service_support:slow_investigator",
        *extra,
    ]
    return Server(args, server_env(CORRELATOR_SERVE_TOKEN=TOKEN, **env), tmp_path / f"{name}.log")


def _open(port: int, n: int, first_bytes: bytes) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if first_bytes:
            s.sendall(first_bytes)
        socks.append(s)
    return socks


def _answer(s: socket.socket, timeout: float) -> bytes:
    s.settimeout(timeout)
    chunks = b""
    try:
        while True:
            data = s.recv(4096)
            if not data:
                break
            chunks += data
    except (TimeoutError, ConnectionResetError):
        pass
    return chunks


def test_half_open_flood_is_cut_and_healthz_stays_fast(tmp_path: Path) -> None:
    server = _server(tmp_path, "--header-timeout", "2", "--log-level", "info")
    n = 400
    with running(server):
        socks = _open(server.port, n, b"POST /webhook HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        try:
            latencies = []
            for _ in range(10):
                t0 = time.perf_counter()
                r = httpx.get(f"{server.url}/healthz", timeout=5)
                latencies.append(time.perf_counter() - t0)
                assert r.status_code == 200
            # The header timeout answers every half-sent request 408 and closes it.
            answers = [_answer(s, 5) for s in socks]
        finally:
            for s in socks:
                s.close()
        metrics = httpx.get(f"{server.url}/metrics").text
        good = httpx.post(
            f"{server.url}/webhook", content=dumps(payload(webhook_alert())), headers=AUTH
        )
        assert server.proc is not None
        limits = Path(f"/proc/{server.proc.pid}/limits").read_text()
    # The soft limit on open files was raised to the hard one at start.
    soft, hard = next(
        line.split()[3:5] for line in limits.splitlines() if line.startswith("Max open files")
    )
    assert soft == hard, limits
    assert max(latencies) < 0.5, latencies
    assert sum(a.startswith(b"HTTP/1.1 408") for a in answers) == n
    assert f'correlator_connections_dropped_total{{reason="header_timeout"}} {n}.0' in metrics
    assert good.status_code == 200
    lines = server.log.read_text().splitlines()
    dropped = [line for line in lines if "header_timeout" in line]
    assert 1 <= len(dropped) <= 10, len(dropped)
    assert len(lines) < 60 and "Traceback" not in server.log.read_text()


def test_more_connections_than_allowed_get_503_with_retry_after(tmp_path: Path) -> None:
    server = _server(tmp_path, "--max-connections", "20", "--header-timeout", "5")
    with running(server):
        idle = _open(server.port, 20, b"")
        try:
            extra = _open(server.port, 5, b"")
            answers = [_answer(s, 3) for s in extra]
            for s in extra:
                s.close()
        finally:
            for s in idle:
                s.close()
        wait_for(
            lambda: httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200, 10, "room"
        )
    for a in answers:
        assert a.startswith(b"HTTP/1.1 503"), a[:80]
        assert b"retry-after: 2" in a.lower()


def test_slow_body_gets_408_and_a_full_queue_503(tmp_path: Path) -> None:
    server = _server(tmp_path, "--body-timeout", "1.5", "--max-pending", "1")
    body = dumps(payload(webhook_alert()))
    head = (
        f"POST /webhook HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with running(server):
        slow = socket.create_connection(("127.0.0.1", server.port))
        slow.sendall(head + body[:10])
        time.sleep(0.3)
        # The one pending slot is taken by the slow body: the next is told to come back.
        full = httpx.post(f"{server.url}/webhook", content=body, headers=AUTH)
        t0 = time.perf_counter()
        for i in range(10, 20):  # one byte now and then: too slow in total
            slow.sendall(body[i : i + 1])
            time.sleep(0.1)
        answer = _answer(slow, 5)
        waited = time.perf_counter() - t0
        slow.close()
        after = httpx.post(f"{server.url}/webhook", content=body, headers=AUTH)
    assert full.status_code == 503 and full.headers["retry-after"] == "2", full.text
    assert "pending" in full.json()["error"]
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"did not arrive within 1.5s" in answer
    assert waited < 4
    assert after.status_code == 200, after.text


def test_worker_processes_that_crash_or_overrun_are_replaced(tmp_path: Path) -> None:
    server = _server(
        tmp_path,
        "--workers",
        "1",
        "--deadline",
        "3",
        "--isolation",
        "process",
        SERVICE_TEST_SLEEP="0.1",
    )
    with running(server):

        def post(**labels: str) -> str:
            r = httpx.post(
                f"{server.url}/webhook",
                content=dumps(payload(webhook_alert(starts=1_772_000_000 + len(labels), **labels))),
                headers=AUTH,
            )
            assert r.status_code == 200, r.text
            return str(r.json()["investigations"][0])

        def result(inv_id: str) -> dict[str, str]:
            out: dict[str, str] = {}

            def done() -> bool:
                out.update(
                    httpx.get(f"{server.url}/api/v1/investigations/{inv_id}", headers=AUTH).json()
                )
                return out["status"] in ("done", "failed")

            wait_for(done, 40, inv_id)
            return out

        crashed = result(post(crash="yes"))
        after = result(post())
        metrics = httpx.get(f"{server.url}/metrics").text
        ready = httpx.get(f"{server.url}/readyz")
    assert crashed["status"] == "failed"
    assert "exited with status 3" in crashed["error"], crashed
    assert after["status"] == "done", after
    assert "correlator_worker_restarts_total 1.0" in metrics
    assert ready.status_code == 200


def test_deadline_kills_the_worker_process(tmp_path: Path) -> None:
    server = _server(tmp_path, "--workers", "1", "--deadline", "1.5", SERVICE_TEST_SLEEP="30")
    with running(server):
        r = httpx.post(
            f"{server.url}/webhook", content=dumps(payload(webhook_alert())), headers=AUTH
        )
        inv_id = r.json()["investigations"][0]
        out: dict[str, str] = {}

        def done() -> bool:
            out.update(
                httpx.get(f"{server.url}/api/v1/investigations/{inv_id}", headers=AUTH).json()
            )
            return out["status"] in ("done", "failed")

        t0 = time.monotonic()
        wait_for(done, 30, "the deadline")
        took = time.monotonic() - t0
    assert out["status"] == "failed" and "deadline of 1.5s exceeded" in out["error"]
    assert took < 15


@pytest.fixture(scope="module")
def secret_pg() -> Iterator[tuple[PostgresCluster, str]]:
    try:
        cluster = PostgresCluster()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    import psycopg

    password = "S3cr3t-pg-pass-7781"
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE svc LOGIN PASSWORD '{password}'")
        conn.execute("CREATE DATABASE svcdb OWNER svc")
    yield cluster, password
    cluster.stop()


def test_store_passwords_never_appear_in_any_output(
    tmp_path: Path, secret_pg: tuple[PostgresCluster, str]
) -> None:
    cluster, password = secret_pg
    dead = free_port()
    outputs: list[str] = []
    # 1. Startup errors: server down, in both URL forms.
    for url in (
        f"postgresql://svc:{password}@127.0.0.1:{dead}/svcdb",
        f"postgresql://svc@127.0.0.1:{dead}/svcdb?password={password}&sslmode=disable",
    ):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "correlator.service",
                "--port",
                str(free_port()),
                "--store",
                url,
            ],
            env=server_env(CORRELATOR_SERVE_TOKEN=TOKEN),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode != 0
        assert "cannot connect" in proc.stderr and "svc" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
        outputs += [proc.stdout, proc.stderr]
    # 2. A running service whose PostgreSQL goes away: logs, 503 body, readyz.
    for i, url in enumerate(
        (
            f"postgresql://svc:{password}@127.0.0.1:{cluster.port}/svcdb",
            f"postgresql://svc@127.0.0.1:{cluster.port}/svcdb?password={password}",
        )
    ):
        server = Server(
            [
                "--port",
                str(free_port()),
                "--store",
                url,
                "--poll",
                "0.2",
                "--investigator",
                "service_support:slow_investigator",
            ],
            server_env(CORRELATOR_SERVE_TOKEN=TOKEN),
            tmp_path / f"pg{i}.log",
        )
        with running(server):
            ok = httpx.post(
                f"{server.url}/webhook", content=dumps(payload(webhook_alert())), headers=AUTH
            )
            assert ok.status_code == 200, ok.text
            import psycopg

            with psycopg.connect(cluster.url, autocommit=True) as conn:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'svc'"
                )
                conn.execute("ALTER DATABASE svcdb ALLOW_CONNECTIONS false")
            try:
                down = httpx.post(
                    f"{server.url}/webhook",
                    content=dumps(payload(webhook_alert(starts=1_772_100_000 + i))),
                    headers=AUTH,
                    timeout=60,
                )
                ready = httpx.get(f"{server.url}/readyz", timeout=30)
                listed = httpx.get(f"{server.url}/api/v1/investigations", headers=AUTH, timeout=60)
            finally:
                with psycopg.connect(cluster.url, autocommit=True) as conn:
                    conn.execute("ALTER DATABASE svcdb ALLOW_CONNECTIONS true")
        assert down.status_code == 503, down.text
        assert "unavailable" in down.json()["error"]
        outputs += [down.text, ready.text, listed.text, server.log.read_text()]
    leaked = [o for o in outputs if password in o]
    assert not leaked, leaked[0][:2000]
    assert any("svc:***@" in o for o in outputs) or any("password=***" in o for o in outputs)


def test_clients_that_hang_up_mid_body_cost_one_line_each_at_most(tmp_path: Path) -> None:
    server = _server(tmp_path, "--log-level", "info")
    body = dumps(payload(webhook_alert()))
    head = (
        f"POST /webhook HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    n = 40
    with running(server):
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", server.port))
            s.sendall(head + body[: len(body) // 2])
            time.sleep(0.02)
            s.close()

        def counted() -> bool:
            text = httpx.get(f"{server.url}/metrics").text
            return (
                f'correlator_connections_dropped_total{{reason="client_disconnect"}} {n}.0' in text
            )

        wait_for(counted, 10, "every hang-up to be counted")
        ok = httpx.post(f"{server.url}/webhook", content=body, headers=AUTH)
    text = server.log.read_text()
    lines = [line for line in text.splitlines() if "client went away" in line]
    assert ok.status_code == 200
    assert 1 <= len(lines) <= 5, lines
    assert "Traceback" not in text

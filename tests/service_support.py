"""Helpers for the service tests: simple real investigate callables, servers, payloads.

The factories here are loaded by ``correlator serve --investigator
service_support:<factory>`` in subprocess tests (``tests/`` on PYTHONPATH).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from correlator.config import Settings
from correlator.model import Alert, format_time

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


def _log_line(kind: str, alert: Alert) -> None:
    path = os.environ.get("SERVICE_TEST_LOG")
    if not path:
        return
    # The serving process's pid, also from its worker processes (--isolation process).
    pid = os.getpid() if multiprocessing.parent_process() is None else os.getppid()
    line = f"{kind} {pid} {alert.fingerprint} {alert.starts_at}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def slow_investigator(settings: Settings) -> Callable[[Alert], dict[str, Any]]:
    """Sleeps ``SERVICE_TEST_SLEEP`` seconds; logs start/end lines to ``SERVICE_TEST_LOG``."""
    delay = float(os.environ.get("SERVICE_TEST_SLEEP", "0"))

    def run(alert: Alert) -> dict[str, Any]:
        _log_line("start", alert)
        if delay:
            time.sleep(delay)
        if alert.labels.get("explode") == "yes":
            raise RuntimeError("the investigation blew up on purpose")
        if alert.labels.get("crash") == "yes":
            os._exit(3)  # the worker process dies mid-investigation
        _log_line("end", alert)
        return {
            "alert": alert.to_json(),
            "findings": [
                {
                    "service": alert.service or "x",
                    "cause": "test",
                    "confidence": 0.5,
                    "pattern": "test",
                    "evidence": [],
                }
            ],
            "gaps": [],
            "timings": {"collect": 0.001, "rank": 0.001},
        }

    return run


def logged_engine_investigator(settings: Settings) -> Callable[[Alert], Any]:
    """The real engine (``engine_investigator``), logging start/end lines like the slow one."""
    from correlator.service.cli import engine_investigator

    engine = engine_investigator(settings)

    def run(alert: Alert) -> Any:
        _log_line("start", alert)
        result = engine(alert)
        _log_line("end", alert)
        return result

    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def webhook_alert(
    name: str = "HighErrorRate",
    service: str = "checkout",
    starts: float = 1_772_000_000.0,
    status: str = "firing",
    **labels: str,
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": name, "service": service, **labels},
        "annotations": {"summary": f"{name} on {service}"},
        "startsAt": format_time(starts),
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else format_time(starts + 600),
        "generatorURL": "http://prometheus/graph",
    }


def payload(*alerts: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body = {
        "version": "4",
        "groupKey": '{}:{alertname="HighErrorRate"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "correlator",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }
    body.update(extra)
    return body


class Server:
    """A `correlator serve` subprocess."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args = args
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = int(args[args.index("--port") + 1])
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, wait: float = 30.0) -> Server:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "correlator.service", *self.args],
            env=self.env,
            stdout=out,
            stderr=out,
            cwd=str(self.log.parent),
        )
        out.close()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server not ready in {wait}s:\n{self.log.read_text()}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def server_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRELATOR_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


@contextmanager
def running(server: Server) -> Iterator[Server]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def read_log(path: Path) -> list[tuple[str, int, str]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        kind, pid, fp, _starts = line.split()
        out.append((kind, int(pid), fp))
    return out


def read_runs(path: Path) -> list[tuple[str, int, str, float]]:
    """Like :func:`read_log`, with each run's ``startsAt`` (one alert may recur)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        kind, pid, fp, starts = line.split()
        out.append((kind, int(pid), fp, float(starts)))
    return out


def dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()


@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Serve an ASGI app with real uvicorn on a free loopback port; yield its base URL."""
    import threading

    from correlator.service.server import make_server

    port = free_port()
    server = make_server(app, "127.0.0.1", port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def _pg_bin(name: str) -> str | None:
    import glob
    import shutil

    found = shutil.which(name)
    if found:
        return found
    for path in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True):
        return path
    return None


class PostgresCluster:
    """A private PostgreSQL cluster on 127.0.0.1 (initdb + pg_ctl under a temp dir).

    As root the cluster runs as the ``postgres`` user (PostgreSQL refuses root).
    """

    def __init__(self) -> None:
        import tempfile

        initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if not initdb or not pg_ctl:
            raise FileNotFoundError("initdb/pg_ctl not found: apt-get install -y postgresql")
        self.pg_ctl = pg_ctl
        self.dir = Path(tempfile.mkdtemp(prefix="correlator-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            import shutil

            shutil.chown(self.dir, "postgres", "postgres")
            self.prefix = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [
                *self.prefix,
                initdb,
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                *self.prefix,
                pg_ctl,
                "-D",
                str(self.data),
                "-l",
                str(self.dir / "log"),
                "-w",
                "-o",
                f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off",
                "start",
            ],
            check=True,
            capture_output=True,
        )
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        import shutil

        subprocess.run(
            [*self.prefix, self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"

"""`correlator lab` as a process: signals stop its servers and remove their directories.

Each test starts ``python -m correlator.cli lab <bundle>`` on a shipped bundle,
finds its child servers in ``/proc`` (pid, working directory = the server's
temporary directory, port from the printed URL), signals the lab, and checks
that no child is left, the ports are free and the directories are gone.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from correlator import lab
from service_support import pid_alive

pytestmark = [pytest.mark.prometheus, pytest.mark.alertmanager]

BUNDLE = Path(__file__).resolve().parent.parent / "fixtures/scenarios/feature-flags-bad-deploy"
READY_LINE = "Ctrl-C stops both servers."
#: Starting both servers takes a few seconds; this is a hang, not slowness.
START_LIMIT = 90.0


def _require_servers() -> None:
    for binary in (lab.PROMETHEUS_BIN, lab.PROMTOOL_BIN, lab.ALERTMANAGER_BIN):
        if not Path(binary).exists():
            pytest.skip(f"{binary} missing")


def _children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (from /proc/*/stat)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@dataclass
class Lab:
    """A running ``correlator lab`` and what it printed."""

    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)
    reader: threading.Thread | None = None

    def text(self) -> str:
        return "\n".join(self.lines)

    def ports(self) -> list[int]:
        return [int(p) for p in re.findall(r"http://127\.0\.0\.1:(\d+)", self.text())]


def _start() -> Lab:
    proc = subprocess.Popen(
        [sys.executable, "-m", "correlator.cli", "lab", str(BUNDLE)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    running = Lab(proc)

    def read() -> None:
        assert proc.stdout is not None
        with proc.stdout:  # closed at EOF, when the lab exits
            for line in proc.stdout:
                running.lines.append(line.rstrip("\n"))
                if line.strip() == READY_LINE:
                    running.ready.set()

    running.reader = threading.Thread(target=read, daemon=True)
    running.reader.start()
    return running


@pytest.fixture
def started() -> Iterator[list[Lab]]:
    """Labs started by a test; any still running at the end is killed, its children too."""
    _require_servers()
    labs: list[Lab] = []
    yield labs
    for running in labs:
        kids = _children(running.proc.pid)
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.wait(timeout=30)
        for pid in kids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        if running.reader is not None:
            running.reader.join(timeout=30)


def _servers(running: Lab) -> list[tuple[int, Path]]:
    """(pid, working directory) of the lab's server processes."""
    out = []
    for pid in _children(running.proc.pid):
        try:
            cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            continue
        if argv0 in (lab.PROMETHEUS_BIN, lab.ALERTMANAGER_BIN):
            out.append((pid, cwd))
    return out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stop_signal_stops_both_servers_and_removes_their_directories(
    started: list[Lab], sig: signal.Signals
) -> None:
    running = _start()
    started.append(running)
    assert running.ready.wait(START_LIMIT), f"the lab did not start:\n{running.text()}"
    servers = _servers(running)
    assert len(servers) == 2, f"expected Prometheus and Alertmanager, found {servers}"
    ports = running.ports()
    assert len(set(ports)) == 2 and not any(_port_free(p) for p in ports)
    assert all(cwd.is_dir() for _, cwd in servers)

    running.proc.send_signal(sig)
    assert running.proc.wait(timeout=60) == 0, running.text()
    assert running.reader is not None
    running.reader.join(timeout=30)  # the last lines are read
    assert not any(pid_alive(pid) for pid, _ in servers), "a server outlived the lab"
    assert all(_port_free(p) for p in ports)
    assert not any(cwd.exists() for _, cwd in servers), "a temporary directory was left"
    assert f"{sig.name}: lab servers stopped, temporary directories removed." in running.text()


def test_a_signal_while_starting_cleans_up_and_exits_non_zero(started: list[Lab]) -> None:
    running = _start()
    started.append(running)
    # Wait until the lab has a child (promtool backfilling, or a server starting).
    limit = time.monotonic() + START_LIMIT
    seen: list[int] = []
    while not seen and time.monotonic() < limit and running.proc.poll() is None:
        seen = _children(running.proc.pid)
        time.sleep(0.005)
    assert seen, f"the lab started no child:\n{running.text()}"
    dirs = [Path(os.readlink(f"/proc/{pid}/cwd")) for pid in seen if pid_alive(pid)]
    running.proc.send_signal(signal.SIGTERM)
    code = running.proc.wait(timeout=60)
    if running.ready.is_set():  # it became ready before the signal landed
        assert code == 0
    else:
        assert code == 128 + signal.SIGTERM, running.text()
    assert not any(pid_alive(pid) for pid in seen)
    assert not [d for d in dirs if d.name.startswith("correlator-") and d.exists()]


def test_servers_die_with_a_killed_lab(started: list[Lab]) -> None:
    running = _start()
    started.append(running)
    assert running.ready.wait(START_LIMIT), running.text()
    servers = _servers(running)
    assert len(servers) == 2
    running.proc.kill()  # SIGKILL: no handler runs; the kernel signals the children
    running.proc.wait(timeout=30)
    limit = time.monotonic() + 30
    while any(pid_alive(pid) for pid, _ in servers) and time.monotonic() < limit:
        time.sleep(0.1)
    assert not any(pid_alive(pid) for pid, _ in servers), "servers outlived a killed lab"
    for _, cwd in servers:  # nothing could remove them; do it here
        shutil.rmtree(cwd, ignore_errors=True)

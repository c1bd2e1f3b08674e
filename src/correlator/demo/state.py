"""The demo's state directory: where it is, ``state.json``, and the processes it names.

``state.json`` (written by the supervisor, read by ``demo status``, ``demo
down``, :mod:`correlator.demo.faults` and the recorder)::

    {"status": "starting" | "running" | "stopping",
     "prometheus_url", "alertmanager_url", "serve_url", "otlp_dir",
     "started_at": unix seconds,
     "services": {name: {"framework": str, "version": str,
                         "instances": [{"instance", "url", "metrics_url", "pid"}]}},
     "pids": [every PID the demo started, the supervisor first],
     "pid_starts": {pid: kernel start time}, "supervisor_pid", "loadgen_pid",
     "postgres_url", "serve_token_file", "state_dir"}

Processes are stopped only by the PIDs listed here, and only while the
kernel's start time of that PID still matches the one recorded (a PID reused
by an unrelated process after a crash is left alone).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from correlator.errors import CorrelatorError, UserInputError

__all__ = [
    "DemoError",
    "DemoNotRunning",
    "default_state_dir",
    "pid_alive",
    "pid_start",
    "process_tree",
    "read_state",
    "running_state",
    "stop_pids",
    "usage",
    "write_json_atomic",
]

STATE_FILE = "state.json"


class DemoError(CorrelatorError):
    """The demo could not do what was asked; the message says why and what to do."""


class DemoNotRunning(UserInputError):
    """No demo runs from that state directory."""


def default_state_dir() -> Path:
    """``$CORRELATOR_DEMO_DIR``, else ``~/.local/state/correlator/demo``."""
    env = os.environ.get("CORRELATOR_DEMO_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "correlator" / "demo"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` through a temporary file and a rename (readers never see half)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def pid_start(pid: int) -> int | None:
    """The kernel's start time of process ``pid`` (clock ticks after boot), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == "Z":
        return None
    return int(fields[19])


def pid_alive(pid: int, start: int | None = None) -> bool:
    """Whether ``pid`` runs (not a zombie) and, if given, started at ``start``."""
    now = pid_start(pid)
    return now is not None and (start is None or now == start)


def read_state(state_dir: Path) -> dict[str, Any] | None:
    """``state.json`` of ``state_dir``, or None when there is none."""
    path = state_dir / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as err:
        raise DemoError(f"{path} cannot be read ({err}); remove it if no demo runs") from None
    return data if isinstance(data, dict) else None


def _supervisor_alive(state: Mapping[str, Any]) -> bool:
    pid = state.get("supervisor_pid")
    if not isinstance(pid, int):
        return False
    starts = state.get("pid_starts") or {}
    return pid_alive(pid, starts.get(str(pid)))


def running_state(state_dir: Path) -> dict[str, Any]:
    """``state.json`` of a demo that runs now; :class:`DemoNotRunning` otherwise."""
    state = read_state(state_dir)
    if state is None:
        raise DemoNotRunning(
            f"no demo runs from {state_dir} (no state.json); start one with `correlator demo up`"
            + (" or pass the --state-dir it was started with" if state_dir else "")
        )
    if not _supervisor_alive(state):
        raise DemoNotRunning(
            f"the demo of {state_dir} is not running (its supervisor is gone); "
            "run `correlator demo down` to clean up, then `correlator demo up`"
        )
    return state


def _alive_of(pids: Iterable[int], starts: Mapping[str, int]) -> list[int]:
    return [p for p in pids if pid_alive(p, starts.get(str(p)))]


def stop_pids(pids: Iterable[int], starts: Mapping[str, int], grace: float = 15.0) -> list[int]:
    """SIGTERM the listed processes still alive (with their recorded start time), wait
    ``grace`` seconds, SIGKILL what remains. Returns the PIDs that were signalled."""
    targets = _alive_of(dict.fromkeys(pids), starts)
    for pid in targets:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _alive_of(targets, starts) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in _alive_of(targets, starts):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _alive_of(targets, starts) and time.monotonic() < deadline:
        time.sleep(0.05)
    return targets


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        kids.setdefault(int(fields[1]), []).append(int(entry.name))
    return kids


def process_tree(pids: Iterable[int]) -> list[int]:
    """``pids`` and all their descendants that run now."""
    kids = _children()
    seen: list[int] = []
    todo = [p for p in pids if pid_alive(p)]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.append(pid)
        todo.extend(kids.get(pid, []))
    return seen


def usage(pids: Iterable[int]) -> dict[str, float]:
    """Memory and CPU time used so far of ``pids`` and their descendants:
    ``{"processes", "rss_bytes", "pss_bytes", "cpu_seconds"}``. The sum of resident
    sizes counts shared pages (PostgreSQL's buffers) once per process; the
    proportional set size (PSS) divides them among their sharers."""
    tick = os.sysconf("SC_CLK_TCK")
    page = os.sysconf("SC_PAGE_SIZE")
    rss = cpu = pss = 0.0
    tree = process_tree(pids)
    for pid in tree:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
                    break
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        cpu += (int(fields[11]) + int(fields[12])) / tick
        rss += int(fields[21]) * page
    return {"processes": len(tree), "rss_bytes": rss, "pss_bytes": pss, "cpu_seconds": cpu}

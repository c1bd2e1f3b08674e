"""Investigations in worker processes, away from the interpreter that accepts webhooks.

The engine is CPU-bound Python: run in threads of the serving process, it
holds the interpreter lock the accept path needs, and a webhook waits behind
it. With ``--isolation process`` (the default) each worker slot owns one child
process, started with the *spawn* method (no inherited locks or sockets) and
at a lower CPU priority (``os.nice``). A child builds the investigate callable
once (``module:factory`` called with the settings) and then runs one alert at
a time, sent and answered as JSON over a pipe.

A child that outlives the deadline is killed and replaced; one that dies
(crash, OOM kill) fails only the investigation it was running. A child dies
with its parent (``PR_SET_PDEATHSIG`` on Linux, and a watchdog thread), so a
killed replica leaves no orphan still working on a row another replica takes
over.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from correlator.config import Settings

__all__ = ["ChildDied", "ProcessSlot", "ProcessSpec"]

log = logging.getLogger("correlator.service.worker")


@dataclass(frozen=True)
class ProcessSpec:
    """What a child needs to build the investigate callable: ``module:factory`` and settings."""

    factory: str
    settings: Settings
    nice: int = 10
    """Added to the child's niceness, so accepting webhooks wins the CPU."""


class ChildDied(RuntimeError):
    """The worker process ended before it answered (crash, kill, or it could not start)."""


def _die_with_parent(parent: int) -> None:
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _child_main(conn: Connection, spec: ProcessSpec, parent: int) -> None:
    """The child: build the callable, then answer one alert per message until EOF."""
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    with contextlib.suppress(OSError):
        os.nice(spec.nice)
    from correlator.service.cli import load_investigator
    from correlator.service.payload import alert_from_json
    from correlator.service.worker import result_to_json

    try:
        investigate = load_investigator(spec.factory, spec.settings)
    except Exception as err:
        conn.send_bytes(json.dumps({"fatal": f"{type(err).__name__}: {err}"}).encode())
        return
    conn.send_bytes(b'{"ready": true}')
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            alert = alert_from_json(json.loads(message))
            answer: dict[str, Any] = {"result": result_to_json(investigate(alert))}
        except Exception as err:
            answer = {"error": f"{type(err).__name__}: {err}"}
        try:
            data = json.dumps(answer, default=str).encode()
        except (TypeError, ValueError) as err:
            data = json.dumps({"error": f"the result is not JSON ({err})"}).encode()
        conn.send_bytes(data)


class ProcessSlot:
    """One worker's child process: started on first use, replaced when it dies or is late."""

    def __init__(self, spec: ProcessSpec, name: str) -> None:
        self.spec = spec
        self.name = name
        self._ctx = multiprocessing.get_context("spawn")
        self._proc: Any = None
        self._conn: Connection | None = None
        # One exchange at a time: warm() and a first investigation may race for the child.
        self._busy = threading.Lock()
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        """The child's pid while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.is_alive() else None

    def _start(self) -> Connection:
        parent_end, child_end = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=_child_main,
            args=(child_end, self.spec, os.getpid()),
            name=f"correlator-{self.name}",
            daemon=True,
        )
        proc.start()
        child_end.close()
        self._proc, self._conn = proc, parent_end
        return parent_end

    def _recv(self, conn: Connection) -> dict[str, Any]:
        try:
            data = json.loads(conn.recv_bytes())
        except (EOFError, OSError):
            raise ChildDied(self._how_it_ended()) from None
        return data if isinstance(data, dict) else {"error": "the worker process answered junk"}

    def _how_it_ended(self) -> str:
        proc = self._proc
        if proc is not None:
            proc.join(2)
            code = proc.exitcode
            if code is not None and code < 0:
                with contextlib.suppress(ValueError):
                    return f"the worker process was killed by {signal.Signals(-code).name}"
            if code is not None:
                return f"the worker process exited with status {code}"
        return "the worker process ended without an answer"

    def _ensure(self) -> Connection:
        """The live child's pipe, starting a child (and waiting for it to be ready) if needed."""
        if self._conn is not None and self._proc is not None and self._proc.is_alive():
            return self._conn
        if self._proc is not None:
            self.restarts += 1
            self.kill()
        conn = self._start()
        hello = self._recv(conn)
        if "fatal" in hello:
            self.kill()
            raise ChildDied(
                f"the worker process could not build the investigator: {hello['fatal']}"
            )
        return conn

    def run_blocking(self, alert: dict[str, Any]) -> dict[str, Any]:
        """Send one alert and wait for the answer (call from a thread)."""
        with self._busy:
            conn = self._ensure()
            conn.send_bytes(json.dumps(alert).encode())
            return self._recv(conn)

    async def run(
        self, alert: dict[str, Any], deadline: float, executor: Executor | None = None
    ) -> dict[str, Any]:
        """The child's answer for ``alert``; on the deadline the child is killed (TimeoutError).

        The wait for the answer blocks a thread of ``executor`` (default: the loop's).
        """
        loop = asyncio.get_running_loop()
        task = loop.run_in_executor(executor, self.run_blocking, alert)
        try:
            done, _ = await asyncio.wait({task}, timeout=deadline)
        except asyncio.CancelledError:
            self._signal_kill()
            raise
        if task in done:
            return task.result()
        # Kill first: the thread blocked in recv then sees EOF and ends; only then is
        # the pipe closed (closing it under a reading thread could hand its fd to another).
        self._signal_kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        self.kill()
        self.restarts += 1  # the next investigation gets a new child
        raise TimeoutError

    def _signal_kill(self) -> None:
        proc = self._proc
        if proc is not None:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                proc.kill()

    def warm(self) -> None:
        """Start the child now, so the first investigation does not pay for imports."""
        with self._busy:
            self._ensure()

    def kill(self) -> None:
        """End the child at once (SIGKILL) and close the pipe."""
        proc, conn = self._proc, self._conn
        self._proc, self._conn = None, None
        if proc is not None and proc.is_alive():
            with contextlib.suppress(OSError, ValueError):
                proc.kill()
            proc.join(5)
        if conn is not None:
            conn.close()
        if proc is not None:
            with contextlib.suppress(ValueError):
                proc.close()

    def stop(self) -> None:
        """End the child (the parent is shutting down)."""
        self.kill()

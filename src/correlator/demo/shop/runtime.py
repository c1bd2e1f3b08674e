"""What every shop service shares: its settings, its peers, its database, its faults.

A service process learns who it is from ``DEMO_*`` environment variables set
by the supervisor (:class:`Env`). Faults come from ``<state_dir>/flags.json``,
read once a second by :class:`Faults`; each fault acts where a real one would:

* ``exception``: the handler raises in a share of requests;
* ``wrong_return``: the answer carries wrong values (a negative price, an
  unknown product, a charge of the wrong amount) that callers check;
* ``latency``: the handler sleeps before answering (on one instance);
* ``cpu_hog``: busy threads burn the CPU (and the interpreter's lock);
* ``memory_leak``: each request keeps a buffer that is never freed;
* ``db_lock``: a second connection holds an exclusive lock on the service's
  table, so its queries wait (and time out);
* a *bad deploy* is a process started with ``DEMO_BUG_RATE``: the new version
  fails that share of requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

__all__ = ["Env", "Faults", "Peers", "UpstreamError", "env", "peer_of_port"]

log = logging.getLogger("shop")


@dataclass(frozen=True)
class Env:
    """A service process's settings (``DEMO_*`` variables)."""

    service: str
    instance: str
    port: int
    metrics_port: int
    version: str
    state_dir: Path
    otlp_dir: Path
    db_url: str
    peers: Mapping[str, list[str]]
    bug_rate: float = 0.0
    otlp_endpoint: str | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> Env:
        """Read the variables the supervisor sets."""
        return cls(
            service=environ["DEMO_SERVICE"],
            instance=environ.get("DEMO_INSTANCE", "0"),
            port=int(environ["DEMO_PORT"]),
            metrics_port=int(environ["DEMO_METRICS_PORT"]),
            version=environ.get("DEMO_VERSION", "1.0.0"),
            state_dir=Path(environ["DEMO_STATE_DIR"]),
            otlp_dir=Path(environ["DEMO_OTLP_DIR"]),
            db_url=environ.get("DEMO_DB_URL", ""),
            peers=json.loads(environ.get("DEMO_PEERS", "{}")),
            bug_rate=float(environ.get("DEMO_BUG_RATE", "0") or 0),
            otlp_endpoint=environ.get("DEMO_OTLP_ENDPOINT") or None,
        )


_ENV: Env | None = None


def env() -> Env:
    """This process's settings (read once)."""
    global _ENV
    if _ENV is None:
        _ENV = Env.from_environ()
    return _ENV


def peer_of_port(port: int | None) -> str | None:
    """The service listening on ``port`` of 127.0.0.1, from this process's peer list."""
    if port is None or _ENV is None:
        return None
    for name, urls in _ENV.peers.items():
        if any(u.endswith(f":{port}") for u in urls):
            return name
    return None


class UpstreamError(Exception):
    """A call to another service failed or answered something wrong."""

    def __init__(self, peer: str, problem: str) -> None:
        self.peer = peer
        super().__init__(f"{peer}: {problem}")


class Peers:
    """Calls to other services over HTTP (round-robin over their instances).

    Each call is timed into ``http.client.request.duration`` labelled with the
    peer's service name (``server.address``), the way a service mesh or a
    DNS name would label it.
    """

    def __init__(self, me: Env, timeout: float = 3.0) -> None:
        from opentelemetry import metrics

        self.me = me
        self.timeout = timeout
        self._rr: dict[str, int] = {}
        self._hist = metrics.get_meter("correlator.demo.shop").create_histogram(
            "http.client.request.duration",
            unit="s",
            description="Duration of HTTP client requests, by peer service.",
            explicit_bucket_boundaries_advisory=[
                0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10,
            ],
        )  # fmt: skip
        self.sync = httpx.Client(timeout=timeout)
        self.aio: httpx.AsyncClient | None = None

    def url(self, peer: str, path: str) -> str:
        urls = self.me.peers.get(peer)
        if not urls:
            raise UpstreamError(peer, "no such service")
        i = self._rr.get(peer, random.randrange(len(urls)))
        self._rr[peer] = (i + 1) % len(urls)
        return urls[i % len(urls)] + path

    def _record(self, peer: str, method: str, t0: float, status: int | None, err: str) -> None:
        attrs: dict[str, Any] = {"server.address": peer, "http.request.method": method}
        if status is not None:
            attrs["http.response.status_code"] = status
        if err:
            attrs["error.type"] = err
        self._hist.record(time.perf_counter() - t0, attrs)

    def _check(self, peer: str, resp: httpx.Response) -> Any:
        if resp.status_code >= 400:
            raise UpstreamError(peer, f"HTTP {resp.status_code}")
        return resp.json()

    def call(self, peer: str, method: str, path: str, body: Any = None) -> Any:
        """A blocking call; the JSON answer, or :class:`UpstreamError`."""
        t0 = time.perf_counter()
        try:
            resp = self.sync.request(method, self.url(peer, path), json=body)
        except httpx.HTTPError as err:
            self._record(peer, method, t0, None, type(err).__name__)
            raise UpstreamError(peer, f"{type(err).__name__}: {err}") from err
        self._record(peer, method, t0, resp.status_code, "")
        return self._check(peer, resp)

    async def acall(self, peer: str, method: str, path: str, body: Any = None) -> Any:
        """An async call; the JSON answer, or :class:`UpstreamError`."""
        if self.aio is None:
            self.aio = httpx.AsyncClient(timeout=self.timeout)
        t0 = time.perf_counter()
        try:
            resp = await self.aio.request(method, self.url(peer, path), json=body)
        except httpx.HTTPError as err:
            self._record(peer, method, t0, None, type(err).__name__)
            raise UpstreamError(peer, f"{type(err).__name__}: {err}") from err
        self._record(peer, method, t0, resp.status_code, "")
        return self._check(peer, resp)


#: What a failing request of each service raises (realistic messages, one per service).
_BUGS: dict[str, Callable[[], BaseException]] = {
    "catalog": lambda: KeyError("currency"),
    "search": lambda: ValueError("unterminated character set at position 0"),
    "inventory": lambda: ZeroDivisionError("division by zero"),
    "payment": lambda: RuntimeError("card processor returned malformed token"),
    "checkout": lambda: AttributeError("'NoneType' object has no attribute 'total'"),
    "cart": lambda: TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'"),
    "shipping": lambda: KeyError("zone"),
    "email": lambda: UnicodeEncodeError("ascii", "Zoë", 2, 3, "ordinal not in range(128)"),
    "recommendation": lambda: IndexError("list index out of range"),
    "frontend": lambda: RuntimeError("template context missing 'user'"),
}


def _bug(service: str) -> BaseException:
    return _BUGS.get(service, lambda: RuntimeError("internal error"))()


@dataclass
class _Active:
    exception: float = 0.0
    wrong_return: float = 0.0
    delay_s: float = 0.0
    cpu_threads: int = 0
    leak_kb: float = 0.0
    leak_max_mb: float = 0.0
    db_lock: bool = False
    ids: tuple[str, ...] = field(default_factory=tuple)


class Faults:
    """The faults active on this instance, polled from ``flags.json`` once a second."""

    def __init__(self, me: Env, db_table: str | None = None) -> None:
        self.me = me
        self.db_table = db_table
        self.now = _Active()
        self._mtime = -1.0
        self._leaked: list[bytes] = []
        self._leaked_bytes = 0
        self._cpu_stop: threading.Event | None = None
        self._lock_stop: threading.Event | None = None
        self._poll()
        threading.Thread(target=self._loop, name="fault-flags", daemon=True).start()

    # --- polling -------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            time.sleep(1.0)
            try:
                self._poll()
            except Exception:  # a bad flags file must not stop the service
                log.exception("reading fault flags failed")

    def _poll(self) -> None:
        path = self.me.state_dir / "flags.json"
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            mtime = 0.0
        if mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            faults = json.loads(path.read_text(encoding="utf-8")).get("faults", [])
        except (OSError, ValueError):
            faults = []
        new = _Active()
        ids = []
        for f in faults:
            if f.get("service") != self.me.service:
                continue
            if f.get("instance") not in (None, self.me.instance):
                continue
            p = f.get("params") or {}
            kind = f.get("kind")
            ids.append(str(f.get("id")))
            if kind == "exception":
                new.exception = float(p.get("rate", 0.3))
            elif kind == "wrong_return":
                new.wrong_return = float(p.get("rate", 0.5))
            elif kind == "latency":
                new.delay_s = float(p.get("delay_ms", 800)) / 1000.0
            elif kind == "cpu_hog":
                new.cpu_threads = int(p.get("threads", 1))
            elif kind == "memory_leak":
                new.leak_kb = float(p.get("kb_per_request", 256))
                new.leak_max_mb = float(p.get("max_mb", 600))
            elif kind == "db_lock":
                new.db_lock = self.db_table is not None and self.me.instance == "0"
        new.ids = tuple(ids)
        old, self.now = self.now, new
        if old.ids != new.ids:
            log.info("fault flags changed: %s", ", ".join(ids) or "none active")
        self._cpu(new.cpu_threads)
        self._db_lock(new.db_lock)
        if not new.leak_kb and self._leaked:
            self._leaked.clear()
            self._leaked_bytes = 0

    # --- per request -----------------------------------------------------------------
    def _leak(self) -> None:
        a = self.now
        if a.leak_kb and self._leaked_bytes < a.leak_max_mb * 2**20:
            n = int(a.leak_kb * 1024)
            # Written bytes, so the pages are resident (a zeroed buffer may not be).
            self._leaked.append(random.randbytes(64) * (n // 64))
            self._leaked_bytes += n

    def _raise(self) -> None:
        a = self.now
        if a.exception and random.random() < a.exception:
            raise _bug(self.me.service)
        if self.me.bug_rate and random.random() < self.me.bug_rate:
            raise _bug(self.me.service)

    def before(self) -> None:
        """At the start of a blocking handler: delay, leak, maybe raise."""
        if self.now.delay_s:
            time.sleep(self.now.delay_s * random.uniform(0.8, 1.2))
        self._leak()
        self._raise()

    async def abefore(self) -> None:
        """At the start of an async handler: delay, leak, maybe raise."""
        if self.now.delay_s:
            await asyncio.sleep(self.now.delay_s * random.uniform(0.8, 1.2))
        self._leak()
        self._raise()

    def wrong(self) -> bool:
        """Whether this answer should carry wrong values."""
        return bool(self.now.wrong_return) and random.random() < self.now.wrong_return

    # --- background faults ---------------------------------------------------------
    def _cpu(self, threads: int) -> None:
        if threads and self._cpu_stop is None:
            stop = threading.Event()
            self._cpu_stop = stop

            def burn() -> None:
                x = 0
                while not stop.is_set():
                    for i in range(20_000):
                        x = (x * 31 + i) % 1_000_003

            for i in range(threads):
                threading.Thread(target=burn, name=f"hog-{i}", daemon=True).start()
        elif not threads and self._cpu_stop is not None:
            self._cpu_stop.set()
            self._cpu_stop = None

    def _db_lock(self, on: bool) -> None:
        if on and self._lock_stop is None:
            stop = threading.Event()
            self._lock_stop = stop
            threading.Thread(
                target=self._hold_lock, args=(stop,), name="db-lock", daemon=True
            ).start()
        elif not on and self._lock_stop is not None:
            self._lock_stop.set()
            self._lock_stop = None

    def _hold_lock(self, stop: threading.Event) -> None:
        """A maintenance job gone wrong: an exclusive table lock held in an open transaction."""
        import psycopg

        table = self.db_table
        try:
            with psycopg.connect(self.me.db_url, autocommit=False) as conn:
                conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
                log.warning("maintenance: holding an exclusive lock on %s", table)
                while not stop.wait(1.0):
                    pass
                conn.rollback()
        except Exception:
            log.exception("maintenance job on %s failed", table)

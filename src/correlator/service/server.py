"""The HTTP server in front of the app: uvicorn with connection limits and timeouts.

Plain uvicorn waits forever for a request's headers and takes any number of
connections, so a few hundred half-sent requests exhaust its file handles and
nobody else gets in. :func:`make_server` adds, per connection:

- ``max_connections``: a connection beyond it is answered ``503`` with
  ``Retry-After`` at once and closed (Alertmanager retries);
- ``header_timeout``: a request whose headers are not complete this many
  seconds after the connection opened (or after the previous answer) is
  answered ``408`` and closed;
- the body timeout and the bound on pending webhook requests live in the app
  (:class:`~correlator.service.app.ServiceConfig`).

Every dropped connection is one log line (no traceback), rate-limited, and a
count in ``correlator_connections_dropped_total``. :func:`raise_fd_limit`
lifts the soft limit on open files to the hard one at start.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from correlator.service.obs import Metrics, RateLimitedLog

__all__ = ["ConnectionLimits", "make_server", "raise_fd_limit"]

log = logging.getLogger("correlator.service.http")


@dataclass(frozen=True)
class ConnectionLimits:
    """Bounds on connections (the CLI's --max-connections, --header-timeout...)."""

    max_connections: int = 1000
    header_timeout: float = 10.0
    keep_alive: float = 5.0
    """Seconds an idle kept-alive connection stays open."""
    backlog: int = 1024
    """Connections the kernel queues before they are accepted."""
    retry_after: int = 2


def raise_fd_limit() -> int:
    """Lift the soft limit on open files to the hard limit; return the soft limit now."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    elif hard == resource.RLIM_INFINITY and soft < 65536:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (65536, hard))
            soft = 65536
        except (ValueError, OSError):
            pass
    return int(soft)


def _raw_response(status: str, message: str, retry_after: int | None = None) -> bytes:
    body = ('{"error": "' + message + '"}').encode()
    head = [
        f"HTTP/1.1 {status}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
    ]
    if retry_after is not None:
        head.append(f"retry-after: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def guarded_protocol(limits: ConnectionLimits, metrics: Metrics | None) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with the connection cap and the header timeout."""
    drops = RateLimitedLog(log)
    refusal = _raw_response(
        "503 Service Unavailable",
        f"more than {limits.max_connections} connections are open; retry in {limits.retry_after}s",
        limits.retry_after,
    )
    too_slow = _raw_response(
        "408 Request Timeout",
        f"the request headers did not arrive within {limits.header_timeout:g}s",
    )

    def dropped(reason: str, peer: Any) -> None:
        if metrics is not None:
            metrics.connections_dropped.labels(reason).inc()
        client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"
        drops.warning(reason, f"connection dropped: {reason.replace('_', ' ')}", client=client)

    class GuardedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None
        _refused = False

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            if len(self.connections) > limits.max_connections:
                self._refused = True
                dropped("max_connections", self.client)
                self.transport.write(refusal)
                self.transport.close()
                return
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(limits.header_timeout, self._expired)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expired(self) -> None:
            self._header_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            dropped("header_timeout", self.client)
            self.transport.write(too_slow)
            self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()  # the headers are in: the app's body timeout takes over

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._refused:
                self.connections.discard(self)
                return
            super().connection_lost(exc)

    return GuardedH11Protocol


def make_server(
    app: Any,
    host: str,
    port: int,
    limits: ConnectionLimits | None = None,
    *,
    graceful: float = 10.0,
    metrics: Metrics | None = None,
) -> uvicorn.Server:
    """A uvicorn server for ``app`` with :class:`ConnectionLimits` applied."""
    limits = limits or ConnectionLimits()
    metrics = metrics or getattr(getattr(app, "state", None), "metrics", None)
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            http=guarded_protocol(limits, metrics),
            backlog=limits.backlog,
            timeout_keep_alive=max(1, round(limits.keep_alive)),
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=int(graceful),
        )
    )


def quiet_loop_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Log the loop's own errors (accept failing on too many open files...) as one
    rate-limited line each, without the traceback."""
    drops = RateLimitedLog(log)

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        err = context.get("exception")
        message = str(context.get("message", "event loop error"))
        problem = f"{type(err).__name__}: {err}" if err is not None else message
        drops.warning(message[:60], message, problem=problem)

    loop.set_exception_handler(handler)

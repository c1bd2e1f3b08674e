"""The ASGI app behind ``correlator serve``: webhook receiver and results API.

Routes::

    POST /webhook                            Alertmanager webhook (payload version 4)
    GET  /api/v1/investigations              list (status, service, alertname,
                                             fingerprint, resolved, since, until,
                                             limit, offset)
    GET  /api/v1/investigations/{id}         one investigation, with its result
    GET  /api/v1/alerts/{fingerprint}        the newest investigation of that alert
    GET  /investigations[/{id}]              the same, as pages for a browser
    GET  /healthz  /readyz  /metrics         liveness, readiness, Prometheus metrics

The webhook answers as soon as the alerts are durably stored; investigations
run in :class:`~correlator.service.worker.WorkerPool`. Every route but the
three probes requires the configured credentials.
"""

from __future__ import annotations

import asyncio
import gc
import html
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from correlator.model import Alert, Evidence, Finding, Gap, Investigation, Window, parse_time
from correlator.service.auth import Authenticator
from correlator.service.isolate import ProcessSpec
from correlator.service.notify import Notifier, NotifySettings
from correlator.service.obs import Metrics, RateLimitedLog
from correlator.service.payload import (
    Limits,
    PayloadError,
    alert_from_json,
    parse_payload,
    to_alerts,
)
from correlator.service.store import (
    STATUSES,
    Accepted,
    Query,
    Record,
    Store,
    StoreError,
    open_store,
)
from correlator.service.worker import InvestigateFn, WorkerPool, WorkerSettings

__all__ = ["ServiceConfig", "create_app", "investigation_from_json"]

log = logging.getLogger("correlator.service")

# Bodies above this size are validated in a thread, off the event loop.
_THREAD_PARSE_BYTES = 64 * 1024
#: The largest ``offset`` the results API takes (deeper pages: filter with since/until).
MAX_OFFSET = 1_000_000
_JSON_TYPES = ("application/json", "application/x-json")


@dataclass(frozen=True)
class ServiceConfig:
    """Everything the service is configured with (the CLI builds this)."""

    store: str = "correlator-store.db"
    """A SQLite file path, or a ``postgresql://`` URL."""
    auth: Authenticator = field(default_factory=Authenticator)
    workers: WorkerSettings = field(default_factory=WorkerSettings)
    limits: Limits = field(default_factory=Limits)
    max_body: int = 4 * 1024 * 1024
    """Bytes accepted in one webhook request."""
    notify: NotifySettings | None = None
    public_url: str = ""
    """The URL people reach the service at (for links in notifications)."""
    shutdown_grace: float = 10.0
    body_timeout: float = 30.0
    """Seconds a webhook body may take to arrive in full (then 408)."""
    max_pending: int = 256
    """Webhook requests being handled at once; more are answered 503 with Retry-After."""
    retry_after: int = 2
    """Seconds a refused sender is told to wait (the Retry-After header)."""


class _AcceptBatcher:
    """Group commit: alerts of concurrent webhook requests go to the store in one transaction.

    Each request still gets its answer only after its alerts are committed; under
    a burst, one fsync covers many requests instead of one each.
    """

    def __init__(self, store: Store, max_alerts: int = 2000) -> None:
        self.store = store
        self.max_alerts = max_alerts
        self._queue: asyncio.Queue[tuple[list[Alert], asyncio.Future[list[Accepted]]]] = (
            asyncio.Queue()
        )
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="accept-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def accept(self, alerts: list[Alert]) -> list[Accepted]:
        future: asyncio.Future[list[Accepted]] = asyncio.get_running_loop().create_future()
        await self._queue.put((alerts, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            size = len(batch[0][0])
            while not self._queue.empty() and size < self.max_alerts:
                item = self._queue.get_nowait()
                batch.append(item)
                size += len(item[0])
            alerts = [a for group, _ in batch for a in group]
            try:
                accepted = await asyncio.to_thread(self.store.accept, alerts)
            except Exception as err:  # StoreError, or a bug: every waiter must hear of it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            at = 0
            for group, future in batch:
                if not future.done():
                    future.set_result(accepted[at : at + len(group)])
                at += len(group)


class _State:
    """What the running app holds (set up in the lifespan)."""

    store: Store
    pool: WorkerPool
    batcher: _AcceptBatcher
    notifier: Notifier | None = None


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _client(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "unknown"


def create_app(
    config: ServiceConfig,
    investigate: InvestigateFn | ProcessSpec,
    *,
    store: Store | None = None,
    tracer_provider: trace.TracerProvider | None = None,
    metrics: Metrics | None = None,
) -> Starlette:
    """The ASGI app. ``investigate`` is called (in a worker thread) for each new alert.

    Given a :class:`~correlator.service.isolate.ProcessSpec` instead, each worker
    runs its investigations in a child process built from it.

    ``store`` defaults to :func:`~correlator.service.store.open_store` of
    ``config.store``; ``tracer_provider`` defaults to a no-op one.
    """
    metrics = metrics or Metrics()
    provider = tracer_provider or trace.NoOpTracerProvider()
    tracer = provider.get_tracer("correlator.service")
    state = _State()
    auth = config.auth
    drops = RateLimitedLog(log)
    pending = 0

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from correlator.service.server import quiet_loop_errors

        quiet_loop_errors(asyncio.get_running_loop())
        state.store = (
            store if store is not None else await asyncio.to_thread(open_store, config.store)
        )
        await asyncio.to_thread(state.store.migrate)
        metrics.watch_store(state.store.counts)
        if config.notify is not None:
            state.notifier = Notifier(config.notify, config.public_url)
        state.pool = WorkerPool(
            state.store, investigate, config.workers, metrics, tracer, state.notifier
        )
        state.pool.start()
        state.batcher = _AcceptBatcher(state.store)
        state.batcher.start()
        # What startup built lives as long as the process: keep it out of the
        # collector's full passes, which would otherwise stall accepts under a burst.
        gc.collect()
        gc.freeze()
        log.info(
            "service started",
            extra={"replica": state.pool.owner, "workers": config.workers.concurrency},
        )
        try:
            yield
        finally:
            await state.batcher.stop()
            await state.pool.stop(config.shutdown_grace)
            if state.notifier is not None:
                await state.notifier.aclose()
            state.store.close()
            shutdown = getattr(provider, "shutdown", None)
            if callable(shutdown):
                shutdown()

    def unauthorized(request: Request) -> Response | None:
        if auth.check(request.headers.get("authorization")):
            return None
        given = "missing" if "authorization" not in request.headers else "wrong"
        return _error(
            401,
            f"credentials {given}: send the Authorization header configured for this receiver "
            "(Alertmanager: http_config.authorization or http_config.basic_auth)",
            headers={"WWW-Authenticate": ", ".join(auth.schemes)},
        )

    async def read_body(request: Request) -> bytes:
        """The whole body, within ``max_body`` bytes and ``body_timeout`` seconds."""
        try:
            async with asyncio.timeout(config.body_timeout):
                return await _read_body(request)
        except TimeoutError:
            metrics.connections_dropped.labels("body_timeout").inc()
            drops.warning("body_timeout", "webhook body too slow", client=_client(request))
            raise PayloadError(
                408,
                f"the body did not arrive within {config.body_timeout:g}s; send it at once "
                "(or raise the receiver's --body-timeout)",
            ) from None

    async def _read_body(request: Request) -> bytes:
        limit = config.max_body
        declared = request.headers.get("content-length")
        too_big = PayloadError(
            413,
            f"the body is larger than {limit} bytes; set max_alerts in the Alertmanager "
            "webhook_config (or raise the receiver's --max-body)",
        )
        if declared is not None:
            try:
                if int(declared) > limit:
                    raise too_big
            except ValueError:
                raise PayloadError(400, "Content-Length is not a number") from None
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)

    async def webhook(request: Request) -> Response:
        nonlocal pending
        started = time.perf_counter()
        if pending >= config.max_pending:
            metrics.connections_dropped.labels("max_pending").inc()
            drops.warning(
                "max_pending", "webhook refused: too many pending", limit=config.max_pending
            )
            response: Response = _error(
                503,
                f"{pending} webhook requests are pending (at most {config.max_pending}); "
                f"retry in {config.retry_after}s",
                headers={"Retry-After": str(config.retry_after), "Connection": "close"},
            )
        else:
            pending += 1
            try:
                response = await _webhook(request)
            except ClientDisconnect:
                metrics.connections_dropped.labels("client_disconnect").inc()
                drops.info(
                    "client_disconnect", "client went away mid-request", client=_client(request)
                )
                response = _error(400, "the client closed the connection before the body ended")
            finally:
                pending -= 1
        metrics.requests.labels(str(response.status_code)).inc()
        metrics.stages.labels("accept").observe(time.perf_counter() - started)
        return response

    async def _webhook(request: Request) -> Response:
        denied = unauthorized(request)
        if denied is not None:
            return denied
        kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if kind and kind not in _JSON_TYPES and not kind.endswith("+json"):
            return _error(
                415,
                f"Content-Type {kind[:60]!r} is not accepted; send application/json "
                "(Alertmanager's webhook_config does)",
            )
        with tracer.start_as_current_span("webhook") as span:
            try:
                body = await read_body(request)
                if len(body) > _THREAD_PARSE_BYTES:
                    payload = await asyncio.to_thread(parse_payload, body, config.limits)
                else:
                    payload = parse_payload(body, config.limits)
            except PayloadError as err:
                log.info("webhook rejected", extra={"status": err.status, "problem": err.message})
                headers = {"Connection": "close"} if err.status in (408, 413) else None
                return _error(err.status, err.message, headers=headers)
            alerts = to_alerts(payload)
            span.set_attribute("correlator.alerts", len(alerts))
            try:
                with tracer.start_as_current_span("store_alerts"):
                    accepted = await state.batcher.accept(alerts)
            except StoreError as err:
                metrics.store_errors.labels("accept").inc()
                log.error("cannot store alerts", extra={"problem": str(err)})
                return _error(
                    503,
                    f"the investigation store is unavailable; retry later ({err})",
                    headers={"Retry-After": str(config.retry_after)},
                )
        counts = {"new": 0, "duplicate": 0, "resolved": 0}
        for a in accepted:
            counts[a.outcome] += 1
            metrics.alerts.labels(a.outcome).inc()
        if counts["new"]:
            state.pool.wake()
        if payload.truncatedAlerts:
            log.warning(
                "Alertmanager truncated the notification",
                extra={"truncated": payload.truncatedAlerts, "receiver": payload.receiver},
            )
        log.info("webhook accepted", extra={"receiver": payload.receiver, **counts})
        return JSONResponse(
            {"accepted": len(accepted), **counts, "investigations": [a.id for a in accepted]}
        )

    def parse_query(request: Request) -> Query:
        p = request.query_params

        def time_param(name: str) -> float | None:
            raw = p.get(name)
            if not raw:
                return None
            try:
                return parse_time(float(raw) if raw.replace(".", "", 1).isdigit() else raw)
            except ValueError:
                raise PayloadError(
                    400, f"{name}={raw!r} is not a time; write RFC 3339 or unix seconds"
                ) from None

        status = p.get("status") or None
        if status is not None and status not in STATUSES:
            raise PayloadError(400, f"status={status!r}; use one of {', '.join(STATUSES)}")
        resolved = p.get("resolved")
        if resolved not in (None, "", "true", "false"):
            raise PayloadError(400, f"resolved={resolved!r}; use true or false")
        raw_limit, raw_offset = p.get("limit", "100"), p.get("offset", "0")
        if len(raw_limit) > 8 or len(raw_offset) > 8:
            raise PayloadError(
                400, f"limit must be 1..1000 and offset 0..{MAX_OFFSET}; narrow with since/until"
            )
        try:
            limit = int(raw_limit)
            offset = int(raw_offset)
        except ValueError:
            raise PayloadError(400, "limit and offset must be whole numbers") from None
        if not 1 <= limit <= 1000 or not 0 <= offset <= MAX_OFFSET:
            raise PayloadError(
                400,
                f"limit must be 1..1000 and offset 0..{MAX_OFFSET} (got limit={limit}, "
                f"offset={offset}); narrow deeper lists with since/until",
            )
        return Query(
            status=status,
            service=p.get("service") or None,
            alertname=p.get("alertname") or None,
            fingerprint=p.get("fingerprint") or None,
            resolved=None if not resolved else resolved == "true",
            since=time_param("since"),
            until=time_param("until"),
            limit=limit,
            offset=offset,
        )

    async def list_records(request: Request) -> list[Record] | Response:
        denied = unauthorized(request)
        if denied is not None:
            return denied
        try:
            q = parse_query(request)
        except PayloadError as err:
            return _error(err.status, err.message)
        try:
            return await asyncio.to_thread(state.store.query, q)
        except StoreError as err:
            return _error(503, f"the investigation store is unavailable ({err})")

    async def one_record(request: Request) -> Record | Response:
        denied = unauthorized(request)
        if denied is not None:
            return denied
        try:
            if "fingerprint" in request.path_params:
                fp = str(request.path_params["fingerprint"]).lower()
                found = await asyncio.to_thread(state.store.query, Query(fingerprint=fp, limit=1))
                record = found[0] if found else None
                what = f"alert fingerprint {fp}"
            else:
                inv_id = str(request.path_params["id"])
                record = await asyncio.to_thread(state.store.get, inv_id)
                what = f"id {inv_id}"
        except StoreError as err:
            return _error(503, f"the investigation store is unavailable ({err})")
        if record is None:
            return _error(404, f"no investigation with {what}; list them at /api/v1/investigations")
        return record

    async def api_list(request: Request) -> Response:
        records = await list_records(request)
        if isinstance(records, Response):
            return records
        items = [r.to_json(with_result=False) for r in records]
        return JSONResponse({"investigations": items, "count": len(items)})

    async def api_one(request: Request) -> Response:
        record = await one_record(request)
        if isinstance(record, Response):
            return record
        return JSONResponse(record.to_json())

    async def page_list(request: Request) -> Response:
        records = await list_records(request)
        if isinstance(records, Response):
            return records
        return HTMLResponse(_render_list(records))

    async def page_one(request: Request) -> Response:
        record = await one_record(request)
        if isinstance(record, Response):
            return record
        return HTMLResponse(_render_record(record))

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        problems = []
        try:
            await asyncio.wait_for(asyncio.to_thread(state.store.ping), timeout=5.0)
        except TimeoutError:
            problems.append("store: no answer within 5s")
        except StoreError as err:
            problems.append(f"store: {str(err) or type(err).__name__}")
        except AttributeError:
            problems.append("store: not open yet")
        if not getattr(state, "pool", None) or not state.pool.running:
            problems.append("workers: not running")
        if problems:
            return JSONResponse({"status": "not ready", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready", "replica": state.pool.owner})

    async def metrics_page(request: Request) -> Response:
        data = await asyncio.to_thread(generate_latest, metrics.registry)
        return Response(data, media_type=CONTENT_TYPE_LATEST)

    async def root(request: Request) -> Response:
        return RedirectResponse("/investigations")

    routes = [
        Route("/webhook", webhook, methods=["POST"]),
        Route("/api/v1/investigations", api_list, methods=["GET"]),
        Route("/api/v1/investigations/{id}", api_one, methods=["GET"]),
        Route("/api/v1/alerts/{fingerprint}", api_one, methods=["GET"]),
        Route("/investigations", page_list, methods=["GET"]),
        Route("/investigations/{id}", page_one, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_page, methods=["GET"]),
        Route("/", root, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.correlator = state
    app.state.metrics = metrics
    return app


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem;color:#1b1f24;max-width:70rem}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #d0d7de;
padding:.35rem .6rem;text-align:left;vertical-align:top}th{background:#f6f8fa}
.done{color:#1a7f37}.failed{color:#cf222e}.running,.queued{color:#9a6700}
code{background:#f6f8fa;padding:0 .25rem}
"""


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}"
        f"</title><style>{_CSS}</style></head><body>{body}</body></html>"
    )


def _t(ts: float | None) -> str:
    if ts is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _render_list(records: list[Record]) -> str:
    e = html.escape
    rows = []
    for r in records:
        rows.append(
            f"<tr><td><a href='/investigations/{e(r.id)}'>{e(r.id)}</a></td>"
            f"<td>{e(r.alertname)}</td><td>{e(r.service or '')}</td>"
            f"<td class='{e(r.status)}'>{e(r.status)}</td><td>{'yes' if r.resolved else ''}</td>"
            f"<td>{e(_t(r.starts_at))}</td><td><code>{e(r.fingerprint)}</code></td></tr>"
        )
    table = (
        "<table><tr><th>id</th><th>alert</th><th>service</th><th>status</th><th>resolved</th>"
        f"<th>started</th><th>fingerprint</th></tr>{''.join(rows)}</table>"
        if rows
        else "<p>No investigations yet.</p>"
    )
    return _page("correlator: investigations", f"<h1>Investigations</h1>{table}")


def investigation_from_json(data: dict[str, Any]) -> Investigation:
    """Rebuild an :class:`Investigation` (without telemetry) from its stored JSON."""
    window = data.get("window") or {}
    start = parse_time(window["start"]) if window.get("start") else 0.0
    end = parse_time(window["end"]) if window.get("end") else start
    findings = []
    for f in data.get("findings") or []:
        evidence = tuple(
            Evidence(
                kind=str(ev.get("kind", "")),
                summary=str(ev.get("summary", "")),
                service=ev.get("service"),
                signal=ev.get("signal"),
                onset=parse_time(ev["onset"]) if ev.get("onset") else None,
                query=ev.get("query"),
                url=ev.get("url"),
                data=dict(ev.get("data") or {}),
            )
            for ev in f.get("evidence") or []
        )
        findings.append(
            Finding(
                service=str(f.get("service", "")),
                cause=str(f.get("cause", "")),
                confidence=float(f.get("confidence", 0.0)),
                evidence=evidence,
                pattern=str(f.get("pattern", "")),
                onset=parse_time(f["onset"]) if f.get("onset") else None,
                zone=f.get("zone"),
            )
        )
    return Investigation(
        alert=alert_from_json(data["alert"]),
        window=Window(start=start, end=end, baseline_start=start),
        findings=findings,
        blast_radius=[str(s) for s in data.get("blast_radius") or []],
        gaps=[
            Gap(str(g.get("source", "")), str(g.get("why", "")), g.get("signal"))
            for g in data.get("gaps") or []
        ],
        timings={str(k): float(v) for k, v in (data.get("timings") or {}).items()},
        not_evaluated=list(data.get("not_evaluated") or []),
    )


def _render_with_report(result: dict[str, Any]) -> str | None:
    """The report module's page for a stored result, or ``None`` to use the fallback."""
    try:
        from correlator.report_html import render_html
    except ImportError:
        return None
    try:
        return str(render_html(investigation_from_json(result)))
    except Exception:  # a stored result the report cannot draw still gets a page
        log.warning("report_html could not render a stored investigation", exc_info=True)
        return None


def _render_record(record: Record) -> str:
    if record.result is not None:
        page = _render_with_report(record.result)
        if page is not None:
            return page
    e = html.escape
    head = (
        f"<h1>{e(record.alertname or 'alert')}"
        f"{' on ' + e(record.service) if record.service else ''}</h1>"
        f"<p>Status: <b class='{e(record.status)}'>{e(record.status)}</b>"
        f"{' (alert resolved)' if record.resolved else ''} · started {e(_t(record.starts_at))}"
        f" · fingerprint <code>{e(record.fingerprint)}</code> · attempts {record.attempts}</p>"
    )
    parts = [head, "<p><a href='/investigations'>All investigations</a></p>"]
    if record.error:
        parts.append(f"<p class='failed'>Error: {e(record.error)}</p>")
    result: dict[str, Any] = record.result or {}
    findings = result.get("findings") or []
    if findings:
        rows = "".join(
            f"<tr><td>{i}</td><td>{e(str(f.get('cause', '')))}</td>"
            f"<td>{e(str(f.get('service', '')))}</td>"
            f"<td>{round(100 * float(f.get('confidence', 0)))}%</td>"
            "<td>"
            + "<br>".join(e(str(ev.get("summary", ""))) for ev in f.get("evidence", [])[:5])
            + "</td></tr>"
            for i, f in enumerate(findings, 1)
        )
        parts.append(
            "<h2>Probable causes</h2><table><tr><th>#</th><th>cause</th><th>service</th>"
            f"<th>confidence</th><th>evidence</th></tr>{rows}</table>"
        )
    elif record.result is not None:
        parts.append("<p>No probable cause found.</p>")
    gaps = result.get("gaps") or []
    if gaps:
        items = "".join(
            f"<li><b>{e(str(g.get('source', '')))}</b>: {e(str(g.get('why', '')))}</li>"
            for g in gaps
        )
        parts.append(f"<h2>Could not see</h2><ul>{items}</ul>")
    labels = "".join(
        f"<tr><td>{e(k)}</td><td>{e(str(v))}</td></tr>"
        for k, v in sorted(record.alert.get("labels", {}).items())
    )
    parts.append(f"<h2>Alert labels</h2><table>{labels}</table>")
    return _page(f"correlator: {record.alertname}", "".join(parts))

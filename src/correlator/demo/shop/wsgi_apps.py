"""The plain-WSGI services (no framework): search and email."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from correlator.demo.shop.runtime import Env, Faults

__all__ = ["make_app"]

log = logging.getLogger("shop")
StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _json(start: StartResponse, status: str, body: Any) -> list[bytes]:
    data = json.dumps(body).encode()
    start(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def _wrap(me: Env, routes: dict[tuple[str, str], Callable[[dict[str, Any]], Any]]) -> WsgiApp:
    def app(environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        key = (environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""))
        if key == ("GET", "/healthz"):
            return _json(start, "200 OK", {"ok": True, "service": me.service})
        handler = routes.get(key)
        if handler is None:
            return _json(start, "404 Not Found", {"error": f"no route {key[0]} {key[1]}"})
        try:
            return _json(start, "200 OK", handler(environ))
        except Exception as err:
            from opentelemetry import trace

            trace.get_current_span().record_exception(err)
            log.exception("request %s %s failed", *key)
            return _json(start, "500 Internal Server Error", {"error": repr(err)})

    return app


def _body(environ: dict[str, Any]) -> Any:
    size = int(environ.get("CONTENT_LENGTH") or 0)
    return json.loads(environ["wsgi.input"].read(size) or b"{}")


def search(me: Env) -> WsgiApp:
    from correlator.demo.shop.db import pool

    db, faults = pool(me.db_url), Faults(me, "products")

    def run(environ: dict[str, Any]) -> Any:
        faults.before()
        q = parse_qs(environ.get("QUERY_STRING", "")).get("q", [""])[0][:40]
        with db.connection() as conn:
            rows = conn.execute(
                "SELECT id, name, price_cents FROM products WHERE name ILIKE %s "
                "ORDER BY name LIMIT 20",
                (f"%{q}%",),
            ).fetchall()
        wrong = faults.wrong()
        results = [{"id": -r[0] if wrong else r[0], "name": r[1], "price_cents": r[2]}
                   for r in rows]  # fmt: skip
        return {"query": q, "results": results}

    return _wrap(me, {("GET", "/search"): run})


def email(me: Env) -> WsgiApp:
    faults = Faults(me)

    def send(environ: dict[str, Any]) -> Any:
        faults.before()
        body = _body(environ)
        if random.random() < 0.02:
            log.info("confirmation for order %s sent to %s", body.get("order_id"), body.get("user"))
        return {"sent": not faults.wrong(), "order_id": body.get("order_id")}

    return _wrap(me, {("POST", "/send"): send})


FACTORIES = {"search": search, "email": email}


def make_app(me: Env) -> WsgiApp:
    """The WSGI app of ``me.service``, wrapped in OpenTelemetry's WSGI middleware."""
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

    return OpenTelemetryMiddleware(FACTORIES[me.service](me))

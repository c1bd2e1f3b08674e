"""The Flask services: catalog, inventory, checkout, shipping."""

from __future__ import annotations

import logging
import random
from typing import Any

from flask import Flask, jsonify, request

from correlator.demo.shop.runtime import Env, Faults, Peers, UpstreamError

__all__ = ["make_app"]

log = logging.getLogger("shop")


def _base(me: Env) -> Flask:
    app = Flask(me.service)

    @app.get("/healthz")
    def healthz() -> Any:
        return {"ok": True, "service": me.service, "version": me.version}

    @app.errorhandler(UpstreamError)
    def upstream(err: UpstreamError) -> Any:
        log.error("call to %s failed: %s", err.peer, err)
        return jsonify(error=str(err)), 502

    return app


def catalog(me: Env) -> Flask:
    from correlator.demo.shop.db import pool

    app, db, faults = _base(me), pool(me.db_url), Faults(me, "products")

    @app.get("/products")
    def products() -> Any:
        faults.before()
        limit = min(int(request.args.get("limit", 12)), 50)
        category = request.args.get("category")
        with db.connection() as conn:
            if category:
                rows = conn.execute(
                    "SELECT id, name, category, price_cents FROM products WHERE category = %s "
                    "ORDER BY random() LIMIT %s",
                    (category, limit),
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT id, name, category, price_cents FROM products ORDER BY random() "
                    "LIMIT %s",
                    (limit,),
                ).fetchall()
        wrong = faults.wrong()
        return jsonify(
            [
                {
                    "id": r[0],
                    "name": r[1],
                    "category": r[2],
                    "price_cents": -r[3] if wrong else r[3],
                }
                for r in rows
            ]
        )

    @app.get("/products/<int:pid>")
    def product(pid: int) -> Any:
        faults.before()
        with db.connection() as conn:
            row = conn.execute(
                "SELECT id, name, category, price_cents, description FROM products WHERE id = %s",
                (pid,),
            ).fetchone()
        if row is None:
            return jsonify(error=f"no product {pid}"), 404
        price = -row[3] if faults.wrong() else row[3]
        return {"id": row[0], "name": row[1], "category": row[2], "price_cents": price,
                "description": row[4]}  # fmt: skip

    return app


def inventory(me: Env) -> Flask:
    from correlator.demo.shop.db import pool

    app, db, faults = _base(me), pool(me.db_url), Faults(me, "stock")

    @app.get("/stock/<int:pid>")
    def stock(pid: int) -> Any:
        faults.before()
        with db.connection() as conn:
            row = conn.execute("SELECT qty FROM stock WHERE product_id = %s", (pid,)).fetchone()
        qty = row[0] if row else 0
        return {"product_id": pid, "qty": -qty - 1 if faults.wrong() else qty}

    @app.post("/reserve")
    def reserve() -> Any:
        faults.before()
        items = (request.get_json(silent=True) or {}).get("items", [])
        with db.connection() as conn, conn.transaction():
            for it in sorted(items, key=lambda i: i["product_id"]):
                conn.execute(
                    "UPDATE stock SET qty = CASE WHEN qty - %s < 10 THEN 1000 ELSE qty - %s END "
                    "WHERE product_id = %s",
                    (it["qty"], it["qty"], it["product_id"]),
                )
        reserved = sum(int(i["qty"]) for i in items)
        return {"reserved": -reserved if faults.wrong() else reserved}

    return app


def shipping(me: Env) -> Flask:
    app, faults = _base(me), Faults(me)

    @app.post("/quote")
    def quote() -> Any:
        faults.before()
        items = (request.get_json(silent=True) or {}).get("items", [])
        n = sum(int(i.get("qty", 1)) for i in items)
        cost = 499 + 150 * max(n - 1, 0)
        return {"cost_cents": -cost if faults.wrong() else cost, "carrier": "demo-post"}

    return app


def checkout(me: Env) -> Flask:
    from correlator.demo.shop.db import pool

    app, db, faults = _base(me), pool(me.db_url), Faults(me, "orders")
    peers = Peers(me)

    @app.post("/checkout/<user>")
    def place_order(user: str) -> Any:
        faults.before()
        cart = peers.call("cart", "GET", f"/cart/{user}")
        items = cart.get("items", [])
        if not items:
            return jsonify(error="cart is empty"), 400
        total = int(cart.get("total_cents", 0))
        if total <= 0:
            raise UpstreamError("cart", f"cart total is {total} for {len(items)} items")
        quote = peers.call("shipping", "POST", "/quote", {"items": items})
        if int(quote.get("cost_cents", -1)) < 0:
            raise UpstreamError("shipping", f"negative shipping cost {quote.get('cost_cents')}")
        want = sum(int(i["qty"]) for i in items)
        got = peers.call("inventory", "POST", "/reserve", {"items": items})
        if int(got.get("reserved", -1)) != want:
            raise UpstreamError("inventory", f"reserved {got.get('reserved')} of {want} items")
        amount = total + int(quote["cost_cents"])
        paid = peers.call("payment", "POST", "/charge", {"user": user, "amount_cents": amount})
        if int(paid.get("charged_cents", -1)) != amount:
            raise UpstreamError(
                "payment", f"charged {paid.get('charged_cents')} cents instead of {amount}"
            )
        with db.connection() as conn:
            row = conn.execute(
                "INSERT INTO orders (user_id, total_cents, items) VALUES (%s, %s, %s) RETURNING id",
                (user, amount, want),
            ).fetchone()
        order_id = row[0] if row else 0
        sent = peers.call("email", "POST", "/send", {"user": user, "order_id": order_id})
        if not sent.get("sent"):
            raise UpstreamError("email", f"order {order_id} confirmation was not sent")
        peers.call("cart", "DELETE", f"/cart/{user}")
        if random.random() < 0.05:
            log.info("order %s placed by %s: %d items, %d cents", order_id, user, want, amount)
        return {"order_id": order_id, "total_cents": amount}

    return app


FACTORIES = {
    "catalog": catalog,
    "inventory": inventory,
    "shipping": shipping,
    "checkout": checkout,
}


def make_app(me: Env) -> Flask:
    """The Flask app of ``me.service``, instrumented."""
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    app = FACTORIES[me.service](me)
    FlaskInstrumentor().instrument_app(app, excluded_urls="healthz")  # type: ignore[no-untyped-call]
    return app

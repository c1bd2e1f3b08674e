"""The async Starlette services (under uvicorn): frontend, recommendation, cart, payment."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from correlator.demo.shop.runtime import Env, Faults, Peers, UpstreamError

__all__ = ["make_app"]

log = logging.getLogger("shop")
Handler = Callable[[Request], Awaitable[Response]]


def _guard(handler: Handler) -> Handler:
    """Log a failing request inside its span (so the log carries the trace), then fail it."""

    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except UpstreamError as err:
            log.error("call to %s failed: %s", err.peer, err)
            return JSONResponse({"error": str(err)}, status_code=502)
        except Exception:
            log.exception("request %s %s failed", request.method, request.url.path)
            raise

    return run


def _app(me: Env, routes: list[Route], lifespan: Any = None) -> Starlette:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True, "service": me.service, "version": me.version})

    guarded = [Route(r.path, _guard(r.endpoint), methods=r.methods) for r in routes]
    return Starlette(routes=[Route("/healthz", healthz), *guarded], lifespan=lifespan)


def _positive(peer: str, what: str, value: Any) -> Any:
    if not isinstance(value, int) or value <= 0:
        raise UpstreamError(peer, f"{what} is {value!r}")
    return value


def frontend(me: Env) -> Starlette:
    peers, faults = Peers(me), Faults(me)

    async def home(request: Request) -> Response:
        await faults.abefore()
        recs, products = await asyncio.gather(
            peers.acall("recommendation", "GET", "/recommendations"),
            peers.acall("catalog", "GET", "/products?limit=12"),
        )
        for p in products:
            _positive("catalog", f"price of product {p['id']}", p["price_cents"])
        for r in recs:
            _positive("recommendation", "a recommended product id", r["id"])
        return JSONResponse({"products": products, "recommended": recs})

    async def product(request: Request) -> Response:
        await faults.abefore()
        pid = int(request.path_params["pid"])
        item, stock, recs = await asyncio.gather(
            peers.acall("catalog", "GET", f"/products/{pid}"),
            peers.acall("inventory", "GET", f"/stock/{pid}"),
            peers.acall("recommendation", "GET", f"/recommendations?product_id={pid}"),
        )
        _positive("catalog", f"price of product {pid}", item["price_cents"])
        if stock["qty"] < 0:
            raise UpstreamError("inventory", f"stock of product {pid} is {stock['qty']}")
        for r in recs:
            _positive("recommendation", "a recommended product id", r["id"])
        return JSONResponse({"product": item, "in_stock": stock["qty"], "recommended": recs})

    async def search(request: Request) -> Response:
        await faults.abefore()
        q = request.query_params.get("q", "")
        hits = await peers.acall("search", "GET", f"/search?q={q}")
        for h in hits["results"]:
            _positive("search", "a result id", h["id"])
        return JSONResponse(hits)

    async def add_to_cart(request: Request) -> Response:
        await faults.abefore()
        body = await request.json()
        user = request.path_params["user"]
        cart = await peers.acall("cart", "POST", f"/cart/{user}/items", body)
        return JSONResponse(cart)

    async def checkout(request: Request) -> Response:
        await faults.abefore()
        user = request.path_params["user"]
        order = await peers.acall("checkout", "POST", f"/checkout/{user}")
        _positive("checkout", "the order id", order.get("order_id"))
        return JSONResponse(order)

    return _app(
        me,
        [
            Route("/", home),
            Route("/product/{pid:int}", product),
            Route("/search", search),
            Route("/cart/{user}/add", add_to_cart, methods=["POST"]),
            Route("/checkout/{user}", checkout, methods=["POST"]),
        ],
    )


def recommendation(me: Env) -> Starlette:
    peers, faults = Peers(me), Faults(me)
    categories = ("books", "games", "garden", "kitchen", "music", "outdoor", "tools", "toys")

    async def recommend(request: Request) -> Response:
        await faults.abefore()
        pid = request.query_params.get("product_id")
        if pid:
            item = await peers.acall("catalog", "GET", f"/products/{int(pid)}")
            category = item["category"]
        else:
            category = random.choice(categories)
        pool = await peers.acall("catalog", "GET", f"/products?category={category}&limit=20")
        picks = random.sample(pool, min(4, len(pool)))
        wrong = faults.wrong()
        return JSONResponse(
            [{"id": -p["id"] if wrong else p["id"], "name": p["name"]} for p in picks]
        )

    return _app(me, [Route("/recommendations", recommend)])


def cart(me: Env) -> Starlette:
    peers, faults = Peers(me), Faults(me)
    carts: dict[str, dict[int, dict[str, Any]]] = {}

    def view(user: str) -> dict[str, Any]:
        items = list(carts.get(user, {}).values())
        total = sum(i["qty"] * i["price_cents"] for i in items)
        return {"user": user, "items": items, "total_cents": -total if faults.wrong() else total}

    async def add(request: Request) -> Response:
        await faults.abefore()
        user = request.path_params["user"]
        body = await request.json()
        pid, qty = int(body["product_id"]), int(body.get("qty", 1))
        item = await peers.acall("catalog", "GET", f"/products/{pid}")
        price = _positive("catalog", f"price of product {pid}", item["price_cents"])
        line = carts.setdefault(user, {}).setdefault(
            pid, {"product_id": pid, "qty": 0, "price_cents": price}
        )
        line["qty"] += qty
        return JSONResponse(view(user))

    async def get(request: Request) -> Response:
        await faults.abefore()
        return JSONResponse(view(request.path_params["user"]))

    async def empty(request: Request) -> Response:
        await faults.abefore()
        carts.pop(request.path_params["user"], None)
        return JSONResponse({"ok": True})

    return _app(
        me,
        [
            Route("/cart/{user}/items", add, methods=["POST"]),
            Route("/cart/{user}", get, methods=["GET"]),
            Route("/cart/{user}/clear", empty, methods=["POST"]),
            Route("/cart/{user}", empty, methods=["DELETE"]),
        ],
    )


def payment(me: Env) -> Starlette:
    from correlator.demo.shop.db import apool

    faults = Faults(me, "payments")
    db = apool(me.db_url)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await db.open()
        yield
        await db.close()

    async def charge(request: Request) -> Response:
        await faults.abefore()
        body = await request.json()
        amount = int(body["amount_cents"])
        async with db.connection() as conn:
            await conn.execute(
                "INSERT INTO payments (user_id, amount_cents) VALUES (%s, %s)",
                (body["user"], amount),
            )
        charged = amount + random.choice((-100, 100, 1000)) if faults.wrong() else amount
        return JSONResponse({"charged_cents": charged, "transaction_id": uuid.uuid4().hex})

    return _app(me, [Route("/charge", charge, methods=["POST"])], lifespan=lifespan)


FACTORIES = {
    "frontend": frontend,
    "recommendation": recommendation,
    "cart": cart,
    "payment": payment,
}


def make_app(me: Env) -> Starlette:
    """The Starlette app of ``me.service``, instrumented."""
    from opentelemetry.instrumentation.starlette import StarletteInstrumentor

    app = FACTORIES[me.service](me)
    StarletteInstrumentor.instrument_app(app)
    return app

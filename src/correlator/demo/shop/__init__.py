"""The demo shop's services, one process per instance: ``python -m correlator.demo.shop``.

=============== ======================= =====================================
service         framework               calls
=============== ======================= =====================================
frontend        Starlette (uvicorn)     catalog, inventory, recommendation,
                                        search, cart, checkout
catalog         Flask                   PostgreSQL (products)
search          plain WSGI              PostgreSQL (products)
recommendation  Starlette, 2 instances  catalog
inventory       Flask                   PostgreSQL (stock)
cart            Starlette               catalog (carts kept in memory)
checkout        Flask                   cart, shipping, inventory, payment,
                                        email, PostgreSQL (orders)
payment         Starlette               PostgreSQL (payments, async driver)
shipping        Flask                   -
email           plain WSGI              -
=============== ======================= =====================================

Wrong values are negative numbers (prices, quantities, ids, amounts) or an
amount that differs from the one asked; every caller checks what it gets and
logs an error (and fails its own request) when it is wrong.
"""

from __future__ import annotations

__all__ = ["SERVICES"]

#: service -> (framework, instances)
SERVICES: dict[str, tuple[str, int]] = {
    "frontend": ("starlette", 1),
    "catalog": ("flask", 1),
    "search": ("wsgi", 1),
    "recommendation": ("starlette", 2),
    "inventory": ("flask", 1),
    "cart": ("starlette", 1),
    "checkout": ("flask", 1),
    "payment": ("starlette", 1),
    "shipping": ("flask", 1),
    "email": ("wsgi", 1),
}

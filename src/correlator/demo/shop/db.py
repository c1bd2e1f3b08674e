"""The shop's PostgreSQL schema, seed data and connection pools."""

from __future__ import annotations

import random
from typing import Any

__all__ = ["N_PRODUCTS", "SCHEMA", "apool", "pool", "seed"]

N_PRODUCTS = 200
_CATEGORIES = ("books", "games", "garden", "kitchen", "music", "outdoor", "tools", "toys")
_WORDS = (
    "alpine", "brass", "cedar", "delta", "ember", "fable", "granite", "harbor", "indigo",
    "juniper", "kestrel", "lumen", "maple", "nimbus", "onyx", "prism", "quartz", "raven",
    "sable", "tundra", "umber", "velvet", "willow", "yonder", "zephyr",
)  # fmt: skip
_THINGS = ("lamp", "kettle", "chair", "novel", "puzzle", "rake", "drum", "tent", "saw", "kite")

SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    id serial PRIMARY KEY, name text NOT NULL, category text NOT NULL,
    price_cents integer NOT NULL, description text NOT NULL);
CREATE INDEX IF NOT EXISTS products_category ON products (category);
CREATE TABLE IF NOT EXISTS stock (
    product_id integer PRIMARY KEY REFERENCES products (id), qty integer NOT NULL);
CREATE TABLE IF NOT EXISTS orders (
    id serial PRIMARY KEY, user_id text NOT NULL, total_cents integer NOT NULL,
    items integer NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS payments (
    id serial PRIMARY KEY, user_id text NOT NULL, amount_cents integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
"""

#: Every query waits at most this long for a lock or runs at most this long.
_OPTIONS = "-c lock_timeout=2000 -c statement_timeout=2500"


def seed(url: str) -> None:
    """Create the schema and the products with their stock (idempotent)."""
    import psycopg

    rng = random.Random(7)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA)
        row = conn.execute("SELECT count(*) FROM products").fetchone()
        if row and row[0]:
            return
        with conn.cursor() as cur:
            for i in range(N_PRODUCTS):
                name = f"{rng.choice(_WORDS)} {rng.choice(_WORDS)} {rng.choice(_THINGS)}"
                cur.execute(
                    "INSERT INTO products (name, category, price_cents, description) "
                    "VALUES (%s, %s, %s, %s)",
                    (name, _CATEGORIES[i % len(_CATEGORIES)], rng.randint(199, 19999),
                     f"A fine {name}."),
                )  # fmt: skip
            cur.execute("INSERT INTO stock SELECT id, 1000 FROM products")


def pool(url: str, size: int = 6) -> Any:
    """A blocking connection pool whose queries give up on locks after 2 s."""
    from psycopg_pool import ConnectionPool

    return ConnectionPool(
        url,
        min_size=2,
        max_size=size,
        timeout=3.0,
        kwargs={"options": _OPTIONS, "autocommit": True},
        open=True,
    )


def apool(url: str, size: int = 6) -> Any:
    """An async connection pool (opened by the caller inside its event loop)."""
    from psycopg_pool import AsyncConnectionPool

    return AsyncConnectionPool(
        url,
        min_size=2,
        max_size=size,
        timeout=3.0,
        kwargs={"options": _OPTIONS, "autocommit": True},
        open=False,
    )

"""Serve the recorded Loki/Tempo/Jaeger responses (tests/data/recorded) from an httpx.MockTransport.

Each record names the request that produced it (method, path, params, headers);
:func:`transport` answers a request whose method, path, query parameters and
categorize-labels header equal a record's with that record's status,
content-type and body, and fails the test on any other request.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

RECORDED = Path(__file__).parent / "data" / "recorded"


def load(kind: str, name: str) -> dict[str, Any]:
    """One record, e.g. ``load("loki", "labels")``."""
    return json.loads((RECORDED / kind / f"{name}.json").read_text())


def records(kind: str) -> dict[str, dict[str, Any]]:
    """Every record of a backend, by file stem."""
    return {p.stem: json.loads(p.read_text()) for p in sorted((RECORDED / kind).glob("*.json"))}


def _key(method: str, path: str, params: dict[str, Any], categorize: bool) -> tuple[Any, ...]:
    # Loki reads step=60 and step=60s alike.
    norm = {k: str(v).removesuffix("s") if k == "step" else str(v) for k, v in params.items()}
    return (method, path, tuple(sorted(norm.items())), categorize)


def response_for(record: dict[str, Any]) -> httpx.Response:
    """The recorded response."""
    headers = {}
    if record["headers"].get("content-type"):
        headers["content-type"] = record["headers"]["content-type"]
    if record.get("body") is not None:
        content = json.dumps(record["body"]).encode()
    else:
        content = (record.get("body_raw") or "").encode()
    return httpx.Response(record["status"], headers=headers, content=content)


def _categorized(record: dict[str, Any]) -> bool:
    return "X-Loki-Response-Encoding-Flags" in (record.get("request_headers") or {})


def transport(
    kind: str,
    prefix: str = "",
    log: list[httpx.Request] | None = None,
    ignore_headers: bool = False,
) -> httpx.MockTransport:
    """A transport answering every recorded request of ``kind``; ``prefix`` is stripped from paths."""
    table: dict[tuple[Any, ...], dict[str, Any]] = {}
    for rec in records(kind).values():
        table[_key(rec["method"], rec["path"], rec["params"], _categorized(rec))] = rec
        if ignore_headers:
            table[_key(rec["method"], rec["path"], rec["params"], not _categorized(rec))] = rec

    def handler(request: httpx.Request) -> httpx.Response:
        if log is not None:
            log.append(request)
        params = dict(request.url.params.multi_items())
        cat = request.headers.get("X-Loki-Response-Encoding-Flags") == "categorize-labels"
        rec = table.get(_key(request.method, prefix + request.url.path, params, cat))
        if rec is None:
            raise AssertionError(f"no recording for {request.method} {request.url}")
        return response_for(rec)

    return httpx.MockTransport(handler)


def handler_client(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.Client:
    """A client over a MockTransport handler."""
    return httpx.Client(transport=httpx.MockTransport(handler))

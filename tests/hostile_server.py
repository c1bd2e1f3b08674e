"""A hostile HTTP backend on 127.0.0.1, in a process of its own.

The first path segment chooses what it does, so that an adapter pointed at
``http://127.0.0.1:<port>/<behaviour>`` meets it on every API path:

- ``/trickle/...``: 200 and a JSON content type, then one byte of body every
  ``TRICKLE`` seconds, forever;
- ``/trickle-head/...``: the status line, then the headers one byte at a time;
- ``/hang/...``: reads the request and never answers;
- ``/echo/...``: 500, ``text/plain``, every request header as ``Name: value``
  lines (``Authorization`` first), then the request line;
- ``/echo-json/...``: 500, a JSON ``error`` field holding the request line and
  every request header on one line;
- ``/headers/...``: 200, ``{"status": "success", "data": {"headers": {...}, "path": ...}}``;
- ``/redirect/<status>/<port>/<rest>``: a redirect to ``http://127.0.0.1:<port>/<rest>``
  (``<port>`` ``self``: this server), with the query kept;
- ``/big/<bytes>/...``: 200, a JSON body of that many bytes with its Content-Length;
- ``/big-stream/<bytes>/...``: the same without Content-Length (ends at close).

Run it as ``python hostile_server.py``: it prints its port and serves until
killed. :func:`hostile` does that from a test and yields the base URL. A
process of its own keeps its threads and sockets out of the counts the tests
take of the client's.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

TRICKLE = float(os.environ.get("HOSTILE_TRICKLE", "0.2"))
_CHUNK = 1 << 16


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        try:
            head, body = _read_request(sock)
        except (OSError, ValueError):
            return
        if head is None:
            return
        request_line, headers = head
        _method, target, _version = [*request_line.split(" "), "", ""][:3]
        path, _, query = target.partition("?")
        parts = [p for p in path.split("/") if p]
        kind = parts[0] if parts else ""
        try:
            _route(sock, kind, parts, query, request_line, headers, body)
        except OSError:
            return  # the client went away: that is what a cut looks like


def _read_request(sock: socket.socket) -> tuple[tuple[str, list[tuple[str, str]]] | None, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        got = sock.recv(_CHUNK)
        if not got:
            return None, b""
        data += got
    raw, _, rest = data.partition(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    headers = [(k.strip(), v.strip()) for k, _, v in (ln.partition(":") for ln in lines[1:])]
    length = int(next((v for k, v in headers if k.lower() == "content-length"), "0") or 0)
    while len(rest) < length:
        got = sock.recv(_CHUNK)
        if not got:
            break
        rest += got
    return (lines[0], headers), rest


def _send(sock: socket.socket, status: str, body: bytes, ctype: str = "application/json",
          extra: tuple[tuple[str, str], ...] = ()) -> None:  # fmt: skip
    head = [f"HTTP/1.1 {status}", f"Content-Type: {ctype}", f"Content-Length: {len(body)}",
            "Connection: close", *(f"{k}: {v}" for k, v in extra)]  # fmt: skip
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)


def _route(
    sock: socket.socket,
    kind: str,
    parts: list[str],
    query: str,
    request_line: str,
    headers: list[tuple[str, str]],
    body: bytes,
) -> None:
    if kind == "trickle":
        sock.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
        )
        while True:
            time.sleep(TRICKLE)
            sock.sendall(b" ")
    elif kind == "trickle-head":
        sock.sendall(b"HTTP/1.1 200 OK\r\n")
        while True:
            time.sleep(TRICKLE)
            sock.sendall(b"X")
    elif kind == "hang":
        while sock.recv(_CHUNK):
            pass
    elif kind == "echo":
        ordered = sorted(headers, key=lambda kv: kv[0].lower() != "authorization")
        text = "\n".join(f"{k}: {v}" for k, v in ordered) + "\n" + request_line + "\n"
        _send(sock, "500 Internal Server Error", text.encode(), "text/plain")
    elif kind == "echo-json":
        seen = request_line + " " + " ".join(f"{k}: {v}" for k, v in headers)
        _send(sock, "500 Internal Server Error", json.dumps({"error": seen}).encode())
    elif kind == "headers":
        data = {"headers": dict(headers), "path": "/" + "/".join(parts), "body": body.decode()}
        _send(sock, "200 OK", json.dumps({"status": "success", "data": data}).encode())
    elif kind == "redirect" and len(parts) >= 3:
        status, port = parts[1], parts[2]
        if port == "self":
            port = str(sock.getsockname()[1])
        location = f"http://127.0.0.1:{port}/" + "/".join(parts[3:])
        if query:
            location += "?" + query
        _send(sock, f"{status} Redirect", b"", extra=(("Location", location),))
    elif kind in ("big", "big-stream") and len(parts) >= 2:
        _big(sock, int(parts[1]), declared=kind == "big")
    else:
        _send(sock, "404 Not Found", b'{"error":"no such behaviour"}')


def _big(sock: socket.socket, size: int, declared: bool) -> None:
    """A valid JSON answer of ``size`` bytes (padding inside), streamed in 64 KiB writes."""
    start = b'{"status":"success","data":{"resultType":"matrix","result":['
    end = b"]}}"
    head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
    if declared:
        head += f"Content-Length: {size}\r\n"
    sock.sendall((head + "\r\n").encode() + start)
    left = size - len(start) - len(end)
    pad = b" " * _CHUNK
    while left > 0:
        n = min(left, _CHUNK)
        sock.sendall(pad[:n])
        left -= n
    sock.sendall(end)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


def serve(port: int = 0) -> None:
    """Serve until killed; print the port first."""
    with _Server(("127.0.0.1", port), _Handler) as server:
        print(server.server_address[1], flush=True)
        server.serve_forever()


def resources() -> tuple[int, int, int]:
    """Threads, open file descriptors and, of them, sockets of this process (what an
    investigation against a hostile backend must give back)."""
    fds = os.listdir("/proc/self/fd")
    sockets = 0
    for fd in fds:
        try:
            sockets += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            continue
    return threading.active_count(), len(fds), sockets


@contextlib.contextmanager
def hostile(trickle: float = TRICKLE) -> Iterator[str]:
    """Start the server in a process of its own; yield ``http://127.0.0.1:<port>``."""
    env = {**os.environ, "HOSTILE_TRICKLE": str(trickle)}
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve())],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


if __name__ == "__main__":
    serve(int(sys.argv[1]) if len(sys.argv) > 1 else 0)

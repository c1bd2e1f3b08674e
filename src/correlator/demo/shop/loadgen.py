"""The demo's load generator: shoppers browsing, searching, filling carts, checking out.

Requests arrive as a Poisson process whose rate follows a slow sine (a
compressed day: ``period`` seconds) with a random walk on top, so no two
minutes look alike. ``traffic_spike`` faults in ``flags.json`` multiply the
rate; a spike aimed at one service adds the extra traffic to the frontend
route that reaches it. Run: ``python -m correlator.demo.shop.loadgen URL STATE_DIR``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType

import httpx

__all__ = ["LoadGenerator"]

log = logging.getLogger("loadgen")

#: route -> share of the base mix
MIX = {"home": 0.28, "product": 0.30, "search": 0.20, "cart": 0.14, "checkout": 0.08}
#: spike target service -> the routes its extra traffic uses
SPIKE_ROUTES = {
    "frontend": tuple(MIX),
    "search": ("search",),
    "catalog": ("product",),
    "recommendation": ("home",),
    "cart": ("cart",),
    "checkout": ("cart", "checkout"),
}
_TERMS = ("lamp", "kite", "cedar", "drum", "ra", "tent", "velvet", "onyx", "saw", "zz")


class LoadGenerator:
    """Sends the shop's traffic to ``url`` until :meth:`stop`."""

    def __init__(
        self, url: str, state_dir: Path, base_rps: float = 8.0, period: float = 900.0
    ) -> None:
        self.url = url.rstrip("/")
        self.state_dir = state_dir
        self.base_rps = base_rps
        self.period = period
        self.client = httpx.Client(timeout=10.0)
        self.pool = ThreadPoolExecutor(max_workers=24)
        self.pending = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._walk = 1.0
        self._spikes: dict[str, float] = {}
        self._flags_mtime = -1.0
        self.sent = self.failed = self.shed = 0

    def stop(self) -> None:
        """Stop sending (in-flight requests finish)."""
        self._stop.set()

    def _poll_flags(self) -> None:
        path = self.state_dir / "flags.json"
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            mtime = 0.0
        if mtime == self._flags_mtime:
            return
        self._flags_mtime = mtime
        try:
            faults = json.loads(path.read_text(encoding="utf-8")).get("faults", [])
        except (OSError, ValueError):
            faults = []
        self._spikes = {
            str(f["service"]): float((f.get("params") or {}).get("factor", 3.0))
            for f in faults
            if f.get("kind") == "traffic_spike"
        }
        log.info("traffic spikes: %s", self._spikes or "none")

    def rate(self, t: float) -> float:
        """Requests per second at ``t`` seconds after start, before spikes."""
        self._walk = min(1.3, max(0.75, self._walk * math.exp(random.gauss(0, 0.02))))
        return self.base_rps * (1 + 0.35 * math.sin(2 * math.pi * t / self.period)) * self._walk

    def _route(self) -> str:
        base = self.rate_now
        extra = {s: (f - 1) * base for s, f in self._spikes.items()}
        total = base + sum(extra.values())
        x = random.random() * total
        if x < base:
            return random.choices(list(MIX), weights=list(MIX.values()))[0]
        x -= base
        for service, amount in extra.items():
            if x < amount:
                return random.choice(SPIKE_ROUTES.get(service, tuple(MIX)))
            x -= amount
        return "home"

    def _request(self, route: str) -> None:
        user = f"user{random.randrange(60)}"
        pid = int(min(200, max(1, random.paretovariate(1.2) * 8)))
        try:
            if route == "home":
                r = self.client.get(self.url + "/")
            elif route == "product":
                r = self.client.get(f"{self.url}/product/{pid}")
            elif route == "search":
                r = self.client.get(self.url + "/search", params={"q": random.choice(_TERMS)})
            elif route == "cart":
                r = self.client.post(
                    f"{self.url}/cart/{user}/add",
                    json={"product_id": pid, "qty": random.choice((1, 1, 1, 2, 3))},
                )
            else:
                self.client.post(f"{self.url}/cart/{user}/add", json={"product_id": pid})
                r = self.client.post(f"{self.url}/checkout/{user}")
            ok = r.status_code < 500
        except httpx.HTTPError:
            ok = False
        with self._lock:
            self.pending -= 1
            self.sent += 1
            self.failed += not ok

    def run(self) -> None:
        """Send until stopped; logs a line of counts every minute."""
        t0 = last_poll = last_log = time.monotonic()
        self.rate_now = self.rate(0)
        while not self._stop.is_set():
            now = time.monotonic()
            if now - last_poll >= 1.0:
                self._poll_flags()
                self.rate_now = self.rate(now - t0)
                last_poll = now
            if now - last_log >= 60:
                log.info("sent %d, failed %d, shed %d", self.sent, self.failed, self.shed)
                last_log = now
            spike = sum((f - 1) for s, f in self._spikes.items() if s in SPIKE_ROUTES)
            rps = self.rate_now * (1 + spike)
            self._stop.wait(random.expovariate(rps))
            with self._lock:
                if self.pending >= 96:  # the shop is drowning: a real client gives up too
                    self.shed += 1
                    continue
                self.pending += 1
            self.pool.submit(self._request, self._route())
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.client.close()

    rate_now: float = 0.0


def main(argv: list[str] | None = None) -> None:
    """``loadgen URL STATE_DIR [BASE_RPS]``."""
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s loadgen %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    gen = LoadGenerator(args[0], Path(args[1]), float(args[2]) if len(args) > 2 else 8.0)

    def stop(signum: int, frame: FrameType | None) -> None:
        gen.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    gen.run()


if __name__ == "__main__":
    main()

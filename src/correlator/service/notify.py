"""Optional outgoing notification of each finished investigation.

Two shapes: ``json`` (the stored record with a link to it) for any webhook
consumer, and ``slack`` (``{"text": ...}``, which Slack incoming webhooks,
Mattermost and most chat tools accept). Delivery is retried with exponential
backoff on connection errors, 429 and 5xx; other 4xx answers are final.
Notifications are best effort: a failed one is logged and counted, and never
changes the investigation's stored status.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["Notifier", "NotifySettings", "render_json", "render_slack"]

log = logging.getLogger("correlator.service.notify")


@dataclass(frozen=True)
class NotifySettings:
    """Where and how to notify."""

    url: str
    format: str = "json"
    retries: int = 4
    backoff: float = 0.5
    timeout: float = 10.0
    headers: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.format not in ("json", "slack"):
            raise ValueError(f"notify format {self.format!r}: use json or slack")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"notify URL {self.url!r} is not an http(s) URL")


def _link(record: dict[str, Any], public_url: str) -> str | None:
    return f"{public_url.rstrip('/')}/investigations/{record['id']}" if public_url else None


def render_json(record: dict[str, Any], public_url: str = "") -> dict[str, Any]:
    """The generic JSON body: the record (with its investigation) and a link to its page."""
    body = dict(record)
    body["url"] = _link(record, public_url)
    return body


def render_slack(record: dict[str, Any], public_url: str = "") -> dict[str, Any]:
    """A Slack-compatible ``{"text": ...}`` body: the alert and the top causes."""
    name = record.get("alertname") or "alert"
    service = record.get("service")
    head = f"*{name}*" + (f" on `{service}`" if service else "")
    lines = []
    if record.get("status") == "failed":
        lines.append(f"{head}: investigation failed: {record.get('error')}")
    else:
        inv = record.get("investigation") or {}
        findings = inv.get("findings") or []
        lines.append(f"{head}: {len(findings)} probable cause(s)")
        for i, f in enumerate(findings[:3], 1):
            lines.append(
                f"{i}. {f.get('cause')} in `{f.get('service')}` "
                f"({round(100 * float(f.get('confidence', 0)))}%)"
            )
        gaps = inv.get("gaps") or []
        if gaps:
            lines.append("Could not see: " + ", ".join(str(g.get("source")) for g in gaps))
    link = _link(record, public_url)
    if link:
        lines.append(f"<{link}|Open the investigation>")
    return {"text": "\n".join(lines)}


class Notifier:
    """Posts finished investigations to one URL, with retries."""

    def __init__(
        self,
        settings: NotifySettings,
        public_url: str = "",
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        self.public_url = public_url
        self._client = client or httpx.AsyncClient(timeout=settings.timeout)

    def body(self, record: dict[str, Any]) -> dict[str, Any]:
        """The body that would be sent for ``record``."""
        if self.settings.format == "slack":
            return render_slack(record, self.public_url)
        return render_json(record, self.public_url)

    async def send(self, record: dict[str, Any]) -> bool:
        """Deliver one notification; ``True`` once a 2xx answer came back."""
        body = self.body(record)
        attempts = self.settings.retries + 1
        for attempt in range(attempts):
            problem: str
            try:
                resp = await self._client.post(
                    self.settings.url, json=body, headers=self.settings.headers
                )
            except httpx.HTTPError as err:
                problem = f"{type(err).__name__}: {err}"
            else:
                if resp.is_success:
                    return True
                problem = f"HTTP {resp.status_code}"
                if resp.status_code < 500 and resp.status_code != 429:
                    log.warning(
                        "notification refused",
                        extra={"investigation": record.get("id"), "problem": problem},
                    )
                    return False
            if attempt + 1 < attempts:
                await asyncio.sleep(self.settings.backoff * (2**attempt))
        log.warning(
            "notification failed after retries",
            extra={"investigation": record.get("id"), "problem": problem, "attempts": attempts},
        )
        return False

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

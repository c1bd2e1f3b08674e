"""Strict validation of Alertmanager's webhook payload (version 4).

The receiver trusts nothing it is sent: the body must be UTF-8 JSON in the
shape Alertmanager documents for ``version: "4"``. Fields this module does not
know (newer Alertmanagers add ``notification_reason``, ``routeLabels``...) are
accepted and ignored, so an upgrade of Alertmanager never breaks delivery.

Every rejection is a :class:`PayloadError` carrying the HTTP status to answer
with and a message that names the field and what was wrong::

    PayloadError
     status 400  body is not UTF-8 or not JSON
     status 413  too many alerts in one payload (body size is checked by the app)
     status 422  JSON of the wrong shape: missing field, wrong type, unknown version
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from correlator.alerts import WEBHOOK_VERSION, parse_alert
from correlator.model import Alert, parse_time

__all__ = [
    "Limits",
    "PayloadError",
    "WebhookAlert",
    "WebhookPayload",
    "parse_payload",
    "to_alerts",
]

SUPPORTED_VERSION = WEBHOOK_VERSION
_FINGERPRINT = re.compile(r"^[0-9a-fA-F]{1,64}$")
# Go's zero time.Time, which Alertmanager sends as endsAt of a firing alert.
_GO_ZERO_YEAR = "0001-"
#: Years an alert time may fall in. Anything else is a clock or a sender gone
#: wrong, and far years do not survive every store and report round trip.
YEARS = (1970, 2999)
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Limits:
    """Bounds on one payload, so a single request cannot exhaust the service."""

    max_alerts: int = 1000
    """Alerts in one payload (Alertmanager's ``max_alerts`` in webhook_config)."""
    max_labels: int = 256
    """Labels (and, separately, annotations) on one alert."""
    max_value_bytes: int = 16384
    """Bytes in one label or annotation value."""


class PayloadError(Exception):
    """The request body is not an acceptable webhook payload.

    ``status`` is the HTTP status to answer with; the message says what to fix.
    """

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


class _Model(BaseModel):
    # Unknown fields are ignored on purpose: newer Alertmanagers add fields.
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


def _limits(info: ValidationInfo) -> Limits:
    ctx = info.context
    limits = ctx.get("limits") if isinstance(ctx, dict) else None
    return limits if isinstance(limits, Limits) else Limits()


def _check_text(text: str, what: str) -> str:
    """Refuse text no store can hold: NUL characters and unpaired surrogates."""
    if "\x00" in text:
        raise ValueError(f"{what} contains a NUL character (\\u0000); remove it")
    bad = _SURROGATE.search(text)
    if bad is not None:
        raise ValueError(
            f"{what} contains an unpaired UTF-16 surrogate (\\u{ord(bad.group()):04x}); "
            "send valid Unicode"
        )
    return text


def _check_mapping(value: dict[str, str], what: str, limits: Limits) -> dict[str, str]:
    if len(value) > limits.max_labels:
        raise ValueError(f"{len(value)} {what}; at most {limits.max_labels} are accepted")
    for key, text in value.items():
        if not key:
            raise ValueError(f"an empty {what[:-1]} name is not allowed")
        _check_text(key, f"{what[:-1]} name {key[:60]!r}")
        _check_text(text, f"{what[:-1]} {key[:60]!r}")
        size = len(text.encode("utf-8"))
        if size > limits.max_value_bytes or len(key) > limits.max_value_bytes:
            raise ValueError(
                f"{what[:-1]} {key[:60]!r} is {size} bytes; at most {limits.max_value_bytes} "
                "are accepted"
            )
    return value


def _check_time(value: str, field: str) -> str:
    _check_text(value, field)
    try:
        ts = parse_time(value)
    except (ValueError, OverflowError):
        raise ValueError(
            f"{value[:60]!r} is not an RFC 3339 time; {field} looks like 2026-03-02T10:31:00Z"
        ) from None
    low, high = YEARS
    if not parse_time(f"{low}-01-01T00:00:00Z") <= ts < parse_time(f"{high + 1}-01-01T00:00:00Z"):
        raise ValueError(
            f"{value[:60]!r} is outside the accepted years {low}-{high}; send {field} from "
            "a correct clock (like 2026-03-02T10:31:00Z)"
        )
    return value


class WebhookAlert(_Model):
    """One alert of a webhook notification."""

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str
    endsAt: str | None = None
    generatorURL: str = ""
    fingerprint: str | None = None

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if not v:
            raise ValueError("an alert needs at least one label (alertname)")
        return _check_mapping(v, "labels", _limits(info))

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        return _check_mapping(v, "annotations", _limits(info))

    @field_validator("startsAt")
    @classmethod
    def _starts(cls, v: str) -> str:
        return _check_time(v, "startsAt")

    @field_validator("endsAt")
    @classmethod
    def _ends(cls, v: str | None) -> str | None:
        if v is None or v.startswith(_GO_ZERO_YEAR):
            return v
        return _check_time(v, "endsAt")

    @field_validator("generatorURL")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_text(v, "generatorURL")

    @field_validator("fingerprint")
    @classmethod
    def _fingerprint(cls, v: str | None) -> str | None:
        if v is not None and v != "" and not _FINGERPRINT.match(v):
            raise ValueError(f"{v[:60]!r} is not a hex fingerprint like 3fb1b9b26b2b8f12")
        return v or None


class WebhookPayload(_Model):
    """A webhook notification, as Alertmanager sends it (version 4)."""

    version: str
    status: Literal["firing", "resolved"]
    alerts: list[WebhookAlert]
    receiver: str = ""
    groupKey: str = ""
    truncatedAlerts: int = Field(default=0, ge=0, le=2**31)
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""

    @field_validator("receiver", "groupKey", "externalURL")
    @classmethod
    def _text(cls, v: str, info: ValidationInfo) -> str:
        return _check_text(v, str(info.field_name))

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if v != SUPPORTED_VERSION:
            raise ValueError(
                f"webhook payload version {v[:20]!r} is not supported; this receiver "
                f'understands Alertmanager\'s version "{SUPPORTED_VERSION}"'
            )
        return v


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors(include_url=False)[:10]:
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = str(e["msg"]).removeprefix("Value error, ")
        if e["type"] == "missing":
            msg = "required field is missing"
        lines.append(f"{loc}: {msg}")
    more = err.error_count() - len(lines)
    if more > 0:
        lines.append(f"... and {more} more problems")
    return "; ".join(lines)


def _json_problem(err: ValidationError) -> str | None:
    for e in err.errors(include_url=False):
        if e["type"] == "json_invalid":
            return str(e["msg"]).removeprefix("Invalid JSON: ")
    return None


def parse_payload(body: bytes, limits: Limits | None = None) -> WebhookPayload:
    """Validate a webhook request body; raise :class:`PayloadError` if unacceptable."""
    limits = limits or Limits()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise PayloadError(
            400, f"the body is not valid UTF-8 (bad byte at offset {err.start}); send UTF-8 JSON"
        ) from None
    if not text.strip():
        raise PayloadError(400, "the body is empty; send Alertmanager's webhook JSON (version 4)")
    try:
        payload = WebhookPayload.model_validate_json(text, context={"limits": limits})
    except ValidationError as err:
        problem = _json_problem(err)
        if problem is not None:
            raise PayloadError(400, f"the body is not valid JSON: {problem}") from None
        raise PayloadError(
            422, f"not an Alertmanager webhook payload: {_format_errors(err)}"
        ) from None
    if len(payload.alerts) > limits.max_alerts:
        raise PayloadError(
            413,
            f"the payload carries {len(payload.alerts)} alerts; at most {limits.max_alerts} are "
            "accepted in one request: set max_alerts in the Alertmanager webhook_config "
            "(or raise the receiver's --max-alerts)",
        )
    return payload


def to_alerts(payload: WebhookPayload) -> list[Alert]:
    """The payload's alerts as :class:`~correlator.model.Alert` objects."""
    source = f"webhook:{payload.receiver}" if payload.receiver else "webhook"
    return [
        parse_alert(a.model_dump(), source=source, where=f"alerts[{i}]")
        for i, a in enumerate(payload.alerts)
    ]


def alert_from_json(data: dict[str, Any]) -> Alert:
    """Rebuild an :class:`Alert` from :meth:`Alert.to_json` output (as stored)."""
    return parse_alert(data, source=str(data.get("source", "webhook")), where="stored alert")

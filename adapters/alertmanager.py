"""Alerts from Alertmanager's API v2.

The v2 API has no get-by-fingerprint endpoint, so :meth:`AlertmanagerAdapter.alert`
lists ``/api/v2/alerts`` (optionally narrowed with ``filter`` matchers) and
matches the fingerprint; a unique prefix is enough, as with git hashes.

Alert objects become :class:`~correlator.model.Alert` through the one parser,
:func:`correlator.alerts.parse_alert`, given the adapter's clock: a firing
alert's ``endsAt`` in the future is a renewal deadline, read as unknown, and
the ``correlator_ends_at`` annotation (:data:`ENDS_AT_ANNOTATION`, set by
``correlator lab``) states a known end (see :mod:`correlator.alerts`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
from pydantic import Field

from correlator.alerts import ENDS_AT_ANNOTATION, AlertFormatError, parse_alert
from correlator.escape import label_name
from correlator.http import HttpBackend, HttpSettings
from correlator.model import Alert
from correlator.sources import SourceError

__all__ = [
    "ENDS_AT_ANNOTATION",
    "AlertmanagerAdapter",
    "AlertmanagerSettings",
    "AmbiguousFingerprintError",
]


class AmbiguousFingerprintError(SourceError):
    """A fingerprint prefix matches more than one alert."""


def _matcher(label: str, value: str) -> str:
    # Alertmanager's matcher grammar accepts Go-style quoted values.
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'{label_name(label)}="{escaped}"'


class AlertmanagerSettings(HttpSettings):
    """Settings of an Alertmanager (``backends: {alertmanager: {url: ...}}``)."""

    active: bool = Field(True, description="list active alerts")
    silenced: bool = Field(True, description="list silenced alerts")
    inhibited: bool = Field(True, description="list inhibited alerts")


class AlertmanagerAdapter:
    """An :class:`~correlator.sources.AlertSource` over Alertmanager ``/api/v2``.

    ``settings``: an :class:`AlertmanagerSettings`, any
    :class:`~correlator.http.HttpSettings`, or a URL; the keyword options
    override its fields. ``active``/``silenced``/``inhibited`` are passed to
    the list endpoint (defaults include everything, so an alert being
    investigated is found even when silenced). ``clock`` gives the current
    time (tests inject it): an ``endsAt`` after it is a firing alert's renewal
    deadline, read as unknown.
    """

    Settings = AlertmanagerSettings
    display_name = "Alertmanager"
    name = "alertmanager"

    def __init__(
        self,
        settings: HttpSettings | str,
        client: httpx.Client | None = None,
        *,
        active: bool | None = None,
        silenced: bool | None = None,
        inhibited: bool | None = None,
        backend: HttpBackend | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        own = AlertmanagerSettings.adopt(
            settings,
            self.name,
            self.display_name,
            active=active,
            silenced=silenced,
            inhibited=inhibited,
        )
        self.settings = own
        self.name = own.name
        self.http = backend or HttpBackend(own, client)
        self.flags = {"active": own.active, "silenced": own.silenced, "inhibited": own.inhibited}
        self.clock = clock

    def close(self) -> None:
        """Close the HTTP client if the adapter built it."""
        self.http.close()

    def list_raw(self, matchers: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts`` as returned, narrowed by exact label matchers."""
        params: list[tuple[str, str]] = [(k, str(v).lower()) for k, v in self.flags.items()]
        params += [("filter", _matcher(k, v)) for k, v in (matchers or {}).items()]
        body = self.http.get_json("/api/v2/alerts", params=params)
        if not isinstance(body, list):
            raise SourceError(
                f"{self.http.where('/api/v2/alerts')}: expected a list "
                f"of alerts, got {type(body).__name__}; is this Alertmanager's API v2?"
            )
        return body

    def alerts(self, matchers: Mapping[str, str] | None = None) -> list[Alert]:
        """Every alert (optionally narrowed by exact label matchers)."""
        return [self._to_alert(a) for a in self.list_raw(matchers)]

    def alert(self, fingerprint: str, matchers: Mapping[str, str] | None = None) -> Alert | None:
        """The alert with this fingerprint or unique prefix, or ``None``.

        Raises :class:`AmbiguousFingerprintError` when the prefix matches several.
        """
        wanted = fingerprint.strip().lower()
        if not wanted:
            return None
        hits = [a for a in self.alerts(matchers) if a.fingerprint.lower().startswith(wanted)]
        exact = [a for a in hits if a.fingerprint.lower() == wanted]
        if exact:
            return exact[0]
        if len(hits) > 1:
            shown = ", ".join(sorted(a.fingerprint for a in hits)[:5])
            raise AmbiguousFingerprintError(
                f"Alertmanager at {self.settings.public_url}: fingerprint prefix {fingerprint!r} "
                f"matches {len(hits)} alerts ({shown}); give more digits"
            )
        return hits[0] if hits else None

    def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """``POST /api/v2/alerts`` (postableAlert objects: labels, annotations, startsAt, endsAt)."""
        self.http.request("POST", "/api/v2/alerts", json_body=list(alerts))

    def _to_alert(self, raw: Mapping[str, Any]) -> Alert:
        try:
            alert = parse_alert(
                raw,
                source=f"alertmanager:{self.settings.public_url}",
                where="an alert",
                require_fingerprint=True,
                now=self.clock(),
            )
        except AlertFormatError as err:
            raise SourceError(
                f"Alertmanager at {self.settings.public_url}: {err.problem}; "
                "is this Alertmanager's API v2?"
            ) from err
        return alert

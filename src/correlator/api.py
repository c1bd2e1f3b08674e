"""The library entry points: what the CLI, the service and notebooks call.

>>> import correlator
>>> inv = correlator.investigate("4f1c0e9a")      # an alert id from the bundled library
>>> inv.findings[0].service, inv.findings[0].cause
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from correlator.alerts import parse_alerts
from correlator.catalog import Catalog, default_catalog
from correlator.config import Settings, load_settings
from correlator.errors import NotFoundError, UserInputError
from correlator.model import Alert, Investigation
from correlator.sources import Sources

__all__ = [
    "alert_from_payload",
    "alerts",
    "build_sources",
    "investigate",
    "resolve_alert",
]


def _settings(config: str | Path | Settings | None) -> Settings:
    if isinstance(config, Settings):
        return config
    return load_settings(config)


def build_sources(settings: Settings, source: str | Path | None = None) -> Sources:
    """The backends named by the settings (or ``source``, a bundle path).

    ``source`` (or ``settings.bundle``) is read by the ``bundle`` adapter.
    With no bundle and no backend configured, the bundled scenario library is
    the source: the embedded default. Every backend is built through the
    adapter plugins, as a third-party one would be.
    """
    from correlator.config import backend_entry
    from correlator.plugins import build_backend

    entries = dict(settings.backends) if source is None else {}
    bundle_path = source if source is not None else settings.bundle
    if bundle_path is not None:
        path = Path(bundle_path)
        if not path.exists():
            raise UserInputError(
                f"source {path} does not exist; pass a bundle folder or a folder of bundles "
                "(or omit --source to use the bundled library)"
            )
        entries["bundle"] = backend_entry("bundle", {"path": str(path)})
    elif not entries:
        entries["bundle"] = backend_entry("bundle", {})
    return Sources.from_backends(
        *(build_backend(key, entry.adapter, entry.settings) for key, entry in entries.items())
    )


def catalog_for(settings: Settings) -> Catalog:
    """The default catalog, extended by the configured catalog file if any."""
    base = default_catalog()
    return Catalog.load(settings.catalog, base) if settings.catalog else base


def alerts(
    source: str | Path | None = None, config: str | Path | Settings | None = None
) -> list[Alert]:
    """Every alert the configured sources can investigate."""
    sources = build_sources(_settings(config), source)
    try:
        return [a for s in sources.alerts for a in s.alerts()]
    finally:
        sources.close()


def resolve_alert(alert_id: str, sources: Sources) -> Alert:
    """Find an alert by fingerprint (or a unique prefix) across alert sources."""
    wanted = alert_id.strip().lower()
    if not wanted:
        raise UserInputError("an alert id is empty; run `correlator alerts` to list ids")
    for s in sources.alerts:
        found = s.alert(wanted)
        if found is not None:
            return found
    raise NotFoundError(
        f"no alert with id {alert_id!r} in {', '.join(s.name for s in sources.alerts) or 'any source'}; "
        "run `correlator alerts` to list the ids you can investigate"
    )


def alert_from_payload(payload: Mapping[str, Any], index: int = 0) -> Alert:
    """The ``index``-th alert of an Alertmanager webhook (v4) payload, or one alert object."""
    found = parse_alerts(payload, source="payload")
    if not -len(found) <= index < len(found):
        raise UserInputError(f"the payload holds {len(found)} alerts; there is no alert {index}")
    return found[index]


def investigate(
    target: str | Alert | Mapping[str, Any],
    source: str | Path | None = None,
    config: str | Path | Settings | None = None,
) -> Investigation:
    """Investigate an alert id, an :class:`Alert`, or a webhook payload.

    ``source`` is a bundle folder or folder of bundles (default: configured
    backends, else the bundled library); ``config`` a config file path or
    :class:`Settings`.
    """
    from correlator.engine import investigate as run

    settings = _settings(config)
    sources = build_sources(settings, source)
    if isinstance(target, Alert):
        alert = target
    elif isinstance(target, Mapping):
        alert = alert_from_payload(target)
    else:
        alert = resolve_alert(str(target), sources)
    try:
        return run(alert, sources.bind(alert), settings, catalog_for(settings))
    finally:
        sources.close()  # built here, so closed here (HTTP connections)

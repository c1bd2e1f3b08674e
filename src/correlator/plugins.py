"""Plugin discovery through entry points.

Built-in adapters and patterns register in the same groups a third-party
package would use (``correlator.adapters``, ``correlator.patterns``), so the
built-ins prove the plugin API is enough.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

from correlator.config import BackendSettings
from correlator.errors import ConfigError, CorrelatorError

__all__ = ["ADAPTER_GROUP", "PATTERN_GROUP", "build_backend", "load_group"]

ADAPTER_GROUP = "correlator.adapters"
PATTERN_GROUP = "correlator.patterns"


def _entry_points(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


def load_group(group: str) -> dict[str, Any]:
    """Every plugin of ``group``, loaded, by name. A broken plugin is a clear error."""
    out: dict[str, Any] = {}
    for name, ep in sorted(_entry_points(group).items()):
        try:
            out[name] = ep.load()
        except Exception as exc:  # a third-party plugin can fail in any way
            raise CorrelatorError(
                f"plugin {name!r} ({ep.value}) in group {group} failed to load: {exc}; "
                "fix or uninstall the package that provides it"
            ) from exc
    return out


def build_backend(name: str, settings: BackendSettings) -> object:
    """An adapter instance for backend ``name`` built from its settings."""
    eps = _entry_points(ADAPTER_GROUP)
    if name not in eps:
        raise ConfigError(
            f"backends.{name}: no adapter named {name!r} is installed; "
            f"installed: {', '.join(sorted(eps))}"
        )
    from correlator.http import HttpSettings

    cls = load_group(ADAPTER_GROUP)[name]
    factory = getattr(cls, "from_settings", None)
    if callable(factory):  # a plugin may build itself from the raw settings
        return factory(settings)
    return cls(HttpSettings.from_config(name, settings))

"""Plugin discovery through entry points, and the adapter contract.

Built-in adapters and patterns register in the same groups a third-party
package would use (``correlator.adapters``, ``correlator.patterns``), so the
built-ins prove the plugin API is enough. :func:`register` adds a plugin
without packaging it (a notebook, a test): it is found exactly as an entry
point of that name would be, and takes precedence over an installed one.

An adapter (an entry point of ``correlator.adapters``) is a class that:

* declares ``Settings``, a pydantic model that validates its ``backends:``
  entry of the config (everything but the ``adapter`` key). A model with a
  ``name`` field receives the entry's key there. HTTP adapters extend
  :class:`correlator.http.HttpSettings`;
* is built as ``cls(settings)`` with an instance of that model;
* implements one or more protocols of :mod:`correlator.sources` in full;
* may declare ``display_name`` (``"Prometheus"``), how messages name it.

The config's ``backends:`` is open: ``backends: {mine: {adapter: mine, ...}}``
works for any installed (or registered) adapter, with no list to edit.
"""

from __future__ import annotations

import threading
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import BaseModel

from correlator.errors import ConfigError, CorrelatorError

__all__ = [
    "ADAPTER_GROUP",
    "PATTERN_GROUP",
    "adapter_class",
    "build_backend",
    "display_name",
    "load_group",
    "names",
    "register",
    "unregister",
]

ADAPTER_GROUP = "correlator.adapters"
PATTERN_GROUP = "correlator.patterns"

_registered: dict[str, dict[str, Any]] = {}
_lock = threading.Lock()


def register(group: str, name: str, plugin: Any) -> None:
    """Make ``plugin`` the plugin ``name`` of ``group`` in this process (no packaging needed).

    It is found as an installed entry point of that name would be, and wins
    over one. :func:`unregister` takes it back.
    """
    with _lock:
        _registered.setdefault(group, {})[name] = plugin


def unregister(group: str, name: str) -> None:
    """Forget a plugin added with :func:`register` (nothing happens if there is none)."""
    with _lock:
        _registered.get(group, {}).pop(name, None)


def _entry_points(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


def _added(group: str) -> dict[str, Any]:
    with _lock:
        return dict(_registered.get(group, {}))


def names(group: str) -> list[str]:
    """The names of every plugin of ``group``, installed or registered (nothing is imported)."""
    return sorted(set(_entry_points(group)) | set(_added(group)))


def _load(group: str, name: str, ep: EntryPoint) -> Any:
    try:
        return ep.load()
    except Exception as exc:  # a third-party plugin can fail in any way
        raise CorrelatorError(
            f"plugin {name!r} ({ep.value}) in group {group} failed to load: {exc}; "
            "fix or uninstall the package that provides it"
        ) from exc


def load_group(group: str) -> dict[str, Any]:
    """Every plugin of ``group``, loaded, by name. A broken plugin is a clear error."""
    out: dict[str, Any] = {}
    added = _added(group)
    for name, ep in sorted(_entry_points(group).items()):
        if name not in added:
            out[name] = _load(group, name, ep)
    out.update(added)
    return dict(sorted(out.items()))


def adapter_class(name: str, key: str | None = None) -> Any:
    """The adapter class registered as ``name`` (only that one is imported).

    ``key`` is the ``backends:`` entry asking for it, for the message when
    there is no such adapter or it declares no ``Settings`` model.
    """
    where = f"backends.{key}" if key is not None else f"adapter {name!r}"
    added = _added(ADAPTER_GROUP)
    if name in added:
        cls = added[name]
    else:
        eps = _entry_points(ADAPTER_GROUP)
        if name not in eps:
            known = ", ".join(sorted(set(eps) | set(added))) or "none"
            raise ConfigError(
                f"{where}: no adapter named {name!r} is installed (installed: {known}); "
                f"set `adapter:` to one of them, or install the package that provides {name!r}"
            )
        cls = _load(ADAPTER_GROUP, name, eps[name])
    settings = getattr(cls, "Settings", None)
    if not (isinstance(settings, type) and issubclass(settings, BaseModel)):
        raise ConfigError(
            f"{where}: adapter {name!r} ({_qualname(cls)}) declares no Settings model; "
            "its author must add `Settings = <a pydantic model>` to the class"
        )
    return cls


def display_name(cls: Any, name: str) -> str:
    """How messages name an adapter: its ``display_name``, else its registered name."""
    shown = getattr(cls, "display_name", None)
    return shown if isinstance(shown, str) and shown else name


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def build_backend(key: str, adapter: str, settings: BaseModel) -> object:
    """The source for the ``backends.<key>`` entry: ``adapter``'s class built from ``settings``.

    An adapter that fails to start, or builds something that is no source,
    is a :class:`~correlator.errors.ConfigError` naming the entry.
    """
    from correlator.sources import (
        AlertSource,
        LogSource,
        MetricSource,
        TopologySource,
        TraceSource,
        describe_non_source,
    )

    cls = adapter_class(adapter, key)
    try:
        backend: object = cls(settings)
    except CorrelatorError:
        raise
    except Exception as exc:  # a third-party adapter can fail in any way
        raise ConfigError(
            f"backends.{key}: adapter {adapter!r} ({_qualname(cls)}) failed to start: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    kinds = (MetricSource, LogSource, TraceSource, TopologySource, AlertSource)
    if not any(isinstance(backend, kind) for kind in kinds):
        raise ConfigError(
            f"backends.{key}: adapter {adapter!r} ({_qualname(cls)}) is not usable: "
            + describe_non_source(backend)
        )
    return backend

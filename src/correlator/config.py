"""Configuration: a YAML (or JSON) file, overridden by ``CORRELATOR_*`` variables.

Precedence, lowest first: built-in defaults, the file (``--config`` or
``CORRELATOR_CONFIG``), then environment variables. Every bad value raises
:class:`~correlator.errors.ConfigError` with a message naming the setting,
what was wrong and what to write instead.

Example file::

    window: {before: 300, after: 300, baseline: 3600}
    source_timeout: 10
    deadline: 60
    catalog: ./my-catalog.json
    patterns:
      enabled: [deployment, db_overload]
      options:
        deployment: {max_lead_seconds: 900}
    backends:
      bundle: {path: ./scenarios}
      prometheus: {url: http://prometheus:9090}
      prom-eu: {adapter: prometheus, url: http://prom-eu:9090, tenant: eu}
      loki: {url: http://loki:3100, tenant: team-a, token_env: LOKI_TOKEN}
      alertmanager: {url: http://alertmanager:9093}

``backends:`` is open: each entry names its adapter (``adapter:``, by default
the entry's key), any adapter installed in the ``correlator.adapters``
entry-point group, and is validated by that adapter's own settings model
(see :mod:`correlator.plugins`); the key names the backend in messages and
gaps.

Environment variables: ``CORRELATOR_CONFIG``, ``CORRELATOR_SOURCE`` (bundle
path), ``CORRELATOR_WINDOW_BEFORE``/``_AFTER``/``_BASELINE``,
``CORRELATOR_SOURCE_TIMEOUT``, ``CORRELATOR_DEADLINE``,
``CORRELATOR_PATTERNS`` (comma-separated), ``CORRELATOR_CATALOG``, and for
each backend ``CORRELATOR_<KEY>_URL``, ``_TOKEN``, ``_USERNAME``,
``_PASSWORD``, ``_TENANT``, ``_MAX_BYTES`` (``<KEY>`` is a configured key or the name of an
installed adapter, upper case, other characters as ``_``: PROMETHEUS, LOKI,
TEMPO, JAEGER, ALERTMANAGER, PROM_EU...).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
)

from correlator.errors import ConfigError

__all__ = [
    "Backend",
    "PatternSettings",
    "Settings",
    "WindowSettings",
    "backend_entry",
    "env_prefix",
    "load_settings",
]

#: What ``CORRELATOR_<KEY>_*`` variables can set on a backend.
_ENV_FIELDS = ("url", "token", "username", "password", "tenant", "max_bytes")
_ENV_BACKEND = re.compile(r"CORRELATOR_.+_(?:" + "|".join(f.upper() for f in _ENV_FIELDS) + ")")


def env_prefix(key: str) -> str:
    """``CORRELATOR_<KEY>_`` for a backend key (``prom-eu`` -> ``CORRELATOR_PROM_EU_``)."""
    return "CORRELATOR_" + re.sub(r"[^A-Za-z0-9]", "_", key).upper() + "_"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WindowSettings(_Strict):
    """How much time around the alert to read."""

    before: float = Field(300.0, ge=0, description="seconds before the alert's start")
    after: float = Field(300.0, ge=0, description="seconds after the alert's end (or start)")
    baseline: float = Field(
        3600.0, ge=300, description="seconds of look-back before the window for the baseline"
    )


class PatternSettings(_Strict):
    """Which patterns run, and their option overrides."""

    enabled: list[str] | None = Field(None, description="pattern names; null means all")
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)


class Backend(_Strict):
    """One ``backends:`` entry: the adapter that serves it and its validated settings.

    ``settings`` is an instance of the adapter's own ``Settings`` model (for
    the built-in HTTP adapters a :class:`correlator.http.HttpSettings`).
    """

    adapter: str
    settings: SerializeAsAny[BaseModel]


def _errors(err: ValidationError, where: str) -> str:
    """Each problem of a pydantic error on one line, prefixed by where it is."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = str(e["msg"]).removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown setting; check the spelling (see the config reference in the README)"
        value = e.get("input")
        # A bad secret's value stays out of the message, as everywhere.
        secret = any(str(p).startswith(("token", "password", "headers")) for p in e["loc"])
        shown = f" (got {value!r})" if value is not None and not isinstance(value, dict) else ""
        shown = "" if secret else shown
        at = f"{where}.{loc}" if where and loc else where or loc or "(top level)"
        lines.append(f"{at}: {msg}{shown}")
    return "\n".join(lines)


def backend_entry(key: str, raw: Any, env: Mapping[str, str] | None = None) -> Backend:
    """Validate the ``backends.<key>`` entry ``raw`` with its adapter's settings model.

    ``adapter`` (default: ``key``) names the adapter; the rest of the entry
    is its settings. Secrets named by ``*_env`` are read from ``env``
    (default: the process's environment). Raises
    :class:`~correlator.errors.ConfigError` naming the entry and the fix.
    """
    from correlator.plugins import adapter_class

    if isinstance(raw, Backend):
        return raw
    where = f"backends.{key}"
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"{where}: must be a mapping of settings, e.g. {{url: http://host:9090}}, "
            f"not {type(raw).__name__}"
        )
    adapter = raw.get("adapter", key)
    if not isinstance(adapter, str) or not adapter:
        raise ConfigError(f"{where}.adapter: name an installed adapter, e.g. adapter: prometheus")
    model: type[BaseModel] = adapter_class(adapter, key).Settings
    data = {k: v for k, v in raw.items() if k != "adapter"}
    if "name" in model.model_fields:
        if data.get("name", key) != key:
            raise ConfigError(
                f"{where}.name: the entry's key names the backend; remove name: (or rename the key)"
            )
        data["name"] = key
    try:
        settings = model.model_validate(data, context={"env": os.environ if env is None else env})
    except ValidationError as err:
        raise ConfigError(_errors(err, where)) from None
    return Backend(adapter=adapter, settings=settings)


class Settings(_Strict):
    """Everything an investigation can be configured with."""

    window: WindowSettings = WindowSettings()
    source_timeout: float = Field(10.0, gt=0, description="seconds each source may take")
    deadline: float = Field(60.0, gt=0, description="seconds the whole investigation may take")
    step: float | None = Field(None, gt=0, description="query step in seconds; null = auto")
    top_n: int = Field(5, ge=1, le=100, description="findings to report")
    catalog: str | None = Field(None, description="path of a catalog JSON file")
    patterns: PatternSettings = PatternSettings()
    bundle: str | None = Field(None, description="a bundle folder or folder of bundles")
    backends: dict[str, Backend] = Field(
        default_factory=dict, description="backend key -> {adapter: ..., settings...}"
    )

    @field_validator("backends", mode="before")
    @classmethod
    def _backends(cls, v: Any) -> Any:
        # load_settings validates entries itself (for messages naming the file);
        # this serves Settings(backends={...}) built in code.
        if not isinstance(v, Mapping):
            return v
        try:
            return {str(k): backend_entry(str(k), raw) for k, raw in v.items()}
        except ConfigError as err:
            raise ValueError(str(err)) from None


def _format_validation(err: ValidationError, where: str) -> str:
    return "\n".join(f"{where}: {line}" for line in _errors(err, "").splitlines())


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist; fix --config or CORRELATOR_CONFIG"
        ) from None
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read: {err.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}:{err.lineno}: not valid JSON: {err.msg}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: not valid YAML: {getattr(err, 'problem', err)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the config must be a mapping of settings, not {type(data).__name__}"
        )
    return data


def _number(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not a number of seconds; write e.g. {name}=300"
        ) from None


def _env_overrides(data: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    out = dict(data)
    window = dict(out.get("window") or {})
    for key in ("before", "after", "baseline"):
        value = _number(env, f"CORRELATOR_WINDOW_{key.upper()}")
        if value is not None:
            window[key] = value
    if window:
        out["window"] = window
    for key in ("source_timeout", "deadline", "step"):
        value = _number(env, f"CORRELATOR_{key.upper()}")
        if value is not None:
            out[key] = value
    if env.get("CORRELATOR_PATTERNS"):
        patterns = dict(out.get("patterns") or {})
        patterns["enabled"] = [
            p.strip() for p in env["CORRELATOR_PATTERNS"].split(",") if p.strip()
        ]
        out["patterns"] = patterns
    if env.get("CORRELATOR_CATALOG"):
        out["catalog"] = env["CORRELATOR_CATALOG"]
    if env.get("CORRELATOR_SOURCE"):
        out["bundle"] = env["CORRELATOR_SOURCE"]
    if "backends" in out and not isinstance(out["backends"], dict):
        raise ConfigError("backends: must be a mapping of backend key to settings")
    backends = {
        k: dict(v) if isinstance(v, dict) else v for k, v in (out.get("backends") or {}).items()
    }
    if any(_ENV_BACKEND.fullmatch(k) for k in env):
        from correlator.plugins import ADAPTER_GROUP, names

        # A configured key, or an installed adapter's name (the built-ins' variables).
        for key in sorted(set(backends) | set(names(ADAPTER_GROUP))):
            for field in _ENV_FIELDS:
                text = env.get(env_prefix(key) + field.upper())
                if text:
                    entry = backends.setdefault(key, {})
                    if isinstance(entry, dict):
                        entry[field] = text
    if backends:
        out["backends"] = backends
    return out


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Defaults, then the file, then ``CORRELATOR_*`` variables; validated."""
    env = os.environ if env is None else env
    file = path or env.get("CORRELATOR_CONFIG")
    data = _read_file(Path(file)) if file else {}
    data = _env_overrides(data, env)
    where = str(file) if file else "settings"
    backends: dict[str, Backend] = {}
    for key, raw in (data.pop("backends", None) or {}).items():
        try:
            backends[str(key)] = backend_entry(str(key), raw, env)
        except ConfigError as err:
            raise ConfigError(
                "\n".join(f"{where}: {line}" for line in str(err).splitlines())
            ) from None
    try:
        return Settings.model_validate({**data, "backends": backends})
    except ValidationError as err:
        raise ConfigError(_format_validation(err, where)) from None

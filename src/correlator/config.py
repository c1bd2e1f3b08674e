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
      loki: {url: http://loki:3100, tenant: team-a, token_env: LOKI_TOKEN}
      alertmanager: {url: http://alertmanager:9093}

Environment variables: ``CORRELATOR_CONFIG``, ``CORRELATOR_SOURCE`` (bundle
path), ``CORRELATOR_WINDOW_BEFORE``/``_AFTER``/``_BASELINE``,
``CORRELATOR_SOURCE_TIMEOUT``, ``CORRELATOR_DEADLINE``,
``CORRELATOR_PATTERNS`` (comma-separated), ``CORRELATOR_CATALOG``, and for
each backend ``CORRELATOR_<BACKEND>_URL``, ``_TOKEN``, ``_USERNAME``,
``_PASSWORD``, ``_TENANT`` (``<BACKEND>`` is PROMETHEUS, LOKI, TEMPO,
JAEGER or ALERTMANAGER).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from correlator.errors import ConfigError

__all__ = [
    "BACKENDS",
    "BackendSettings",
    "PatternSettings",
    "Settings",
    "WindowSettings",
    "load_settings",
]

#: Backends that can be configured by name.
BACKENDS = ("prometheus", "loki", "tempo", "jaeger", "alertmanager")


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


class BackendSettings(_Strict):
    """Connection settings of one HTTP backend. Secrets are never logged."""

    url: str
    timeout: float = Field(10.0, gt=0)
    retries: int = Field(2, ge=0, le=10)
    token: str | None = Field(None, repr=False)
    token_env: str | None = None
    token_file: str | None = None
    username: str | None = None
    password: str | None = Field(None, repr=False)
    password_env: str | None = None
    password_file: str | None = None
    tenant: str | None = Field(None, description="X-Scope-OrgID for multi-tenant backends")
    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    verify: bool = True
    ca_file: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"{v!r} is not an http(s) URL; write e.g. http://localhost:9090")
        return v.rstrip("/")


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
    backends: dict[str, BackendSettings] = Field(default_factory=dict)

    @field_validator("backends")
    @classmethod
    def _known_backends(cls, v: dict[str, BackendSettings]) -> dict[str, BackendSettings]:
        for name in v:
            if name not in BACKENDS:
                raise ValueError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
        return v


def _format_validation(err: ValidationError, where: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown setting; check the spelling (see the config reference in the README)"
        value = e.get("input")
        shown = f" (got {value!r})" if value is not None and not isinstance(value, dict) else ""
        lines.append(f"{where}: {loc}: {msg}{shown}")
    return "\n".join(lines)


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
        raise ConfigError("backends: must be a mapping of backend name to settings")
    backends = {k: dict(v) for k, v in (out.get("backends") or {}).items() if isinstance(v, dict)}
    for name in BACKENDS:
        prefix = f"CORRELATOR_{name.upper()}_"
        for field in ("url", "token", "username", "password", "tenant"):
            text = env.get(prefix + field.upper())
            if text:
                backends.setdefault(name, {})[field] = text
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
    try:
        return Settings.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation(err, where)) from None

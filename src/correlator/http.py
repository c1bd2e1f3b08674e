"""HTTP plumbing shared by every backend adapter.

:class:`HttpSettings` holds what it takes to reach one backend (base URL,
timeout, retries, credentials, tenant, TLS); it is also the settings model
that a ``backends:`` entry of the config is validated with (each HTTP adapter
extends it with its own options). :func:`build_client` turns it into
an :class:`httpx.Client`; :class:`HttpBackend` sends requests with retries and
translates every failure into :class:`~correlator.sources.SourceError` (or
:class:`~correlator.sources.SourceAuthError` for 401/403) whose message names
the backend, the URL (never its credentials), the status and what to do::

    Loki at http://loki:3100/loki/api/v1/query_range: 401 Unauthorized: set CORRELATOR_LOKI_TOKEN

Retries (exponential backoff, ``Retry-After`` honoured up to ``backoff_max``)
happen on 429, 5xx and connection failures only: any other 4xx is the
caller's mistake and repeating it cannot help, and a read timeout already cost
the whole timeout once.

Secrets (token, password, header values) are read from the settings, an
environment variable or a file, and never appear in ``repr``/``str`` of the
settings, in error messages or in logs.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from correlator.config import env_prefix
from correlator.errors import ConfigError
from correlator.sources import SourceAuthError, SourceError

__all__ = [
    "HttpBackend",
    "HttpSettings",
    "build_client",
    "redact_url",
    "title",
]

_MASK = "***"
#: Query parameters: a mapping, or pairs when a key repeats.
Params = Any
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504}) | frozenset(range(505, 600))
_S = TypeVar("_S", bound="HttpSettings")


def redact_url(url: str) -> str:
    """``url`` without user info (``http://user:pw@host`` -> ``http://host``)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def title(name: str) -> str:
    """A backend key as people write it in prose (``alertmanager`` -> ``Alertmanager``)."""
    return " ".join(w[:1].upper() + w[1:] for w in re.split(r"[-_\s]+", name) if w) or name


def _read_secret(
    name: str,
    what: str,
    value: str | None,
    env_var: str | None,
    file: str | None,
    env: Mapping[str, str],
) -> str | None:
    """A secret from the value itself, else an environment variable, else a file."""
    if value:
        return value
    if env_var:
        found = env.get(env_var)
        if found:
            return found
    if file:
        try:
            return Path(file).read_text(encoding="utf-8").strip() or None
        except OSError as err:
            raise ConfigError(
                f"{_where(name)}.{what}_file: cannot read {file} ({err.strerror}); "
                "fix the path or its permissions"
            ) from None
    return None


def _where(name: str) -> str:
    return f"backends.{name}" if name else "backend settings"


def _describe(err: ValidationError, name: str) -> str:
    """A pydantic error as one line per problem, each naming the setting."""
    where = _where(name)
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = str(e["msg"]).removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown setting; check the spelling"
        lines.append(f"{where}{'.' + loc if loc else ''}: {msg}")
    return "\n".join(lines)


class HttpSettings(BaseModel):
    """How to reach one HTTP backend: the settings model of the built-in HTTP adapters.

    This is what a ``backends:`` entry of the config holds (adapters extend it
    with their own options) and what the adapters are built from: one type,
    validated once. ``repr``/``str`` mask every secret. Secrets come from the
    value itself, else the variable named by ``*_env``, else the file named by
    ``*_file`` (resolved when the settings are validated; a config file's
    validation reads the environment it was loaded with).

    :meth:`validated` (what the config and the adapters use) raises
    :class:`~correlator.errors.ConfigError` naming the setting for any bad
    value; built directly (``HttpSettings(name="loki", url=...)``), a bad URL
    or conflicting credentials raise it too, and a value of the wrong type
    raises pydantic's ``ValidationError``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("", description="the backends: key; names variables and messages")
    display: str | None = Field(
        None, description="how messages name the backend (default: the adapter's name and key)"
    )
    url: str = Field(description="base URL, e.g. http://prometheus:9090 (may have a path prefix)")
    timeout: float = Field(10.0, gt=0, description="seconds per request")
    retries: int = Field(
        2, ge=0, le=10, description="extra attempts on 429/5xx/connection errors only"
    )
    backoff: float = Field(0.5, ge=0, description="first retry delay in seconds; doubles")
    backoff_max: float = Field(10.0, ge=0, description="longest retry delay in seconds")
    token: str | None = Field(None, repr=False, description="bearer token")
    token_env: str | None = Field(None, description="variable holding the token")
    token_file: str | None = Field(None, description="file holding the token")
    username: str | None = Field(None, description="basic-auth user")
    password: str | None = Field(None, repr=False, description="basic-auth password")
    password_env: str | None = Field(None, description="variable holding the password")
    password_file: str | None = Field(None, description="file holding the password")
    tenant: str | None = Field(
        None, description="sent as X-Scope-OrgID (Loki, Tempo, Mimir, Cortex)"
    )
    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    verify: bool = Field(True, description="verify TLS certificates")
    ca_file: str | None = Field(None, description="CA bundle for TLS")

    @model_validator(mode="before")
    @classmethod
    def _resolve_secrets(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        context = info.context if isinstance(info.context, Mapping) else {}
        env: Mapping[str, str] = context.get("env") or os.environ
        out = dict(data)
        for what in ("token", "password"):
            secret = _read_secret(
                str(out.get("name") or ""),
                what,
                out.get(what),
                out.get(f"{what}_env"),
                out.get(f"{what}_file"),
                env,
            )
            if secret is not None:
                out[what] = secret
        return out

    @field_validator("url")
    @classmethod
    def _url(cls, v: str, info: ValidationInfo) -> str:
        if not v.startswith(("http://", "https://")):
            name = str(info.data.get("name") or "")
            where = f" (or set {env_prefix(name)}URL)" if name else ""
            raise ConfigError(
                f"{_where(name)}.url: {redact_url(v)!r} is not an http(s) URL; "
                f"write e.g. http://localhost:9090{where}"
            )
        return v.rstrip("/")

    @model_validator(mode="after")
    def _one_auth(self) -> HttpSettings:
        if self.token and (self.username or self.password):
            raise ConfigError(
                f"{_where(self.name)}: both a token and basic-auth credentials are set; "
                "keep one of them"
            )
        return self

    def __repr__(self) -> str:
        shown = {
            "name": self.name,
            "url": redact_url(self.url),
            "timeout": self.timeout,
            "retries": self.retries,
            "token": _MASK if self.token else None,
            "username": self.username,
            "password": _MASK if self.password else None,
            "tenant": self.tenant,
            "headers": {k: _MASK for k in self.headers},
            "verify": self.verify,
            "ca_file": self.ca_file,
        }
        for key in type(self).model_fields:  # an adapter's own options
            if key not in shown and key not in _BASE_FIELDS:
                shown[key] = getattr(self, key)
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    __str__ = __repr__

    @property
    def display_name(self) -> str:
        """``Loki``, ``Prometheus (prom-eu)``... for messages."""
        return self.display or title(self.name)

    @property
    def env_prefix(self) -> str:
        """``CORRELATOR_LOKI_`` etc."""
        return env_prefix(self.name)

    @property
    def public_url(self) -> str:
        """The base URL without credentials."""
        return redact_url(self.url)

    def with_(self: _S, **changes: Any) -> _S:
        """A copy with some fields changed (validated)."""
        return type(self).validated({**self._fields(), **changes})

    def _fields(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in type(self).model_fields}

    @classmethod
    def validated(
        cls: type[_S], data: Mapping[str, Any], env: Mapping[str, str] | None = None
    ) -> _S:
        """Settings from a mapping; secrets resolved from ``env`` (default: the process's).

        Bad values raise :class:`~correlator.errors.ConfigError` naming the setting.
        """
        try:
            return cls.model_validate(dict(data), context={"env": env} if env is not None else None)
        except ValidationError as err:
            raise ConfigError(_describe(err, str(data.get("name") or ""))) from None

    @classmethod
    def adopt(
        cls: type[_S],
        settings: HttpSettings | str,
        default_name: str,
        display: str,
        **options: Any,
    ) -> _S:
        """``settings`` as an adapter's own settings type ``cls``.

        A string is a URL. ``default_name`` is the adapter's own name, used
        when the settings have none; ``display`` names it in messages (with the
        key when it is configured under another: ``Prometheus (prom-eu)``).
        ``options`` that are not ``None`` override the settings' values.
        """
        if isinstance(settings, str):
            settings = HttpSettings.validated({"name": default_name, "url": settings})
        changes = {k: v for k, v in options.items() if v is not None}
        key = changes.setdefault("name", settings.name or default_name)
        if key == settings.name:
            del changes["name"]
        if not settings.display:
            changes["display"] = display if key == default_name else f"{display} ({key})"
        if isinstance(settings, cls) and not changes:
            return settings
        known = {k: v for k, v in settings._fields().items() if k in cls.model_fields}
        return cls.validated({**known, **changes})

    @classmethod
    def from_env(
        cls: type[_S],
        name: str,
        env: Mapping[str, str] | None = None,
        url: str | None = None,
        **overrides: Any,
    ) -> _S:
        """Settings from ``CORRELATOR_<NAME>_*`` variables.

        ``_URL``, ``_TOKEN`` / ``_TOKEN_FILE``, ``_USERNAME``, ``_PASSWORD`` /
        ``_PASSWORD_FILE``, ``_TENANT``, ``_TIMEOUT``, ``_RETRIES``,
        ``_CA_FILE``, ``_INSECURE`` (``1`` turns TLS verification off).
        """
        env = os.environ if env is None else env
        p = env_prefix(name)
        base = url or env.get(p + "URL")
        if not base:
            raise ConfigError(f"no URL for {title(name)}; set {p}URL")
        kwargs: dict[str, Any] = {
            "name": name,
            "url": base,
            "token_env": p + "TOKEN",
            "token_file": env.get(p + "TOKEN_FILE") or None,
            "username": env.get(p + "USERNAME") or None,
            "password_env": p + "PASSWORD",
            "password_file": env.get(p + "PASSWORD_FILE") or None,
            "tenant": env.get(p + "TENANT") or None,
            "ca_file": env.get(p + "CA_FILE") or None,
            "verify": env.get(p + "INSECURE", "") not in ("1", "true", "yes"),
        }
        for key, conv in (("timeout", float), ("retries", int)):
            raw = env.get(p + key.upper())
            if raw:
                try:
                    kwargs[key] = conv(raw)
                except ValueError:
                    raise ConfigError(f"{p}{key.upper()}={raw!r} is not a number") from None
        kwargs.update(overrides)
        return cls.validated(kwargs, env)

    def request_headers(self) -> dict[str, str]:
        """Headers every request carries (auth, tenant, extras)."""
        out: dict[str, str] = {"User-Agent": "correlator"}
        if self.token:
            out["Authorization"] = f"Bearer {self.token}"
        if self.tenant:
            out["X-Scope-OrgID"] = self.tenant
        out.update(self.headers)
        return out

    def auth(self) -> httpx.BasicAuth | None:
        """Basic auth when a username is set."""
        if self.username:
            return httpx.BasicAuth(self.username, self.password or "")
        return None

    def ssl_verify(self) -> bool | ssl.SSLContext:
        """What httpx's ``verify`` takes: ``False``, ``True`` or a context with the CA bundle."""
        if not self.verify:
            return False
        if self.ca_file:
            try:
                return ssl.create_default_context(cafile=self.ca_file)
            except (OSError, ssl.SSLError) as err:
                raise ConfigError(
                    f"{self.display_name}: CA bundle {self.ca_file} cannot be loaded ({err}); "
                    f"fix {self.env_prefix}CA_FILE"
                ) from None
        return True


_BASE_FIELDS = frozenset(HttpSettings.model_fields)


def build_client(settings: HttpSettings) -> httpx.Client:
    """An :class:`httpx.Client` configured from ``settings`` (auth, TLS, timeout)."""
    return httpx.Client(
        timeout=settings.timeout,
        verify=settings.ssl_verify(),
        auth=settings.auth(),
        headers=settings.request_headers(),
        follow_redirects=True,
    )


def _error_detail(response: httpx.Response) -> str:
    """The backend's own words: a JSON ``error`` field or the first line of text."""
    try:
        text = response.text
    except (httpx.HTTPError, UnicodeDecodeError):
        return ""
    text = text.strip()
    if text.startswith("{"):
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        if isinstance(body, dict):
            for key in ("error", "message", "msg", "errors"):
                if body.get(key):
                    value = body[key]
                    text = value if isinstance(value, str) else json.dumps(value)
                    break
    text = " ".join(text.split())
    return text[:300] + ("..." if len(text) > 300 else "")


class HttpBackend:
    """Sends requests to one backend with retries; translates failures to SourceError.

    ``client`` is injected (tests pass one with an ``httpx.MockTransport``);
    by default it is built from ``settings``. ``sleep`` is injectable so that
    tests of the backoff do not wait.
    """

    def __init__(
        self,
        settings: HttpSettings,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.client = client if client is not None else build_client(settings)
        self._owns_client = client is None
        self._sleep = sleep
        self.requests = 0
        """Requests sent (attempts, retries included)."""

    def close(self) -> None:
        """Close the client if this object built it."""
        if self._owns_client:
            self.client.close()

    def url(self, path: str) -> str:
        """The full URL of ``path`` (the base URL may itself have a path prefix)."""
        return self.settings.url + "/" + path.lstrip("/")

    def _where(self, path: str) -> str:
        return f"{self.settings.display_name} at {redact_url(self.url(path))}"

    def _hint(self, status: int) -> str:
        p = self.settings.env_prefix
        if status == 401:
            return f"set {p}TOKEN (or {p}USERNAME and {p}PASSWORD)"
        if status == 403:
            return f"check the credentials ({p}TOKEN) and the tenant ({p}TENANT)"
        if status == 404:
            return f"check {p}URL (and its path prefix) and that this backend serves this API"
        if status == 429:
            return "the backend is rate-limiting us; try again later or raise its limits"
        if status >= 500:
            return "the backend failed; check its logs and health"
        return "the backend rejected the request"

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Params = None,
        data: Mapping[str, Any] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (),
    ) -> httpx.Response:
        """Send with retries; return a 2xx response (or one whose status is in ``ok``)."""
        url = self.url(path)
        where = self._where(path)
        attempts = self.settings.retries + 1
        delay = self.settings.backoff
        for attempt in range(1, attempts + 1):
            last = attempt == attempts
            self.requests += 1
            try:
                response = self.client.request(
                    method,
                    url,
                    params=params,
                    data=data,
                    json=json_body,
                    headers=headers,
                    timeout=self.settings.timeout,
                )
                response.read()
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                if last:
                    raise SourceError(
                        f"{where}: cannot connect ({_exc_text(exc)}) after {attempt} "
                        f"attempt(s); is it running? check {self.settings.env_prefix}URL"
                    ) from exc
                self._sleep(delay)
                delay = min(delay * 2, self.settings.backoff_max)
                continue
            except httpx.TimeoutException as exc:
                raise SourceError(
                    f"{where}: no answer within {self.settings.timeout:g}s; the backend is "
                    f"slow or hung; raise the timeout ({self.settings.env_prefix}TIMEOUT) or "
                    "narrow the query"
                ) from exc
            except httpx.HTTPError as exc:
                raise SourceError(
                    f"{where}: the connection failed mid-response ({_exc_text(exc)}); "
                    "check the backend and any proxy in between"
                ) from exc
            status = response.status_code
            if 200 <= status < 300 or status in ok:
                return response
            if status in _RETRY_STATUS and not last:
                wait = _retry_after(response, delay, self.settings.backoff_max)
                self._sleep(wait)
                delay = min(delay * 2, self.settings.backoff_max)
                continue
            raise self._status_error(where, response, attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _status_error(self, where: str, response: httpx.Response, attempts: int) -> SourceError:
        status = response.status_code
        reason = response.reason_phrase or ""
        detail = _error_detail(response)
        msg = f"{where}: {status} {reason}".rstrip()
        if detail:
            msg += f": {detail}"
        if status in _RETRY_STATUS and attempts > 1:
            msg += f" (after {attempts} attempts)"
        msg += f"; {self._hint(status)}"
        if status in (401, 403):
            return SourceAuthError(msg)
        err = SourceError(msg)
        err.status = status  # type: ignore[attr-defined]
        return err

    def get_json(self, path: str, params: Params = None, **kwargs: Any) -> Any:
        """GET and parse JSON (a clear SourceError for bodies that are not JSON)."""
        response = self.request("GET", path, params=params, **kwargs)
        return self.parse_json(response, path)

    def post_json(self, path: str, **kwargs: Any) -> Any:
        """POST and parse JSON (empty bodies give ``None``)."""
        response = self.request("POST", path, **kwargs)
        if not response.content:
            return None
        return self.parse_json(response, path)

    def parse_json(self, response: httpx.Response, path: str) -> Any:
        """The body as JSON, or a SourceError naming the backend and what came back."""
        try:
            return response.json()
        except (ValueError, UnicodeDecodeError) as exc:
            snippet = " ".join(response.text[:120].split())
            raise SourceError(
                f"{self._where(path)}: {response.status_code} answered with a body that is "
                f"not valid JSON ({len(response.content)} bytes, starts {snippet!r}); the "
                "response was truncated or this URL is not the expected API; check "
                f"{self.settings.env_prefix}URL"
            ) from exc


def _exc_text(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text[:200]


def _retry_after(response: httpx.Response, default: float, cap: float) -> float:
    raw = response.headers.get("Retry-After")
    if raw:
        try:
            return min(max(float(raw), 0.0), cap)
        except ValueError:
            pass
    return default

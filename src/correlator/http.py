"""HTTP plumbing shared by every backend adapter.

:class:`HttpSettings` holds what it takes to reach one backend (base URL,
timeout, retries, credentials, tenant, TLS); :func:`build_client` turns it into
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
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from correlator.errors import ConfigError
from correlator.sources import SourceAuthError, SourceError

__all__ = [
    "DISPLAY_NAMES",
    "HttpBackend",
    "HttpSettings",
    "build_client",
    "redact_url",
]

#: How each backend is named in messages.
DISPLAY_NAMES = {
    "prometheus": "Prometheus",
    "victoriametrics": "VictoriaMetrics",
    "loki": "Loki",
    "tempo": "Tempo",
    "jaeger": "Jaeger",
    "alertmanager": "Alertmanager",
}

_MASK = "***"
#: Query parameters: a mapping, or pairs when a key repeats.
Params = Any
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504}) | frozenset(range(505, 600))


def redact_url(url: str) -> str:
    """``url`` without user info (``http://user:pw@host`` -> ``http://host``)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


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
                f"backends.{name}.{what}_file: cannot read {file} ({err.strerror}); "
                "fix the path or its permissions"
            ) from None
    return None


@dataclass(frozen=True)
class HttpSettings:
    """How to reach one backend. ``repr``/``str`` mask every secret."""

    name: str
    """Backend key (``prometheus``, ``loki``...); names env vars and messages."""
    url: str
    timeout: float = 10.0
    retries: int = 2
    """Extra attempts after the first, on 429/5xx/connection errors only."""
    backoff: float = 0.5
    """First retry delay in seconds; doubles each retry."""
    backoff_max: float = 10.0
    token: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tenant: str | None = None
    """Sent as ``X-Scope-OrgID`` (Loki, Tempo, Mimir, Cortex)."""
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    verify: bool = True
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(
                f"{self.display_name} URL {redact_url(self.url)!r} is not an http(s) URL; "
                f"set CORRELATOR_{self.name.upper()}_URL, e.g. http://localhost:9090"
            )
        object.__setattr__(self, "url", self.url.rstrip("/"))
        if self.token and (self.username or self.password):
            raise ConfigError(
                f"{self.display_name}: both a token and basic-auth credentials are set; "
                "keep one of them"
            )

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
        return "HttpSettings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    __str__ = __repr__

    @property
    def display_name(self) -> str:
        """``Loki``, ``Prometheus``... for messages."""
        return DISPLAY_NAMES.get(self.name, self.name)

    @property
    def env_prefix(self) -> str:
        """``CORRELATOR_LOKI_`` etc."""
        return f"CORRELATOR_{self.name.upper()}_"

    @property
    def public_url(self) -> str:
        """The base URL without credentials."""
        return redact_url(self.url)

    def with_(self, **changes: Any) -> HttpSettings:
        """A copy with some fields changed."""
        return replace(self, **changes)

    @classmethod
    def from_env(
        cls,
        name: str,
        env: Mapping[str, str] | None = None,
        url: str | None = None,
        **overrides: Any,
    ) -> HttpSettings:
        """Settings from ``CORRELATOR_<NAME>_*`` variables.

        ``_URL``, ``_TOKEN`` / ``_TOKEN_FILE``, ``_USERNAME``, ``_PASSWORD`` /
        ``_PASSWORD_FILE``, ``_TENANT``, ``_TIMEOUT``, ``_RETRIES``,
        ``_CA_FILE``, ``_INSECURE`` (``1`` turns TLS verification off).
        """
        env = os.environ if env is None else env
        p = f"CORRELATOR_{name.upper()}_"
        base = url or env.get(p + "URL")
        if not base:
            raise ConfigError(f"no URL for {DISPLAY_NAMES.get(name, name)}; set {p}URL")
        kwargs: dict[str, Any] = {
            "token": _read_secret(name, "token", None, p + "TOKEN", env.get(p + "TOKEN_FILE"), env),
            "username": env.get(p + "USERNAME") or None,
            "password": _read_secret(
                name, "password", None, p + "PASSWORD", env.get(p + "PASSWORD_FILE"), env
            ),
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
        return cls(name=name, url=base, **kwargs)

    @classmethod
    def from_config(
        cls, name: str, backend: Any, env: Mapping[str, str] | None = None, **overrides: Any
    ) -> HttpSettings:
        """Settings from a :class:`correlator.config.BackendSettings` (secrets resolved)."""
        env = os.environ if env is None else env
        token = _read_secret(
            name, "token", backend.token, backend.token_env, backend.token_file, env
        )
        password = _read_secret(
            name, "password", backend.password, backend.password_env, backend.password_file, env
        )
        kwargs: dict[str, Any] = {
            "url": backend.url,
            "timeout": backend.timeout,
            "retries": backend.retries,
            "token": token,
            "username": backend.username,
            "password": password,
            "tenant": backend.tenant,
            "headers": dict(backend.headers),
            "verify": backend.verify,
            "ca_file": backend.ca_file,
        }
        kwargs.update(overrides)
        return cls(name=name, **kwargs)

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

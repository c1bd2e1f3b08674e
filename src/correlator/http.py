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
caller's mistake and repeating it cannot help, and a timeout already cost
the whole limit once.

Hostile or broken backends are held to bounds:

- time: a request is bounded *whole* (connect, send, wait, every byte of the
  answer) by ``timeout`` or by the limit in force (:func:`time_limit`; the
  engine sets the investigation's), whichever ends first. Every socket
  operation gets only what is left, so a trickle is cut as surely as a hang,
  and the cut closes the connection: the thread that sent it ends then;
- size: the answer is streamed and cut past ``max_bytes``;
- redirects are followed here, at most :data:`MAX_REDIRECTS`, with every
  credential and configured header dropped once one leaves the origin;
- messages quote at most a sanitized first line of an answer (:func:`sanitize`).

Secrets (token, password, header values, URL user info and credential-looking
query values) are read from the settings, an environment variable or a file,
registered with :mod:`correlator.redact`, and never appear in ``repr``/``str``
of the settings, in error messages, reports or logs.
"""

from __future__ import annotations

import base64
import contextvars
import json
import os
import re
import ssl
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

import httpcore
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
from correlator.redact import MASK, MIN_SECRET, redact, redact_url, register, url_secrets
from correlator.sources import SourceAuthError, SourceError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MAX_REDIRECTS",
    "HttpBackend",
    "HttpSettings",
    "Limit",
    "build_client",
    "carry",
    "current_limit",
    "redact_url",
    "sanitize",
    "time_limit",
    "title",
]

_MASK = MASK
#: The largest answer a backend may send by default (``max_bytes``): 64 MiB.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
#: Redirects followed per request before giving up.
MAX_REDIRECTS = 5
_REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
_P = ParamSpec("_P")
_R = TypeVar("_R")
#: Query parameters: a mapping, or pairs when a key repeats.
Params = Any
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504}) | frozenset(range(505, 600))
_S = TypeVar("_S", bound="HttpSettings")


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
    timeout: float = Field(
        10.0, gt=0, description="seconds one request may take, whole (connect to last byte)"
    )
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
    max_bytes: int = Field(
        DEFAULT_MAX_BYTES,
        gt=0,
        description="largest answer in bytes (after decompression); a larger one is a gap",
    )

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
        # From now on no log line, error or report shows these values.
        register(self.secrets())
        return self

    def secrets(self) -> list[str]:
        """Every credential these settings hold, in every form it is sent or written.

        The token (and its ``Authorization`` value), the password (and the
        basic-auth value), every configured header's value, and the password
        and credential-looking query values of the URL.
        """
        out = [self.token, self.password, *self.headers.values(), *url_secrets(self.url)]
        if self.token:
            out.append(f"Bearer {self.token}")
        pair = self._basic()
        if pair:
            out.append(pair[1])
            out.append(base64.b64encode(f"{pair[0]}:{pair[1]}".encode()).decode("ascii"))
        return [x for x in out if x]

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
            "max_bytes": self.max_bytes,
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
        ``_MAX_BYTES``, ``_CA_FILE``, ``_INSECURE`` (``1`` turns TLS
        verification off).
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
        for key, conv in (("timeout", float), ("retries", int), ("max_bytes", int)):
            raw = env.get(p + key.upper())
            if raw:
                try:
                    kwargs[key] = conv(raw)
                except ValueError:
                    raise ConfigError(f"{p}{key.upper()}={raw!r} is not a number") from None
        kwargs.update(overrides)
        return cls.validated(kwargs, env)

    def request_headers(self) -> dict[str, str]:
        """Headers every request to the backend's own origin carries (auth, tenant, extras).

        :class:`HttpBackend` sends them with each request, never from the
        client's defaults, so that it can leave every one of them out when a
        redirect leads to another origin.
        """
        out: dict[str, str] = {}
        if self.token:
            out["Authorization"] = f"Bearer {self.token}"
        if self.tenant:
            out["X-Scope-OrgID"] = self.tenant
        out.update(self.headers)
        return out

    def _basic(self) -> tuple[str, str] | None:
        """The basic-auth pair: ``username``/``password``, else the URL's user info."""
        if self.username:
            return self.username, self.password or ""
        parts = urlsplit(self.url)
        if parts.username is not None or parts.password is not None:
            return unquote(parts.username or ""), unquote(parts.password or "")
        return None

    def auth(self) -> httpx.BasicAuth | None:
        """Basic auth when a username is set (or the URL carries user info)."""
        pair = self._basic()
        return httpx.BasicAuth(*pair) if pair else None

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


# --------------------------------------------------------------------------- time limits


@dataclass(frozen=True)
class Limit:
    """When every request sent under it must be over, and how messages name that limit."""

    until: float
    """A :func:`time.monotonic` time."""
    seconds: float
    """The limit's length as configured (for messages)."""
    why: str
    """What set it: ``the investigation's deadline``, ``source_timeout``..."""


_LIMIT: contextvars.ContextVar[Limit | None] = contextvars.ContextVar(
    "correlator_http_limit", default=None
)


def current_limit() -> Limit | None:
    """The limit requests sent now are held to (``None``: only each backend's ``timeout``)."""
    return _LIMIT.get()


@contextmanager
def time_limit(until: float, seconds: float, why: str) -> Iterator[Limit]:
    """Hold every request sent in this context to end by ``until`` (a monotonic time).

    The whole request counts (connecting, sending, waiting, and every byte of
    the answer), not each read: a backend that trickles an answer is cut at
    ``until`` all the same, and its connection closed. A limit already in
    force that ends sooner stays in force. Threads started in this context
    keep the limit when their function is wrapped with :func:`carry`.
    """
    outer = _LIMIT.get()
    if outer is not None and outer.until <= until:
        yield outer
        return
    limit = Limit(until, seconds, why)
    token = _LIMIT.set(limit)
    try:
        yield limit
    finally:
        _LIMIT.reset(token)


def carry(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """``fn`` run in (a copy of) the caller's context, so that it keeps the time limit.

    Wrap each function handed to a thread pool: ``pool.submit(carry(fn), ...)``.
    """
    context = contextvars.copy_context()

    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        return context.run(fn, *args, **kwargs)

    return run


def _left(timeout: float | None, exc: type[Exception]) -> float | None:
    """``timeout`` for one socket operation, shortened to what the limit leaves."""
    limit = _LIMIT.get()
    if limit is None:
        return timeout
    left = limit.until - time.monotonic()
    if left <= 0:
        raise exc(f"cut at {limit.why}")
    return left if timeout is None else min(timeout, left)


class _LimitedStream(httpcore.NetworkStream):
    """A socket whose every operation ends by the limit in force (see :func:`time_limit`)."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(
            ssl_context, server_hostname, _left(timeout, httpcore.ConnectTimeout)
        )
        return _LimitedStream(inner)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _LimitedNetwork(httpcore.NetworkBackend):
    """httpcore's socket backend, each connection a :class:`_LimitedStream`."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(
            host, port, _left(timeout, httpcore.ConnectTimeout), local_address, socket_options
        )
        return _LimitedStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_unix_socket(
            path, _left(timeout, httpcore.ConnectTimeout), socket_options
        )
        return _LimitedStream(stream)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _LimitedTransport(httpx.HTTPTransport):
    """httpx's transport over :class:`_LimitedNetwork`: requests end by the limit in force."""

    def __init__(self, verify: bool | ssl.SSLContext, proxy: str | None) -> None:
        super().__init__(verify=verify, proxy=proxy)
        # httpcore takes its socket backend as a constructor argument that httpx does not
        # pass on; its pools (direct or through a proxy) keep it in this one attribute.
        pool: Any = self._pool
        pool._network_backend = _LimitedNetwork(pool._network_backend)


def _env_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``, ``NO_PROXY``...)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host or urllib.request.proxy_bypass(host):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(parts.scheme) or proxies.get("all") or None


def build_client(settings: HttpSettings) -> httpx.Client:
    """An :class:`httpx.Client` for ``settings``: TLS, proxy from the environment, timeouts.

    It carries no credentials and follows no redirects: :class:`HttpBackend`
    adds the credentials to each request to the backend's own origin and
    follows redirects itself, dropping them when a redirect leaves it. Every
    request through it ends by the limit in force (see :func:`time_limit`).
    """
    transport = _LimitedTransport(settings.ssl_verify(), _env_proxy(settings.url))
    return httpx.Client(
        transport=transport,
        timeout=settings.timeout,
        headers={"User-Agent": "correlator"},
        follow_redirects=False,
    )


# --------------------------------------------------------------------------- messages


#: The longest excerpt of an answer a message quotes.
EXCERPT = 160


def sanitize(text: str, hidden: Iterator[str] | list[str] | tuple[str, ...] = ()) -> str:
    """The first non-blank line of ``text``, safe to put in a message or report.

    Control characters become spaces, runs of space one; every value in
    ``hidden`` (the header values a request carried) and every known secret
    is masked (see :func:`correlator.redact.redact`); at most :data:`EXCERPT`
    characters are kept.
    """
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    line = " ".join("".join(ch if ch.isprintable() else " " for ch in line).split())
    for value in sorted((h for h in hidden if h), key=len, reverse=True):
        line = line.replace(value, _MASK)
    line = redact(line)
    return line if len(line) <= EXCERPT else line[:EXCERPT] + "..."


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.0f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB".replace(".0 MiB", " MiB")


def _seconds(x: float) -> str:
    return f"{x:.0f}s" if x >= 10 or abs(x - round(x)) < 0.05 else f"{x:.1f}s"


def _error_text(body: bytes) -> str:
    """The backend's own words: a JSON ``error`` field, else the text (first line later)."""
    text = body.decode("utf-8", errors="replace").strip()
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            for key in ("error", "message", "msg", "errors"):
                if parsed.get(key):
                    value = parsed[key]
                    return value if isinstance(value, str) else json.dumps(value)
    return text


class _TooBig(Exception):
    """An answer passed ``max_bytes``."""

    def __init__(self, seen: int, declared: bool) -> None:
        self.seen = seen
        self.declared = declared


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, url.port or default


# --------------------------------------------------------------------------- backend


class HttpBackend:
    """Sends requests to one backend with retries; translates failures to SourceError.

    Each request is held whole (connecting, waiting, every byte of the
    answer) to ``settings.timeout`` or the limit in force when it is sent
    (see :func:`time_limit`: the engine sets the investigation's), whichever
    ends sooner; its answer is read as a stream and cut past
    ``settings.max_bytes``. Redirects are followed here (at most
    :data:`MAX_REDIRECTS`); credentials and every configured header go only
    to the backend's own origin (scheme, host and port). Messages quote at
    most a sanitized first line of an answer (see :func:`sanitize`), never a
    header value.

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
        parts = urlsplit(settings.url)
        host = parts.netloc.rpartition("@")[2]  # user info goes as basic auth (settings.auth)
        self._base = urlunsplit((parts.scheme, host, parts.path, "", "")).rstrip("/")
        query = parts.query
        self._query = query
        self._origin = _origin(httpx.URL(self._base))
        self.requests = 0
        """Requests sent (attempts and redirects included)."""

    def close(self) -> None:
        """Close the client if this object built it."""
        if self._owns_client:
            self.client.close()

    @property
    def base_url(self) -> str:
        """The base URL without user info or query: safe to show, and to append paths to."""
        return self._base

    def url(self, path: str) -> str:
        """The full URL of ``path`` (the base URL may have a path prefix; its query string,
        if any, goes with every request's parameters, see :meth:`params`)."""
        return self._base + "/" + path.lstrip("/")

    def params(self, params: Params) -> Params:
        """``params`` after the base URL's own query parameters (``?api_key=...``)."""
        if not self._query:
            return params
        base: list[tuple[str, Any]] = parse_qsl(self._query, keep_blank_values=True)
        if params is None:
            return base
        if isinstance(params, Mapping):
            return base + [
                (k, x) for k, v in params.items() for x in (v if isinstance(v, list) else [v])
            ]
        return base + list(params)

    def where(self, path: str) -> str:
        """``Loki at http://loki:3100/loki/api/v1/labels``: the backend and URL, for messages
        (no credentials, no query)."""
        return f"{self.settings.display_name} at {redact_url(self._base + '/' + path.lstrip('/'))}"

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

    def _limit(self) -> Limit:
        """The limit this request is held to: the backend's timeout or the one in force."""
        own = Limit(
            time.monotonic() + self.settings.timeout,
            self.settings.timeout,
            "the backend's timeout",
        )
        outer = _LIMIT.get()
        return outer if outer is not None and outer.until < own.until else own

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
        """Send with retries; return a 2xx response (or one whose status is in ``ok``).

        The response's body has been read in full (at most ``max_bytes``).
        """
        url = self.url(path)
        where = self.where(path)
        attempts = self.settings.retries + 1
        delay = self.settings.backoff
        limit = self._limit()
        with time_limit(limit.until, limit.seconds, limit.why):
            for attempt in range(1, attempts + 1):
                last = attempt == attempts or time.monotonic() + delay >= limit.until
                self.requests += 1
                try:
                    response = self._send(method, url, params, data, json_body, headers)
                except (httpx.ConnectError, httpx.PoolTimeout) as exc:
                    if last:
                        raise SourceError(
                            f"{where}: cannot connect ({_exc_text(exc)}) after {attempt} "
                            f"attempt(s); is it running? check {self.settings.env_prefix}URL"
                        ) from exc
                    self._sleep(delay)
                    delay = min(delay * 2, self.settings.backoff_max)
                    continue
                except httpx.TimeoutException as exc:
                    cut = SourceError(f"{where}: {self._cut(limit)}")
                    cut.cut_at = limit.until  # type: ignore[attr-defined]  # time ran out
                    raise cut from exc
                except _TooBig as exc:
                    raise SourceError(f"{where}: {self._too_big(exc)}") from None
                except httpx.TooManyRedirects as exc:
                    raise SourceError(
                        f"{where}: more than {MAX_REDIRECTS} redirects; "
                        f"point {self.settings.env_prefix}URL at the final address"
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
                    if time.monotonic() + wait < limit.until:
                        self._sleep(wait)
                        delay = min(delay * 2, self.settings.backoff_max)
                        continue
                raise self._status_error(where, response, attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _cut(self, limit: Limit) -> str:
        why = limit.why
        if "deadline" in why:
            fix = "raise the deadline (CORRELATOR_DEADLINE) or narrow the query"
        elif "source_timeout" in why:
            fix = "raise source_timeout (CORRELATOR_SOURCE_TIMEOUT) or narrow the query"
        else:
            fix = f"raise {self.settings.env_prefix}TIMEOUT or narrow the query"
        return f"cut after {_seconds(limit.seconds)} ({why}); the backend is slow or hung; {fix}"

    def _too_big(self, exc: _TooBig) -> str:
        cap = _size(self.settings.max_bytes)
        said = "announced" if exc.declared else "sent more than"
        seen = f"{_size(exc.seen)}" if exc.declared else cap
        key = self.settings.name or "<key>"
        return (
            f"the answer was cut: the backend {said} {seen}, past the {cap} limit; "
            f"narrow the query or raise backends.{key}.max_bytes "
            f"({self.settings.env_prefix}MAX_BYTES)"
        )

    def _send(
        self,
        method: str,
        url: str,
        params: Params,
        data: Mapping[str, Any] | None,
        json_body: Any,
        headers: Mapping[str, str] | None,
    ) -> httpx.Response:
        """One attempt: redirects followed here, credentials only to our own origin."""
        secret = {**self.settings.request_headers(), **(headers or {})}
        auth = self.settings.auth()
        request = self.client.build_request(
            method, url, params=self.params(params), data=data, json=json_body, headers=secret
        )
        for hop in range(MAX_REDIRECTS + 1):
            response = self.client.send(request, auth=auth, stream=True, follow_redirects=False)
            try:
                location = response.headers.get("Location")
                if response.status_code not in _REDIRECT_STATUS or not location:
                    return self._read(response)
            finally:
                response.close()
            if hop == MAX_REDIRECTS:
                break
            self.requests += 1
            request, auth = self._redirect(request, response.status_code, location, auth)
        raise httpx.TooManyRedirects("too many redirects", request=request)

    def _redirect(
        self, request: httpx.Request, status: int, location: str, auth: httpx.BasicAuth | None
    ) -> tuple[httpx.Request, httpx.BasicAuth | None]:
        """The request a redirect asks for; without credentials once it leaves our origin."""
        target = request.url.join(location)
        method = request.method
        keep_body = status in (307, 308)
        if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
            method = "GET"
        headers = httpx.Headers(request.headers)
        for name in ("Host", "Content-Length", "Content-Type", "Transfer-Encoding"):
            if not keep_body or name == "Host":
                headers.pop(name, None)
        if _origin(target) != self._origin:
            # Every credential we add (and any the caller's headers carry) stays home.
            for name in (
                "Authorization",
                "Proxy-Authorization",
                "Cookie",
                "X-Api-Key",
                "X-Scope-OrgID",
                *self.settings.request_headers(),
            ):
                headers.pop(name, None)
            auth = None
        body = request.content if keep_body else None
        return httpx.Request(method, target, headers=headers, content=body), auth

    def _read(self, response: httpx.Response) -> httpx.Response:
        """The streamed ``response`` read whole, up to ``max_bytes``, as a plain response."""
        cap = self.settings.max_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > cap:
            raise _TooBig(int(declared), declared=True)
        chunks: list[bytes] = []
        seen = 0
        for chunk in response.iter_bytes():
            seen += len(chunk)
            if seen > cap:
                raise _TooBig(seen, declared=False)
            chunks.append(chunk)
        body = b"".join(chunks)
        del chunks
        # The body is decoded already: the new response must not decode it again.
        headers = [
            (k, v)
            for k, v in response.headers.multi_items()
            if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        ]
        return httpx.Response(
            response.status_code,
            headers=headers,
            content=body,
            request=response.request,
            extensions={k: v for k, v in response.extensions.items() if k != "network_stream"},
        )

    def _hidden(self) -> list[str]:
        """Every header value our requests carry: never quoted back from an answer."""
        values = [*self.settings.request_headers().values(), *self.settings.secrets()]
        return [v for v in values if len(v) >= MIN_SECRET]

    def excerpt(self, text: str) -> str:
        """What a message may quote of an answer's ``text`` (see :func:`sanitize`)."""
        return sanitize(text, self._hidden())

    def _status_error(self, where: str, response: httpx.Response, attempts: int) -> SourceError:
        status = response.status_code
        reason = response.reason_phrase or ""
        size = len(response.content)
        text = _error_text(response.content)
        detail = self.excerpt(text)
        msg = f"{where}: {status} {reason}".rstrip()
        if detail:
            msg += f": {detail}"
        if size and (not detail or detail.endswith("...") or "\n" in text.strip()):
            msg += f" ({_size(size)} answer)"
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
            return json.loads(response.content)
        except (ValueError, UnicodeDecodeError) as exc:
            start = self.excerpt(response.content[:200].decode("utf-8", errors="replace"))
            start = start[:60] + ("..." if len(start) > 60 else "")
            raise SourceError(
                f"{self.where(path)}: {response.status_code} answered with a body that is "
                f"not valid JSON ({_size(len(response.content))}, starts {start!r}); the "
                "response was truncated or this URL is not the expected API; check "
                f"{self.settings.env_prefix}URL"
            ) from exc


def _exc_text(exc: Exception) -> str:
    return redact(str(exc) or type(exc).__name__)[:200]


def _retry_after(response: httpx.Response, default: float, cap: float) -> float:
    raw = response.headers.get("Retry-After")
    if raw:
        try:
            return min(max(float(raw), 0.0), cap)
        except ValueError:
            pass
    return default

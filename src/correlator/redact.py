"""Keeping credentials out of every output: logs, error messages, reports and HTTP bodies.

A credential can reach correlator in several forms: user info in a URL
(``http://user:pw@host``), a query string (``?password=...``, ``?api_key=...``),
a header (``Authorization``, ``X-Api-Key``, any configured header), a token or
password given directly, through an environment variable or read from a file.

Two layers keep them out of what correlator writes:

- :func:`redact_url` rewrites a URL so that it shows no user info and no value
  of a query parameter whose name looks like a credential; use it whenever a
  URL is put into a message.
- :func:`register` records each secret *value* the configuration resolved
  (the settings of every HTTP backend register theirs when validated);
  :func:`redact` replaces every registered value, and any URL credential, in
  a text with ``***``. The first :func:`register` also installs a log-record
  factory, so every log line (message, arguments and traceback) is redacted
  whichever logger or handler writes it.

Values shorter than :data:`MIN_SECRET` characters are not registered (masking
every ``1`` in a log would make it unreadable); no real credential is that short.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = [
    "MASK",
    "MIN_SECRET",
    "SECRET_PARAM",
    "redact",
    "redact_url",
    "register",
    "url_secrets",
]

MASK = "***"
#: The shortest value :func:`register` records.
MIN_SECRET = 4
#: Query parameter names whose values are credentials (``password``, ``api_key``,
#: ``access_token``, ``sig``, ``X-Amz-Signature``...).
SECRET_PARAM = re.compile(
    r"pass|pwd|secret|token|key|auth|sig|credential|session|cookie|private", re.IGNORECASE
)
# user:password@ in any URL-like text (scheme://user:pw@host or user:pw@host in a DSN).
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s'\"]*@")
# name=value pairs of credential-looking names in query strings and DSNs.
_PAIR = re.compile(
    r"(?P<name>[A-Za-z0-9_.-]*(?:" + SECRET_PARAM.pattern + r")[A-Za-z0-9_.-]*)"
    r"(?P<sep>=)(?P<value>[^&\s'\";,]+)",
    re.IGNORECASE,
)
# A bearer credential that reached a text anyway (basic-auth values are registered).
_AUTH_VALUE = re.compile(r"\b(?P<kind>Bearer)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)

_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()
_pattern: re.Pattern[str] | None = None
_installed = False


def redact_url(url: str) -> str:
    """``url`` without user info and with credential-looking query values masked.

    ``http://user:pw@loki:3100/x?api_key=k&limit=5`` ->
    ``http://loki:3100/x?api_key=***&limit=5``.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return redact(url)
    netloc = parts.netloc
    if "@" in netloc:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{port}" if port else host
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(SECRET_PARAM.search(k) for k, _ in pairs):
            query = urlencode(
                [(k, MASK if SECRET_PARAM.search(k) else v) for k, v in pairs], safe="*"
            )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_secrets(url: str) -> list[str]:
    """The credentials written into ``url``: its password and credential-looking query values."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found = [parts.password] if parts.password else []
    found += [v for k, v in parse_qsl(parts.query) if v and SECRET_PARAM.search(k)]
    return found


def register(secrets: Iterable[str | None]) -> None:
    """Remember secret values so that :func:`redact` (and every log line) masks them."""
    global _secrets, _pattern
    new = {s for s in secrets if s and len(s) >= MIN_SECRET}
    with _lock:
        _install_log_redaction()
        if new <= _secrets:
            return
        _secrets = _secrets | new
        # Longest first, so that a secret containing another is masked whole.
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def redact(text: str) -> str:
    """``text`` with every registered secret, URL user info, credential-looking
    ``name=value`` pair and ``Bearer`` credential masked."""
    if not text:
        return text
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    text = _USERINFO.sub(lambda m: m.group("scheme"), text)
    text = _PAIR.sub(lambda m: f"{m.group('name')}{m.group('sep')}{MASK}", text)
    return _AUTH_VALUE.sub(lambda m: f"{m.group('kind')} {MASK}", text)


def _install_log_redaction() -> None:
    """Redact every log record at creation (message, arguments, traceback), once."""
    global _installed
    if _installed:
        return
    _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging reports it later, as ever
            return record
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(factory)

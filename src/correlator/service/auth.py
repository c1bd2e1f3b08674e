"""Who may call the service: a bearer token or HTTP basic auth.

Alertmanager's ``http_config`` sends either ``Authorization: Bearer <token>``
(``authorization: {credentials_file: ...}``) or ``Authorization: Basic ...``
(``basic_auth: {username, password_file}``). Both are compared in constant
time. Secrets come from an environment variable or a file, never from the
command line (where ``ps`` would show them) and are never logged or repr'd.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path

from correlator.errors import ConfigError

__all__ = ["Authenticator", "read_secret"]


def read_secret(
    env: str | None = None, file: str | None = None, what: str = "secret"
) -> str | None:
    """The secret in ``file`` (stripped of a trailing newline) or in variable ``env``.

    A file named but unreadable, or empty, is an error: starting without the
    secret the operator meant to set would open the service to everyone.
    """
    if file:
        try:
            value = Path(file).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as err:
            raise ConfigError(f"{what} file {file} cannot be read: {err.strerror}") from None
        if not value:
            raise ConfigError(f"{what} file {file} is empty; write the {what} into it")
        return value
    if env:
        value = os.environ.get(env, "")
        return value or None
    return None


@dataclass(frozen=True)
class Authenticator:
    """Checks an ``Authorization`` header against the configured credentials.

    With no credentials at all, :attr:`open` is true and every request passes
    (only when the operator asked for it with ``--no-auth``).
    """

    token: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.username is None) != (self.password is None):
            raise ConfigError(
                "basic auth needs both a username and a password; set --basic-user and "
                "--password-env (or --password-file)"
            )

    @property
    def open(self) -> bool:
        """True when no credentials are configured."""
        return self.token is None and self.username is None

    @property
    def schemes(self) -> list[str]:
        """The schemes accepted, for ``WWW-Authenticate``."""
        out = []
        if self.username is not None:
            out.append('Basic realm="correlator"')
        if self.token is not None:
            out.append('Bearer realm="correlator"')
        return out

    def check(self, header: str | None) -> bool:
        """True if ``header`` (the raw ``Authorization`` value) carries valid credentials."""
        if self.open:
            return True
        if not header:
            return False
        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        scheme = scheme.lower()
        if scheme == "bearer" and self.token is not None:
            return hmac.compare_digest(value.encode("utf-8"), self.token.encode("utf-8"))
        if scheme == "basic" and self.username is not None and self.password is not None:
            try:
                decoded = base64.b64decode(value.encode("ascii"), validate=True)
            except (binascii.Error, UnicodeEncodeError):
                return False
            user, sep, password = decoded.partition(b":")
            # Compare both parts every time so timing does not tell which was wrong.
            ok_user = hmac.compare_digest(user, self.username.encode("utf-8"))
            ok_pass = hmac.compare_digest(password, self.password.encode("utf-8"))
            return bool(sep) and ok_user and ok_pass
        return False

"""The root of correlator's exceptions.

Every error a user can meet derives from :class:`CorrelatorError` and carries a
message that names what went wrong and what to do; the CLI prints that message
(never a traceback) and exits with :attr:`CorrelatorError.exit_code`.

Exception tree::

    CorrelatorError                 exit 1 unless stated
     ├── UserInputError             exit 2: bad config, bad bundle, bad argument
     │    ├── ConfigError
     │    └── BundleError           names file, line and problem
     ├── NotFoundError              exit 3: no alert with that id
     └── SourceError (sources.py)   a backend could not answer
"""

from __future__ import annotations

__all__ = ["BundleError", "ConfigError", "CorrelatorError", "NotFoundError", "UserInputError"]


class CorrelatorError(Exception):
    """Base of every correlator error."""

    exit_code = 1


class UserInputError(CorrelatorError):
    """The user gave something we cannot use; the message says how to fix it."""

    exit_code = 2


class ConfigError(UserInputError):
    """A configuration value is invalid."""


class BundleError(UserInputError):
    """A scenario bundle is malformed.

    ``path`` and ``line`` locate the problem (``line`` is 1-based, or ``None``).
    """

    def __init__(self, path: str, problem: str, line: int | None = None) -> None:
        self.path = path
        self.line = line
        self.problem = problem
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {problem}")


class NotFoundError(CorrelatorError):
    """Nothing matches the requested id."""

    exit_code = 3

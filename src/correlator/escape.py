"""Putting untrusted values (alert labels, service names) into queries safely.

PromQL, LogQL and TraceQL all read double-quoted string literals with Go's
``strconv.Unquote`` rules, so one escaper serves the three: backslash and
double quote are escaped, and every control character (newline, tab, NUL...)
becomes a ``\\u00XX`` escape, so a value can neither end the literal early nor
break the query across lines. A hostile value such as ``"} or vector(1)``
stays inside its string.

Regex matchers (``=~``) need a second layer: the value's regex metacharacters
are escaped (RE2 syntax) *before* the string escaping, so ``a.b`` matches only
``a.b`` and ``.*`` matches only the two characters ``.*``.

Label and attribute *names* cannot be escaped; :func:`label_name` and
:func:`traceql_attribute` reject what is not a valid name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = [
    "label_name",
    "logql_string",
    "promql_regex",
    "promql_string",
    "regex_alternation",
    "regex_literal",
    "traceql_attribute",
    "traceql_regex",
    "traceql_string",
]

_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_ATTR_RE = re.compile(
    r"^(?:\.|(?:resource|span|event|link|instrumentation|trace)\.)?[A-Za-z_][A-Za-z0-9_.\-/:]*$"
)
_INTRINSICS = frozenset(
    {"name", "status", "statusMessage", "kind", "duration", "rootName", "rootServiceName",
     "traceDuration", "span:name", "span:status", "span:kind", "span:duration",
     "trace:rootName", "trace:rootService", "trace:duration"}
)  # fmt: skip
# RE2 metacharacters; escaping them with a backslash makes them literal.
_REGEX_META = frozenset("\\.+*?()|[]{}^$")


def _quote(value: str) -> str:
    out = ['"']
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def promql_string(value: str) -> str:
    """``value`` as a PromQL double-quoted string literal (quotes included)."""
    return _quote(str(value))


def logql_string(value: str) -> str:
    """``value`` as a LogQL string literal (label matcher value, line filter, label filter)."""
    return _quote(str(value))


def traceql_string(value: str) -> str:
    """``value`` as a TraceQL string literal."""
    return _quote(str(value))


def regex_literal(value: str) -> str:
    """A regex (RE2) that matches exactly ``value``: metacharacters escaped."""
    return "".join("\\" + ch if ch in _REGEX_META else ch for ch in str(value))


def regex_alternation(values: Iterable[str]) -> str:
    """A regex matching exactly one of ``values`` (each escaped), e.g. ``a|b\\.c``."""
    parts = sorted({regex_literal(v) for v in values})
    return "|".join(parts)


def promql_regex(values: Iterable[str]) -> str:
    """A quoted regex literal for ``label=~...`` matching exactly one of ``values``.

    PromQL and LogQL anchor label regexes at both ends, so ``a|b`` cannot
    match ``xa`` or ``ab``.
    """
    return _quote(regex_alternation(values))


def traceql_regex(values: Iterable[str]) -> str:
    """A quoted regex for TraceQL ``=~`` matching exactly one of ``values``.

    Anchored explicitly (``^(?:...)$``): older Tempo versions do not anchor.
    """
    return _quote("^(?:" + regex_alternation(values) + ")$")


def label_name(name: str) -> str:
    """``name`` if it is a valid Prometheus/Loki label name, else ``ValueError``."""
    if not _LABEL_RE.match(name):
        raise ValueError(f"{name!r} is not a valid label name (letters, digits, underscores)")
    return name


def traceql_attribute(name: str) -> str:
    """``name`` if it is a valid TraceQL attribute or intrinsic, else ``ValueError``."""
    if name in _INTRINSICS or _ATTR_RE.match(name):
        return name
    raise ValueError(f"{name!r} is not a valid TraceQL attribute name")

"""Escaping untrusted values into PromQL, LogQL and TraceQL."""

from __future__ import annotations

import json
import re

import pytest

from correlator.escape import (
    label_name,
    logql_string,
    promql_regex,
    promql_string,
    regex_alternation,
    regex_literal,
    traceql_attribute,
    traceql_regex,
    traceql_string,
)

HOSTILE = [
    '"} or vector(1)',
    "a\\b",
    "line\nbreak",
    "tab\there",
    ".*",
    "(a|b)+",
    "x$^[]{}?",
    "\x00\x7f",
    "ünï",
]


def _go_unquote(literal: str) -> str:
    """Go's strconv.Unquote for the escapes we emit (JSON decodes the same subset)."""
    assert literal[0] == literal[-1] == '"'
    return json.loads(literal)


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("quote", [promql_string, logql_string, traceql_string])
def test_string_literal_round_trips_and_stays_one_token(quote, value: str) -> None:  # type: ignore[no-untyped-def]
    lit = quote(value)
    assert _go_unquote(lit) == value
    inner = lit[1:-1]
    # No unescaped quote inside, no raw control characters.
    assert not re.search(r'(?<!\\)(?:\\\\)*"', inner)
    assert not any(ord(c) < 0x20 for c in lit)


@pytest.mark.parametrize("value", HOSTILE)
def test_regex_literal_matches_only_itself(value: str) -> None:
    rx = re.compile(regex_literal(value), re.DOTALL)
    assert rx.fullmatch(value)
    assert not rx.fullmatch(value + "x")
    assert not rx.fullmatch("anything else")


def test_alternation_and_quoted_regexes() -> None:
    alt = regex_alternation(["a.b", "c|d"])
    assert re.fullmatch(alt, "a.b") and re.fullmatch(alt, "c|d")
    assert not re.fullmatch(alt, "aXb") and not re.fullmatch(alt, "c")
    assert promql_regex(["a.b"]) == '"a\\\\.b"'
    t = _go_unquote(traceql_regex(["x", "y.z"]))
    assert t == "^(?:x|y\\.z)$"
    assert re.search(t, "y.z") and not re.search(t, "xy.z")


def test_names_are_validated_not_escaped() -> None:
    assert label_name("service_name") == "service_name"
    for bad in ("a-b", "1a", 'x"}', ""):
        with pytest.raises(ValueError, match="not a valid label name"):
            label_name(bad)
    assert traceql_attribute("resource.service.name") == "resource.service.name"
    assert traceql_attribute("span.http.route") == "span.http.route"
    assert traceql_attribute("duration") == "duration"
    with pytest.raises(ValueError, match="TraceQL attribute"):
        traceql_attribute('x" } || { true')

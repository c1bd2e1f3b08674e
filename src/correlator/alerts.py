"""Alertmanager's alert JSON as :class:`~correlator.model.Alert`: the one parser.

Every place an alert arrives as JSON reads it here: the Alertmanager adapter
(API v2), the webhook receiver, ``correlator investigate --alert-file``, the
library's ``investigate(payload)``, scenario bundles and stored
investigations. One alert object may come in any of the shapes Alertmanager
(or correlator) writes:

- API v2 (``GET /api/v2/alerts``): ``status`` is an object whose ``state`` is
  ``active``, ``suppressed`` or ``unprocessed``; ``active`` reads as firing.
- webhook version 4: ``status`` is ``"firing"`` or ``"resolved"``.
- :meth:`Alert.to_json <correlator.model.Alert.to_json>` output (stored
  investigations): as the webhook, with ``endsAt`` null when unknown.

A whole document (:func:`parse_alerts`) is a webhook body (``{"version": "4",
"alerts": [...]}``), a list of alert objects, or one alert object.

Times are RFC 3339 text or unix seconds; Go's zero time
(``0001-01-01T00:00:00Z``), which Alertmanager writes for "not set", reads as
unknown. A missing fingerprint is computed from the labels as Alertmanager
would (:func:`~correlator.fingerprint.alert_fingerprint`) unless the caller
requires one.

End times: Alertmanager's API lists firing alerts with an ``endsAt`` in the
future (the last update plus ``resolve_timeout``): a renewal deadline, not the
end of the incident. Given the current time (``now``), such an ``endsAt``
reads as unknown (``Alert.ends_at = None``; the engine then takes the alert to
end where it started and widens the window from there); one already past is a
real end. An alert may state its known end in the ``correlator_ends_at``
annotation (:data:`ENDS_AT_ANNOTATION`): ``correlator lab`` sets it when it
replays a past incident, since Alertmanager cannot keep an alert active whose
``endsAt`` has passed. Every problem is an :class:`AlertFormatError` whose message
names the field and what is wrong with it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from correlator.errors import NotFoundError, UserInputError
from correlator.fingerprint import alert_fingerprint
from correlator.model import Alert, parse_time

__all__ = [
    "ENDS_AT_ANNOTATION",
    "WEBHOOK_VERSION",
    "AlertFormatError",
    "alert_metrics",
    "choose_alert",
    "load_alert_file",
    "parse_alert",
    "parse_alerts",
]

#: The annotation that states a firing alert's known end (RFC 3339).
ENDS_AT_ANNOTATION = "correlator_ends_at"
#: The Alertmanager webhook payload version this parser understands.
WEBHOOK_VERSION = "4"

_FINGERPRINT = re.compile(r"^[0-9a-fA-F]{1,64}$")
# Go's zero time.Time, which Alertmanager writes for an unset time.
_GO_ZERO_YEAR = "0001-"
# Unix seconds past this are milliseconds by mistake (year 5138).
_MAX_SECONDS = 1e11


class AlertFormatError(UserInputError):
    """An alert (or a document of alerts) is malformed.

    ``problem`` is the message: which alert, which field, what is wrong.
    """

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(problem)


def _text_map(value: object, where: str, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise AlertFormatError(f"{where}.{what} must be an object of text values")
    out: dict[str, str] = {}
    for key, text in value.items():
        if not isinstance(key, str) or not key:
            raise AlertFormatError(f"{where}.{what} has an empty or non-text name {key!r}")
        if not isinstance(text, str):
            raise AlertFormatError(f"{where}.{what}.{key} must be text, got {text!r}")
        out[key] = text
    return out


def _time(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise AlertFormatError(f"{where} must be an RFC 3339 time, got {value!r}")
    try:
        ts = parse_time(value)
    except (ValueError, OverflowError):
        raise AlertFormatError(
            f"{where} {value!r} is not an RFC 3339 time (e.g. 2026-03-02T09:00:00Z)"
        ) from None
    if ts > _MAX_SECONDS:
        raise AlertFormatError(f"{where} {value!r} looks like milliseconds; use seconds")
    return ts


def _end(value: object, where: str) -> float | None:
    if value is None or value == "" or (isinstance(value, str) and value.startswith(_GO_ZERO_YEAR)):
        return None
    return _time(value, where)


def _known_end(
    ends_at: float | None, annotations: Mapping[str, str], starts_at: float, now: float
) -> float | None:
    """The end of a listed alert when it is known (see the module docstring), else ``None``."""
    stated = annotations.get(ENDS_AT_ANNOTATION)
    if stated:
        try:
            known = parse_time(stated)
        except (ValueError, OverflowError):
            known = None  # a garbled annotation is no reason to lose the alert
        if known is not None and known >= starts_at:
            return known
    return ends_at if ends_at is not None and ends_at <= now else None


def _status(value: object, where: str) -> str:
    if value is None:
        return "firing"
    state = value.get("state", "active") if isinstance(value, Mapping) else value
    if not isinstance(state, str) or not state:
        raise AlertFormatError(
            f"{where}.status must be 'firing' or 'resolved' (webhook) or an object with "
            f"a 'state' (API v2), got {value!r}"
        )
    return "firing" if state == "active" else state


def _fingerprint(obj: Mapping[str, Any], labels: dict[str, str], where: str, required: bool) -> str:
    fp = obj.get("fingerprint")
    if fp is None or fp == "":
        if required:
            raise AlertFormatError(
                f"{where} ({labels.get('alertname', '?')}) has no 'fingerprint'; "
                f"Alertmanager would give it {alert_fingerprint(labels)}"
            )
        return alert_fingerprint(labels)
    if not isinstance(fp, str) or not _FINGERPRINT.match(fp):
        raise AlertFormatError(
            f"{where}.fingerprint {fp!r} is not a hex fingerprint like 3fb1b9b26b2b8f12"
        )
    return fp.lower()


def parse_alert(
    obj: object,
    *,
    source: str = "",
    where: str = "alert",
    require_fingerprint: bool = False,
    now: float | None = None,
) -> Alert:
    """One Alertmanager alert object (API v2, webhook v4 or stored) as an :class:`Alert`.

    ``where`` names the object in messages (``alerts[2]``); ``source`` is kept
    on the alert (where it came from). ``labels`` (at least one) and
    ``startsAt`` are required; ``fingerprint`` too when ``require_fingerprint``.
    ``now`` (unix seconds) applies the end-time rules of alerts Alertmanager
    lists (module docstring); without it ``endsAt`` is taken as written.
    Raises :class:`AlertFormatError`.
    """
    if not isinstance(obj, Mapping):
        raise AlertFormatError(
            f"{where} must be a JSON object (an Alertmanager alert), got {type(obj).__name__}"
        )
    labels = _text_map(obj.get("labels"), where, "labels")
    if not labels:
        raise AlertFormatError(
            f"{where} has no 'labels' object; an Alertmanager alert needs at least alertname"
        )
    if "startsAt" not in obj:
        raise AlertFormatError(
            f"{where} has no 'startsAt'; give the time the alert began firing "
            "(e.g. 2026-03-02T09:00:00Z)"
        )
    url = obj.get("generatorURL")
    if url is not None and not isinstance(url, str):
        raise AlertFormatError(f"{where}.generatorURL must be text, got {url!r}")
    annotations = _text_map(obj.get("annotations"), where, "annotations")
    starts_at = _time(obj["startsAt"], f"{where}.startsAt")
    ends_at = _end(obj.get("endsAt"), f"{where}.endsAt")
    if now is not None:
        ends_at = _known_end(ends_at, annotations, starts_at, now)
    return Alert(
        fingerprint=_fingerprint(obj, labels, where, require_fingerprint),
        labels=labels,
        annotations=annotations,
        starts_at=starts_at,
        ends_at=ends_at,
        status=_status(obj.get("status"), where),
        generator_url=url or "",
        source=source,
    )


def parse_alerts(doc: object, *, source: str = "", now: float | None = None) -> list[Alert]:
    """Every alert of a document: a webhook v4 body, a list of alert objects, or one alert.

    ``now`` as for :func:`parse_alert`. Raises :class:`AlertFormatError`, naming
    the alert (``alerts[1]``).
    """
    if isinstance(doc, Mapping) and "alerts" in doc:
        version = doc.get("version", WEBHOOK_VERSION)
        if version != WEBHOOK_VERSION:
            raise AlertFormatError(
                f"webhook payload version {str(version)[:20]!r} is not supported; "
                f'correlator reads Alertmanager\'s version "{WEBHOOK_VERSION}"'
            )
        items = doc["alerts"]
        if not isinstance(items, list):
            raise AlertFormatError("'alerts' must be a list of Alertmanager alerts")
        where = "alerts[{}]"
    elif isinstance(doc, list):
        items, where = doc, "[{}]"
    elif isinstance(doc, Mapping):
        return [parse_alert(doc, source=source, where="the alert", now=now)]
    else:
        raise AlertFormatError(
            "expected an Alertmanager webhook body (an object with 'alerts'), an alert "
            f"object or a list of them; got {type(doc).__name__}"
        )
    if not items:
        raise AlertFormatError("the document holds no alerts")
    return [
        parse_alert(a, source=source, where=where.format(i), now=now) for i, a in enumerate(items)
    ]


def choose_alert(alerts: Sequence[Alert], alert_id: str | None = None, where: str = "") -> Alert:
    """The alert to investigate among several (e.g. one webhook notification's).

    With ``alert_id``: the alert with that fingerprint or unique prefix of it
    (:class:`~correlator.errors.NotFoundError` if none, a
    :class:`~correlator.errors.UserInputError` if several match). Without: the
    first firing alert, else (every alert resolved) the first one.
    """
    where = where or "the document"
    if not alerts:
        raise AlertFormatError(f"{where} holds no alerts")
    if alert_id is None:
        firing = [a for a in alerts if a.status == "firing"]
        return firing[0] if firing else alerts[0]
    wanted = alert_id.strip().lower()
    hits = [a for a in alerts if a.fingerprint.startswith(wanted)] if wanted else []
    exact = [a for a in hits if a.fingerprint == wanted]
    if exact:
        return exact[0]
    if len(hits) > 1:
        raise UserInputError(
            f"alert id {alert_id!r} matches {len(hits)} alerts in {where} "
            f"({', '.join(a.fingerprint for a in hits[:5])}); give more digits"
        )
    if not hits:
        ids = ", ".join(a.fingerprint for a in alerts[:10])
        raise NotFoundError(f"no alert with id {alert_id!r} in {where}; its alerts are {ids}")
    return hits[0]


def load_alert_file(path: Path, alert_id: str | None = None) -> Alert:
    """The alert to investigate from a JSON file (see :func:`parse_alerts`, :func:`choose_alert`).

    Every problem (unreadable file, bad JSON, wrong shape) is a
    :class:`~correlator.errors.UserInputError` naming the file.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise UserInputError(
            f"cannot read alert file {path}: {why}; pass an Alertmanager webhook body "
            "or alert saved as UTF-8 JSON"
        ) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserInputError(
            f"{path}:{err.lineno}: not valid JSON: {err.msg} (column {err.colno}); "
            "an alert file is an Alertmanager webhook body or alert as JSON"
        ) from None
    try:
        # Saved from Alertmanager's API, a firing alert's endsAt is a renewal deadline.
        alerts = parse_alerts(doc, source=f"file:{path}", now=time.time())
    except AlertFormatError as err:
        raise AlertFormatError(f"{path}: {err.problem}") from None
    return choose_alert(alerts, alert_id, str(path))


#: PromQL words that are not metric names (functions, aggregations, keywords).
_PROMQL_WORDS = frozenset(
    [
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "rate",
        "irate",
        "increase",
        "delta",
        "idelta",
        "deriv",
        "histogram_quantile",
        "abs",
        "ceil",
        "floor",
        "round",
        "clamp",
        "clamp_min",
        "clamp_max",
        "label_replace",
        "label_join",
        "avg_over_time",
        "max_over_time",
        "min_over_time",
        "sum_over_time",
        "count_over_time",
        "quantile_over_time",
        "last_over_time",
        "absent",
        "absent_over_time",
        "vector",
        "scalar",
        "time",
        "timestamp",
        "sort",
        "sort_desc",
        "exp",
        "ln",
        "log2",
        "log10",
        "sqrt",
        "predict_linear",
        "holt_winters",
        "resets",
        "changes",
        "inf",
        "nan",
    ]
)
_IDENT = re.compile(r"(?<![\w:\"'])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])")


def alert_metrics(alert: Alert) -> tuple[str, ...]:
    """The metric names in the expression of the rule that fired (from its ``generatorURL``,
    a Prometheus graph link with ``g0.expr``), first mention first; ``()`` when unknown.

    Label names and values, durations and PromQL's own words are left out.
    """
    from urllib.parse import parse_qs, urlsplit

    try:
        query = parse_qs(urlsplit(alert.generator_url).query)
    except ValueError:
        return ()
    expr = next(iter(query.get("g0.expr", [])), "")
    if not expr:
        return ()
    # Drop label matchers ({...}), grouping lists (by/without (...)) and durations ([5m]).
    bare = re.sub(r"\{[^}]*\}", " ", expr)
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    bare = re.sub(r"\[[^\]]*\]", " ", bare)
    bare = re.sub(r'"[^"]*"', " ", bare)
    out: list[str] = []
    for m in _IDENT.finditer(bare):
        word = m.group(1)
        if word.lower() in _PROMQL_WORDS or word in out:
            continue
        if bare[m.end() :].lstrip().startswith("("):
            continue  # a function call
        out.append(word)
    return tuple(out)

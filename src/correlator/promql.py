"""PromQL text for catalog signal specs, and the time scales the queries use.

This module is the one PromQL renderer: :func:`render` is exactly what the
Prometheus adapter sends (and what evidence shows), :func:`render_chain` its
fallback, :func:`selector` the series selector both use (and
:meth:`correlator.catalog.SignalSpec.selector`). The bundle backend computes
the same values in numpy (``correlator.adapters.bundle``).

Every string literal goes through :func:`correlator.escape.promql_string`,
which follows PromQL's string-literal rules (Go's ``strconv.Unquote``):
backslash and double quote are escaped, and control characters (newline,
tab, ...) become escapes, so a label value can neither end the literal nor
split the query. Label names cannot be escaped; they are validated.

Service attribution: a series belongs to the first non-empty of the spec's
``service_labels``; the name ``pod`` in that list stands for the pod name
without its Deployment/StatefulSet suffix (as
:func:`correlator.catalog.service_from_pod` does), and when ``pod`` is not
listed it is tried last. The query partitions the series by which label
decides, so that the common case aggregates by a real label with no
per-series regex work::

    sum by (service_name) (rate(x{service_name!=""}[1m]))
    or sum by (service) (rate(x{service_name="",service!=""}[1m]))
    or sum by (correlator_service) (label_replace(
         rate(x{service_name="",service="",pod!=""}[1m]),
         "correlator_service", "$1", "pod", "(?s)(.+?)(?:-[0-9a-z]{5,10}-[0-9a-z]{5}|-[0-9]+)?"))

Time scales (issue #12, part A): the sample interval is learned from the
data (:func:`sample_interval`), the step follows it (:func:`choose_step`)
and the ``rate()`` range is Grafana's ``$__rate_interval`` convention,
``max(step + interval, 4 * interval)`` (:func:`rate_range`): four samples at
least, and one step plus one sample so that consecutive windows overlap.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from correlator.catalog import SERVICE_LABELS, Catalog, Matcher, SignalSpec
from correlator.escape import label_name, promql_string, regex_alternation

__all__ = [
    "MAX_POINTS",
    "PART_LABEL",
    "POD_REGEX",
    "SERVICE_LABEL",
    "choose_step",
    "duration",
    "escape",
    "matcher",
    "members_query",
    "rate_range",
    "render",
    "render_chain",
    "render_counts",
    "render_generic",
    "render_interval",
    "render_samples",
    "sample_interval",
    "selector",
    "service_labels",
    "service_of",
    "snap_interval",
]

#: The most grid points :func:`choose_step` gives a baseline plus window.
MAX_POINTS = 1500
#: The label the attribution writes (a name no exporter uses).
SERVICE_LABEL = "correlator_service"
#: The label :func:`render_counts` numbers its parts with.
PART_LABEL = "correlator_part"
#: A pod name without its Deployment (``-<hash>-<5 chars>``) or StatefulSet
#: (``-<ordinal>``) suffix, in one anchored RE2 regex: the lazy prefix takes
#: the first suffix that fits, and a Deployment suffix (two segments) starts
#: before a StatefulSet one (one segment), so the precedence is that of
#: :func:`correlator.catalog.service_from_pod`.
POD_REGEX = "(?s)(.+?)(?:-[0-9a-z]{5,10}-[0-9a-z]{5}|-[0-9]+)?"
_DEPLOYMENT_POD = "(?s)(.+)-[0-9a-z]{5,10}-[0-9a-z]{5}"
# (?s): a label value may hold a newline, and "." must match it too.
_ANY = "(?s)(.+)"
_STATEFUL_POD = "(?s)(.+)-[0-9]+"
#: Scrape intervals people configure; an estimate near one is taken as it.
COMMON_INTERVALS = (1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
#: Assumed sample interval when neither the data nor the backend tells (Grafana's default).
DEFAULT_INTERVAL = 15.0


# --------------------------------------------------------------------------- time scales


def sample_interval(times: Iterable[npt.NDArray[np.float64]]) -> float | None:
    """The typical spacing (seconds) of samples in these timestamp arrays, ``None`` if unknown.

    Per array, the median of its positive spacings (robust to gaps: a few
    missed scrapes do not move a median); over arrays, the median of those,
    so one odd series does not set the scale. Rounded to milliseconds.
    """
    per: list[float] = []
    for ts in times:
        if len(ts) < 2:
            continue
        d = np.diff(ts)
        d = d[d > 0]
        if len(d):
            per.append(float(np.median(d)))
    if not per:
        return None
    return snap_interval(float(np.median(per)))


def snap_interval(seconds: float) -> float:
    """An interval estimate rounded to what scrapers are configured with.

    Scrape jitter and window edges move an estimate by a few percent; a value
    within 5 % of a common scrape interval (:data:`COMMON_INTERVALS`) is taken
    as that interval, else within 5 % of whole seconds as whole seconds (so both
    backends, estimating differently, agree on the ``rate()`` range), else it
    is kept to the millisecond.
    """
    for common in COMMON_INTERVALS:
        if abs(seconds - common) <= 0.05 * common:
            return common
    whole = round(seconds)
    if whole >= 1 and abs(seconds - whole) <= 0.05 * seconds:
        return float(whole)
    return max(round(seconds, 3), 0.001)


def choose_step(span: float, interval: float | None, max_points: int = MAX_POINTS) -> float:
    """The query step (seconds) for ``span`` seconds of data sampled every ``interval``.

    Never finer than the interval (finer points repeat samples), and coarse
    enough that the span has at most ``max_points`` points: a whole multiple
    of the interval. With the interval unknown, :data:`DEFAULT_INTERVAL` stands in.
    """
    base = interval if interval and interval > 0 else DEFAULT_INTERVAL
    k = max(1, math.ceil(max(span, 0.0) / max(max_points - 1, 1) / base))
    return round(k * base, 3)


def rate_range(step: float, interval: float | None) -> float:
    """The ``rate()`` range (seconds): ``max(step + interval, 4 * interval)``.

    Grafana's ``$__rate_interval``: at least four samples in every range, and
    a range longer than a step so no sample falls between two windows. With
    the interval unknown, the step stands in for it (``4 * step``). Rounded
    up to whole milliseconds, the finest duration PromQL states.
    """
    iv = interval if interval and interval > 0 else step
    return math.ceil(max(step + iv, 4 * iv) * 1000 - 1e-6) / 1000


def duration(seconds: float) -> str:
    """Seconds as a PromQL duration: ``90s``, or ``1500ms`` when not whole seconds."""
    ms = max(math.ceil(seconds * 1000 - 1e-6), 1)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


# --------------------------------------------------------------------------- text


def escape(value: str) -> str:
    """``value`` escaped for the inside of a double-quoted PromQL literal (no quotes)."""
    return promql_string(value)[1:-1]


def matcher(m: Matcher) -> str:
    """One label matcher, e.g. ``status=~"5.."`` (name validated, value escaped)."""
    return f"{label_name(m.label)}{m.op}{promql_string(m.value)}"


def selector(spec: SignalSpec, extra: Sequence[str] = ()) -> str:
    """The series selector of ``spec`` (``_bucket`` for histograms), plus ``extra`` matchers."""
    parts = [matcher(m) for m in spec.matchers]
    parts += extra
    name = spec.metric + ("_bucket" if spec.kind == "histogram" and spec.metric else "")
    if not name and not parts:
        raise ValueError(f"role {spec.role!r}: a spec needs a metric or a matcher")
    return f"{name}{{{','.join(parts)}}}" if parts else name


def service_labels(spec: SignalSpec, present: Collection[str] | None = None) -> list[str]:
    """The labels that name a series' service, in precedence order, ``pod`` included.

    ``present``: the label names the data has at all (``None``: unknown). A label
    no series carries is empty everywhere, so its partition is empty and its
    ``label=""`` matcher always true: leaving it out changes no value, only
    shortens the query (the first label stays, so the query stays valid).
    """
    labels = list(dict.fromkeys(label_name(lbl) for lbl in spec.service_labels))
    labels = labels if "pod" in labels else [*labels, "pod"]
    if present is None:
        return labels
    return [lbl for lbl in labels if lbl in present] or labels[:1]


def _dims(spec: SignalSpec) -> list[str]:
    return sorted({label_name(v) for v in spec.dims.values()})


def _by(*groups: Sequence[str]) -> str:
    return ", ".join(dict.fromkeys(lbl for g in groups for lbl in g))


def service_of(labels: Mapping[str, str], spec: SignalSpec) -> str:
    """The service of a series :func:`render` (or :func:`render_chain`) returned ("" when none)."""
    for lbl in (*service_labels(spec), SERVICE_LABEL):
        value = labels.get(lbl) if lbl != "pod" else None
        if value:
            return value
    return ""


def _range(step: float, interval: float | None, rate_window: float | None) -> str:
    return duration(rate_window if rate_window is not None else rate_range(step, interval))


def _scaled(expr: str, spec: SignalSpec) -> str:
    return f"({expr}) * {spec.scale!r}" if spec.scale != 1.0 else expr


def _partition(spec: SignalSpec, rng: str, label: str, extra: Sequence[str]) -> str:
    """One partition: the series whose service ``label`` decides (``pod``: the pod name)."""
    sel = selector(spec, extra)
    dims = _dims(spec)
    le = ["le"] if spec.kind == "histogram" else []
    if spec.kind in ("counter", "histogram"):
        inner, agg = f"rate({sel}[{rng}])", "sum"
    else:
        inner, agg = sel, spec.agg
    if label != "pod":
        expr = f"{agg} by ({_by(le, [label], dims)}) ({inner})"
    else:
        # Pod is a dimension: aggregate by pod (and the dimensions), then name the
        # service of each pod. Otherwise name the service of every series, then
        # aggregate once, so that sums add up in the same order as render_chain's.
        per_pod = "pod" in dims and spec.kind != "histogram"
        grouped = f"{agg} by ({_by(le, ['pod'], dims)}) ({inner})" if per_pod else inner
        expr = (
            f"label_replace({grouped}, {promql_string(SERVICE_LABEL)}, {promql_string('$1')}, "
            f"{promql_string('pod')}, {promql_string(POD_REGEX)})"
        )
        if not per_pod:
            expr = f"{agg} by ({_by(le, [SERVICE_LABEL], dims)}) ({expr})"
    if spec.kind == "histogram":
        expr = f"histogram_quantile({spec.quantile:g}, {expr})"
    return expr


def render(
    spec: SignalSpec,
    step: float = 60.0,
    interval: float | None = None,
    rate_window: float | None = None,
    present: Collection[str] | None = None,
) -> str:
    """The PromQL that computes ``spec`` per service (and dimension), sampled at ``step``.

    ``interval`` is the data's sample interval (it sets the ``rate()`` range,
    :func:`rate_range`); ``rate_window`` overrides that range. The series are
    partitioned by the label that names their service (see the module
    docstring; ``present`` leaves out labels the data does not have, see
    :func:`service_labels`); :func:`service_of` reads the service back.
    """
    rng = _range(step, interval, rate_window)
    labels = service_labels(spec, present)
    parts = [
        _partition(spec, rng, lbl, [f'{p}=""' for p in labels[:i]] + [f'{lbl}!=""'])
        for i, lbl in enumerate(labels)
    ]
    return _scaled(" or ".join(parts), spec)


def _attribute(expr: str, spec: SignalSpec, present: Collection[str] | None = None) -> str:
    """Wrap ``expr`` so that SERVICE_LABEL holds the series' service."""
    # Later label_replace calls overwrite earlier ones, so the most preferred
    # source comes last: service labels from last to first, the pod name in its place.
    steps: list[tuple[str, str]] = []
    for lbl in reversed(service_labels(spec, present)):
        if lbl == "pod":
            steps += [("pod", _ANY), ("pod", _STATEFUL_POD), ("pod", _DEPLOYMENT_POD)]
        else:
            steps.append((lbl, _ANY))
    for label, regex in steps:
        expr = (
            f"label_replace({expr}, {promql_string(SERVICE_LABEL)}, {promql_string('$1')}, "
            f"{promql_string(label)}, {promql_string(regex)})"
        )
    return expr


def render_chain(
    spec: SignalSpec,
    step: float = 60.0,
    interval: float | None = None,
    rate_window: float | None = None,
    present: Collection[str] | None = None,
) -> str:
    """``spec`` as one aggregation over every series, attributed by a ``label_replace`` chain.

    The same values as :func:`render`, whatever the labels; slower, since
    the chain runs on every raw series at every step. The adapter falls back
    to it when a service spans partitions and its values cannot be combined
    client-side (histogram quantiles, averages).
    """
    rng = _range(step, interval, rate_window)
    by = [SERVICE_LABEL, *_dims(spec)]
    sel = selector(spec)
    if spec.kind == "counter":
        expr = f"sum by ({_by(by)}) ({_attribute(f'rate({sel}[{rng}])', spec, present)})"
    elif spec.kind == "histogram":
        inner = _attribute(f"rate({sel}[{rng}])", spec, present)
        expr = f"histogram_quantile({spec.quantile:g}, sum by ({_by(['le'], by)}) ({inner}))"
    else:  # gauge, info
        expr = f"{spec.agg} by ({_by(by)}) ({_attribute(sel, spec, present)})"
    return _scaled(expr, spec)


# --------------------------------------------------------------------------- probes


def render_interval(catalog: Catalog | None = None) -> list[str]:
    """Queries naming a few series to learn the sample interval from, tried in order.

    ``topk(3, ...)`` of ``up`` (written once per scrape), then of the series
    ``catalog`` names; :func:`render_samples` then reads their raw samples.
    """
    selectors = ["up"]
    if catalog is not None:
        names = sorted(
            {
                s.metric + ("_bucket" if s.kind == "histogram" else "")
                for s in catalog.all_specs()
                if s.metric
            }
        )
        if names:
            selectors.append(f"{{__name__=~{promql_string(regex_alternation(names))}}}")
    return [f"topk(3, {sel})" for sel in selectors]


def render_samples(labels: Mapping[str, str], reach: float) -> str:
    """The raw samples of the one series with exactly these ``labels`` over ``reach`` seconds."""
    matchers = [f"{label_name(k)}={promql_string(v)}" for k, v in sorted(labels.items())]
    return "{" + ",".join(matchers) + "}[" + duration(reach) + "]"


def render_generic(
    exclude: str | None = None, present: Collection[str] | None = None
) -> list[tuple[str, str]]:
    """The uncatalogued-series queries: ``(label the service is read from, query)`` each.

    One per identity of :data:`correlator.catalog.SERVICE_LABELS`, partitioned
    like :func:`render`: ``sum by (__name__, <label>, le, quantile)`` of every
    series whose first non-empty identity is that label (``pod``: the pod name,
    into :data:`SERVICE_LABEL`). ``exclude`` is a regex of sample names left out
    (the families a catalog role used; :func:`correlator.generic.taken_regex`).
    """
    labels = service_labels(SignalSpec("series", "", "gauge", SERVICE_LABELS), present)
    names = ['__name__=~".+"'] + ([f"__name__!~{promql_string(exclude)}"] if exclude else [])
    out: list[tuple[str, str]] = []
    for i, label in enumerate(labels):
        sel = "{" + ",".join([*names, *(f'{p}=""' for p in labels[:i]), f'{label}!=""']) + "}"
        if label == "pod":
            inner = (
                f"label_replace({sel}, {promql_string(SERVICE_LABEL)}, {promql_string('$1')}, "
                f"{promql_string('pod')}, {promql_string(POD_REGEX)})"
            )
            out.append(
                (SERVICE_LABEL, f"sum by (__name__, {SERVICE_LABEL}, le, quantile) ({inner})")
            )
        else:
            out.append((label, f"sum by (__name__, {label}, le, quantile) ({sel})"))
    return out


def members_query(query: str) -> str:
    """The ``count by`` of a :func:`render_generic` query's ``sum by``: how many series each
    sum had (see :func:`correlator.generic.derive`)."""
    if not query.startswith("sum by "):
        raise ValueError(f"not a generic query: {query!r}")
    return "count by " + query[len("sum by ") :]


def render_counts(queries: Sequence[str]) -> str:
    """One instant query counting each query's series, numbered by :data:`PART_LABEL`."""
    return " or ".join(
        f"label_replace(count({q}) or vector(0), {promql_string(PART_LABEL)}, "
        f"{promql_string(str(i))}, {promql_string('')}, {promql_string('')})"
        for i, q in enumerate(queries)
    )

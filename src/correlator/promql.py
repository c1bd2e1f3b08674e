"""PromQL text for catalog signal specs.

:func:`render` is what the Prometheus adapter sends and what evidence shows;
the bundle backend computes the same thing in pandas (see
``correlator.adapters.bundle``). The grouping keeps every label the service
can come from (``service_labels``, plus ``pod`` for the pod-name fallback)
and the dimension labels; attributing a series to one service (first
non-empty label) happens client-side, after the query.
"""

from __future__ import annotations

from correlator.catalog import SignalSpec

__all__ = ["escape", "group_labels", "range_seconds", "render"]


def escape(value: str) -> str:
    """Escape a string for a double-quoted PromQL literal."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def range_seconds(step: float) -> int:
    """The rate() range for a step: ``max(4 * step, 60s)``, whole seconds."""
    return int(max(4 * step, 60))


def group_labels(spec: SignalSpec, pod: bool = True) -> tuple[str, ...]:
    """The ``by (...)`` labels of a spec: service labels, ``pod``, dimension labels."""
    out: list[str] = []
    extra = ("pod",) if pod else ()
    for label in (*spec.service_labels, *extra, *spec.dims.values()):
        if label and label not in out:
            out.append(label)
    return tuple(out)


def _selector(spec: SignalSpec) -> str:
    parts = [f'{m.label}{m.op}"{escape(m.value)}"' for m in spec.matchers]
    name = spec.metric + ("_bucket" if spec.kind == "histogram" and spec.metric else "")
    if not parts:
        return name
    return name + "{" + ",".join(parts) + "}"


def render(spec: SignalSpec, step: float = 60.0) -> str:
    """The PromQL for ``spec`` evaluated at ``step`` (see ``correlator.catalog``)."""
    sel = _selector(spec)
    rng = f"{range_seconds(step)}s"
    if spec.kind == "counter":
        expr = f"sum by ({', '.join(group_labels(spec))}) (rate({sel}[{rng}]))"
    elif spec.kind == "histogram":
        by = ", ".join(("le", *group_labels(spec, pod=False)))
        expr = f"histogram_quantile({spec.quantile:g}, sum by ({by}) (rate({sel}[{rng}])))"
    else:
        expr = f"{spec.agg} by ({', '.join(group_labels(spec))}) ({sel})"
    if spec.scale != 1.0:
        expr = f"{expr} * {spec.scale:g}"
    return expr

"""Pictures of an investigation (matplotlib, Agg; no pyplot state).

Three figures tell the story of an incident at a glance:

* :func:`plot_signals`: a suspect's signals over the window, with the
  baseline band, each anomaly's onset and the time the alert fired;
* :func:`plot_topology`: the service graph, caller -> callee, left to right,
  with the root-cause candidate, the blast radius, other anomalous services
  and healthy ones told apart by colour, a legend and labels;
* :func:`plot_evidence`: the evidence of a finding as a table.

Figures are plain :class:`matplotlib.figure.Figure` objects on an Agg canvas,
made without :mod:`matplotlib.pyplot`, so the webhook service can render
them from any thread. :func:`figure_png` and :func:`figure_data_uri` turn
one into bytes for a page.
"""

from __future__ import annotations

import base64
import io
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import matplotlib

matplotlib.use("Agg")  # never open a window, whatever the caller's default is

import matplotlib.dates as mdates
import networkx as nx
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from correlator.model import Evidence, Finding, Investigation, format_time

__all__ = [
    "COLORS",
    "MAX_TOPOLOGY_NODES",
    "NodeRoles",
    "figure_data_uri",
    "figure_png",
    "figure_svg",
    "node_roles",
    "plain",
    "plot_evidence",
    "plot_signals",
    "plot_topology",
    "suspect_roles",
    "suspects",
]

#: Node colours, by what the node is to the incident.
COLORS = {
    "root": "#c0392b",
    "blast": "#f39c12",
    "anomalous": "#f7dc6f",
    "healthy": "#d5dbdb",
}
_LEGEND = {
    "root": "likely root cause",
    "blast": "blast radius (affected)",
    "anomalous": "other anomaly / candidate",
    "healthy": "healthy",
}
_SHAPES = {"service": "o", "database": "s", "cache": "D", "queue": "^", "external": "h"}

#: Graphs larger than this are cut down to the nodes that matter and their neighbours.
MAX_TOPOLOGY_NODES = 40

#: Roles whose series add up across pods/peers; the others take the max.
_ADDITIVE = {
    "request_rate",
    "error_rate",
    "cpu",
    "cpu_throttled",
    "restarts",
    "oom_kills",
    "pod_ready",
    "edge_rate",
    "edge_errors",
    "db_connections",
    "db_locks",
}
_UNITS = {
    "request_rate": "req/s",
    "error_rate": "errors/s",
    "latency": "p95 s",
    "cpu": "cores",
    "cpu_throttled": "periods/s",
    "memory": "bytes",
    "memory_limit": "bytes",
    "restarts": "restarts/s",
    "oom_kills": "kills/s",
    "pod_ready": "ready pods",
    "db_connections": "connections",
    "db_tx_duration": "s",
    "edge_rate": "calls/s",
    "edge_errors": "errors/s",
    "edge_latency": "p95 s",
}
_DEFAULT_ROLES = ("error_rate", "latency", "request_rate", "cpu", "memory")
_DIMS = ("peer", "pod", "node", "zone", "version", "detail")
_MAX_SERIES = 6


def plain(text: str) -> str:
    """``text`` as matplotlib shows it literally: a ``$`` in a service name, label or
    summary would otherwise start mathtext (and an unbalanced formula fails the draw)."""
    return text.replace("$", r"\$")


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


def figure_svg(fig: Figure) -> str:
    """The figure as SVG text (no external references)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", facecolor="white")
    return buf.getvalue()


def figure_data_uri(fig: Figure, dpi: int = 100) -> str:
    """The figure as a ``data:image/png;base64,...`` URI, for a self-contained page."""
    return "data:image/png;base64," + base64.b64encode(figure_png(fig, dpi)).decode("ascii")


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def _hm(ts: float) -> str:
    return _dt(ts).strftime("%H:%M:%S")


# --- who is who ---------------------------------------------------------------------------------


def suspects(inv: Investigation, top: int = 3) -> list[str]:
    """Distinct services of the top findings, best first."""
    out: list[str] = []
    for f in inv.findings:
        if f.service not in out:
            out.append(f.service)
        if len(out) >= top:
            break
    return out


@dataclass(frozen=True)
class NodeRoles:
    """Which nodes are the root cause, the blast radius, other anomalies."""

    root: str | None
    blast: frozenset[str]
    anomalous: frozenset[str]

    def of(self, node: str) -> str:
        """``root``, ``blast``, ``anomalous`` or ``healthy``."""
        if node == self.root:
            return "root"
        if node in self.blast:
            return "blast"
        if node in self.anomalous:
            return "anomalous"
        return "healthy"


def node_roles(inv: Investigation) -> NodeRoles:
    """Classify services for the topology picture."""
    root = inv.findings[0].service if inv.findings else None
    blast = frozenset(s for s in inv.blast_radius if s != root)
    others = {f.service for f in inv.findings[1:]}
    if len(inv.anomalies) and "service" in inv.anomalies:
        others |= {str(s) for s in inv.anomalies["service"].dropna().unique()}
    anomalous = frozenset(s for s in others if s != root and s not in blast)
    return NodeRoles(root, blast, anomalous)


# --- signals ------------------------------------------------------------------------------------


def _signal_rows(inv: Investigation, service: str, role: str) -> pd.DataFrame:
    sig = inv.telemetry.signals
    if sig.empty:
        return sig
    return sig[(sig["role"] == role) & (sig["service"] == service)]


def suspect_roles(inv: Investigation, service: str, limit: int = 4) -> list[str]:
    """The roles worth showing for ``service``: anomalous first (by onset), then evidence, then the basics."""
    wanted: list[str] = []
    an = inv.anomalies
    if len(an):
        mine = an[an["service"] == service].sort_values("onset", na_position="last")
        wanted += [str(r) for r in mine["role"]]
    for f in inv.findings:
        if f.service == service:
            wanted += [e.signal for e in f.evidence if e.signal and e.service in (None, service)]
    wanted += list(_DEFAULT_ROLES)
    out: list[str] = []
    for role in wanted:
        if role not in out and not _signal_rows(inv, service, role).empty:
            out.append(role)
        if len(out) >= limit:
            break
    return out


def _series_label(key: Any, dims: Sequence[str]) -> str:
    values = key if isinstance(key, tuple) else (key,)
    return plain(", ".join(f"{d}={v}" for d, v in zip(dims, values, strict=True)))


def _aggregate(rows: pd.DataFrame, role: str) -> pd.Series:
    grouped = rows.groupby("ts")["value"]
    agg = grouped.sum() if role in _ADDITIVE else grouped.max()
    return agg.sort_index().astype(float)


def _band(values: pd.Series) -> tuple[float, float, float] | None:
    """Median and a robust ±3 sigma band of the baseline values."""
    v = values.dropna().to_numpy(dtype=float)
    if v.size < 3:
        return None
    center = float(np.median(v))
    sigma = 1.4826 * float(np.median(np.abs(v - center)))
    if sigma == 0.0:
        sigma = float(np.std(v))
    half = max(3.0 * sigma, abs(center) * 0.02, 1e-9)
    return center, center - half, center + half


def _scale(role: str, values: np.ndarray) -> tuple[float, str]:
    unit = _UNITS.get(role, "")
    top = float(np.nanmax(np.abs(values))) if values.size else 0.0
    if unit == "bytes":
        return (2.0**30, "GiB") if top >= 2.0**30 else (2.0**20, "MiB")
    if unit.endswith(" s") or unit == "s":
        return (1e-3, unit[:-1] + "ms") if 0 < top < 1 else (1.0, unit)
    return 1.0, unit


def _plot_role(ax: Any, inv: Investigation, service: str, role: str, start: float) -> None:
    rows = _signal_rows(inv, service, role)
    rows = rows[rows["ts"] >= inv.window.baseline_start]
    agg = _aggregate(rows, role)
    factor, unit = _scale(role, agg.to_numpy())
    shown = agg[agg.index >= start]
    times = [_dt(float(t)) for t in shown.index]
    band = _band(agg[(agg.index >= inv.window.baseline_start) & (agg.index < inv.window.start)])
    if band is not None:
        center, lo, hi = (b / factor for b in band)
        ax.axhspan(lo, hi, color="#3498db", alpha=0.13, lw=0)
        ax.axhline(center, color="#2e86c1", lw=0.8, ls=":")
    dims = [d for d in _DIMS if d in rows and rows[d].notna().any()]
    groups = list(rows.groupby(dims, dropna=False)) if dims else []
    if 1 < len(groups) <= _MAX_SERIES:
        for key, part in groups:
            part = part[part["ts"] >= start].sort_values("ts")
            ax.plot(
                [_dt(float(t)) for t in part["ts"]],
                part["value"].astype(float) / factor,
                lw=0.9,
                alpha=0.55,
                label=_series_label(key, dims),
            )
    how = "all series, sum" if role in _ADDITIVE else "all series, max"
    label = how if len(groups) > 1 else "value"
    ax.plot(times, shown.to_numpy() / factor, color="#1b2631", lw=1.8, label=label)
    _mark_onsets(ax, inv, service, role)
    ax.axvline(_dt(inv.alert.starts_at), color="#7d3c98", lw=1.6)
    ax.set_title(plain(f"{service} · {role}"), loc="left", fontsize=10, fontweight="bold")
    ax.set_ylabel(unit, fontsize=8)
    ax.grid(alpha=0.25)
    ax.tick_params(labelsize=8)
    if len(groups) > 1:
        ax.legend(fontsize=7, loc="upper left", framealpha=0.8)


def _mark_onsets(ax: Any, inv: Investigation, service: str, role: str) -> None:
    an = inv.anomalies
    if not len(an):
        return
    hits = an[(an["service"] == service) & (an["role"] == role)]
    for onset in hits["onset"].dropna():
        ts = float(onset)
        ax.axvline(_dt(ts), color="#c0392b", lw=1.4, ls="--")
        ax.annotate(
            f"onset {_hm(ts)}",
            xy=(_dt(ts), 0.0),
            xycoords=("data", "axes fraction"),
            xytext=(-3, 4),
            textcoords="offset points",
            ha="right",
            fontsize=8,
            color="#c0392b",
            bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.85},
        )


def _no_data(fig: Figure, text: str) -> Figure:
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, plain(text), ha="center", va="center", fontsize=11, color="#555")
    ax.set_axis_off()
    return fig


def plot_signals(
    inv: Investigation,
    service: str | None = None,
    roles: Iterable[str] | None = None,
    limit: int = 4,
) -> Figure:
    """A suspect's signals over the window, baseline band, onsets and alert time.

    ``service`` defaults to the top finding's service; ``roles`` to the
    anomalous ones (earliest onset first), then the finding's evidence, then
    errors/latency/traffic, at most ``limit`` panels.
    """
    if service is None:
        found = suspects(inv, 1)
        service = found[0] if found else inv.alert.service
    chosen = list(roles) if roles is not None else []
    if service is not None and roles is None:
        chosen = suspect_roles(inv, service, limit)
    if service is None or not chosen:
        return _no_data(
            _new_figure(10, 2), f"No signals for {service or 'any service'} in the window."
        )
    fig = _new_figure(10, 1.0 + 2.1 * len(chosen))
    axes = fig.subplots(len(chosen), 1, sharex=True, squeeze=False)[:, 0]
    context = min(
        inv.window.start - inv.window.baseline_start, max(2 * inv.window.duration, 1200.0)
    )
    start = inv.window.start - context
    for ax, role in zip(axes, chosen, strict=True):
        ax.axvspan(_dt(inv.window.start), _dt(inv.window.end), color="#fdebd0", alpha=0.5, lw=0)
        _plot_role(ax, inv, service, role, start)
    axes[-1].xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=UTC))  # type: ignore[no-untyped-call]
    axes[-1].set_xlabel("time (UTC)", fontsize=8)
    axes[0].set_xlim(_dt(start), _dt(inv.window.end))
    handles = [
        Line2D([], [], color="#1b2631", lw=1.8, label="signal"),
        Patch(color="#3498db", alpha=0.25, label="baseline (median ± 3σ)"),
        Patch(color="#fdebd0", label="investigated window"),
        Line2D([], [], color="#c0392b", ls="--", label="anomaly onset"),
        Line2D([], [], color="#7d3c98", lw=1.6, label=f"alert fired {_hm(inv.alert.starts_at)}"),
    ]
    fig.legend(handles=handles, loc="outside upper center", ncols=5, fontsize=8, frameon=False)
    return fig


# --- topology -----------------------------------------------------------------------------------


def _graph(inv: Investigation) -> Any:
    g = nx.DiGraph()
    if inv.topology is not None:
        g.add_nodes_from(inv.topology.nodes(data=True))
        g.add_edges_from(inv.topology.edges())
    for caller, callee, kind in inv.telemetry.edges:
        g.add_edge(caller, callee)
        g.nodes[callee].setdefault("kind", kind)
    roles = node_roles(inv)
    for extra in [roles.root, *roles.blast]:
        if extra is not None and extra not in g:
            g.add_node(extra)
    for node, kind in inv.telemetry.node_kinds.items():
        if node in g:
            g.nodes[node].setdefault("kind", kind)
    return g


def _limit(g: Any, roles: NodeRoles, limit: int) -> tuple[Any, int]:
    """Cut a large graph down to the implicated nodes and their neighbours."""
    if g.number_of_nodes() <= limit:
        return g, 0
    focus = [n for n in [roles.root] if n is not None and n in g]
    focus += sorted(n for n in roles.blast if n in g)
    focus += sorted(n for n in roles.anomalous if n in g)
    keep: list[str] = []
    for n in focus:
        if n not in keep:
            keep.append(n)
    for n in list(keep):
        for m in sorted(set(g.predecessors(n)) | set(g.successors(n))):
            if m not in keep:
                keep.append(m)
    keep = keep[:limit]
    return g.subgraph(keep).copy(), g.number_of_nodes() - len(keep)


def _layers(g: Any) -> dict[Any, int]:
    """Longest-path layering: callers left, callees right; cycles share a layer."""
    cond = nx.condensation(g)
    layer: dict[int, int] = {}
    for c in nx.topological_sort(cond):
        preds = list(cond.predecessors(c))
        layer[c] = max((layer[p] + 1 for p in preds), default=0)
    mapping = cond.graph["mapping"]
    return {n: layer[mapping[n]] for n in g.nodes}


def _layout(g: Any) -> dict[Any, tuple[float, float]]:
    layer_of = _layers(g)
    columns: dict[int, list[Any]] = {}
    for n in sorted(g.nodes, key=str):
        columns.setdefault(layer_of[n], []).append(n)
    order = {n: float(i) for col in columns.values() for i, n in enumerate(col)}
    # A few barycenter sweeps keep edges from crossing more than they must.
    for _ in range(4):
        for forward in (True, False):
            keys = sorted(columns) if forward else sorted(columns, reverse=True)
            for k in keys:
                col = columns[k]

                def bary(n: Any, fw: bool = forward) -> float:
                    nbrs = list(g.predecessors(n) if fw else g.successors(n))
                    return float(np.mean([order[m] for m in nbrs])) if nbrs else order[n]

                col.sort(key=lambda n: (bary(n), str(n)))
                for i, n in enumerate(col):
                    order[n] = float(i)
    tallest = max((len(c) for c in columns.values()), default=1)
    pos: dict[Any, tuple[float, float]] = {}
    for k, col in columns.items():
        offset = (tallest - len(col)) / 2.0
        for i, n in enumerate(col):
            pos[n] = (float(k), -(i + offset))
    return pos


def plot_topology(inv: Investigation, limit: int = MAX_TOPOLOGY_NODES) -> Figure:
    """The service graph, caller -> callee left to right, coloured by role in the incident."""
    roles = node_roles(inv)
    full = _graph(inv)
    if full.number_of_nodes() == 0:
        return _no_data(_new_figure(8, 2), "No topology known for this incident.")
    g, hidden = _limit(full, roles, limit)
    pos = _layout(g)
    n_layers = 1 + int(max(x for x, _ in pos.values()))
    tallest = 1 + int(max(-y for _, y in pos.values()))
    fig = _new_figure(
        min(max(7.0, 2.3 * n_layers + 1.5), 16.0), min(max(3.2, 0.8 * tallest + 1.6), 20.0)
    )
    ax = fig.add_subplot()
    impacted = {n for n in g.nodes if roles.of(n) in ("root", "blast")}
    hot = [(u, v) for u, v in g.edges if u in impacted and v in impacted]
    cold = [(u, v) for u, v in g.edges if (u, v) not in set(hot)]
    common = {"arrows": True, "arrowstyle": "-|>", "node_size": 700, "ax": ax}
    nx.draw_networkx_edges(
        g, pos, edgelist=cold, edge_color="#95a5a6", width=1.0, arrowsize=12, **common
    )
    nx.draw_networkx_edges(
        g, pos, edgelist=hot, edge_color="#a93226", width=2.2, arrowsize=16, **common
    )
    for kind, shape in _SHAPES.items():
        nodes = [n for n in g.nodes if g.nodes[n].get("kind", "service") == kind]
        if not nodes:
            continue
        nx.draw_networkx_nodes(
            g,
            pos,
            nodelist=nodes,
            node_shape=shape,
            node_size=[1100 if roles.of(n) == "root" else 700 for n in nodes],
            node_color=[COLORS[roles.of(n)] for n in nodes],
            edgecolors=["#641e16" if roles.of(n) == "root" else "#566573" for n in nodes],
            linewidths=[3.0 if roles.of(n) == "root" else 1.0 for n in nodes],
            ax=ax,
        )
    for n, (x, y) in pos.items():
        name = str(n) if len(str(n)) <= 24 else str(n)[:22] + "…"
        root = roles.of(n) == "root"
        ax.text(
            x,
            y - 0.3,
            plain(name) + ("\n(root cause)" if root else ""),
            ha="center",
            va="top",
            fontsize=9 if root else 8,
            fontweight="bold" if root else "normal",
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
        )
    ax.set_xlim(-0.6, n_layers - 0.4)
    ax.set_ylim(-tallest + 0.25, 0.45)
    ax.set_axis_off()
    present = {roles.of(n) for n in g.nodes}
    handles: list[Any] = [
        Patch(facecolor=COLORS[k], edgecolor="#566573", label=_LEGEND[k])
        for k in COLORS
        if k in present
    ]
    kinds = {g.nodes[n].get("kind", "service") for n in g.nodes}
    handles += [
        Line2D([], [], marker=_SHAPES[k], ls="", color="#7f8c8d", label=k)
        for k in _SHAPES
        if k in kinds and len(kinds) > 1
    ]
    fig.legend(
        handles=handles,
        loc="outside upper center",
        ncols=min(len(handles), 5),
        fontsize=8,
        frameon=False,
    )
    title = "Service graph (caller → callee)"
    if hidden:
        title += f": {hidden} unaffected nodes not shown"
    ax.set_title(title, fontsize=10, loc="left")
    return fig


# --- evidence -----------------------------------------------------------------------------------


def _evidence_rows(evidence: Sequence[Evidence]) -> list[list[str]]:
    rows = []
    for e in evidence:
        onset = format_time(e.onset)[11:19] if e.onset is not None else ""
        cells = [e.kind, e.service or "", e.signal or "", onset, textwrap.fill(e.summary, 95)]
        rows.append([plain(c) for c in cells])
    return rows


def plot_evidence(inv: Investigation, finding: int | Finding = 0) -> Figure:
    """The evidence of a finding (default: the top one) as a table figure."""
    if isinstance(finding, Finding):
        f: Finding | None = finding
    else:
        f = inv.findings[finding] if finding < len(inv.findings) else None
    if f is None or not f.evidence:
        return _no_data(_new_figure(10, 1.5), "No evidence to show: no finding.")
    rows = _evidence_rows(f.evidence)
    lines = [1 + r[-1].count("\n") for r in rows]
    fig = _new_figure(11, 0.9 + 0.24 * (sum(lines) + len(rows) + 1))
    ax = fig.add_subplot()
    ax.set_axis_off()
    header = ["kind", "service", "signal", "onset", "what was seen"]
    table = ax.table(
        cellText=rows,
        colLabels=header,
        colWidths=[0.09, 0.14, 0.13, 0.08, 0.56],
        cellLoc="left",
        loc="upper center",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    unit = 1.0 / (sum(lines) + len(rows) + 1.5)
    for (r, _c), cell in table.get_celld().items():
        cell.set_height(unit * (1.3 if r == 0 else lines[r - 1] + 0.6))
        cell.set_edgecolor("#d5d8dc")
        cell.PAD = 0.03
        if r == 0:
            cell.set_facecolor("#eaecee")
            cell.set_text_props(fontweight="bold")
    ax.set_title(
        plain(f"Evidence: {f.service}, {f.cause} ({100 * f.confidence:.0f}% confidence)"),
        loc="left",
        fontsize=10,
        fontweight="bold",
    )
    return fig

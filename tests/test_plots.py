"""The figures: who is coloured what, what is marked, how large graphs are cut down."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import matplotlib.colors as mcolors
import matplotlib.dates as mdates
import networkx as nx
import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.text import Text

from correlator import plots
from correlator.model import Investigation
from incident_factory import ALERT, FAULT, build_investigation


@pytest.fixture()
def inv() -> Investigation:
    return build_investigation()


def _node_colours(fig: plots.Figure) -> dict[str, str]:
    """Node name -> hex face colour, read back from the drawn topology."""
    ax = fig.axes[0]
    labels = {
        (round(t.get_position()[0], 3), round(t.get_position()[1] + 0.3, 3)): t.get_text()
        for t in ax.texts
    }
    out: dict[str, str] = {}
    for coll in ax.collections:
        if not isinstance(coll, PathCollection):
            continue
        for (x, y), rgba in zip(coll.get_offsets(), coll.get_facecolors(), strict=True):
            name = labels[(round(float(x), 3), round(float(y), 3))].split("\n")[0]
            out[name] = mcolors.to_hex(rgba)
    return out


def test_topology_tells_root_blast_and_healthy_apart(inv: Investigation) -> None:
    fig = plots.plot_topology(inv)
    colours = _node_colours(fig)
    assert colours["checkout"] == plots.COLORS["root"]
    assert colours["frontend"] == plots.COLORS["blast"]
    assert colours["payments"] == plots.COLORS["healthy"]
    assert set(colours) == {n for n in inv.topology.nodes}
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "likely root cause" in legend and "blast radius (affected)" in legend
    assert "database" in legend  # node kinds are told apart by shape
    assert any(t.get_text() == "checkout\n(root cause)" for t in fig.axes[0].texts)


def test_layered_layout_puts_callers_left_of_callees(inv: Investigation) -> None:
    pos = plots._layout(inv.topology)
    for caller, callee in inv.topology.edges:
        assert pos[caller][0] < pos[callee][0]


def test_cycles_share_a_layer_and_do_not_break_the_layout() -> None:
    g = nx.DiGraph([("a", "b"), ("b", "c"), ("c", "b"), ("c", "d")])
    pos = plots._layout(g)
    assert pos["b"][0] == pos["c"][0]
    assert pos["a"][0] < pos["b"][0] < pos["d"][0]


def test_large_graphs_keep_what_matters_and_say_what_is_hidden(inv: Investigation) -> None:
    g = nx.gnp_random_graph(150, 0.03, seed=1, directed=True)
    g = nx.relabel_nodes(g, {i: f"service-{i}" for i in g})
    callers = [str(p) for p in g.predecessors("service-5")]
    big = replace(
        inv,
        topology=g,
        findings=[replace(inv.findings[0], service="service-5")],
        blast_radius=callers,
    )
    big.telemetry.edges = []
    big.anomalies = big.anomalies.iloc[0:0]
    fig = plots.plot_topology(big)
    colours = _node_colours(fig)
    assert len(colours) <= plots.MAX_TOPOLOGY_NODES
    assert colours["service-5"] == plots.COLORS["root"]
    assert all(colours[c] == plots.COLORS["blast"] for c in callers)
    assert "not shown" in fig.axes[0].get_title(loc="left")
    width, height = fig.get_size_inches()
    assert width <= 16 and height <= 20


def test_signals_mark_onset_alert_and_baseline(inv: Investigation) -> None:
    fig = plots.plot_signals(inv)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles[:2] == ["checkout · error_rate", "checkout · latency"]  # anomalous first
    err = fig.axes[0]
    xs = {
        round(float(mdate), 6)
        for line in err.lines
        for mdate in np.atleast_1d(line.get_xdata(orig=False))
        if len(line.get_xdata()) == 2
    }
    assert round(mdates.date2num(plots._dt(FAULT)), 6) in xs  # the onset line
    assert round(mdates.date2num(plots._dt(ALERT)), 6) in xs  # the alert line
    spans = [p for p in err.patches]
    assert len(spans) >= 2  # the baseline band and the window
    assert any("onset 10:31:00" in t.get_text() for t in err.texts)


def test_signals_for_a_service_with_no_data_say_so(inv: Investigation) -> None:
    fig = plots.plot_signals(inv, "nobody")
    assert "No signals for nobody" in fig.axes[0].texts[0].get_text()


def test_evidence_table_lists_every_piece(inv: Investigation) -> None:
    fig = plots.plot_evidence(inv)
    cells = [
        t.get_text() for t in fig.axes[0].tables[0].get_celld().values() for t in [t.get_text()]
    ]
    for kind in ("deploy", "metric", "log", "trace"):
        assert kind in cells
    assert "86% confidence" in fig.axes[0].get_title(loc="left")


def test_png_is_a_real_picture(inv: Investigation) -> None:
    png = plots.figure_png(plots.plot_topology(inv))
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    assert plots.figure_data_uri(plots.plot_evidence(inv)).startswith("data:image/png;base64,")
    svg = plots.figure_svg(plots.plot_evidence(inv))
    assert "<svg" in svg and 'href="http' not in svg and "<image" not in svg


#: A service name that mathtext would read as a formula (and fail on: unbalanced brace).
DOLLAR = "check$out_{$"


def _renamed(inv: Investigation, old: str, new: str) -> Investigation:
    """``inv`` with service ``old`` called ``new`` everywhere the figures look."""

    def svc(frame: Any) -> Any:
        out = frame.copy()
        out["service"] = out["service"].replace(old, new)
        return out

    findings = [
        replace(
            f,
            service=new if f.service == old else f.service,
            evidence=tuple(
                replace(
                    e,
                    service=new if e.service == old else e.service,
                    summary=e.summary.replace(old, new),
                )
                for e in f.evidence
            ),
        )
        for f in inv.findings
    ]
    telemetry = replace(inv.telemetry, signals=svc(inv.telemetry.signals))
    return replace(
        inv,
        findings=findings,
        telemetry=telemetry,
        anomalies=svc(inv.anomalies),
        topology=nx.relabel_nodes(inv.topology, {old: new}),
    )


def test_a_dollar_in_a_service_name_is_shown_literally_not_as_math(inv: Investigation) -> None:
    from correlator.report import render

    hostile = _renamed(inv, "checkout", DOLLAR)
    for fig in (
        plots.plot_topology(hostile),
        plots.plot_signals(hostile, DOLLAR),
        plots.plot_evidence(hostile),
    ):
        assert plots.figure_png(fig).startswith(b"\x89PNG")  # drawing parses every text
        texts = [t.get_text() for t in fig.findobj(Text)]
        assert any(r"check\$out_{\$" in t for t in texts), texts
        assert not any(DOLLAR in t.replace(r"\$", "") for t in texts)
    html = render(hostile, "html")
    assert "<img" in html and DOLLAR in html

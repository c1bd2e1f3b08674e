"""Render an :class:`~correlator.model.Investigation`: text, Markdown, JSON, and HTML.

:func:`render` is the one entry for every format. The HTML page lives in
:mod:`correlator.report_html` (imported here, never the reverse; it also owns
:func:`percent`, which every format uses); all formats render the same
object, so they cannot disagree.
"""

from __future__ import annotations

import json
from typing import Any

from correlator.model import Finding, Investigation, format_time
from correlator.report_html import percent, render_html

__all__ = ["FORMATS", "percent", "render", "render_json", "render_markdown", "render_text"]

FORMATS = ("text", "markdown", "json", "html")


def _cause(f: Finding) -> str:
    return f.cause + (f" ({f.zone})" if f.zone else "")


def render_text(inv: Investigation, top: int = 5) -> str:
    """A terminal report: the answer first, then why, then what else."""
    a = inv.alert
    lines = [
        f"Alert   {a.name or '(no alertname)'}  id {a.fingerprint}",
        f"        {', '.join(f'{k}={v}' for k, v in sorted(a.labels.items()) if k != 'alertname')}",
        f"Window  {format_time(inv.window.start)} .. {format_time(inv.window.end)}",
        "",
    ]
    if not inv.findings:
        lines.append("No probable cause found: nothing deviated from its baseline in the window.")
    for rank, f in enumerate(inv.findings[:top], 1):
        onset = f"  started {format_time(f.onset)}" if f.onset else ""
        lines.append(f"{rank}. {f.service}: {_cause(f)}  confidence {percent(f.confidence)}{onset}")
        for e in f.evidence[:6]:
            lines.append(f"     - [{e.kind}] {e.summary}")
            if e.query:
                lines.append(f"       query: {e.query}")
        lines.append("")
    if inv.blast_radius:
        lines.append(f"Blast radius ({len(inv.blast_radius)}): {', '.join(inv.blast_radius)}")
    for g in inv.gaps:
        lines.append(f"Gap: {g.source}{'/' + g.signal if g.signal else ''}: {g.why}")
    for n in inv.not_evaluated:
        lines.append(f"Not evaluated: {n.get('pattern', '?')}: {n.get('why', '')}")
    stages = {k: v for k, v in inv.timings.items() if k != "total"}
    total = inv.timings.get("total", sum(stages.values()))
    lines.append(f"Took {total:.2f} s ({', '.join(f'{k} {v:.2f}' for k, v in stages.items())})")
    return "\n".join(lines) + "\n"


def render_markdown(inv: Investigation, top: int = 5) -> str:
    """A Markdown report, for tickets and chat."""
    a = inv.alert
    out = [
        f"# {a.name or 'Alert'} `{a.fingerprint}`",
        "",
        f"Window: {format_time(inv.window.start)} to {format_time(inv.window.end)}",
        "",
        "| # | service | cause | confidence | onset |",
        "|---|---|---|---|---|",
    ]
    for rank, f in enumerate(inv.findings[:top], 1):
        onset = format_time(f.onset) if f.onset else ""
        out.append(f"| {rank} | {f.service} | {_cause(f)} | {percent(f.confidence)} | {onset} |")
    for rank, f in enumerate(inv.findings[:top], 1):
        out += ["", f"## {rank}. {f.service}: {_cause(f)}", ""]
        for e in f.evidence:
            out.append(f"- **{e.kind}**: {e.summary}")
            if e.query:
                link = f" ([open]({e.url}))" if e.url else ""
                out.append(f"  - `{e.query}`{link}")
    if inv.blast_radius:
        out += ["", f"**Blast radius**: {', '.join(inv.blast_radius)}"]
    if inv.gaps:
        out += ["", "**Gaps**:"] + [f"- {g.source}: {g.why}" for g in inv.gaps]
    return "\n".join(out) + "\n"


def render_json(inv: Investigation) -> str:
    """The JSON output contract (docs/json-output.md)."""
    data: dict[str, Any] = inv.to_json()
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


def render(inv: Investigation, fmt: str, top: int = 5) -> str:
    """Render in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "text":
        return render_text(inv, top)
    if fmt == "markdown":
        return render_markdown(inv, top)
    if fmt == "json":
        return render_json(inv)
    if fmt == "html":
        return render_html(inv)
    raise ValueError(f"unknown format {fmt!r}")

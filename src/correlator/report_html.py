"""A self-contained HTML page for one investigation.

:func:`render_html` returns one string: inline CSS, plots as base64 PNG
``data:`` URIs, no scripts, no external assets, nothing fetched from the
network (a Content-Security-Policy meta tag forbids it, so a stray
reference shows up as a console error rather than a silent request). The
only outbound references are the evidence links (``class="evidence-link"``)
to the backends' own UIs, which a reader follows on purpose.

The page is written for someone who has never seen correlator: the answer
first (which service, what cause, how sure), then why (the evidence), what
else is affected (blast radius and the service graph), the signals, other
candidates, and what the investigation could not see.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from correlator.model import Evidence, Finding, Investigation, format_time

__all__ = ["CAUSE_WORDS", "confidence_word", "percent", "render_html"]

#: Plain words for the built-in causes (other causes are shown as written).
CAUSE_WORDS = {
    "deployment": "a recent deployment (a new version went out)",
    "db_overload": "an overloaded database",
    "az_failure": "an availability-zone failure",
    "memory_leak": "a memory leak",
    "dependency_failure": "a failing dependency",
    "traffic_spike": "a traffic spike",
    "unknown": "a fault none of the built-in patterns recognises (see the evidence)",
}

_KIND_WORDS = {
    "metric": "metric",
    "log": "logs",
    "trace": "traces",
    "deploy": "deploy",
    "topology": "topology",
    "zone": "zone",
}

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

_CSS = """
:root { --root:#c0392b; --blast:#f39c12; --ink:#1c2833; --muted:#5d6d7e; --line:#d5d8dc; --bg:#f4f6f7; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  color:var(--ink); background:var(--bg); }
main { max-width:1160px; margin:0 auto; padding:24px 28px 48px; }
header h1 { font-size:22px; margin:0 0 4px; }
header p { margin:2px 0; color:var(--muted); }
section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:18px 22px; margin:18px 0; }
section h2 { font-size:18px; margin:0 0 10px; }
.verdict { border-left:8px solid var(--root); }
.verdict.none { border-left-color:#7f8c8d; }
.verdict .label { text-transform:uppercase; letter-spacing:.06em; font-size:12px; color:var(--muted); margin:0; }
.verdict .service { font-size:34px; font-weight:700; color:var(--root); margin:0 0 2px; }
.verdict .cause { font-size:19px; margin:0 0 12px; }
.facts { display:flex; flex-wrap:wrap; gap:10px 32px; margin:10px 0 4px; }
.fact b { display:block; font-size:12px; text-transform:uppercase; letter-spacing:.05em; color:var(--muted); font-weight:600; }
.meter { width:220px; height:12px; background:#eaecee; border-radius:6px; overflow:hidden; margin-top:4px; }
.meter span { display:block; height:100%; background:var(--root); }
.meter.medium span { background:#e67e22; } .meter.low span { background:#95a5a6; }
.summary { font-size:16px; background:#fdf2e9; border-radius:6px; padding:10px 14px; margin:14px 0 0; }
.chips { display:flex; flex-wrap:wrap; gap:6px; margin:6px 0 12px; padding:0; list-style:none; }
.chip { border-radius:14px; padding:2px 12px; font-size:14px; background:#eaecee; }
.chip.root { background:var(--root); color:#fff; font-weight:600; }
.chip.blast { background:var(--blast); color:#1c2833; }
table { border-collapse:collapse; width:100%; font-size:14px; }
th, td { text-align:left; vertical-align:top; padding:7px 9px; border-bottom:1px solid var(--line); }
th { background:#f2f3f4; font-size:12px; text-transform:uppercase; letter-spacing:.04em; color:var(--muted); }
td.num { white-space:nowrap; font-variant-numeric:tabular-nums; }
.kind { display:inline-block; min-width:64px; text-align:center; border-radius:4px; padding:1px 6px;
  font-size:12px; font-weight:600; background:#d6eaf8; color:#1b4f72; }
.kind.deploy { background:#fadbd8; color:#78281f; } .kind.log { background:#fcf3cf; color:#7d6608; }
.kind.trace { background:#e8daef; color:#4a235a; }
code { font:12px/1.4 ui-monospace, "DejaVu Sans Mono", monospace; background:#f4f6f7; padding:1px 4px;
  border-radius:3px; word-break:break-all; }
figure { margin:10px 0 0; } figure img { max-width:100%; height:auto; border:1px solid var(--line); border-radius:4px; }
figcaption { color:var(--muted); font-size:13px; margin-top:4px; }
.muted { color:var(--muted); }
dl.glossary dt { font-weight:600; margin-top:6px; } dl.glossary dd { margin:0 0 0 0; color:var(--muted); }
footer { color:var(--muted); font-size:13px; }
"""


def percent(x: float) -> str:
    """A confidence as a percentage; never certainty: 0.998 reads ">99%", 0.001 "<1%".

    Every format shows confidences this way (:mod:`correlator.report` re-exports it).
    """
    if x > 0.99:
        return ">99%"
    if 0.0 < x < 0.01:
        return "<1%"
    return f"{100 * x:.0f}%"


def confidence_word(confidence: float) -> str:
    """``high`` (>= 0.7), ``medium`` (>= 0.4) or ``low``."""
    if confidence >= 0.7:
        return "high"
    if confidence >= 0.4:
        return "medium"
    return "low"


def _cause_words(f: Finding) -> str:
    words = CAUSE_WORDS.get(f.cause, f.cause.replace("_", " "))
    return words + (f" in zone {f.zone}" if f.zone else "")


def _count(services: Sequence[str]) -> str:
    n = len(services)
    return "no other service" if n == 0 else f"{n} other service{'s' if n != 1 else ''}"


def _pct(x: float) -> str:
    return escape(percent(x))


def _when(ts: float | None) -> str:
    return format_time(ts).replace("T", " ").replace("Z", " UTC") if ts is not None else ""


def _minutes(seconds: float) -> str:
    m = abs(seconds) / 60.0
    return f"{m:.0f} min" if m >= 1.5 else f"{abs(seconds):.0f} s"


def _img(data_uri: str, alt: str, caption: str) -> str:
    return (
        f'<figure><img src="{data_uri}" alt="{escape(alt)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _plots(inv: Investigation) -> dict[str, str]:
    """Render the figures (imported lazily: matplotlib is the heavy part)."""
    from correlator import plots

    out: dict[str, str] = {"topology": plots.figure_data_uri(plots.plot_topology(inv))}
    for i, service in enumerate(plots.suspects(inv, 2)):
        out[f"signals:{i}:{service}"] = plots.figure_data_uri(plots.plot_signals(inv, service))
    return out


def _header(inv: Investigation) -> str:
    a = inv.alert
    labels = ", ".join(f"{k}={v}" for k, v in sorted(a.labels.items()) if k != "alertname")
    summary = a.annotations.get("summary") or a.annotations.get("description") or ""
    return (
        f"<header><h1>Incident report: {escape(a.name or 'alert')}</h1>"
        + (f"<p>{escape(summary)}</p>" if summary else "")
        + f"<p>Alert fired {escape(_when(a.starts_at))} · {escape(labels)} · id <code>{escape(a.fingerprint)}</code></p>"
        + f"<p>Investigated {escape(_when(inv.window.start))} to {escape(_when(inv.window.end))}</p></header>"
    )


def _verdict(inv: Investigation) -> str:
    if not inv.findings:
        return (
            '<section class="verdict none" id="verdict"><p class="label">Likely root cause</p>'
            '<p class="service">None found</p><p class="cause">Nothing deviated enough from its '
            "baseline in the window to name a cause. Check the gaps below: a source that could "
            "not be read may hide it.</p></section>"
        )
    f = inv.findings[0]
    word = confidence_word(f.confidence)
    facts = [
        f'<div class="fact"><b>Confidence</b><span id="confidence">{_pct(f.confidence)}</span> ({word})'
        f'<div class="meter {word}"><span style="width:{100 * f.confidence:.0f}%"></span></div></div>'
    ]
    if f.onset is not None:
        lead = inv.alert.starts_at - f.onset
        rel = "before" if lead >= 0 else "after"
        facts.append(
            f'<div class="fact"><b>Started</b>{escape(_when(f.onset))}<br>'
            f'<span class="muted">{_minutes(lead)} {rel} the alert fired</span></div>'
        )
    affected = [s for s in inv.blast_radius if s != f.service]
    facts.append(f'<div class="fact"><b>Also affected</b>{_count(affected)}</div>')
    tail = f" It affects {', '.join(affected)}." if affected else ""
    summary = (
        f"<b>{escape(f.service)}</b> most likely broke because of {escape(_cause_words(f))}"
        f"{escape(' at ' + _when(f.onset)) if f.onset else ''}.{escape(tail)} "
        f"Confidence {_pct(f.confidence)}: on labeled incidents, findings this confident are right "
        f"about {_pct(f.confidence)} of the time."
    )
    return (
        '<section class="verdict" id="verdict"><p class="label">Likely root cause</p>'
        f'<p class="service" id="root-service">{escape(f.service)}</p>'
        f'<p class="cause">Cause: <b>{escape(f.cause)}</b>, {escape(_cause_words(f))}</p>'
        f'<div class="facts">{"".join(facts)}</div><p class="summary">{summary}</p></section>'
    )


def _evidence_rows(evidence: Sequence[Evidence]) -> str:
    rows = []
    for e in evidence:
        detail = ""
        if e.query:
            detail += f"<br><code>{escape(e.query)}</code>"
        if e.url and e.url.startswith(("http://", "https://")):
            detail += (
                f' <a class="evidence-link" href="{escape(e.url)}" rel="noopener noreferrer">'
                "open in the backend</a>"
            )
        where = escape(e.service or "") + (
            f"<br><span class='muted'>{escape(e.signal)}</span>" if e.signal else ""
        )
        rows.append(
            f'<tr><td><span class="kind {escape(e.kind)}">{escape(_KIND_WORDS.get(e.kind, e.kind))}</span></td>'
            f"<td>{escape(e.summary)}{detail}</td><td>{where}</td>"
            f'<td class="num">{escape(_when(e.onset)[11:19]) if e.onset else ""}</td></tr>'
        )
    return "".join(rows)


def _evidence(inv: Investigation) -> str:
    if not inv.findings:
        return ""
    f = inv.findings[0]
    body = (
        "<table><thead><tr><th>kind</th><th>what was seen</th><th>where</th><th>when (UTC)</th></tr></thead>"
        f"<tbody>{_evidence_rows(f.evidence)}</tbody></table>"
        if f.evidence
        else "<p class='muted'>The pattern gave no evidence items.</p>"
    )
    return (
        f'<section id="evidence"><h2>Why: the evidence for {escape(f.service)}</h2>'
        "<p class='muted'>What the investigation saw that points at this cause, earliest signals "
        f"first where known.</p>{body}</section>"
    )


def _chips(services: Iterable[str], cls: str) -> str:
    return "".join(f'<li class="chip {cls}">{escape(s)}</li>' for s in services)


def _impact(inv: Investigation, figures: dict[str, str]) -> str:
    root = inv.findings[0].service if inv.findings else None
    affected = [s for s in inv.blast_radius if s != root]
    if affected:
        text = (
            f"<p>{_count(affected)} {'is' if len(affected) == 1 else 'are'} hurt: "
            f"{'it calls' if len(affected) == 1 else 'they call'} the root cause, directly or "
            "through other services.</p>"
            f'<ul class="chips" id="blast-radius">{_chips([root] if root else [], "root")}'
            f"{_chips(affected, 'blast')}</ul>"
        )
    else:
        text = "<p id='blast-radius'>No other service shows harm from it.</p>"
    return (
        f'<section id="impact"><h2>What else is affected (blast radius)</h2>{text}'
        + _img(
            figures["topology"],
            "service graph with the root cause and blast radius highlighted",
            "Arrows point from caller to callee. Red: the likely root cause; orange: services it "
            "hurts; yellow: other anomalies or candidates; grey: healthy.",
        )
        + "</section>"
    )


def _signals(figures: dict[str, str]) -> str:
    parts = []
    for key, uri in figures.items():
        if not key.startswith("signals:"):
            continue
        service = key.split(":", 2)[2]
        parts.append(
            _img(
                uri,
                f"signals of {service}",
                f"{service}: each signal over the window. Blue band: normal range learned from the "
                "baseline; dashed red: when the anomaly began; purple: when the alert fired.",
            )
        )
    if not parts:
        return ""
    return f'<section id="signals"><h2>The signals</h2>{"".join(parts)}</section>'


def _candidates(inv: Investigation) -> str:
    rest = inv.findings[1:10]
    if not rest:
        return ""
    rows = "".join(
        f"<tr><td class='num'>{i}</td><td>{escape(f.service)}</td><td>{escape(f.cause)}"
        f"<br><span class='muted'>{escape(_cause_words(f))}</span></td>"
        f"<td class='num'>{_pct(f.confidence)}</td><td class='num'>{escape(_when(f.onset))}</td>"
        f"<td>{escape(f.evidence[0].summary) if f.evidence else ''}</td></tr>"
        for i, f in enumerate(rest, 2)
    )
    return (
        '<section id="candidates"><h2>Other possible causes</h2><table><thead><tr><th>#</th>'
        "<th>service</th><th>cause</th><th>confidence</th><th>started</th><th>main evidence</th>"
        f"</tr></thead><tbody>{rows}</tbody></table></section>"
    )


def _anomalies(inv: Investigation, limit: int = 15) -> str:
    an = inv.anomalies
    if not len(an):
        return ""
    an = an.sort_values("onset", na_position="last").head(limit)
    rows = []
    for row in an.itertuples(index=False):
        r: Any = row
        onset = float(r.onset) if r.onset is not None and r.onset == r.onset else None
        lead = ""
        if onset is not None:
            rel = "before" if onset <= inv.alert.starts_at else "after"
            lead = f"{_minutes(inv.alert.starts_at - onset)} {rel}"
        rows.append(
            f"<tr><td>{escape(str(r.service))}</td><td>{escape(str(r.role))}</td>"
            f"<td class='num'>{escape(_when(onset)[11:19]) if onset else ''}</td><td>{escape(lead)}</td>"
            f"<td>{escape(str(r.direction or ''))}</td>"
            f"<td class='num'>{_num(r.baseline)} → {_num(r.peak)}</td></tr>"
        )
    more = len(inv.anomalies) - len(an)
    note = f"<p class='muted'>{more} more not shown.</p>" if more > 0 else ""
    return (
        '<section id="anomalies"><h2>Everything that moved, in order</h2><p class="muted">Causes '
        "move before symptoms: the earliest onsets are the best clues.</p><table><thead><tr>"
        "<th>service</th><th>signal</th><th>onset (UTC)</th><th>vs. alert</th><th>direction</th>"
        f"<th>baseline → peak</th></tr></thead><tbody>{''.join(rows)}</tbody></table>{note}</section>"
    )


def _num(x: object) -> str:
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""
    if v != v:
        return ""
    return f"{v:.3g}"


def _gaps(inv: Investigation) -> str:
    items = [
        f"<li><b>{escape(g.source)}{escape('/' + g.signal) if g.signal else ''}</b>: {escape(g.why)}</li>"
        for g in inv.gaps
    ]
    items += [
        f"<li>pattern <b>{escape(n.get('pattern', '?'))}</b> not evaluated: {escape(n.get('why', ''))}</li>"
        for n in inv.not_evaluated
    ]
    body = (
        f"<ul>{''.join(items)}</ul>"
        if items
        else "<p>Nothing: every source answered and every pattern could be evaluated.</p>"
    )
    return (
        '<section id="gaps"><h2>What the investigation could not see</h2><p class="muted">Missing '
        'data is not a "no": a cause hidden here cannot be ruled out.</p>'
        f"{body}</section>"
    )


def _glossary(inv: Investigation) -> str:
    took = sum(inv.timings.values())
    return (
        '<section id="how-to-read"><h2>How to read this page</h2><dl class="glossary">'
        "<dt>Likely root cause</dt><dd>The service where the trouble started: it went wrong "
        "while the services it depends on stayed healthy.</dd>"
        "<dt>Confidence</dt><dd>Calibrated on labeled incidents: a finding shown at 80% is right "
        "about 80% of the time.</dd>"
        "<dt>Blast radius</dt><dd>Services that call the root cause, directly or through others, "
        "and show harm.</dd>"
        "<dt>Onset</dt><dd>When a signal first left its normal range (learned from the baseline "
        "before the window).</dd></dl></section>"
        f"<footer>Made by correlator in {took:.2f} s.</footer>"
    )


def render_html(inv: Investigation) -> str:
    """The investigation as one self-contained HTML page (no scripts, no external assets)."""
    figures = _plots(inv)
    title = (
        f"{inv.findings[0].service}: {inv.findings[0].cause}" if inv.findings else "no cause found"
    )
    body = "".join(
        [
            _header(inv),
            _verdict(inv),
            _evidence(inv),
            _impact(inv, figures),
            _signals(figures),
            _candidates(inv),
            _anomalies(inv),
            _gaps(inv),
            _glossary(inv),
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{escape(inv.alert.name or 'alert')}: {escape(title)} · correlator</title>"
        f"<style>{_CSS}</style></head><body><main>{body}</main></body></html>\n"
    )

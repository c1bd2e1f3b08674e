"""Plain-language accounts of a scenario: the bundle ``description`` and ``scenarios show``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from correlator.model import parse_time

if TYPE_CHECKING:
    from correlator.generator.api import Scenario

__all__ = ["describe", "show_text"]


def _hm(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%H:%M:%S")


def describe(scen: Scenario, onsets: Mapping[str, float]) -> str:
    """One paragraph for people: the system, the fault, how it spread, what paged, the noise."""
    topo, fault = scen.topology, scen.fault
    n = len(topo.services())
    dbs = sum(1 for x in topo.nodes if x.kind == "database")
    fault_ts = parse_time(scen.truth["start"])
    order = [s for s, _ in sorted(onsets.items(), key=lambda kv: kv[1]) if s != fault.service][:4]
    spread = ""
    if order:
        parts = [f"{s} (+{(onsets[s] - fault_ts) / 60:.1f} min)" for s in order]
        spread = f" The trouble then reaches {', '.join(parts)}."
    page = scen.alerts[0]
    page_svc = page["labels"].get("service", "?")
    lag = (parse_time(page["startsAt"]) - fault_ts) / 60
    symptom = (
        ""
        if page_svc == fault.service
        else f" The page is a symptom, not the cause: {page_svc} is where users feel it."
    )
    noise = [
        str(e["text"])
        for e in scen.sim.events
        if e["kind"] in ("deploy", "blip", "gc", "cron") and e["service"] != fault.service
    ]
    noise_txt = f" Unrelated noise: {'; '.join(noise[:3])}." if noise else ""
    return (
        f"A {n}-service system in {topo.region} ({dbs} PostgreSQL databases, caches, external APIs, "
        f"pods over three zones). At {_hm(fault_ts)} UTC {fault.summary} "
        f"[cause {fault.cause}, severity {fault.severity}].{spread} "
        f"{page['labels']['alertname']} on {page_svc} fires at {_hm(parse_time(page['startsAt']))}, "
        f"{lag:.0f} minutes after the fault began.{symptom}{noise_txt}"
    )


def show_text(doc: Mapping[str, Any], topology: Mapping[str, Any] | None) -> str:
    """What ``correlator scenarios show`` prints for a bundle's scenario.json (+ topology)."""
    lines = [f"{doc.get('name', '?')}", "=" * len(str(doc.get("name", "?")))]
    lines.append(str(doc.get("description", "")))
    w = doc.get("window", {})
    lines.append("")
    lines.append(f"window   {w.get('start')} .. {w.get('end')}")
    if topology:
        kinds: dict[str, int] = {}
        for node in topology.get("nodes", []):
            kinds[node.get("kind", "service")] = kinds.get(node.get("kind", "service"), 0) + 1
        lines.append(
            "system   "
            + ", ".join(f"{v} {k}s" for k, v in sorted(kinds.items()))
            + f", {len(topology.get('edges', []))} call edges"
        )
        callers: dict[str, list[str]] = {}
        for e in topology.get("edges", []):
            callers.setdefault(e["source"], []).append(e["target"])
        entries = [
            n["id"]
            for n in topology.get("nodes", [])
            if n.get("kind") == "service" and not any(n["id"] in v for v in callers.values())
        ]
        lines.append(f"entries  {', '.join(entries)}")
        for src in entries:
            lines.append(f"         {src} -> {', '.join(callers.get(src, []))}")
    truth = doc.get("truth")
    if truth:
        extra = "".join(f", {k} {truth[k]}" for k in ("zone", "peer", "severity") if k in truth)
        lines.append(
            f"truth    {truth.get('cause')} in {truth.get('service')} at {truth.get('start')}{extra}"
        )
    lines.append("")
    lines.append("alerts")
    for a in doc.get("alerts", []):
        labels = a.get("labels", {})
        where = labels.get("service") or labels.get("node") or labels.get("pod") or ""
        lines.append(
            f"  {a.get('fingerprint')}  {labels.get('alertname')} {where} "
            f"({labels.get('severity', '')}) since {a.get('startsAt')}"
        )
    timeline = doc.get("timeline") or []
    if timeline:
        lines.append("")
        lines.append("timeline")
        for item in timeline:
            lines.append(f"  {item['at']}  {item['kind']:<7} {item['text']}")
    return "\n".join(lines)

"""Availability-zone failure: trouble concentrated on the pods and nodes of one zone.

Signals: ``node_ready`` and ``node_zone`` (kube-state-metrics), ``pod_ready``
and ``up`` per pod, ``pod_info`` (pod -> node), the ``zone`` dimension of any
series, the zone of spans (``cloud.availability_zone``), and pods that fell silent in
their spans or log records (a dead pod says nothing; judged at the pod's own pace, so
it works on sampled traces too). The tell is a
share of unhealthy pods/nodes/requests in one zone far above the others', and
onsets that coincide across services that do not call each other. With no label
saying where any pod runs, pods of several services going down together stand for
the zone or node lost (the finding names no zone).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from correlator.catalog import service_from_pod
from correlator.model import Evidence, format_time
from correlator.pattern import BasePattern, PatternContext, PatternResult

__all__ = ["AzFailureConfig", "AzFailurePattern"]


@dataclass(frozen=True)
class AzFailureConfig:
    """Thresholds of the zone-failure pattern."""

    min_concentration: float = 0.6
    """Share of unhealthy pods/nodes/requests that must sit in one zone."""
    min_zone_bad: float = 0.3
    """Share of that zone's pods/nodes/requests that must be unhealthy."""
    min_strength: float = 0.25
    """Concentration strength (0..1) below which no zone is blamed: a few more errors in
    one zone than elsewhere is chance, not a zone failure."""
    min_score: float = 0.4
    """Finding score below which no zone is blamed: some concentration without nodes going
    down, several services failing there, or their failing at once is one service's own
    trouble, not its zone's."""


class AzFailurePattern(BasePattern):
    """One zone going bad, taking what runs there with it."""

    name = "az_failure"
    cause = "az_failure"
    needs = ("node_ready", "node_zone", "pod_ready", "pod_info", "up")
    config_class = AzFailureConfig
    description = "anomalies concentrated on pods/nodes of one zone, node NotReady"

    def evaluate(self, ctx: PatternContext, config: AzFailureConfig) -> PatternResult:
        """Find a zone holding most of the unhealthy pods, nodes and failing requests."""
        pods = _pod_health(ctx)
        unzoned = pods[pods["zone"].isna()] if len(pods) else pods
        pods = pods[pods["zone"].notna()] if len(pods) else pods
        spans = _span_zone_errors(ctx)
        if pods.empty and spans.empty and len(unzoned) and (unzoned["bad"] > 0).any():
            return self._down_together(ctx, unzoned, config)
        if pods.empty and spans.empty:
            return self.not_evaluated(
                "no zone information: need kube_node_labels with a zone label, a zone label on "
                "per-pod series, or cloud.availability_zone on spans"
            )
        parts: list[pd.DataFrame] = [x for x in (pods, spans) if not x.empty]
        best: tuple[float, str, dict[str, float]] | None = None
        for part in parts:
            by_zone = part.groupby("zone").agg(n=("bad", "size"), bad=("bad", "sum"))
            bad = by_zone["bad"].astype(float)
            n = by_zone["n"].astype(float)
            if bad.sum() <= 0 or len(by_zone) < 2:
                continue
            worst = bad.idxmax()
            z = str(worst)
            worst_bad = bad.to_dict()[worst]
            conc = float(worst_bad / bad.sum())
            frac = float(worst_bad / max(n.to_dict()[worst], 1.0))
            other_frac = float(bad.drop(index=worst).sum() / max(n.drop(index=worst).sum(), 1.0))
            s = min(1.0, conc / config.min_concentration) * min(1.0, frac / config.min_zone_bad)
            s *= max(0.0, 1.0 - other_frac / max(frac, 1e-9))
            if best is None or s > best[0]:
                best = (s, z, {"concentration": conc, "zone_bad": frac, "other_bad": other_frac})
        if best is None or best[0] < config.min_strength:
            return self.no_match("unhealthy pods and requests are not concentrated in one zone")
        strength, zone, feats = best
        services = _zone_services(pods, spans, zone)
        services.update(_unzoned_services(unzoned, pods, zone, services, max(120.0, 2 * ctx.step)))
        if not services:
            return self.no_match(f"zone {zone} looks unhealthy but no service can be tied to it")
        simultaneous = _simultaneity(ctx, list(services))
        nodes = pods[pods["pod"].astype(str).str.startswith("node/")] if len(pods) else pods
        # Nodes of the zone going NotReady is the zone's own signal; without node data at
        # all it is neither for nor against.
        node_down = (
            0.5 if nodes.empty else float(((nodes["zone"] == zone) & (nodes["bad"] > 0)).any())
        )
        # Concentration in one zone is the finding. A zone failure hits several services at
        # once and takes nodes down; one service's pods failing there is that service's own.
        breadth = min(1.0, (len(services) - 1) / 4)
        score = strength * (0.4 + 0.2 * simultaneous + 0.2 * breadth + 0.2 * node_down)
        if score < config.min_score:
            return self.no_match(
                f"zone {zone} holds {feats['concentration']:.0%} of the trouble, but "
                f"{_NODE_WORDS[node_down]} and "
                f"{len(services)} service(s) were hit there, {simultaneous:.0%} at once: "
                "too little for a zone failure"
            )
        # The zone's most affected service: the largest share of its pods lost there, then
        # of its requests failing there, then anomaly strength.
        ranked = sorted(
            services, key=lambda s: (-services[s][0], -services[s][1], -ctx.root_score(s), s)
        )
        svc = ranked[0]
        ev = [
            Evidence(
                kind="zone",
                summary=(
                    f"zone {zone}: {feats['zone_bad']:.0%} of its pods/requests unhealthy vs "
                    f"{feats['other_bad']:.0%} elsewhere; holds {feats['concentration']:.0%} "
                    f"of all trouble; affected: {', '.join(ranked[:6])}"
                ),
                data={
                    "zone": zone,
                    **{k: round(v, 4) for k, v in feats.items()},
                    "services": ranked[:20],
                },
            )
        ]
        ev += _node_evidence(ctx, zone, nodes)
        ev += ctx.anomalies_evidence(ctx.anomalies_of(svc), 2)
        ev += ctx.trace_evidence(svc) + ctx.log_evidence(svc, limit=2)
        onset = ctx.anomalies_of(svc)["onset"].min() if len(ctx.anomalies_of(svc)) else None
        finding = self.finding(
            svc,
            score,
            ev,
            features={**feats, "simultaneous": simultaneous, "nodes_down": node_down},
            onset=None if onset is None else float(onset),
            zone=zone,
            covers=ranked,
        )
        return self.found([finding])

    def _down_together(
        self, ctx: PatternContext, pods: pd.DataFrame, config: AzFailureConfig
    ) -> PatternResult:
        """Without zones: pods of several services going down within one stretch (their
        ``up`` or readiness falling, see :func:`_pod_health`) is what a zone or a node
        lost looks like; a service's own failure, a rollout or a crash loop takes its own
        pods only. The service that lost the largest share of its pods is the finding's,
        covering the rest."""
        bad = pods[pods["bad"] > 0]
        at = pd.to_numeric(bad["down_at"], errors="coerce")
        bad, at = bad[at.notna()], at[at.notna()].astype(float)
        width = max(120.0, 4.0 * float(ctx.step))
        t = np.sort(at.to_numpy(dtype=np.float64))
        if len(t) < 3:
            return self.no_match("no zone information, and fewer than 3 pods went down")
        ends = np.searchsorted(t, t + width, side="right")
        i = int(np.argmax(ends - np.arange(len(t))))
        hit = bad[at.between(t[i], t[i] + width)]
        services = sorted({str(x) for x in hit["service"]})
        if len(hit) < 3 or len(services) < 2:
            return self.no_match(
                "no zone information; the pods that went down together were one service's"
            )
        total = pods.groupby("service").size()
        lost = {
            svc: len(mine) / max(int(total.get(svc, 1)), 1) for svc, mine in hit.groupby("service")
        }
        simultaneous = _simultaneity(ctx, services)
        breadth = min(1.0, (len(services) - 1) / 4)
        strength = min(1.0, (len(services) - 1) / 2)
        score = (0.5 + 0.5 * strength) * (0.4 + 0.2 * simultaneous + 0.2 * breadth + 0.1)
        if score < config.min_score:
            return self.no_match("no zone information; too few pods went down together")
        ranked = sorted(services, key=lambda s: (-lost[s], -ctx.root_score(s), s))
        svc = ranked[0]
        ev = [
            Evidence(
                kind="zone",
                summary=(
                    f"{len(hit)} pods of {len(services)} services went down within "
                    f"{width:.0f}s of {format_time(t[i])} (no label says which zone or node "
                    f"they ran in): {', '.join(f'{s} {lost[s]:.0%}' for s in ranked[:6])} "
                    "of their pods"
                ),
                onset=float(t[i]),
                data={"services": ranked[:20], "pods": sorted(hit["pod"].astype(str))[:20]},
            )
        ]
        ev += ctx.anomalies_evidence(ctx.anomalies_of(svc), 2)
        ev += ctx.trace_evidence(svc) + ctx.log_evidence(svc, limit=2)
        finding = self.finding(
            svc,
            score,
            ev,
            features={"pods_down": float(len(hit)), "simultaneous": simultaneous},
            onset=float(t[i]),
            covers=ranked,
        )
        return self.found([finding])


def _pod_zones(ctx: PatternContext) -> pd.DataFrame:
    """pod -> (service, zone) from zone labels, or pod_info + node_zone."""
    raw = ctx.raw
    direct = raw.loc[raw["pod"].notna() & raw["zone"].notna(), ["pod", "service", "zone"]]
    parts = [direct.drop_duplicates("pod")]
    info = raw.loc[(raw["role"] == "pod_info") & raw["node"].notna(), ["pod", "service", "node"]]
    nz = raw.loc[(raw["role"] == "node_zone") & raw["zone"].notna(), ["node", "zone"]]
    if len(info) and len(nz):
        m = info.drop_duplicates("pod").merge(nz.drop_duplicates("node"), on="node")
        parts.append(m[["pod", "service", "zone"]])
    # Spans name their pod and zone too (the k8s and cloud resource attributes).
    spans = ctx.telemetry.spans
    if len(spans):
        known = spans["pod"].notna() & spans["zone"].notna()
        parts.append(spans.loc[known, ["pod", "service", "zone"]].drop_duplicates("pod"))
    out = pd.concat(parts, ignore_index=True).drop_duplicates("pod")
    # kube_pod_info names the owner (a ReplicaSet, ``<deployment>-<hash>``); the pod
    # name gives the workload itself.
    out["service"] = [service_from_pod(str(p)) for p in out["pod"]]
    return out


def _pod_health(ctx: PatternContext) -> pd.DataFrame:
    """Per pod (and node): zone, service, whether it went unhealthy in the window."""
    raw = ctx.raw
    zones = _pod_zones(ctx)
    rows = []
    w = ctx.window
    for role in ("pod_ready", "up"):
        s = raw[(raw["role"] == role) & raw["pod"].notna()]
        if s.empty:
            continue
        ts = s["ts"].astype(float)
        before = s[ts < w.start].groupby("pod")["value"].median()
        now = s[(ts >= w.start - 300) & (ts <= w.end)]
        both = pd.DataFrame({"before": before}).join(_time_down(now, before), how="inner")
        # Down for a while, not one missed scrape: two samples and at least 30 s.
        both["bad"] = both["down"] >= np.maximum(2.0 * both["interval"], 30.0)
        rows.append(both[["bad", "down_at"]].reset_index().rename(columns={"index": "pod"}))
    if rows:
        every = pd.concat(rows)
        health = every.groupby("pod").agg(bad=("bad", "max"), down_at=("down_at", "min"))
        # Pods no label places in a zone stay (zone unknown): when they went down with a
        # zone, they are likely its (see _unzoned_services).
        pods = health.reset_index().merge(zones, on="pod", how="left")
        pods["service"] = [
            str(s) if isinstance(s, str) and s else service_from_pod(str(p))
            for s, p in zip(pods["service"], pods["pod"], strict=True)
        ]
    else:
        pods = pd.DataFrame(columns=["pod", "bad", "down_at", "service", "zone"])
    # Pods no health series covers: those that sent spans or log records until they fell
    # silent (a zone's pods die without a word; their callers' errors land elsewhere).
    silent = _silent_pods(ctx)
    if len(silent):
        silent = silent[~silent["pod"].isin(set(pods["pod"].astype(str)))]
        pods = pd.concat([x for x in (pods, silent) if len(x)], ignore_index=True)
    nodes = _node_health(ctx)
    if len(nodes):
        pods = pd.concat([pods, nodes], ignore_index=True)
    if pods.empty:
        return pods
    pods["bad"] = pods["bad"].astype(float)
    return pods


#: Fewest records a pod must have sent for its silence to be judged, and how many it
#: would have sent in that silence at its own pace for the silence to say it stopped
#: (no record where 5 were due happens by chance less than 1 % of the time).
_SILENT_MIN, _SILENT_DUE = 5, 5.0


def _silent_pods(ctx: PatternContext) -> pd.DataFrame:
    """Per pod whose spans or log records name its zone: whether it fell silent around the
    incident (``bad``, from ``down_at``), judged at its own pace.

    A pod that sent ``n`` records between its first and last, and none from its last to
    the end of that source's data, stopped when the silence holds at least
    :data:`_SILENT_DUE` of its records. A pod silent in one source and not the other is
    alive; one that fell silent long before the window (an old rollout) is not news, and
    neither is one pod alone, nor pods that fell silent minutes apart."""
    frames = []
    for recs, at in ((ctx.telemetry.spans, "start"), (ctx.telemetry.logs, "ts")):
        if recs is None or recs.empty or not {"pod", "zone", "service", at} <= set(recs.columns):
            continue
        known = recs["pod"].notna() & recs["zone"].notna()
        if not known.any():
            continue
        t = recs[at].astype(float)
        r = pd.DataFrame(
            {
                "pod": recs.loc[known, "pod"].astype(str),
                "zone": recs.loc[known, "zone"].astype(str),
                "service": recs.loc[known, "service"].astype(str),
                "t": t[known],
            }
        )
        g = r.groupby("pod").agg(
            service=("service", "first"), zone=("zone", "first"),
            n=("t", "size"), first=("t", "min"), last=("t", "max"),
        )  # fmt: skip
        g = g[g["n"] >= _SILENT_MIN]
        pace = (g["n"] - 1.0) / (g["last"] - g["first"]).clip(lower=1e-9)
        due = pace * (float(t.max()) - g["last"])
        g["bad"] = (due >= _SILENT_DUE) & (g["last"] >= ctx.window.start - 600.0)
        frames.append(g[["service", "zone", "bad", "first", "last"]])
    if not frames:
        return pd.DataFrame(columns=["pod", "bad", "down_at", "service", "zone"])
    every = pd.concat(frames)
    out = every.groupby(level=0).agg(
        service=("service", "first"), zone=("zone", "first"), bad=("bad", "min"),
        first=("first", "min"), last=("last", "max"),
    )  # fmt: skip
    # A zone's pods fall silent together: those that did at other times (a crash, a
    # rescheduling minutes apart) are their own story.
    gone = np.sort(out.loc[out["bad"], "last"].to_numpy(dtype=np.float64))
    if len(gone):
        width = max(180.0, 4.0 * float(ctx.step))
        ends = np.searchsorted(gone, gone + width, side="right")
        i = int(np.argmax(ends - np.arange(len(gone))))
        out["bad"] &= out["last"].between(gone[i], gone[i] + width)
    # One pod falling silent is that pod's story, and too few pods judged give no zone
    # anything to stand out against.
    if out["bad"].sum() < 2 or len(out) < 2 * out["zone"].nunique():
        return pd.DataFrame(columns=["pod", "bad", "down_at", "service", "zone"])
    # Pods that first appeared only after the others fell silent replaced them: a
    # service's share lost is of the pods it had then.
    out = out[out["first"] <= float(out.loc[out["bad"], "last"].median())]
    out["down_at"] = out["last"].where(out["bad"])
    out["bad"] = out["bad"].astype(float)
    return out.rename_axis("pod").reset_index()[["pod", "bad", "down_at", "service", "zone"]]


def _time_down(rows: pd.DataFrame, before: pd.Series) -> pd.DataFrame:
    """Per pod: seconds its health series spent at least 0.5 below its baseline median
    (samples down times the series' own sample interval), that interval, and when it
    was first down (``down_at``, NaN when never)."""
    rows = rows.sort_values("ts", kind="stable")
    level = rows["pod"].map(before)
    low = (level - rows["value"].astype(float)) >= 0.5
    gaps = rows.groupby("pod")["ts"].diff()
    interval = gaps.groupby(rows["pod"]).median().fillna(0.0)
    down = low.groupby(rows["pod"]).sum().astype(float) * interval
    down_at = rows["ts"].astype(float).where(low).groupby(rows["pod"]).min()
    return pd.DataFrame({"down": down, "interval": interval, "down_at": down_at})


def _node_health(ctx: PatternContext) -> pd.DataFrame:
    raw = ctx.raw
    nr = raw[raw["role"] == "node_ready"]
    nz = raw.loc[(raw["role"] == "node_zone") & raw["zone"].notna(), ["service", "node", "zone"]]
    if nr.empty or nz.empty:
        return pd.DataFrame()
    key = nr["node"].fillna(nr["service"])
    nr = nr.assign(node=key)
    ts = nr["ts"].astype(float)
    before = nr[ts < ctx.window.start].groupby("node")["value"].median()
    during = (
        nr[(ts >= ctx.window.start - 300) & (ts <= ctx.window.end)].groupby("node")["value"].min()
    )
    both = pd.DataFrame({"before": before, "during": during}).dropna()
    both["bad"] = (both["before"] - both["during"]) >= 0.5
    zmap = nz.assign(node=nz["node"].fillna(nz["service"])).drop_duplicates("node")
    out = both[["bad"]].reset_index().merge(zmap[["node", "zone"]], on="node")
    out["pod"] = "node/" + out["node"].astype(str)
    out["service"] = None
    return out[["pod", "bad", "service", "zone"]]


def _span_zone_errors(ctx: PatternContext) -> pd.DataFrame:
    s = ctx.telemetry.spans
    if s is None or s.empty or not s["zone"].notna().any():
        return pd.DataFrame()
    s = s[s["zone"].notna() & s["kind"].isin((2,))]
    return pd.DataFrame(
        {
            "pod": s["pod"],
            "service": s["service"],
            "zone": s["zone"],
            "bad": (s["status"] == 2).astype(float),
        }
    )


def _zone_services(
    pods: pd.DataFrame, spans: pd.DataFrame, zone: str
) -> dict[str, tuple[float, float]]:
    """Services with trouble in ``zone``: (share of their pods lost there, share of their
    sampled requests failing there).

    Lost pods are the direct measure of how much of a service the zone took; the
    request share is a noisier one (few sampled spans, and callers fail along with
    what they call), shrunk towards 0 when it rests on few spans.
    """
    lost = _zone_share(pods, zone, 0.0)
    failing = _zone_share(spans, zone, _SPAN_PRIOR)
    return {svc: (lost.get(svc, 0.0), failing.get(svc, 0.0)) for svc in {*lost, *failing}}


def _unzoned_services(
    unzoned: pd.DataFrame,
    pods: pd.DataFrame,
    zone: str,
    known: dict[str, tuple[float, float]],
    near: float,
) -> dict[str, tuple[float, float]]:
    """Services whose pods no label places in a zone, with pods that went down within
    ``near`` seconds of the moment ``zone``'s pods did: (share of their pods lost then,
    their failing-request share in the zone if known). Pods of one zone fail together;
    a service's pods failing at that very moment were most likely there, and left out
    they would make the zone's most affected service invisible."""
    if unzoned.empty or pods.empty:
        return {}
    hit = pods[(pods["zone"] == zone) & (pods["bad"] > 0)]
    at = pd.to_numeric(hit["down_at"], errors="coerce").dropna()
    if at.empty:
        return {}
    when = float(at.median())
    down = pd.to_numeric(unzoned["down_at"], errors="coerce")
    lost = unzoned[(unzoned["bad"] > 0) & ((down - when).abs() <= near)]
    out: dict[str, tuple[float, float]] = {}
    for svc, mine in lost.groupby("service"):
        total = int((unzoned["service"] == svc).sum() + (pods["service"] == svc).sum())
        share = len(mine) / max(total, 1)
        prior = known.get(str(svc), (0.0, 0.0))
        out[str(svc)] = (max(prior[0], share), prior[1])
    return out


def _zone_share(part: pd.DataFrame, zone: str, prior: float) -> dict[str, float]:
    """Per service with trouble in ``zone``: its bad rows there over all its rows (+ prior)."""
    if part.empty:
        return {}
    p = part[part["service"].notna()]
    total = p.groupby("service")["bad"].size().to_dict()
    bad = p[p["zone"] == zone].groupby("service")["bad"].sum()
    return {str(svc): float(n) / (float(total[svc]) + prior) for svc, n in bad.items() if n > 0}


#: How the no-match reason words ``node_down``.
_NODE_WORDS = {
    0.0: "no node went down",
    0.5: "no node health was collected",
    1.0: "nodes went down",
}

#: Pseudo-count that shrinks a zone's failing-request share when few spans were sampled.
_SPAN_PRIOR = 10.0


def _simultaneity(ctx: PatternContext, services: list[str]) -> float:
    """Share of the zone's troubled services whose trouble began within two minutes of
    the typical (median) onset among them: a zone failing hits them all at once. One
    service alone is not "at once" with anything (0)."""
    a = ctx.anomalies[ctx.anomalies["service"].isin(services)]
    if a.empty or a["service"].nunique() < 2:
        return 0.0
    first = a.groupby("service")["onset"].min().to_numpy(dtype=float)
    return float(np.mean(np.abs(first - np.median(first)) <= 120.0))


def _node_evidence(ctx: PatternContext, zone: str, nodes: pd.DataFrame) -> list[Evidence]:
    if nodes.empty:
        return []
    bad = nodes[(nodes["zone"] == zone) & (nodes["bad"] > 0)]
    if bad.empty:
        return []
    names = [p.removeprefix("node/") for p in bad["pod"]]
    return [
        Evidence(
            kind="zone",
            summary=f"{len(names)} node(s) in {zone} went NotReady: {', '.join(names[:6])}",
            signal="node_ready",
            query=ctx.query("node_ready"),
            url=ctx.link("node_ready"),
            onset=ctx.window.start,
            data={"nodes": names, "zone": zone, "at": format_time(ctx.window.start)},
        )
    ]

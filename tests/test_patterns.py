"""The six built-in patterns and the plugin API, on hand-built telemetry."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import networkx as nx
import pandas as pd
import pytest

from correlator.catalog import default_catalog
from correlator.config import Settings
from correlator.detect import aggregate, detect
from correlator.engine import make_window
from correlator.errors import ConfigError
from correlator.model import BUILTIN_CAUSES, Outcome, Telemetry
from correlator.pattern import BasePattern, PatternContext, config_for, load_patterns
from correlator.topology import build_graph, root_scores
from synth import Scenario, build

BUILTIN = BUILTIN_CAUSES
ROOTS = {"db_overload": "orders-db", "traffic_spike": "frontend"}


def context(sc: Scenario) -> PatternContext:
    tel = sc.telemetry
    window = make_window(sc.alert, Settings(), now=sc.alert.starts_at + 3600)
    anomalies = detect(tel.signals, window)
    graph = build_graph(tel)
    return PatternContext(
        alert=sc.alert,
        window=window,
        telemetry=tel,
        catalog=default_catalog(),
        anomalies=anomalies,
        graph=graph,
        roots=root_scores(graph, anomalies, "frontend"),
        signals=aggregate(tel.signals),
        step=15.0,
    )


def run(name: str, ctx: PatternContext, **options: Any):  # type: ignore[no-untyped-def]
    cls = load_patterns([name])[name]
    return cls().evaluate(ctx, config_for(cls, options))


#: The synthetic fault each pattern names (network delay has no synthetic scenario; the
#: shipped mobile-bff-network-delay bundle covers it in test_library_truth).
SYNTH = {"cpu_saturation": "cpu_contention", "code_fault": "code_exception"}


@pytest.mark.parametrize("cause", [c for c in BUILTIN if c != "network_delay"])
def test_each_pattern_finds_its_own_fault_with_evidence(cause: str) -> None:
    root = ROOTS.get(cause, "payments")
    ctx = context(build(SYNTH.get(cause, cause), root=root))
    res = run(cause, ctx)
    assert res.outcome is Outcome.OK
    assert res.findings, res.reason
    best = max(res.findings, key=lambda f: f.score)
    if cause != "az_failure":  # the zone's most affected service is a tie here
        assert best.service == root
    assert best.cause == cause and best.pattern == cause
    assert 0.5 <= best.score <= 1.0
    assert best.confidence == 0.0  # the ranker calibrates, not the pattern
    assert best.evidence and all(e.summary for e in best.evidence)


@pytest.mark.parametrize("cause", ["deployment", "db_overload", "memory_leak", "traffic_spike"])
def test_patterns_stay_quiet_on_an_unrelated_fault(cause: str) -> None:
    ctx = context(build("cpu_contention"))
    res = run(cause, ctx)
    assert all(f.score < 0.5 for f in res.findings), res.findings


def test_deployment_evidence_names_versions_and_lead() -> None:
    res = run("deployment", context(build("deployment")))
    deploy = next(e for e in res.findings[0].evidence if e.kind == "deploy")
    assert deploy.data["old"] == "1.3.2" and deploy.data["new"] == "1.4.0"
    assert "1.3.2 -> 1.4.0" in deploy.summary
    kinds = {e.kind for e in res.findings[0].evidence}
    assert {"metric", "log", "trace"} <= kinds


def test_az_failure_names_the_zone() -> None:
    res = run("az_failure", context(build("az_failure")))
    assert res.findings[0].zone == "zone-b"
    assert "zone-b" in res.findings[0].evidence[0].summary


def test_one_service_losing_a_pod_in_a_zone_is_not_a_zone_failure() -> None:
    sc = build("az_failure")
    sig = sc.telemetry.signals
    # Zone b's node stays Ready and only payments' pod there goes down.
    healed = ((sig["role"] == "node_ready") | (sig["role"] == "pod_ready")) & (
        sig["service"] != "payments"
    )
    sig.loc[healed, "value"] = 1.0
    res = run("az_failure", context(sc))
    assert not res.findings and res.outcome is Outcome.OK
    assert "too little for a zone failure" in res.reason
    assert "no node went down" in res.reason


def test_pod_zones_come_from_spans_when_no_metric_names_them() -> None:
    """No kube-state-metrics (no pod_info, node_zone, node_ready): the spans' resource
    attributes (k8s pod, cloud zone) say where each pod runs."""
    from correlator.model import SPAN_COLUMNS
    from synth import FAULT

    sc = build("az_failure")
    sig = sc.telemetry.signals
    sig = sig[~sig["role"].isin(["pod_info", "node_zone", "node_ready"])]
    pods = sig.loc[sig["role"] == "pod_ready", ["service", "pod"]].drop_duplicates()
    spans = pd.DataFrame(
        [
            {
                **dict.fromkeys(SPAN_COLUMNS),
                "trace_id": f"{i:032x}",
                "span_id": f"{i:016x}",
                "service": svc,
                "name": "GET /",
                "kind": 2,
                "start": FAULT - 600.0,
                "duration": 0.01,
                "status": 0,
                "pod": pod,
                "zone": "zone-b" if pod.endswith("1") else "zone-a",
            }
            for i, (svc, pod) in enumerate(pods.itertuples(index=False))
        ],
        columns=list(SPAN_COLUMNS),
    )
    sc = _with_signals(sc, sig)
    sc.telemetry.spans = spans
    res = run("az_failure", context(sc))
    assert res.findings and res.findings[0].zone == "zone-b"


def test_pods_no_label_places_in_a_zone_count_when_they_went_down_with_it() -> None:
    """The zone's worst hit service has no zone label anywhere (no kube_pod_info row, no
    spans): both its pods went down at the moment zone b's did. Left out it would be
    invisible; counted, it is the service the zone took most of."""
    sc = build("az_failure")
    sig = sc.telemetry.signals.copy()
    sig = sig[~((sig["role"] == "pod_info") & (sig["service"] == "payments"))]
    ready = (sig["role"] == "pod_ready") & (sig["service"] == "payments")
    went = sig[ready & (sig["value"] < 1.0)]["ts"].min()
    sig.loc[ready & (sig["ts"] >= went), "value"] = 0.0
    res = run("az_failure", context(_with_signals(sc, sig)))
    assert res.findings and res.findings[0].zone == "zone-b"
    assert res.findings[0].service == "payments"
    # Pods that went down five minutes before the zone's (another story) are not its.
    sig.loc[ready & (sig["ts"] >= went - 300.0), "value"] = 0.0
    res = run("az_failure", context(_with_signals(sc, sig)))
    assert res.findings and res.findings[0].service != "payments"


def test_one_missed_scrape_of_a_zones_pods_is_not_a_zone_failure() -> None:
    from synth import FAULT

    sc = build("az_failure")
    sig = sc.telemetry.signals.copy()
    health = sig["role"].isin(["pod_ready", "node_ready"])
    sig.loc[health, "value"] = 1.0
    # Every pod of zone b misses one scrape at the same moment, after the fault.
    blip = health & (sig["ts"] == sig.loc[sig["ts"] >= FAULT + 60, "ts"].min())
    blip &= sig["pod"].astype(str).str.endswith("1") | (sig["node"] == "node-zone-b")
    sig.loc[blip, "value"] = 0.0
    assert blip.sum() >= 5
    res = run("az_failure", context(_with_signals(sc, sig)))
    assert not res.findings


def test_pods_of_several_services_going_down_at_once_without_zone_labels() -> None:
    """Nothing says where the pods ran (no node or zone labels, no spans): the pods of
    four services going down at the same moment is a zone or node lost; the service
    that lost the largest share of its pods is the finding's, covering the rest. One
    service's pods going down, or the services' pods minutes apart, are not that."""
    sc = build("az_failure")
    sig = sc.telemetry.signals.copy()
    sig = sig[~sig["role"].isin(["pod_info", "node_zone", "node_ready"])].assign(zone=None)
    sc = dataclasses.replace(sc, telemetry=copy.copy(sc.telemetry))
    sc.telemetry.spans = sc.telemetry.spans.iloc[0:0]
    ready = sig["role"] == "pod_ready"
    # payments lost both its pods, the others one of two.
    went = sig.loc[ready & (sig["value"] < 1.0), "ts"].min()
    both = ready & (sig["service"] == "payments") & (sig["ts"] >= went)
    res = run(
        "az_failure", context(_with_signals(sc, sig.assign(value=sig["value"].mask(both, 0.0))))
    )
    (found,) = res.findings
    assert found.service == "payments" and found.zone is None
    assert set(found.covers) == {"catalog", "checkout", "frontend"}
    assert "4 services went down" in found.evidence[0].summary
    # Only payments' pod went down: its own story.
    alone = sig.assign(value=sig["value"].mask(ready & (sig["service"] != "payments"), 1.0))
    assert not run("az_failure", context(_with_signals(sc, alone))).findings
    # Each service's pod went down ten minutes after the last one's: not at once.
    apart = sig.copy()
    for k, svc in enumerate(("catalog", "checkout", "frontend", "payments")):
        late = ready & (apart["service"] == svc) & (apart["ts"] < went + 600.0 * k)
        apart.loc[late, "value"] = 1.0
    assert not run("az_failure", context(_with_signals(sc, apart))).findings


def _zone_spans(start: float, end: float, silent_from: float, zone: str) -> pd.DataFrame:
    """Server spans of three services with one pod in each of three zones, a span every
    20 s per pod; the pods of ``zone`` send none from ``silent_from`` on."""
    from correlator.model import SPAN_COLUMNS

    rows = []
    for svc in ("cart", "orders", "search"):
        for z in ("zone-a", "zone-b", "zone-c"):
            stop = silent_from if z == zone else end
            for i, t in enumerate(range(int(start), int(stop), 20)):
                rows.append(
                    {
                        "trace_id": f"{svc}{z}{i}", "span_id": f"{svc}{z}{i}",
                        "service": svc, "name": "GET /", "kind": 2, "start": float(t),
                        "duration": 0.02, "status": 0, "zone": z, "pod": f"{svc}-{z}",
                    }
                )  # fmt: skip
    return pd.DataFrame(rows).reindex(columns=list(SPAN_COLUMNS))


def test_a_zone_whose_pods_fell_silent_is_found_from_spans_alone() -> None:
    from correlator.model import SIGNAL_COLUMNS, empty_frame

    ctx = context(build("az_failure"))
    w = ctx.window
    spans = _zone_spans(w.baseline_start, w.end, w.start + 60.0, "zone-b")
    tel = dataclasses.replace(ctx.telemetry, signals=empty_frame(SIGNAL_COLUMNS), spans=spans)
    found = run("az_failure", dataclasses.replace(ctx, telemetry=tel)).findings
    assert [f.zone for f in found] == ["zone-b"]
    assert found[0].service in {"cart", "orders", "search"}
    # Pods that fell silent only at the very end, as data ends, have not stopped; nor have
    # pods that fell silent long before the window (an old rollout).
    late = _zone_spans(w.baseline_start, w.end, w.end - 30.0, "zone-b")
    early = _zone_spans(w.baseline_start, w.end, w.start - 1200.0, "zone-b")
    # Nor do two pods that fell silent seven minutes apart make a zone failure.
    apart = _zone_spans(w.baseline_start, w.end, w.end, "none")
    t = apart["start"]
    apart = apart[
        ~((apart["pod"] == "cart-zone-b") & (t >= w.start - 300.0))
        & ~((apart["pod"] == "orders-zone-b") & (t >= w.start + 120.0))
    ]
    for quiet in (late, early, apart):
        tel = dataclasses.replace(tel, spans=quiet)
        assert not run("az_failure", dataclasses.replace(ctx, telemetry=tel)).findings


def test_a_zone_finding_stands_as_the_best_root_among_the_services_it_covers() -> None:
    from correlator.rank import candidate_features

    ctx = context(build("az_failure"))
    finding = run("az_failure", ctx).findings[0]
    assert finding.covers and finding.service not in finding.covers
    covered = [r for r in ctx.roots if r.service in {finding.service, *finding.covers}]
    best, least = covered[0], covered[-1]  # roots come best first
    assert best.score > least.score
    # Named after its least prominent service, the zone still stands as its best one.
    named = dataclasses.replace(
        finding,
        service=least.service,
        covers=tuple(r.service for r in covered if r is not least),
    )
    alone = dataclasses.replace(named, covers=())
    with_cover, without = candidate_features(ctx, [named, alone])
    assert with_cover["root"] == pytest.approx(best.score)
    assert with_cover["root_top"] == (1.0 if best.rank == 1 else 0.0)
    assert without["root"] == pytest.approx(least.score)
    assert without["root_top"] == 0.0


def test_a_finding_at_a_service_a_zone_failure_took_pods_from_is_covered() -> None:
    from correlator.rank import candidate_features

    ctx = context(build("az_failure"))
    zone = run("az_failure", ctx).findings[0]
    hit = zone.covers[0]
    own = dataclasses.replace(zone, service=hit, cause="code_fault", score=0.9, covers=())
    elsewhere = dataclasses.replace(own, service="not-in-the-zone")
    zone_row, own_row, elsewhere_row = candidate_features(ctx, [zone, own, elsewhere])
    # The errors of a service the zone took pods from are accounted for by the zone.
    assert own_row["covered"] == pytest.approx(zone.score)
    assert elsewhere_row["covered"] == 0.0 and zone_row["covered"] == 0.0


def test_trouble_dated_after_the_alert_fired_is_late_despite_one_faint_row_before() -> None:
    from correlator.rank import candidate_features
    from correlator.topology import fired_by

    ctx = context(build("deployment"))
    finding = run("deployment", ctx).findings[0]
    fired = fired_by(ctx.alert.starts_at, ctx.step)
    assert fired is not None
    a = ctx.anomalies
    mine = a["service"] == finding.service
    # All of the service's trouble moved to ten minutes after the alert had fired ...
    moved = a.assign(onset=a["onset"].where(~mine, fired + 600.0))
    (late,) = candidate_features(dataclasses.replace(ctx, anomalies=moved), [finding])
    assert late["late"] == 1.0
    # ... and one faint row of it (a stray log line) long before does not make it early.
    faint = moved[mine].iloc[[0]].assign(onset=fired - 900.0, score=2.0)
    stray = pd.concat([moved, faint], ignore_index=True)
    (still,) = candidate_features(dataclasses.replace(ctx, anomalies=stray), [finding])
    assert still["late"] == 1.0
    # A row of weight before it fired does.
    weighty = faint.assign(score=40.0)
    early = pd.concat([moved, weighty], ignore_index=True)
    (timely,) = candidate_features(dataclasses.replace(ctx, anomalies=early), [finding])
    assert timely["late"] == 0.0


def test_missing_data_is_not_evaluated_not_a_no() -> None:
    sc = build("deployment")
    sc.telemetry.signals = sc.telemetry.signals[
        ~sc.telemetry.signals["role"].isin(
            [
                "version",
                "memory",
                "oom_kills",
                "node_zone",
                "pod_info",
                "db_connections",
                "db_tx_duration",
                "db_max_connections",
            ]
        )
    ]
    sc.telemetry.spans = sc.telemetry.spans.iloc[0:0]
    sc.telemetry.node_kinds = {}
    sc.telemetry.edges = []
    ctx = context(sc)
    for name in ("deployment", "memory_leak", "az_failure", "db_overload"):
        res = run(name, ctx)
        assert res.outcome is Outcome.NOT_EVALUATED, name
        assert res.reason and not res.findings


def test_config_overrides_validated() -> None:
    cls = load_patterns(["deployment"])["deployment"]
    cfg = config_for(cls, {"max_lead_seconds": 60})
    assert cfg.max_lead_seconds == 60.0
    with pytest.raises(ConfigError, match=r"patterns\.options\.deployment\.nope: unknown option"):
        config_for(cls, {"nope": 1})
    with pytest.raises(ConfigError, match=r"max_lead_seconds: .* is not a number"):
        config_for(cls, {"max_lead_seconds": "soon"})
    # A tight lead window makes the old deploy too early to blame.
    res = run("deployment", context(build("deployment")), max_lead_seconds=-1000.0)
    assert not res.findings


def test_builtins_follow_the_plugin_contract() -> None:
    found = load_patterns()
    assert set(BUILTIN) <= set(found)
    for name in BUILTIN:
        cls = found[name]
        assert cls.name == name and cls.cause == name and cls.needs
        assert dataclasses.is_dataclass(cls.config_class)
        assert cls.config_class.__dataclass_params__.frozen  # type: ignore[attr-defined]
        assert cls.__doc__ and cls.evaluate.__doc__
    with pytest.raises(ConfigError, match="nosuch not installed"):
        load_patterns(["nosuch"])


def test_a_third_party_style_pattern_works_with_the_base() -> None:
    @dataclasses.dataclass(frozen=True)
    class Cfg:
        level: float = 0.9

    class Disk(BasePattern):
        name = "disk"
        cause = "disk_pressure"
        needs = ("disk",)
        config_class = Cfg

        def evaluate(self, ctx: PatternContext, config: Cfg):  # type: ignore[no-untyped-def]
            if not ctx.has("disk"):
                return self.not_evaluated("no disk signal")
            return self.found([self.finding("x", config.level, [])])

    ctx = context(build("cpu_contention"))
    assert Disk().evaluate(ctx, config_for(Disk, {})).outcome is Outcome.NOT_EVALUATED
    assert config_for(Disk, {"level": 1}).level == 1.0
    assert isinstance(Telemetry(), Telemetry)


def _with_signals(sc: Scenario, signals: Any) -> Scenario:
    """The scenario with other signal rows."""
    tel = copy.copy(sc.telemetry)
    tel.signals = signals.reset_index(drop=True)
    return dataclasses.replace(sc, telemetry=tel)


def test_memory_growth_that_hurts_nothing_is_discounted() -> None:
    sc = build("memory_leak")
    hurting = run("memory_leak", context(sc))
    # The same climb with no OOM kill, no restart and no latency or errors on payments.
    s = sc.telemetry.signals
    quiet = _with_signals(
        sc,
        s[
            ~s["role"].isin(("oom_kills", "restarts"))
            & ~((s["service"] == "payments") & s["role"].isin(("latency", "error_rate")))
        ],
    )
    res = run("memory_leak", context(quiet))
    top = {f.service: f for f in hurting.findings}["payments"]
    calm = {f.service: f for f in res.findings}["payments"]
    assert calm.features["hurt"] == 0.0 and top.features["hurt"] > 0.5
    assert calm.score < 0.5 <= top.score


def test_the_alerted_service_was_hurt_before_only_by_trouble_of_some_weight() -> None:
    """frontend (the alerted service) had a few slow sampled spans four minutes before it
    began failing hard: that faint wobble does not make it hurt before a surge that came
    with the failures. Fainter log lines that lead into the failures without a gap (the
    first deadline errors) do date its trouble."""
    from correlator.detector import anomaly_frame
    from synth import FAULT

    ctx = context(build("deployment"))
    assert ctx.alert.service == "frontend"

    def row(role: str, at: float, score: float) -> dict[str, Any]:
        return _moved("frontend", role, "", at, score)

    strong = row("error_ratio", FAULT + 240.0, 1000.0)
    wobble = dataclasses.replace(
        ctx, anomalies=anomaly_frame([row("span_latency", FAULT, 5.0), strong])
    )
    assert not wobble.alert_hurt_before(FAULT + 240.0)
    assert wobble.alert_hurt_before(FAULT + 240.0 + 2.0 * wobble.onset_slack + 1.0)
    leading = [row("log_errors", FAULT + at, 6.0) for at in (165.0, 190.0, 215.0)]
    led = dataclasses.replace(ctx, anomalies=anomaly_frame([*leading, strong]))
    assert led.alert_hurt_before(FAULT + 240.0)
    alone = dataclasses.replace(ctx, anomalies=anomaly_frame([strong]))
    assert not alone.alert_hurt_before(FAULT + 240.0)


def test_a_wobble_of_something_else_before_a_release_does_not_rule_the_release_out() -> None:
    """payments' open file descriptors wobbled ten minutes before its release; it began
    failing right after the release: the failing dates its trouble, not the wobble."""
    from correlator.detector import anomaly_frame
    from synth import FAULT

    ctx = context(build("deployment"))
    rows = [_moved("payments", "error_ratio", "", FAULT + 15.0, 300.0)]
    found = run("deployment", dataclasses.replace(ctx, anomalies=anomaly_frame(rows)))
    before = {f.service: f.score for f in found.findings}["payments"]
    rows.append(_moved("payments", "open_fds", "", FAULT - 600.0, 9.0))
    found = run("deployment", dataclasses.replace(ctx, anomalies=anomaly_frame(rows)))
    assert {f.service: f.score for f in found.findings}.get("payments") == pytest.approx(before)


def test_a_deploy_after_the_alert_had_fired_is_not_what_made_it_fire() -> None:
    """The same release and the same trouble, but the alert had started ten minutes
    before the deploy (a noisy rollout during an incident, paged for something else)."""
    from synth import FAULT

    ctx = context(build("deployment"))
    on_time = {f.service: f.score for f in run("deployment", ctx).findings}["payments"]
    earlier = dataclasses.replace(ctx.alert, starts_at=FAULT - 600.0)
    found = run("deployment", dataclasses.replace(ctx, alert=earlier)).findings
    assert {f.service: f.score for f in found}["payments"] <= 0.3 * on_time + 1e-9


def test_a_deploy_seen_well_after_the_trouble_began_counts_less() -> None:
    from synth import FAULT

    sc = build("deployment")
    on_time = run("deployment", context(sc)).findings[0]
    # The new version only shows up two minutes after payments began failing.
    late = sc.telemetry.signals.copy()
    m = (late["role"] == "version") & (late["service"] == "payments")
    m &= (late["version"] == "1.4.0") & (late["ts"] < FAULT + 120)
    late.loc[m, "version"] = "1.3.2"
    lagging = run("deployment", context(_with_signals(sc, late))).findings
    assert lagging[0].features["lead"] < -60
    assert lagging[0].score < on_time.score - 0.25


def test_a_deploy_long_before_the_trouble_began_counts_far_less() -> None:
    """A release hurts as soon as its pods take traffic: one eight minutes before the
    trouble is more often not its cause, however clear the trouble."""
    from synth import FAULT

    sc = build("deployment")
    on_time = run("deployment", context(sc)).findings[0]
    early = sc.telemetry.signals.copy()
    m = (early["role"] == "version") & (early["service"] == "payments")
    m &= (early["version"] == "1.3.2") & (early["ts"] >= FAULT - 480)
    early.loc[m, "version"] = "1.4.0"
    long_before = run("deployment", context(_with_signals(sc, early))).findings
    assert long_before[0].features["lead"] > 400
    assert long_before[0].score < 0.6 * on_time.score


def test_a_deploy_or_cpu_rise_after_the_alerted_service_began_failing_counts_less() -> None:
    """The alerted service's own errors began ten minutes before payments' deploy (and
    before its CPU rose): neither can be what hurt it."""
    sc = build("deployment")
    ctx = context(sc)
    deploy = run("deployment", ctx).findings[0]
    first = float(ctx.anomalies["onset"].min())
    early = {
        "service": sc.alert.service, "role": "error_ratio", "onset": first - 600.0,
        "end": first + 1200.0, "score": 20.0, "direction": "up", "baseline": 0.0,
        "peak": 0.2, "peer": "", "modality": "metrics", "signal": "error_ratio",
        "evidence": "",
    }  # fmt: skip
    hurt = dataclasses.replace(
        ctx, anomalies=pd.concat([ctx.anomalies, pd.DataFrame([early])], ignore_index=True)
    )
    late = {f.service: f.score for f in run("deployment", hurt).findings}
    assert late[deploy.service] == pytest.approx(0.5 * deploy.score)
    cpu_ctx = context(build("cpu_contention", root="payments"))
    cpu = {f.service: f.score for f in run("cpu_saturation", cpu_ctx).findings}
    cpu_hurt = dataclasses.replace(
        cpu_ctx,
        anomalies=pd.concat(
            [
                cpu_ctx.anomalies,
                pd.DataFrame([early | {"onset": float(cpu_ctx.anomalies["onset"].min()) - 600.0}]),
            ],
            ignore_index=True,
        ),
    )
    after = {f.service: f.score for f in run("cpu_saturation", cpu_hurt).findings}
    assert after["payments"] == pytest.approx(0.5 * cpu["payments"])


def test_a_deploy_that_only_burns_cpu_is_blamed_through_its_hurting_callers() -> None:
    import pandas as pd

    from synth import FAULT

    ctx = context(build("deployment"))

    def rows(*specs: tuple[str, str, float]) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {
                    "service": svc,
                    "role": role,
                    "onset": at,
                    "end": FAULT + 900.0,
                    "score": 30.0,
                    "direction": "up",
                    "baseline": 1.0,
                    "peak": 3.0,
                    "peer": "",
                }
                for svc, role, at in specs
            ]
        )

    # payments' release burns CPU (no error or latency of its own yet); checkout, which
    # calls it, slows down a minute later.
    burning = rows(("payments", "cpu", FAULT + 15.0), ("checkout", "latency", FAULT + 60.0))
    res = run("deployment", dataclasses.replace(ctx, anomalies=burning))
    blamed = {f.service: f for f in res.findings}
    assert "payments" in blamed and blamed["payments"].features["lead"] == pytest.approx(60.0)
    # The same CPU with no caller hurting is the rollout moving resources: not blamed.
    alone = rows(("payments", "cpu", FAULT + 15.0))
    assert "payments" not in {
        f.service for f in run("deployment", dataclasses.replace(ctx, anomalies=alone)).findings
    }
    # Nor is a service whose only change is more requests: its caller, failing after the
    # deploy, is retrying at it.
    retried = rows(
        ("payments", "request_rate", FAULT + 70.0), ("checkout", "latency", FAULT + 60.0)
    )
    assert "payments" not in {
        f.service for f in run("deployment", dataclasses.replace(ctx, anomalies=retried)).findings
    }
    # Nor is a caller whose trouble began well before the deploy.
    before = rows(("payments", "cpu", FAULT + 15.0), ("checkout", "latency", FAULT - 600.0))
    assert "payments" not in {
        f.service for f in run("deployment", dataclasses.replace(ctx, anomalies=before)).findings
    }


def _moved(svc: str, role: str, peer: str, at: float, score: float) -> dict[str, Any]:
    """An anomaly row that rose from ``at`` to the end of the synthetic incident."""
    from synth import FAULT

    return {
        "service": svc, "role": role, "peer": peer, "onset": at, "end": FAULT + 900.0,
        "score": score, "direction": "up", "baseline": 1.0, "peak": 3.0,
    }  # fmt: skip


def test_a_caller_hurt_by_its_calls_to_another_service_does_not_blame_a_deploy() -> None:
    """payments' release burns CPU; checkout, its caller, fails a minute later, but its
    calls seen one by one are failing to auth, not to payments: that is auth's story."""
    from correlator.detector import anomaly_frame
    from synth import FAULT

    ctx = context(build("deployment"))

    def row(svc: str, role: str, peer: str, at: float) -> dict[str, Any]:
        return _moved(svc, role, peer, at, 30.0)

    base = [
        row("payments", "cpu", "", FAULT + 15.0),
        row("checkout", "error_ratio", "", FAULT + 60),
    ]
    elsewhere = [*base, row("checkout", "client_errors", "auth", FAULT + 60.0)]
    found = run("deployment", dataclasses.replace(ctx, anomalies=anomaly_frame(elsewhere)))
    assert "payments" not in {f.service for f in found.findings}
    # The same caller failing its calls to payments does blame the release.
    there = [*base, row("payments", "edge_errors", "checkout", FAULT + 60.0)]
    found = run("deployment", dataclasses.replace(ctx, anomalies=anomaly_frame(there)))
    assert "payments" in {f.service for f in found.findings}


def test_a_release_overrun_by_more_demand_from_its_callers_is_a_weak_deploy_story() -> None:
    """payments was deployed just before it started failing; its request rate rose with
    its errors, and so did that of checkout, which calls it (demand arriving from
    upstream, not callers retrying): a service overrun by traffic is hurt by the traffic,
    so the deploy counts for less than when the requests had stayed as they were."""
    from correlator.detector import anomaly_frame
    from synth import FAULT

    ctx = context(build("deployment"))

    def row(svc: str, role: str, peer: str, at: float) -> dict[str, Any]:
        return _moved(svc, role, peer, at, 300.0)

    rows = [row("payments", "error_ratio", "", FAULT + 15.0)]
    quiet = run("deployment", dataclasses.replace(ctx, anomalies=anomaly_frame(rows)))
    before = {f.service: f.score for f in quiet.findings}["payments"]
    demand = [
        row("payments", "request_rate", "", FAULT + 15.0),
        row("payments", "edge_rate", "checkout", FAULT + 15.0),
        row("checkout", "request_rate", "", FAULT),
    ]
    busy = run("deployment", dataclasses.replace(ctx, anomalies=anomaly_frame(rows + demand)))
    found = {f.service: f for f in busy.findings}["payments"]
    assert found.features["load"] > 0.9 and found.score < 0.6 * before


def test_cpu_that_rose_after_a_caller_hurt_by_another_service_still_counts() -> None:
    """payments' CPU (a stress process) rises; its caller checkout had slowed down minutes
    before, but its calls seen one by one show that was its calls to auth: the CPU did
    not come after payments' trouble, and payments is a CPU saturation."""
    from correlator.detector import anomaly_frame
    from synth import FAULT

    ctx = context(build("deployment"))

    def row(svc: str, role: str, peer: str, at: float) -> dict[str, Any]:
        return _moved(svc, role, peer, at, 40.0)

    rows = [
        row("checkout", "latency", "", FAULT - 600.0),
        row("payments", "cpu", "", FAULT),
        row("payments", "latency", "", FAULT + 30.0),
    ]
    found = run("cpu_saturation", dataclasses.replace(ctx, anomalies=anomaly_frame(rows)))
    assert "payments" not in {f.service for f in found.findings}  # no call seen: unknown
    rows.append(row("checkout", "client_latency", "auth", FAULT - 600.0))
    found = run("cpu_saturation", dataclasses.replace(ctx, anomalies=anomaly_frame(rows)))
    assert "payments" in {f.service for f in found.findings}


def test_cpu_that_rose_with_the_calls_its_callers_made_more_of_is_load() -> None:
    """price-engine's CPU climbs as checkout calls it twice as often (checkout retrying,
    its own requests up from its caller's retries: no demand from outside, and yet load
    all the same). More calls that came only after the CPU rose (callers retrying a
    slowed service) do not explain it."""
    from correlator.detector import anomaly_frame
    from synth import FAULT

    ctx = context(build("deployment"))

    def row(svc: str, role: str, peer: str, at: float, score: float = 40.0) -> dict[str, Any]:
        return _moved(svc, role, peer, at, score)

    rows = [
        row("price-engine", "cpu_throttled", "", FAULT, 500.0),
        row("price-engine", "latency", "", FAULT + 15.0),
    ]
    alone = run("cpu_saturation", dataclasses.replace(ctx, anomalies=anomaly_frame(rows)))
    before = {f.service: f.score for f in alone.findings}["price-engine"]
    calls = [
        row("price-engine", "request_rate", "", FAULT),
        row("price-engine", "edge_rate", "checkout", FAULT),
    ]
    res = run("cpu_saturation", dataclasses.replace(ctx, anomalies=anomaly_frame(rows + calls)))
    loaded = {f.service: f for f in res.findings}["price-engine"]
    assert loaded.features["load"] > 0.5 and loaded.score < 0.8 * before
    later = [{**r, "onset": FAULT + 120.0} for r in calls]
    res = run("cpu_saturation", dataclasses.replace(ctx, anomalies=anomaly_frame(rows + later)))
    assert {f.service: f.score for f in res.findings}["price-engine"] == pytest.approx(before)
    # Failing first, then its requests and CPU up together: callers retrying it, and the
    # CPU is what serving them cost, however the retries reached it.
    failed = [
        row("price-engine", "error_ratio", "", FAULT - 45.0, 500.0),
        row("price-engine", "cpu_throttled", "", FAULT, 500.0),
    ]
    res = run("cpu_saturation", dataclasses.replace(ctx, anomalies=anomaly_frame(failed)))
    unloaded = {f.service: f.score for f in res.findings}["price-engine"]
    retried = [*failed, row("price-engine", "request_rate", "", FAULT)]
    res = run("cpu_saturation", dataclasses.replace(ctx, anomalies=anomaly_frame(retried)))
    loaded = {f.service: f for f in res.findings}["price-engine"]
    assert loaded.features["load"] > 0.5 and loaded.score < 0.8 * unloaded


def test_more_requests_that_arrived_after_the_cpu_rose_are_not_its_load() -> None:
    """price-engine's CPU is throttled hard; two minutes later its request rate rose
    (more demand by every count, no errors, no caller pushing): the CPU rose before the
    requests did, and they cannot be what starved it. The same requests arriving with the
    CPU are load. A faint CPU wobble long before the strong rise does not date it."""
    from correlator.detector import anomaly_frame
    from synth import FAULT

    ctx = context(build("deployment"))

    def row(svc: str, role: str, at: float, score: float = 40.0) -> dict[str, Any]:
        return _moved(svc, role, "", at, score)

    rows = [
        row("price-engine", "cpu_throttled", FAULT, 500.0),
        row("price-engine", "latency", FAULT + 15.0),
    ]
    alone = run("cpu_saturation", dataclasses.replace(ctx, anomalies=anomaly_frame(rows)))
    before = {f.service: f.score for f in alone.findings}["price-engine"]
    later = [*rows, row("price-engine", "request_rate", FAULT + 120.0)]
    res = run("cpu_saturation", dataclasses.replace(ctx, anomalies=anomaly_frame(later)))
    found = {f.service: f for f in res.findings}["price-engine"]
    assert found.features["load"] == 0.0 and found.score == pytest.approx(before)
    with_it = [*rows, row("price-engine", "request_rate", FAULT)]
    res = run("cpu_saturation", dataclasses.replace(ctx, anomalies=anomaly_frame(with_it)))
    found = {f.service: f for f in res.findings}["price-engine"]
    assert found.features["load"] > 0.5 and found.score < 0.8 * before
    wobble = [
        row("price-engine", "cpu", FAULT - 300.0, 5.0),
        row("price-engine", "cpu_throttled", FAULT + 120.0, 500.0),
        row("price-engine", "latency", FAULT + 130.0),
        row("price-engine", "request_rate", FAULT + 120.0),
    ]
    res = run("cpu_saturation", dataclasses.replace(ctx, anomalies=anomaly_frame(wobble)))
    assert {f.service: f for f in res.findings}["price-engine"].features["load"] > 0.5


def test_cpu_of_a_service_whose_errors_name_a_callee_failing_others_too_is_not_the_cause() -> None:
    """checkout's CPU rises while it fails; its error lines name redis, which search finds
    failing too: the CPU is what waiting and retrying cost, redis is the story. The same
    lines naming a callee no one else has trouble with leave the CPU finding as it was."""
    from correlator.detector import anomaly_frame
    from synth import FAULT

    ctx = context(build("deployment"))

    def row(svc: str, role: str, peer: str) -> dict[str, Any]:
        return _moved(svc, role, peer, FAULT, 40.0)

    rows = [
        row("checkout", "cpu", ""),
        row("checkout", "error_ratio", ""),
        row("checkout", "log_errors", "redis"),
    ]
    alone = run("cpu_saturation", dataclasses.replace(ctx, anomalies=anomaly_frame(rows)))
    before = {f.service: f.score for f in alone.findings}["checkout"]
    shared = [*rows, row("search", "client_errors", "redis")]
    res = run("cpu_saturation", dataclasses.replace(ctx, anomalies=anomaly_frame(shared)))
    after = {f.service: f.score for f in res.findings}.get("checkout", 0.0)
    assert before >= 0.5 and after < 0.5 * before
    # Metrics alone: the failing calls of both are the service-graph rows kept at redis.
    plain = [row("checkout", "cpu", ""), row("checkout", "error_ratio", "")]
    edges = [row("redis", "edge_errors", "checkout"), row("redis", "edge_errors", "search")]
    res = run("cpu_saturation", dataclasses.replace(ctx, anomalies=anomaly_frame(plain + edges)))
    after = {f.service: f.score for f in res.findings}.get("checkout", 0.0)
    assert after < 0.5 * before
    mine = [*plain, edges[0]]  # only checkout's calls fail: redis fails no one else
    res = run("cpu_saturation", dataclasses.replace(ctx, anomalies=anomaly_frame(mine)))
    assert {f.service: f.score for f in res.findings}["checkout"] == pytest.approx(before)


def test_a_request_rise_in_the_same_step_as_the_errors_is_demand() -> None:
    from synth import FAULT

    ctx = context(build("traffic_spike"))
    a = ctx.anomalies
    base = a[(a["service"] == "frontend") & (a["role"] == "request_rate")].iloc[[0]].copy()
    base["onset"] = FAULT + 15.0
    errs = base.assign(role="error_rate", onset=FAULT, peak=5.0, baseline=0.1)
    # Errors seen one sampling step (15 s) before the requests: onsets are only known to a
    # step, so the rise is still demand. Two steps later it would be retries.
    same = run("traffic_spike", dataclasses.replace(ctx, anomalies=pd.concat([errs, base])))
    assert [f.service for f in same.findings] == ["frontend"]
    # Two steps after: within the slack still, but failing a whole step before the rise
    # means callers asking again made part of it.
    next_step = base.assign(onset=FAULT + 30.0)
    part = run("traffic_spike", dataclasses.replace(ctx, anomalies=pd.concat([errs, next_step])))
    assert [f.service for f in part.findings] == ["frontend"]
    assert part.findings[0].score < 0.7 * same.findings[0].score
    late = base.assign(onset=FAULT + 45.0)
    retry = run("traffic_spike", dataclasses.replace(ctx, anomalies=pd.concat([errs, late])))
    assert not retry.findings


def test_a_surge_aimed_at_one_callee_is_blamed_on_that_callee() -> None:
    # The load generator's surge on one route: the entry's rate rises 4x, the one callee
    # behind that route 10x (taking all the extra), its other callee keeps its rate.
    ctx = context(build("traffic_spike"))
    rates = ctx.anomalies[ctx.anomalies["role"] == "request_rate"]
    entry = rates[rates["service"] == "frontend"].assign(peak=200.0)
    aimed = rates[rates["service"] == "checkout"].assign(peak=500.0)
    res = run("traffic_spike", dataclasses.replace(ctx, anomalies=pd.concat([entry, aimed])))
    scores = {f.service: f.score for f in res.findings}
    # The entry only forwarded it: no finding of its own.
    assert "checkout" in scores and "frontend" not in scores
    # The whole entry point surging: most callees rise, some more than the entry itself
    # (fan-out, retries): the entry keeps the blame.
    both = pd.concat([entry, aimed, entry.assign(service="catalog", peak=480.0)])
    res = run("traffic_spike", dataclasses.replace(ctx, anomalies=both))
    scores = {f.service: f.score for f in res.findings}
    assert scores["frontend"] > scores["checkout"]


def test_a_callee_whose_rate_rose_with_its_own_errors_did_not_keep_its_rate() -> None:
    # The whole entry point surging: one callee's rate rose more than the entry's, the
    # other's as much but after its own errors (its callers retrying it). That rise is no
    # demand of its own, yet it did not keep its usual rate: the surge was not aimed at
    # the first callee, and the entry keeps the blame.
    ctx = context(build("traffic_spike"))
    rates = ctx.anomalies[ctx.anomalies["role"] == "request_rate"]
    entry = rates[rates["service"] == "frontend"].assign(peak=200.0)
    aimed = rates[rates["service"] == "checkout"].assign(peak=500.0)
    retried = entry.assign(service="catalog", peak=480.0)
    errs = retried.assign(role="error_rate", onset=retried["onset"] - 120.0, peak=9.0)
    both = pd.concat([entry, aimed, retried, errs])
    res = run("traffic_spike", dataclasses.replace(ctx, anomalies=both))
    scores = {f.service: f.score for f in res.findings}
    assert "catalog" not in scores
    assert scores["frontend"] > scores.get("checkout", 0.0)


def test_a_surge_after_the_alerted_service_began_failing_did_not_cause_it() -> None:
    # The alerted service's own errors began two minutes before the entry's rate rose (a
    # bad release, and the usual evening traffic): the surge counts half.
    ctx = context(build("traffic_spike"))
    rates = ctx.anomalies[ctx.anomalies["role"] == "request_rate"]
    fe = rates[rates["service"] == "frontend"]
    onset = float(fe["onset"].iloc[0])
    alerted = str(ctx.alert.service)
    errs = fe.assign(service=alerted, role="log_errors", onset=onset - 120.0, score=3.5)
    before = run("traffic_spike", dataclasses.replace(ctx, anomalies=pd.concat([fe, errs])))
    clean = run("traffic_spike", dataclasses.replace(ctx, anomalies=fe))
    score = {f.service: f.score for f in before.findings}["frontend"]
    assert score == pytest.approx(0.5 * {f.service: f.score for f in clean.findings}["frontend"])
    # Its calls wobbling earlier (a faint client-side latency) is not it hurting.
    calls = errs.assign(role="client_latency", peer="tax")
    wobble = run("traffic_spike", dataclasses.replace(ctx, anomalies=pd.concat([fe, calls])))
    assert {f.service: f.score for f in wobble.findings} == {
        f.service: f.score for f in clean.findings
    }


def test_traffic_within_its_baseline_swing_is_no_spike() -> None:
    # A rate that rises to 1.6x its baseline median but no higher than the baseline itself
    # already ran (a daily shape) is not a spike: the ratio is against the busy baseline.
    ctx = context(build("traffic_spike"))
    rates = ctx.anomalies[ctx.anomalies["role"] == "request_rate"]
    fe = rates[rates["service"] == "frontend"]
    series = ctx.series("request_rate", "frontend")
    onset = float(fe["onset"].iloc[0])
    busiest = float(series[series.index < onset].quantile(0.9))
    median = float(series[series.index < onset].median())
    assert busiest < 1.5 * median  # the synthetic baseline is calm
    calm = dataclasses.replace(ctx, anomalies=fe.assign(peak=1.6 * median))
    assert run("traffic_spike", calm).findings
    loud = series.copy()
    loud[(loud.index < onset) & (loud.index >= onset - 600)] = 1.2 * median
    loud[(loud.index < onset - 600) & (loud.index >= onset - 900)] = 1.3 * median
    busy = ctx.signals.copy()
    sel = (busy["role"] == "request_rate") & (busy["service"] == "frontend")
    busy.loc[sel, "value"] = loud.reindex(busy.loc[sel, "ts"].to_numpy()).to_numpy()
    swung = dataclasses.replace(calm, signals=busy)
    assert not run("traffic_spike", swung).findings


def test_zone_most_affected_service_is_the_one_that_lost_most_pods() -> None:
    import pandas as pd
    from correlator.patterns.az_failure import _zone_services

    pods = pd.DataFrame(
        {
            "pod": ["a-1", "a-2", "a-3", "b-1", "b-2"],
            "service": ["a", "a", "a", "b", "b"],
            "zone": ["z2", "z2", "z1", "z2", "z1"],
            "bad": [1.0, 1.0, 0.0, 1.0, 0.0],
        }
    )
    # b's only sampled span in the zone failed; a handful of spans prove little.
    spans = pd.DataFrame({"pod": ["b-1"], "service": ["b"], "zone": ["z2"], "bad": [1.0]})
    got = _zone_services(pods, spans, "z2")
    assert got["a"][0] == pytest.approx(2 / 3) and got["b"][0] == pytest.approx(1 / 2)
    assert got["b"][1] < 0.1
    assert max(got, key=lambda s: got[s]) == "a"


def _call_row(
    svc: str, role: str, peer: str, score: float, base: float, peak: float
) -> dict[str, Any]:
    """An anomaly row of a call (or a service's own latency) from 1000 s to 1600 s."""
    return {
        "service": svc, "role": role, "peer": peer, "onset": 1000.0, "end": 1600.0,
        "score": score, "direction": "up", "baseline": base, "peak": peak,
    }  # fmt: skip


def test_network_delay_names_the_callee_whose_callers_all_see_slow_calls() -> None:
    """Three callers' own view of their calls to ``db-proxy`` got ~0.9 s slower while its
    server side did not move; their callers see them slower too, but by no more than
    they got slower by themselves (that is passed up the chain, not network)."""
    from correlator.detector import anomaly_frame

    row = _call_row

    callers = ("auth", "search", "cart")
    rows = [row(c, "client_latency", "db-proxy", 150.0, 0.1, 1.0) for c in callers]
    rows += [row(c, "latency", "", 100.0, 0.1, 1.0) for c in callers]
    rows += [row("frontend", "client_latency", c, 130.0, 0.1, 0.7) for c in callers]
    rows += [row("loyalty", "client_errors", "media", 15.0, 0.0, 0.1)]  # unrelated wobble
    ctx = dataclasses.replace(context(build("deployment")), anomalies=anomaly_frame(rows))
    res = run("network_delay", ctx)
    best = max(res.findings, key=lambda f: f.score)
    assert best.service == "db-proxy" and best.score >= 0.6
    assert best.features["share"] >= 0.7
    # The same callee slower by itself on the server side is a slow server, not a network.
    slow = [*rows, row("db-proxy", "latency", "", 150.0, 0.1, 1.0)]
    ctx = dataclasses.replace(ctx, anomalies=anomaly_frame(slow))
    assert not [f for f in run("network_delay", ctx).findings if f.service == "db-proxy"]


def _calls_graph(calls: dict[str, tuple[str, ...]]) -> Any:
    """A call graph of services: caller -> its callees."""
    import networkx as nx

    g = nx.DiGraph()
    for caller, callees in calls.items():
        g.add_node(caller, kind="service")
        for callee in callees:
            g.add_node(callee, kind="service")
            g.add_edge(caller, callee)
    return g


def test_slow_calls_from_a_caller_whose_other_calls_stayed_fast_are_the_callees() -> None:
    """partner-bff's calls to search got slow and started timing out while search's own
    server side did not move; partner-bff's calls to its five other callees stayed fast.
    A delay on partner-bff's way out would have slowed all of them: the delay is in front
    of search (its one caller sees it). The errors partner-bff then returns to its own
    caller are it passing that trouble up, not a second slow link. The same slow calls
    with all of partner-bff's calls slow are partner-bff's (a delay on its way out)."""
    from correlator.detector import anomaly_frame

    row = _call_row

    graph = _calls_graph(
        {
            "api-gateway": ("partner-bff",),
            "partner-bff": ("search", "account", "pricing", "tax", "notifications"),
            "search": ("media",),
        }
    )
    rows = [
        row("partner-bff", "client_latency", "search", 59.0, 0.37, 1.5),
        row("partner-bff", "client_errors", "search", 24.0, 0.07, 0.98),
        {
            **row("api-gateway", "client_error_ratio", "partner-bff", 43.0, 0.25, 0.81),
            "onset": 1030.0,
        },
    ]
    ctx = dataclasses.replace(context(build("deployment")), graph=graph)
    found = run("network_delay", dataclasses.replace(ctx, anomalies=anomaly_frame(rows)))
    best = max(found.findings, key=lambda f: f.score)
    assert best.service == "search"
    everywhere = rows + [
        row("partner-bff", "client_latency", callee, 59.0, 0.37, 1.5)
        for callee in ("account", "pricing", "tax", "notifications")
    ]
    found = run("network_delay", dataclasses.replace(ctx, anomalies=anomaly_frame(everywhere)))
    best = max(found.findings, key=lambda f: f.score)
    assert best.service == "partner-bff"


def test_more_failed_calls_at_the_same_failed_share_are_more_calls_not_a_slow_link() -> None:
    """auth's failed calls to image-resizer doubled with its traffic (the count rose, the
    share that failed, measured beside it, did not): a faint story beside a caller whose
    calls failed by share."""
    from correlator.detector import anomaly_frame

    row = _call_row

    ctx = context(build("deployment"))
    assert ctx.has("edge_error_ratio") or ctx.has("client_error_ratio")
    load = [row("auth", "client_errors", "image-resizer", 9.0, 1.6, 3.3)]
    found = run("network_delay", dataclasses.replace(ctx, anomalies=anomaly_frame(load)))
    counted = {f.service: f.score for f in found.findings}
    by_share = [*load, row("auth", "client_error_ratio", "image-resizer", 9.0, 0.01, 0.3)]
    found = run("network_delay", dataclasses.replace(ctx, anomalies=anomaly_frame(by_share)))
    failing = {f.service: f.score for f in found.findings}
    assert max(counted.values(), default=0.0) < 0.5 * max(failing.values())


def test_network_delay_is_as_strong_as_the_calls_the_servers_do_not_explain() -> None:
    """A slow server (inventory) slows its callers' calls and its callers' callers' calls:
    all explained by the servers' own latency. Only a faint wobble of one call (checkout to
    cart) is left for the network: the finding is as faint as that wobble, not as strong as
    the explained calls that also touch checkout."""
    from correlator.detector import anomaly_frame

    row = _call_row

    rows = [
        row("inventory", "latency", "", 100.0, 0.009, 0.49),
        row("checkout", "latency", "", 54.0, 0.047, 0.70),
        row("checkout", "client_latency", "inventory", 32.0, 0.019, 0.49),
        row("frontend", "client_latency", "checkout", 160.0, 0.048, 0.70),
        row("checkout", "client_latency", "cart", 9.0, 0.005, 0.016),
    ]
    ctx = dataclasses.replace(context(build("deployment")), anomalies=anomaly_frame(rows))
    found = {f.service: f.score for f in run("network_delay", ctx).findings}
    assert found.get("checkout", 0.0) <= 0.55
    assert "inventory" not in found


def test_calls_to_a_server_failing_by_itself_are_not_a_network_delay() -> None:
    """partner calls personalization, which throws on a third of its requests (its own
    errors) and got somewhat slower: partner's calls to it slowed more than its server
    side shows (timeouts and retries on a failing server). That is personalization's
    trouble; the network keeps only a small part of it."""
    from correlator.detector import anomaly_frame

    row = _call_row
    rows = [
        row("partner", "client_latency", "personalization", 34.0, 0.22, 0.76),
        row("personalization", "span_latency", "", 3.0, 0.03, 0.34),
    ]
    ctx = dataclasses.replace(context(build("deployment")), anomalies=anomaly_frame(rows))
    quiet = {f.service: f.score for f in run("network_delay", ctx).findings}
    failing = [*rows, row("personalization", "error_ratio", "", 600.0, 0.0006, 0.34)]
    ctx = dataclasses.replace(ctx, anomalies=anomaly_frame(failing))
    found = {f.service: f.score for f in run("network_delay", ctx).findings}
    assert quiet.get("partner", 0.0) >= 0.3
    assert found.get("partner", 0.0) < 0.5 * quiet["partner"]


def _log_row(svc: str, role: str, peer: str, onset: float, score: float) -> dict[str, Any]:
    return {
        "service": svc, "role": role, "peer": peer, "onset": onset, "end": onset + 600.0,
        "score": score, "direction": "up", "baseline": 0.0, "peak": 0.2,
        "modality": "logs", "signal": "invalid response from <svc>",
    }  # fmt: skip


def test_errors_a_service_logs_about_another_are_not_its_own_code_fault() -> None:
    """Wrong values: pricing answers fine by its own measure; checkout logs "invalid
    response from pricing". The code fault is pricing's, named by its caller."""
    from correlator.detector import anomaly_frame
    from correlator.topology import named_by_callers

    rows = [
        _log_row("checkout", "log_template", "pricing", 100.0, 25.0),
        {**_log_row("checkout", "error_rate", "", 100.0, 30.0), "modality": "metrics"},
    ]
    ctx = dataclasses.replace(
        context(build("deployment")), anomalies=named_by_callers(anomaly_frame(rows))
    )
    found = {f.service: f for f in run("code_fault", ctx).findings}
    assert found["checkout"].features["failing_calls"] > 0.7
    assert found["pricing"].score > 0.5 > found["checkout"].score
    # A faint stray error line long before does not hide that the calls failed with them.
    early = [*rows, _log_row("checkout", "log_errors", "", -400.0, 3.0)]
    ctx = dataclasses.replace(ctx, anomalies=named_by_callers(anomaly_frame(early)))
    found = {f.service: f for f in run("code_fault", ctx).findings}
    assert found["pricing"].score > 0.5 > found["checkout"].score


def test_a_leak_that_reached_its_limit_and_hurts_counts_before_any_kill() -> None:
    sc = build("memory_leak")
    s = sc.telemetry.signals
    unkilled = _with_signals(sc, s[~s["role"].isin(("oom_kills", "restarts"))])
    res = run("memory_leak", context(unkilled))
    leak = {f.service: f for f in res.findings}["payments"]
    assert leak.features["killed"] == 0.0 and leak.features["hurt"] > 0.5
    assert leak.score >= 0.7  # as strong as a deploy or an overloaded database


def test_trouble_that_began_long_before_the_climb_is_not_the_leaks_doing() -> None:
    """A service already slow (a victim of something else) whose memory then climbs:
    its slowness began long before the climb, so the climb did not hurt anything."""
    from correlator.roles import SYMPTOM_ROLES

    sc = build("memory_leak")
    s = sc.telemetry.signals
    ctx = context(_with_signals(sc, s[~s["role"].isin(("oom_kills", "restarts"))]))
    a = ctx.anomalies
    mem_at = float(
        a.loc[
            (a["service"] == "payments") & a["role"].isin(("memory", "memory_ratio")), "onset"
        ].min()
    )
    sym = (a["service"] == "payments") & a["role"].isin(list(SYMPTOM_ROLES))
    assert sym.any()
    hurt = {f.service: f for f in run("memory_leak", ctx).findings}["payments"]
    early = a.copy()
    early.loc[sym, "onset"] = mem_at - 900.0
    before = dataclasses.replace(ctx, anomalies=early)
    late = {f.service: f for f in run("memory_leak", before).findings}["payments"]
    assert hurt.features["hurt"] > 0.5 and late.features["hurt"] == 0.0
    assert late.score < 0.5 <= hurt.score


def test_a_service_that_logs_its_memory_ran_out_is_a_leak_as_good_as_killed() -> None:
    """No kill or restart is scraped, but payments' own new log lines say the heap ran
    out: that counts as the kill; the same lines from another service do not."""
    from correlator.detector import anomaly_frame

    sc = build("memory_leak")
    s = sc.telemetry.signals
    ctx = context(_with_signals(sc, s[~s["role"].isin(("oom_kills", "restarts"))]))
    quiet = run("memory_leak", ctx)
    before = {f.service: f for f in quiet.findings}["payments"]
    oom = "GET /pay failed: java.lang.OutOfMemoryError: Java heap space"
    rows = {
        "role": "log_template", "modality": "logs", "signal": oom, "peer": "",
        "onset": float(ctx.anomalies["onset"].min()), "end": float(ctx.window.end),
        "score": 12.0, "direction": "up", "baseline": 0.0, "peak": 0.05,
    }  # fmt: skip
    said = pd.concat([ctx.anomalies, anomaly_frame([{**rows, "service": "payments"}])])
    res = run("memory_leak", dataclasses.replace(ctx, anomalies=said))
    leak = {f.service: f for f in res.findings}
    assert leak["payments"].features["killed"] > 0.9 > before.features["killed"]
    assert leak["payments"].score > before.score
    assert any(e.kind == "log" for e in leak["payments"].evidence)
    # A service with no memory signal at all, whose logs say it ran out, is a candidate.
    other = pd.concat([ctx.anomalies, anomaly_frame([{**rows, "service": "search"}])])
    found = run("memory_leak", dataclasses.replace(ctx, anomalies=other)).findings
    assert {f.service: f for f in found}["search"].features["killed"] > 0.9
    # Nor is a memory metric needed at all: the lines alone are seen.
    blind = _with_signals(sc, s[~s["role"].isin(("memory", "memory_limit", "oom_kills"))])
    ctx = context(blind)
    lines = anomaly_frame([{**rows, "service": "search"}])
    found = run("memory_leak", dataclasses.replace(ctx, anomalies=lines)).findings
    assert [f.service for f in found] == ["search"]


def test_one_service_failing_on_a_shared_database_is_its_own_db_trouble() -> None:
    """Five services share PostgreSQL (no database metrics); only inventory's queries
    slow down and fail (its table is locked), another's wobble a little. The trouble is
    inventory's use of the database, not the network to it and not the database as a
    whole; when most callers' queries fail, it is no one caller's."""
    import networkx as nx

    from correlator.detector import anomaly_frame

    def row(svc: str, role: str, score: float) -> dict:  # type: ignore[type-arg]
        return {
            "service": svc, "role": role, "peer": "postgres", "onset": 1000.0, "end": 1600.0,
            "score": score, "direction": "up", "baseline": 0.005, "peak": 2.0,
            "modality": "spans", "signal": role, "evidence": "",
        }  # fmt: skip

    g = nx.DiGraph()
    g.add_node("postgres", kind="database")
    callers = ("catalog", "search", "inventory", "checkout", "payment")
    for c in callers:
        g.add_node(c, kind="service")
        g.add_edge(c, "postgres")
    rows = [row("inventory", "client_errors", 6.0), row("inventory", "client_latency", 4.4)]
    rows += [row("catalog", "client_latency", 3.0)]
    base = context(build("deployment"))
    ctx = dataclasses.replace(base, anomalies=anomaly_frame(rows), graph=g)
    found = {f.service: f for f in run("db_overload", ctx).findings}
    assert set(found) == {"inventory"} and found["inventory"].score >= 0.4
    assert not run("network_delay", ctx).findings
    everyone = [row(c, "client_errors", 6.0) for c in callers]
    ctx = dataclasses.replace(base, anomalies=anomaly_frame(everyone), graph=g)
    assert not [f for f in run("db_overload", ctx).findings if f.service in callers]


def test_a_database_whose_logs_say_it_is_at_its_limits_is_overloaded() -> None:
    """No database metric is scraped: every caller's calls to postgres slow down and fail.
    Seen only from outside that is a failing dependency; postgres' own new lines saying
    "too many clients" make it an overloaded database (and weaken the failing-dependency
    reading: something inside it moved)."""
    import networkx as nx

    from correlator.detector import anomaly_frame

    def row(svc: str, role: str, peer: str, signal: str = "") -> dict[str, Any]:
        return {
            "service": svc, "role": role, "peer": peer, "onset": 1000.0, "end": 1600.0,
            "score": 40.0, "direction": "up", "baseline": 0.005, "peak": 2.0,
            "modality": "logs" if role == "log_template" else "metrics", "signal": signal,
        }  # fmt: skip

    g = nx.DiGraph()
    g.add_node("postgres", kind="database")
    for c in ("catalog", "search", "checkout"):
        g.add_node(c, kind="service")
        g.add_edge(c, "postgres")
    rows = [row("postgres", "edge_latency", c) for c in ("catalog", "search", "checkout")]
    base = dataclasses.replace(context(build("deployment")), graph=g)
    outside = dataclasses.replace(base, anomalies=anomaly_frame(rows))
    assert "postgres" not in {f.service for f in run("db_overload", outside).findings}
    failing = {f.service: f.score for f in run("dependency_failure", outside).findings}
    said = [*rows, row("postgres", "log_template", "", "FATAL: sorry, too many clients already")]
    inside = dataclasses.replace(base, anomalies=anomaly_frame(said))
    overload = {f.service: f.score for f in run("db_overload", inside).findings}
    assert overload["postgres"] >= 0.8
    still = {f.service: f.score for f in run("dependency_failure", inside).findings}
    assert still.get("postgres", 0.0) < failing["postgres"] and overload["postgres"] > still.get(
        "postgres", 0.0
    )


def _redis_named_by(callers: tuple[str, ...]) -> list[dict[str, Any]]:
    """Anomaly rows: each caller's new error lines name redis (a pool timeout)."""
    return [
        {
            "service": "redis", "role": "named_by_callers", "peer": c, "onset": 1000.0,
            "end": 1600.0, "score": 20.0, "direction": "up", "baseline": 0.0, "peak": 0.2,
            "modality": "logs", "signal": "call to redis failed: connection pool timeout",
        }
        for c in callers
    ]  # fmt: skip


def test_a_cache_seen_only_in_its_callers_error_lines_is_a_failing_dependency() -> None:
    """redis exports nothing and no call to it is traced; two callers' new error lines
    name it (timeouts from its connection pool): that is how it is seen failing."""
    import networkx as nx

    from correlator.detector import anomaly_frame

    g = nx.DiGraph()
    g.add_node("redis", kind="cache")
    for c in ("cart", "pricing"):
        g.add_node(c, kind="service")
        g.add_edge(c, "redis")
    rows = _redis_named_by(("cart", "pricing"))
    base = dataclasses.replace(context(build("deployment")), graph=g)
    ctx = dataclasses.replace(base, anomalies=anomaly_frame(rows))
    found = {f.service: f for f in run("dependency_failure", ctx).findings}
    assert found["redis"].score >= 0.6 and found["redis"].features["logs"] > 0.5


def test_a_faint_change_seen_by_a_dependencys_only_caller_stays_a_faint_finding() -> None:
    """Calls to an uninstrumented cache from its only caller, healthy otherwise: a
    deviation of 40 is a failing cache, one of 2.5 (at the noise) is not much of one, however
    complete the caller's view and however healthy the caller."""
    import networkx as nx

    from correlator.detector import anomaly_frame

    g = nx.DiGraph()
    g.add_node("redis", kind="cache")
    g.add_node("cart", kind="service")
    g.add_edge("cart", "redis")
    base = dataclasses.replace(context(build("deployment")), graph=g)

    def score(z: float) -> float:
        row = {
            "service": "redis", "role": "edge_latency", "peer": "cart", "onset": 1000.0,
            "end": 1600.0, "score": z, "direction": "up", "baseline": 0.001, "peak": 0.002,
            "modality": "spans", "signal": "calls to redis",
        }  # fmt: skip
        ctx = dataclasses.replace(base, anomalies=anomaly_frame([row]))
        found = {f.service: f.score for f in run("dependency_failure", ctx).findings}
        return found.get("redis", 0.0)

    assert score(40.0) >= 0.7
    assert score(2.5) < 0.25 < score(40.0) / 2


def test_a_route_surge_reaching_a_callee_twice_is_blamed_on_it() -> None:
    # More product views: the web entry calls cat, inv and rec once each per view, rec
    # calls cat too; web's other callees keep their rate. cat took most of the extra
    # requests (directly and through rec), so the surge was cat's.
    import networkx as nx

    ctx = context(build("traffic_spike"))
    g = nx.DiGraph()
    g.add_edges_from(("web", d) for d in ("cat", "inv", "rec", "basket", "find", "pay"))
    g.add_edge("rec", "cat")
    fe = ctx.anomalies[
        (ctx.anomalies["service"] == "frontend") & (ctx.anomalies["role"] == "request_rate")
    ].iloc[[0]]
    onset = float(fe["onset"].iloc[0])
    rows = pd.concat(
        [
            fe.assign(service=svc, baseline=b, peak=p, onset=onset + lag)
            for svc, b, p, lag in (
                ("web", 13.0, 36.0, 5.0),
                ("cat", 20.0, 89.0, 0.0),
                ("rec", 7.0, 29.0, 0.0),
                ("inv", 4.5, 27.0, 5.0),
            )
        ]
    )
    res = run("traffic_spike", dataclasses.replace(ctx, graph=g, anomalies=rows))
    found = {f.service: f for f in res.findings}
    assert "web" not in found
    assert found["cat"].features["entry"] == pytest.approx(1.0)
    assert found["inv"].features["entry"] < 0.5 and found["rec"].features["entry"] < 0.5
    assert max(found.values(), key=lambda f: f.score).service == "cat"


def test_memory_growth_the_alert_itself_is_about_is_not_discounted() -> None:
    # The quiet climb of test_memory_growth_that_hurts_nothing_is_discounted, paged by a
    # rule on payments' own memory: the page is what the climb hurt.
    sc = build("memory_leak")
    s = sc.telemetry.signals
    quiet = s[
        ~s["role"].isin(("oom_kills", "restarts"))
        & ~((s["service"] == "payments") & s["role"].isin(("latency", "error_rate")))
    ]
    url = "http://prom:9090/graph?g0.expr=deriv%28process_resident_memory_bytes%5B2m%5D%29+%3E+5e5"
    paged = dataclasses.replace(
        _with_signals(sc, quiet),
        alert=dataclasses.replace(
            sc.alert, labels={**sc.alert.labels, "service": "payments"}, generator_url=url
        ),
    )
    calm = {f.service: f for f in run("memory_leak", context(_with_signals(sc, quiet))).findings}
    mine = {f.service: f for f in run("memory_leak", context(paged)).findings}
    assert calm["payments"].features["hurt"] == 0.0
    assert mine["payments"].features["hurt"] == 1.0
    assert mine["payments"].score > calm["payments"].score
    # A page on another service's memory, or on payments' latency, changes nothing.
    other = dataclasses.replace(
        paged,
        alert=dataclasses.replace(
            paged.alert, labels={**paged.alert.labels, "service": "checkout"}
        ),
    )
    assert {f.service: f for f in run("memory_leak", context(other)).findings}["payments"].features[
        "hurt"
    ] == 0.0
    lat = dataclasses.replace(
        paged,
        alert=dataclasses.replace(
            paged.alert, generator_url=url.replace("process_resident_memory_bytes", "http_latency")
        ),
    )
    assert {f.service: f for f in run("memory_leak", context(lat)).findings}["payments"].features[
        "hurt"
    ] == 0.0


def _up_rows(svc: str, pods: dict[str, list[float]], t0: float, step: float) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"role": "up", "service": svc, "ts": t0 + i * step, "value": v, "pod": pod}
            for pod, values in pods.items()
            for i, v in enumerate(values)
        ]
    )


def test_a_service_every_instance_of_which_stopped_answering_is_a_failing_dependency() -> None:
    # payments (instrumented: it has its own request rate and latency) stops: both its
    # instances fail their scrapes for a minute after the alert's start.
    sc = build("memory_leak")
    ctx = context(sc)
    t0 = float(ctx.window.start) - 1200.0
    n_before, n_down = 80, 4  # 15 s samples: 20 min up, then 1 min down
    down = [1.0] * n_before + [0.0] * n_down + [1.0] * 4
    both = _up_rows("payments", {"payments-0": down, "payments-1": down}, t0, 15.0)
    res = run(
        "dependency_failure", context(_with_signals(sc, pd.concat([sc.telemetry.signals, both])))
    )
    found = {f.service: f for f in res.findings}
    assert found["payments"].features["down"] == 1.0
    assert any("was down" in e.summary for e in found["payments"].evidence)
    # One instance of two down leaves the other serving: not a down service.
    one = _up_rows("payments", {"payments-0": down, "payments-1": [1.0] * len(down)}, t0, 15.0)
    res = run(
        "dependency_failure", context(_with_signals(sc, pd.concat([sc.telemetry.signals, one])))
    )
    assert "payments" not in {f.service for f in res.findings}
    # Nor is one missed scrape.
    blip = [1.0] * n_before + [0.0] + [1.0] * 7
    res = run(
        "dependency_failure",
        context(
            _with_signals(
                sc, pd.concat([sc.telemetry.signals, _up_rows("payments", {"p": blip}, t0, 15.0)])
            )
        ),
    )
    assert "payments" not in {f.service for f in res.findings}


def test_a_down_service_judged_first_leaves_the_next_callees_namers_alone() -> None:
    # payments (down) is judged before redis (named in its callers' error lines): the
    # rows naming payments must not stand in for those naming redis.
    from correlator.detector import anomaly_frame

    sc = build("memory_leak")
    t0 = float(context(sc).window.start) - 1200.0
    down = [1.0] * 80 + [0.0] * 4 + [1.0] * 4
    ups = _up_rows("payments", {"payments-0": down, "payments-1": down}, t0, 15.0)
    ctx = context(_with_signals(sc, pd.concat([sc.telemetry.signals, ups])))
    graph = ctx.graph.copy()
    graph.add_node("redis", kind="cache")
    rows = _redis_named_by(("cart", "pricing"))
    for c in ("cart", "pricing"):
        graph.add_edge(c, "redis")
    both = pd.concat([ctx.anomalies, anomaly_frame(rows)], ignore_index=True)
    ctx = dataclasses.replace(ctx, graph=graph, anomalies=anomaly_frame(both))
    found = {f.service: f for f in run("dependency_failure", ctx).findings}
    assert found["payments"].features["down"] == 1.0
    assert found["redis"].features["logs"] > 0.5


def test_the_service_that_locked_a_shared_table_is_blamed_not_the_callers_that_waited() -> None:
    # inventory's nightly job runs "LOCK TABLE products" on postgres 90 s before catalog's
    # and search's queries slow down; inventory's own calls are fine (it holds the lock).
    import networkx as nx

    from correlator.detector import anomaly_frame
    from correlator.model import SPAN_COLUMNS

    def row(svc: str) -> dict:  # type: ignore[type-arg]
        return {
            "service": svc, "role": "client_latency", "peer": "postgres", "onset": 1000.0,
            "end": 1600.0, "score": 5.0, "direction": "up", "baseline": 0.005, "peak": 2.0,
            "modality": "spans", "signal": "client_latency", "evidence": "",
        }  # fmt: skip

    def span(svc: str, name: str, start: float, n: int) -> dict:  # type: ignore[type-arg]
        return {
            **dict.fromkeys(SPAN_COLUMNS, ""), "trace_id": f"t{n}", "span_id": f"s{n}",
            "service": svc, "name": name, "kind": 3, "start": start, "duration": 0.01,
            "status": 0, "peer": "postgres", "db_system": "postgresql",
        }  # fmt: skip

    g = nx.DiGraph()
    g.add_node("postgres", kind="database")
    for c in ("catalog", "search", "inventory"):
        g.add_edge(c, "postgres")
    routine = [
        span(c, "SELECT products", t, i)
        for i, (c, t) in enumerate(
            (c, t) for c in ("catalog", "search", "inventory") for t in range(-2000, 1600, 100)
        )
    ]
    base = context(build("deployment"))

    def found(spans: list) -> dict:  # type: ignore[type-arg]
        tel = copy.copy(base.telemetry)
        tel.spans = pd.DataFrame(spans, columns=list(SPAN_COLUMNS))
        ctx = dataclasses.replace(
            base, anomalies=anomaly_frame([row("catalog"), row("search")]), graph=g, telemetry=tel
        )
        return {f.service: f for f in run("db_overload", ctx).findings}

    lock = span("inventory", "LOCK TABLE products IN EXCLUSIVE MODE", 910.0, 9999)
    mine = found([*routine, lock])
    assert mine["inventory"].features["lock"] == 1.0 and mine["inventory"].score >= 0.8
    assert any("LOCK TABLE" in e.summary for e in mine["inventory"].evidence)
    assert "inventory" not in found(routine)
    # A lock it takes every night, baseline included, is routine; one taken after the
    # calls slowed did not start it.
    nightly = {**lock, "start": -1500.0, "span_id": "early"}
    assert "inventory" not in found([*routine, nightly, lock])
    assert "inventory" not in found([*routine, {**lock, "start": 1500.0}])


def test_errors_a_service_passes_on_from_a_failing_call_are_not_its_own_code_fault() -> None:
    # The gateway's error ratio rises; its traces show why: in each failed request its
    # own call to account fails (deadline exceeded). Read from the spans alone (no
    # client_errors series moved), that is not the gateway's code.
    from correlator.detector import anomaly_frame
    from correlator.model import SPAN_COLUMNS

    row = {
        "service": "gateway", "role": "error_ratio", "peer": "", "onset": 1000.0, "end": 1600.0,
        "score": 30.0, "direction": "up", "baseline": 0.005, "peak": 0.05,
        "modality": "metrics", "signal": "error_ratio", "evidence": "",
    }  # fmt: skip
    base = context(build("deployment"))

    def code_fault(spans: list) -> Any:  # type: ignore[type-arg]
        tel = copy.copy(base.telemetry)
        tel.spans = pd.DataFrame(spans, columns=list(SPAN_COLUMNS))
        ctx = dataclasses.replace(base, anomalies=anomaly_frame([row]), telemetry=tel)
        return {f.service: f for f in run("code_fault", ctx).findings}["gateway"]

    def span(i: int, kind: int, peer: str, status: int) -> dict:  # type: ignore[type-arg]
        return {
            **dict.fromkeys(SPAN_COLUMNS, ""), "trace_id": f"t{i}", "span_id": f"{kind}-{i}",
            "service": "gateway", "name": "GET /api", "kind": kind, "start": 1000.0 + i,
            "duration": 2.0, "status": status, "peer": peer,
        }  # fmt: skip

    passed = [span(i, k, p, 2) for i in range(10) for k, p in ((2, ""), (3, "account"))]
    own = [span(i, 2, "", 2) for i in range(10)] + [span(i, 3, "account", 0) for i in range(10)]
    mine, theirs = code_fault(own), code_fault(passed)
    assert theirs.features["failing_calls"] == pytest.approx(1.0)
    assert mine.features["failing_calls"] < 0.5
    assert theirs.score < 0.5 * mine.score


def test_a_delay_behind_one_caller_is_named_beside_a_faint_wobble_elsewhere() -> None:
    # One pod of checkout-ui answers late: only edge-proxy calls it, and edge-proxy's own
    # latency rose by what the calls did. Far off, one faint call wobbles. The one troubled
    # call carries most of the trouble: its callee is the suspect, the wobble is not.
    from correlator.detector import anomaly_frame

    row = _call_row

    rows = [
        row("edge-proxy", "client_latency", "checkout-ui", 4.6, 0.56, 0.88),
        row("edge-proxy", "latency", "", 6.7, 0.96, 1.94),
        row("store-locator", "client_latency", "carrier-api", 2.3, 0.29, 0.29),
    ]
    ctx = dataclasses.replace(context(build("deployment")), anomalies=anomaly_frame(rows))
    found = {f.service: f for f in run("network_delay", ctx).findings}
    assert "checkout-ui" in found and found["checkout-ui"].features["share"] > 0.5
    assert not {"store-locator", "carrier-api", "edge-proxy"} & set(found)


def test_calls_laid_at_one_service_door_make_it_the_network_delay_as_strong_as_they_are() -> None:
    # The spans laid a delay on calls answered by one pod of audit at audit's door
    # (transit_latency): its own server time did not move by construction. No call row
    # names it (the caller's view of all its calls barely moved), and it is still named,
    # as strong as the transit rows say; a faint call wobble elsewhere is weaker.
    from correlator.detector import anomaly_frame

    row = _call_row

    rows = [
        row("audit", "transit_latency", "", 24.0, 0.0005, 0.59),
        row("store-locator", "client_latency", "carrier-api", 2.3, 0.29, 0.29),
    ]
    ctx = dataclasses.replace(context(build("deployment")), anomalies=anomaly_frame(rows))
    found = {f.service: f for f in run("network_delay", ctx).findings}
    assert found["audit"].score == pytest.approx(24.0 / 32.0)
    assert found["audit"].evidence and found["audit"].features["own_rise"] == 0.0
    others = [f.score for f in found.values() if f.service != "audit"]
    assert max(others, default=0.0) < found["audit"].score
    # Alone, with no call row at all, it is still found.
    ctx = dataclasses.replace(ctx, anomalies=anomaly_frame(rows[:1]))
    assert [f.service for f in run("network_delay", ctx).findings] == ["audit"]


def test_errors_after_the_calls_a_callee_records_slowed_are_not_a_code_fault() -> None:
    """A delay in front of image-resizer: auth's metrics count its timeouts as errors, and
    only image-resizer's spans show auth's calls to it slowing (an edge row keyed by the
    callee, with auth as the peer). Auth's errors are its calls failing, not its code."""
    from correlator.detector import anomaly_frame

    errors = {**_log_row("auth", "error_rate", "", 120.0, 280.0), "modality": "metrics"}
    slow = {
        **_log_row("image-resizer", "edge_latency", "auth", 100.0, 8.0),
        "modality": "spans", "signal": "calls to image-resizer",
    }  # fmt: skip
    base = context(build("deployment"))

    def code_fault(rows: list[dict[str, Any]]) -> float:
        ctx = dataclasses.replace(base, anomalies=anomaly_frame(rows))
        return {f.service: f for f in run("code_fault", ctx).findings}["auth"].score

    alone, with_calls = code_fault([errors]), code_fault([errors, slow])
    assert alone > 0.5
    assert with_calls < 0.6 * alone
    # The calls slowing only after the errors began do not excuse them.
    late = {**slow, "onset": 400.0}
    assert code_fault([errors, late]) == pytest.approx(alone)


def test_many_services_overloaded_at_once_without_request_rates_is_a_surge_at_their_entry() -> None:
    """No request rate is measured (traces and logs only). Three services the gateway
    feeds begin to fail at once, none because of its calls, each saying it sheds load:
    load arrived at the gateway. The same errors saying something else, beside refused
    connections, or trouble that spreads up one chain from a single place, are not a
    surge."""
    from correlator.detector import anomaly_frame
    from correlator.model import SPAN_COLUMNS

    base = context(build("deployment"))
    tel = copy.copy(base.telemetry)
    tel.signals = tel.signals[tel.signals["role"] != "request_rate"]
    signals = base.signals[base.signals["role"] != "request_rate"]

    def row(svc: str, onset: float) -> dict[str, Any]:
        return {
            "service": svc, "role": "span_errors", "peer": "", "onset": onset,
            "end": onset + 600.0, "score": 6.0, "direction": "up", "baseline": 0.0,
            "peak": 0.5, "modality": "spans", "signal": "GET /api", "evidence": "",
        }  # fmt: skip

    def span(svc: str, i: int, error: str) -> dict[str, Any]:
        return {
            **dict.fromkeys(SPAN_COLUMNS, ""), "trace_id": f"{svc}{i}", "span_id": f"{svc}-{i}",
            "service": svc, "name": "GET /api", "kind": 2, "start": 1000.0 + 10 * i,
            "duration": 0.2, "status": 2, "peer": "", "error": error,
        }  # fmt: skip

    def surge(edges: list[tuple[str, str]], error: str, refused: int = 0) -> list[str]:
        leaves = ["a", "b", "c"]
        spans = [span(s, i, error) for s in leaves for i in range(4)]
        gone = "dial tcp 10.0.3.7:8080: connect: connection refused"
        spans += [span(s, 10 + i, gone) for s in leaves[:refused] for i in range(2)]
        tel.spans = pd.DataFrame(spans, columns=list(SPAN_COLUMNS))
        rows = [row(s, 1000.0 + 15 * k) for k, s in enumerate(leaves)] + [row("gw", 1050.0)]
        ctx = dataclasses.replace(
            base,
            anomalies=anomaly_frame(rows),
            telemetry=tel,
            signals=signals,
            graph=nx.DiGraph(edges),
        )
        result = run("traffic_spike", ctx)
        return [f.service for f in result.findings]

    fan = [("gw", "a"), ("gw", "b"), ("gw", "c"), ("gw", "d")]
    shedding = "Error: Server overloaded: request queue full, shedding load"
    assert surge(fan, shedding) == ["gw"]
    # Connections refused as well (a zone's servers gone): the rest are overloaded by
    # lost capacity, not by more demand.
    assert surge(fan, shedding, refused=2) == []
    assert surge(fan, "ECONNREFUSED 10.0.3.7:8080") == []
    assert surge([("gw", "a"), ("a", "b"), ("b", "c")], shedding) == []


def test_trouble_that_came_and_went_long_before_the_alert_did_counts_half() -> None:
    """A deploy's finding, its service's trouble lasting to the window's end, against the
    same trouble over twenty minutes before the end while the alert still fires: a
    change that came and went is not what keeps the alert firing."""
    from correlator.rank import rank
    from correlator.topology import PASSED

    ctx = context(build("deployment"))
    finding = run("deployment", ctx).findings[0]
    a = ctx.anomalies
    mine = a["service"] == finding.service
    assert not ctx.passed_while_alert_held(finding.service)
    gone = a.assign(end=a["end"].where(~mine, ctx.window.end - 1200.0))
    passed = dataclasses.replace(ctx, anomalies=gone)
    assert passed.passed_while_alert_held(finding.service)
    (held,) = [f for f in rank(ctx, [finding]) if f.cause == "deployment"]
    (came_went,) = [f for f in rank(passed, [finding]) if f.cause == "deployment"]
    assert came_went.score == pytest.approx(PASSED * held.score)
    assert came_went.confidence < held.confidence
    # Over just before the end (within five minutes) is not over.
    recent = a.assign(end=a["end"].where(~mine, ctx.window.end - 120.0))
    assert not dataclasses.replace(ctx, anomalies=recent).passed_while_alert_held(finding.service)


def test_a_surge_accounts_for_the_services_it_overloaded_below_its_entry() -> None:
    """A surge's finding lists the services downstream of its entry whose own trouble began
    once it had (``covers``), as a zone's lists the services it took pods from: their
    standing as a root counts for the surge, and an `unknown` at one of them is `covered`."""
    from correlator.rank import candidate_features

    ctx = context(build("traffic_spike"))
    (surge,) = [f for f in run("traffic_spike", ctx).findings if f.service == "frontend"]
    below = nx.descendants(ctx.graph, "frontend")
    assert surge.covers and set(surge.covers) <= below
    began = ctx.anomalies.groupby("service")["onset"].min()
    assert all(began[s] >= surge.onset - ctx.onset_slack for s in surge.covers)
    # Trouble that began well before the surge is not the surge's doing.
    early = surge.covers[0]
    a = ctx.anomalies.copy()
    a.loc[a["service"] == early, "onset"] = float(surge.onset) - 900.0
    earlier = dataclasses.replace(ctx, anomalies=a)
    (again,) = [f for f in run("traffic_spike", earlier).findings if f.service == "frontend"]
    assert early not in again.covers
    # So is trouble of any kind of its own: a database's transactions slowing, calls to it
    # failing, a series no role knows, before the surge (its latency only after).
    for role, peer in (("db_tx_duration", ""), ("edge_errors", "frontend"), ("series", "")):
        first = ctx.anomalies.iloc[[0]].assign(
            service=early, role=role, peer=peer, onset=float(surge.onset) - 300.0, score=500.0
        )
        first_too = pd.concat([ctx.anomalies, first], ignore_index=True)
        before = dataclasses.replace(ctx, anomalies=first_too)
        (again,) = [f for f in run("traffic_spike", before).findings if f.service == "frontend"]
        assert early not in again.covers, role

    unknown = dataclasses.replace(surge, service=early, cause="unknown", score=0.0, covers=())
    rows = candidate_features(ctx, [surge, unknown])
    assert rows[1]["covered"] == pytest.approx(surge.score)
    assert rows[0]["covers"] > 0.0

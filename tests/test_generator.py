"""The incident generator: determinism, realistic structure, fault signatures, OTLP validity."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from google.protobuf.json_format import Parse
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from correlator.bundle import read_bundle, validate_bundle
from correlator.catalog import default_catalog, service_from_pod
from correlator.fingerprint import alert_fingerprint
from correlator.generator.api import generate, write
from correlator.generator.cli import scenarios
from correlator.generator.faults import CAUSES
from correlator.model import parse_time
from correlator.openmetrics import Series, parse_openmetrics


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)


@pytest.fixture(scope="module")
def leak(tmp_path_factory: pytest.TempPathFactory) -> Path:
    scen = generate(
        4242, services=8, duration=3600, cause="memory_leak", severity="high", traces=60
    )
    return write(scen, tmp_path_factory.mktemp("gen") / scen.name)


@pytest.fixture(scope="module")
def series(leak: Path) -> dict[str, list[Series]]:
    return parse_openmetrics((leak / "metrics.om").read_bytes()).by_name()


def test_same_seed_gives_identical_files(tmp_path: Path, leak: Path) -> None:
    again = write(
        generate(4242, services=8, duration=3600, cause="memory_leak", severity="high", traces=60),
        tmp_path / "again",
    )
    for name in (
        "scenario.json",
        "metrics.om",
        "traces.otlp.jsonl",
        "logs.otlp.jsonl",
        "topology.json",
    ):
        assert (again / name).read_bytes() == (leak / name).read_bytes(), name
    other = generate(
        4243, services=8, duration=3600, cause="memory_leak", severity="high", traces=60
    )
    assert other.to_json()["alerts"] != json.loads((leak / "scenario.json").read_text())["alerts"]


def test_bundle_reads_and_validates(leak: Path) -> None:
    assert validate_bundle(leak) == []
    bundle = read_bundle(leak)
    assert bundle.truth is not None and bundle.truth["cause"] == "memory_leak"
    start, end = bundle.window
    assert parse_time(bundle.truth["start"]) - start >= 30 * 60
    assert end - start == 3600


def test_alerts_are_alertmanager_objects(leak: Path) -> None:
    doc = json.loads((leak / "scenario.json").read_text())
    fault = parse_time(doc["truth"]["start"])
    for alert in doc["alerts"]:
        assert alert["fingerprint"] == alert_fingerprint(alert["labels"])
        assert alert["status"]["state"] == "active"
        assert alert["receivers"] and alert["generatorURL"].startswith("http")
        assert fault < parse_time(alert["startsAt"]) < fault + 40 * 60
    assert doc["alerts"][0]["labels"]["severity"] == "page"


def test_counters_are_monotonic_except_at_restarts(series: dict[str, list[Series]]) -> None:
    restarted = {
        s.labels["pod"]
        for s in series["kube_pod_container_status_restarts_total"]
        if s.values[-1] > 0
    }
    assert restarted, "a high-severity memory leak restarts pods"
    checked = 0
    for name, group in series.items():
        histogram = name.startswith("traces_") and name.endswith(("_bucket", "_count"))
        if not (name.endswith("_total") or histogram):
            continue
        for s in group:
            drops = np.flatnonzero(np.diff(s.values) < 0)
            if drops.size:
                assert name.startswith("container_") and s.labels.get("pod") in restarted, (
                    name,
                    s.labels,
                )
            checked += 1
    assert checked > 100


#: Catalog roles from exporters the generator does not draw yet (runtime, network, disk
#: and client-side metrics joined the default catalog with issue #12).
NOT_DRAWN = frozenset(
    {"client_latency", "client_errors", "client_rate", "network_receive", "network_transmit",
     "network_drops", "disk_io", "open_fds", "threads", "gc_time"}
)  # fmt: skip


def test_every_catalog_role_has_data(series: dict[str, list[Series]]) -> None:
    names = set(series)
    missing = []
    for role, specs in default_catalog().roles.items():
        if role in NOT_DRAWN:
            continue
        wanted = {spec.metric + ("_bucket" if spec.kind == "histogram" else "") for spec in specs}
        has_regex = any(spec.metric == "" for spec in specs)
        if not (wanted & names) and not (
            has_regex and any(n.endswith("_build_info") for n in names)
        ):
            missing.append(role)
    assert missing == []


def test_pods_are_named_like_a_deployment(series: dict[str, list[Series]]) -> None:
    pods = {s.labels["pod"] for s in series["container_memory_working_set_bytes"]}
    services = {s.labels["service_name"] for s in series["traces_span_metrics_calls_total"]}
    for pod in pods:
        assert service_from_pod(pod) in services, pod
        rs_hash, suffix = pod.split("-")[-2:]
        assert 9 <= len(rs_hash) <= 10 and len(suffix) == 5
    zones = {s.labels["label_topology_kubernetes_io_zone"] for s in series["kube_node_labels"]}
    assert len(zones) == 3


def test_memory_grows_to_the_limit_before_the_oom_kill(
    leak: Path, series: dict[str, list[Series]]
) -> None:
    truth = json.loads((leak / "scenario.json").read_text())["truth"]
    oom = [s for s in series["container_oom_events_total"] if s.values[-1] > 0]
    assert oom and all(service_from_pod(s.labels["pod"]) == truth["service"] for s in oom)
    pod = oom[0].labels["pod"]
    kill = oom[0].ts[np.argmax(oom[0].values > 0)]
    mem = next(s for s in series["container_memory_working_set_bytes"] if s.labels["pod"] == pod)
    limit = next(
        s
        for s in series["kube_pod_container_resource_limits"]
        if s.labels["pod"] == pod and s.labels["resource"] == "memory"
    ).values[0]
    before = mem.values[(mem.ts > parse_time(truth["start"])) & (mem.ts <= kill)]
    assert before.size > 5 and np.all(np.diff(before) > 0), "working set grows steadily"
    assert before[-1] > 0.95 * limit
    assert any(
        s.labels["pod"] == pod and s.labels["reason"] == "OOMKilled"
        for s in series["kube_pod_container_status_last_terminated_reason"]
    )


def test_otlp_lines_parse_with_the_protobuf_json_mapping(leak: Path) -> None:
    n = 0
    for req in _lines(leak / "traces.otlp.jsonl"):
        Parse(json.dumps(req), ExportTraceServiceRequest())
        n += 1
    for req in _lines(leak / "logs.otlp.jsonl"):
        Parse(json.dumps(req), ExportLogsServiceRequest())
    assert n == 60


def _spans(path: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    out = []
    for req in _lines(path / "traces.otlp.jsonl"):
        for rs in req["resourceSpans"]:
            res = {a["key"]: next(iter(a["value"].values())) for a in rs["resource"]["attributes"]}
            for ss in rs["scopeSpans"]:
                out.extend((res, span) for span in ss["spans"])
    return out


def test_trace_structure_and_log_links(leak: Path) -> None:
    spans = _spans(leak)
    by_id = {s["spanId"]: (res, s) for res, s in spans}
    for key in (
        "service.name",
        "service.version",
        "k8s.pod.name",
        "k8s.namespace.name",
        "cloud.availability_zone",
        "deployment.environment.name",
    ):
        assert all(key in res for res, _ in spans), key
    servers_under_clients = 0
    for _res, span in spans:
        attrs = {a["key"]: next(iter(a["value"].values())) for a in span["attributes"]}
        if span["kind"] == 3 and "db.system" not in attrs and attrs.get("server.port") == "8080":
            children = [s for _, s in spans if s.get("parentSpanId") == span["spanId"]]
            assert len(children) == 1 and children[0]["kind"] == 2
            child_res = next(r for r, s in spans if s["spanId"] == children[0]["spanId"])
            assert child_res["service.name"] == attrs["peer.service"]
            servers_under_clients += 1
        if span["kind"] == 3 and attrs.get("server.port") == "5432":
            assert attrs["db.system"] == "postgresql" and attrs["db.name"]
        if span.get("status", {}).get("code") == 2 and span.get("events"):
            ev = span["events"][0]
            keys = {a["key"] for a in ev["attributes"]}
            assert ev["name"] == "exception"
            assert {"exception.type", "exception.message", "exception.stacktrace"} <= keys
        if "parentSpanId" in span:
            assert span["parentSpanId"] in by_id
    assert servers_under_clients > 10
    linked = 0
    for req in _lines(leak / "logs.otlp.jsonl"):
        for rl in req["resourceLogs"]:
            for sl in rl["scopeLogs"]:
                for rec in sl["logRecords"]:
                    assert rec["severityText"] in ("INFO", "WARN", "ERROR", "FATAL")
                    if "traceId" in rec:
                        assert rec["spanId"] in by_id
                        assert by_id[rec["spanId"]][1]["traceId"] == rec["traceId"]
                        linked += 1
    assert linked > 10


def test_onsets_follow_the_call_graph(tmp_path: Path) -> None:
    scen = generate(
        4300, services=12, duration=3600, cause="db_overload", severity="high", traces=20
    )
    onsets = {e["service"]: parse_time(e["at"]) for e in scen.timeline if e["kind"] == "onset"}
    db = scen.truth["service"]
    assert db in onsets
    callers = [
        scen.topology.nodes[scen.topology.edges[e].src].id
        for e in scen.topology.in_edges[scen.topology.by_id(db).index]
    ]
    for caller in callers:
        if caller in onsets:
            assert onsets[caller] > onsets[db], caller
    pg = [
        s
        for s in parse_openmetrics("".join(scen.metric_lines())).series
        if s.name == "pg_stat_activity_count" and s.labels["service"] == db
    ]
    total = sum(s.values for s in pg)
    k = scen.fault.step
    assert total[k + 30 :].max() > 2 * total[:k].mean(), "connections climb toward max_connections"


@pytest.mark.parametrize("cause", CAUSES)
def test_every_cause_generates_a_labeled_scenario(cause: str) -> None:
    scen = generate(
        4400 + CAUSES.index(cause),
        services=8,
        duration=3000,
        cause=cause,
        severity="high",
        traces=10,
    )
    assert scen.truth["cause"] == cause
    assert scen.topology.by_id(scen.truth["service"])
    if cause == "az_failure":
        assert scen.truth["zone"] in scen.topology.zones
    if cause == "deployment":
        versions = {(p.service, p.version) for p in scen.sim.pods}
        svc = scen.topology.by_id(scen.truth["service"]).index
        assert len({v for s, v in versions if s == svc}) == 2
    assert scen.alerts and scen.description


def test_large_system_shape() -> None:
    from correlator.generator.topology import build_topology

    topo = build_topology(np.random.default_rng(1), 300)
    names = [n.id for n in topo.services()]
    assert len(names) == len(set(names)) == 300
    kinds = {n.kind for n in topo.nodes}
    assert kinds == {"service", "database", "cache", "external"}
    shared = [n for n in topo.nodes if len(topo.in_edges[n.index]) >= 3]
    assert shared, "popular services are shared by several callers"


def test_cli_generate_and_show(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(
        scenarios,
        [
            "generate",
            "--seed",
            "4500",
            "--services",
            "6",
            "--minutes",
            "55",
            "--cause",
            "code_exception",
            "--severity",
            "high",
            "--traces",
            "15",
            "--out",
            str(tmp_path),
            "--gzip",
        ],
    )
    assert res.exit_code == 0, res.output
    folder = next(p for p in tmp_path.iterdir() if p.is_dir())
    assert (folder / "metrics.om.gz").is_file()
    shown = runner.invoke(scenarios, ["show", str(folder)])
    assert shown.exit_code == 0, shown.output
    doc = json.loads((folder / "scenario.json").read_text())
    assert doc["alerts"][0]["fingerprint"] in shown.output
    assert "code_exception" in shown.output and doc["truth"]["service"] in shown.output
    bad = runner.invoke(
        scenarios, ["generate", "--seed", "1", "--minutes", "20", "--out", str(tmp_path)]
    )
    assert bad.exit_code == 2 and "too short" in bad.output


# --- wild scenarios ------------------------------------------------------------------------

import hashlib  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402

from correlator.catalog import service_from_pod as _pod_service  # noqa: E402
from correlator.generator.wild import draw_conventions  # noqa: E402


def test_classic_output_is_unchanged_by_the_wild_option(leak: Path) -> None:
    # Pinned before wild scenarios existed: the calibration and the held-out suite depend
    # on every classic seed giving the same files. Regenerate only on purpose.
    digests = {
        name: hashlib.sha256((leak / name).read_bytes()).hexdigest()[:16]
        for name in ("metrics.om", "traces.otlp.jsonl", "logs.otlp.jsonl")
    }
    assert digests == CLASSIC_4242


def test_wild_conventions_vary_across_seeds() -> None:
    convs = [draw_conventions(seed, 8) for seed in range(100, 160)]
    assert {c.interval for c in convs} == {1, 15, 60}
    assert {c.identity for c in convs} == {"service", "service_name", "job", "pod"}
    assert {c.cadvisor for c in convs} == {"pod", "container", "container_name"}
    assert {c.latency for c in convs} >= {"spanmetrics", "otel_http_old", "otel_http_new", "grpc"}
    assert {c.summary for c in convs if c.latency == "micrometer"} == {True, False}
    assert {c.low_traffic for c in convs} == {"none", "some", "all"}
    base = [c.baseline_s for c in convs]
    assert min(base) < 8 * 60 and max(base) > 45 * 60
    # large systems are never scraped every second
    assert all(draw_conventions(seed, 40).interval in (15, 60) for seed in range(100, 130))


def _wild(seed: int, tmp: Path, **kw: Any) -> tuple[Any, Path]:
    scen = generate(
        seed, services=kw.pop("services", 8), wild=True, traces=kw.pop("traces", 150), **kw
    )
    return scen, write(scen, tmp / scen.name)


def test_wild_summary_and_histogram_and_interval(tmp_path: Path) -> None:
    summ, summ_dir = _wild(110, tmp_path, cause="db_overload")
    hist, hist_dir = _wild(116, tmp_path, cause="db_overload")
    assert summ.conventions.latency == hist.conventions.latency == "micrometer"
    s = parse_openmetrics((summ_dir / "metrics.om").read_bytes())
    h = parse_openmetrics((hist_dir / "metrics.om").read_bytes())
    assert s.types["http_server_requests_seconds"] == "summary"
    assert h.types["http_server_requests_seconds"] == "histogram"
    sq = s.by_name()["http_server_requests_seconds"]
    assert {x.labels["quantile"] for x in sq} == {"0.5", "0.95", "0.99"}
    assert "http_server_requests_seconds_bucket" in h.by_name()
    outcomes = {x.labels["outcome"] for x in h.by_name()["http_server_requests_seconds_count"]}
    assert "SUCCESS" in outcomes
    # identity: pod names only (seed 110), a service label (116)
    assert all("pod" in x.labels and "service" not in x.labels for x in sq)
    assert all("service" in x.labels for x in h.by_name()["http_server_requests_seconds_count"])
    # cAdvisor with only container_name, no pod (seed 110)
    mem = [x for n, g in s.by_name().items() if n.startswith("container_memory_") for x in g]
    assert mem and all("container_name" in x.labels and "pod" not in x.labels for x in mem)
    for scen, parsed in ((summ, s), (hist, h)):
        cpu = parsed.by_name()["container_cpu_usage_seconds_total"][0]
        assert set(np.diff(cpu.ts).tolist()) <= {float(scen.conventions.interval)} | {
            float(k * scen.conventions.interval) for k in range(2, 4)
        }
    doc = json.loads((summ_dir / "scenario.json").read_text())
    assert doc["generator"]["wild"]["interval"] == 15
    assert doc["truth"]["visible_in"] == ["metrics", "spans", "logs"]


def test_wild_same_seed_same_files(tmp_path: Path) -> None:
    _, a = _wild(6001, tmp_path / "a", services=10)
    _, b = _wild(6001, tmp_path / "b", services=10)
    for name in ("scenario.json", "metrics.om", "traces.otlp.jsonl", "logs.otlp.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def _is_error(name: str, labels: Any) -> bool:
    return (
        labels.get("status_code") == "STATUS_CODE_ERROR"
        or labels.get("http_status_code", "200").startswith("5")
        or labels.get("http_response_status_code", "200").startswith("5")
        or labels.get("outcome") == "SERVER_ERROR"
        or labels.get("grpc_code", "OK") != "OK"
        or labels.get("rpc_grpc_status_code", "0") != "0"
    )


def _server_error_ratio(series: list[Series], svc: str, lo: float, hi: float) -> float:
    """Failed / all server requests of ``svc`` between ``lo`` and ``hi`` from the counters."""
    total = bad = 0.0
    for s in series:
        name = s.name
        if "client" in name or "service_graph" in name:
            continue
        if not (
            name.endswith("_count")
            or name in ("traces_span_metrics_calls_total", "grpc_server_handled_total")
        ):
            continue
        if name.startswith(("jvm_", "go_", "container_")):
            continue
        lab = s.labels
        who = (
            lab.get("service")
            or lab.get("service_name")
            or lab.get("job")
            or lab.get("application")
        )
        if lab.get("pod"):
            who = _pod_service(lab["pod"])
        if who != svc:
            continue
        inside = (s.ts >= lo) & (s.ts <= hi)
        if inside.sum() < 2:
            continue
        inc = float(s.values[inside][-1] - s.values[inside][0])
        total += inc
        bad += inc if _is_error(name, lab) else 0.0
    assert total > 0, f"no request counters for {svc}"
    return bad / total


def _records(path: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    out = []
    for req in _lines(path / "logs.otlp.jsonl"):
        for rl in req["resourceLogs"]:
            res = {a["key"]: next(iter(a["value"].values())) for a in rl["resource"]["attributes"]}
            for sl in rl["scopeLogs"]:
                out.extend((res, rec) for rec in sl["logRecords"])
    return out


def test_exceptions_show_in_spans_and_logs_not_in_metrics(tmp_path: Path) -> None:
    scen, path = _wild(
        121, tmp_path, cause="code_fault", mode="exceptions", severity="high", traces=400
    )
    truth = scen.truth
    assert truth["visible_in"] == ["spans", "logs"] and truth["cause"] == "code_fault"
    assert validate_bundle(path) == []
    svc, fault = truth["service"], parse_time(truth["start"])
    start, end = scen.start, scen.end
    series = parse_openmetrics((path / "metrics.om").read_bytes()).series
    before = _server_error_ratio(series, svc, start, fault)
    after = _server_error_ratio(series, svc, fault, end)
    assert abs(after - before) < 0.01, (before, after)
    exc_type = scen.sim.wild["exceptions"]["exc"][0]
    errors = [
        (res, s)
        for res, s in _spans(path)
        if res["service.name"] == svc
        and s.get("status", {}).get("code") == 2
        and any(
            a["value"].get("stringValue") == exc_type
            for e in s.get("events", [])
            for a in e["attributes"]
        )
    ]
    assert errors and all(int(s["startTimeUnixNano"]) / 1e9 >= fault for _, s in errors)
    logged = [
        rec
        for res, rec in _records(path)
        if res["service.name"] == svc
        and rec["severityText"] == "ERROR"
        and any(a["key"] == "exception.stacktrace" for a in rec["attributes"])
        and exc_type in rec["body"]["stringValue"]
    ]
    assert len(logged) >= 5
    assert all(int(rec["timeUnixNano"]) / 1e9 >= fault for rec in logged)


def test_wrong_values_show_only_in_the_callers_logs(tmp_path: Path) -> None:
    scen, path = _wild(128, tmp_path, cause="code_fault", mode="wrong_value", severity="high")
    truth = scen.truth
    assert truth["visible_in"] == ["logs"]
    svc, fault = truth["service"], parse_time(truth["start"])
    series = parse_openmetrics((path / "metrics.om").read_bytes()).series
    before = _server_error_ratio(series, svc, scen.start, fault)
    after = _server_error_ratio(series, svc, fault, scen.end)
    assert abs(after - before) < 0.01
    callers = {
        scen.topology.nodes[scen.topology.edges[e].src].id
        for e in scen.topology.in_edges[scen.topology.by_id(svc).index]
    }
    invalid = [
        (res["service.name"], int(rec["timeUnixNano"]) / 1e9)
        for res, rec in _records(path)
        if f"invalid response from {svc}" in rec["body"]["stringValue"]
    ]
    assert len(invalid) >= 5
    assert {who for who, _ in invalid} <= callers and all(ts >= fault for _, ts in invalid)
    # the faulty service's own spans do not fail more after the fault than before
    own = [
        (int(s["startTimeUnixNano"]) / 1e9, s.get("status", {}).get("code") == 2)
        for res, s in _spans(path)
        if res["service.name"] == svc
    ]
    after_fail = [bad for ts, bad in own if ts >= fault]
    assert after_fail and sum(after_fail) / len(after_fail) < 0.02


def test_a_delay_on_one_pod_shows_in_the_callers_spans_to_it(tmp_path: Path) -> None:
    scen, path = _wild(
        105, tmp_path, cause="network_delay", mode="pod", severity="high", traces=400
    )
    truth = scen.truth
    assert truth["visible_in"] == ["spans"] and truth["pod"].startswith(truth["service"])
    fault = parse_time(truth["start"])
    spans = _spans(path)
    by_id = {s["spanId"]: (res, s) for res, s in spans}
    gaps: dict[bool, list[float]] = {True: [], False: []}
    for res, s in spans:
        parent = by_id.get(s.get("parentSpanId", ""))
        if s["kind"] != 2 or res["service.name"] != truth["service"] or parent is None:
            continue
        if int(s["startTimeUnixNano"]) / 1e9 < fault:
            continue
        client = parent[1]
        gap = (int(client["endTimeUnixNano"]) - int(s["endTimeUnixNano"])) / 1e9
        gaps[res["k8s.pod.name"] == truth["pod"]].append(gap)
    delay = scen.fault.details["delay_ms"] / 1000
    assert gaps[True] and gaps[False]
    assert np.median(gaps[True]) > 0.5 * delay > 5 * max(np.median(gaps[False]), 1e-3)


PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


@pytest.mark.parametrize("seed", [108, 110, 102])
def test_wild_bundles_validate_and_backfill(tmp_path: Path, seed: int) -> None:
    _scen, path = _wild(seed, tmp_path, services=6, traces=60)
    assert validate_bundle(path) == []
    if not Path(PROMTOOL).exists():
        pytest.skip("Debian's prometheus package (promtool) is not installed")
    done = subprocess.run(
        [
            PROMTOOL,
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            str(path / "metrics.om"),
            str(tmp_path / "tsdb"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_cli_generate_wild(tmp_path: Path) -> None:
    runner = CliRunner()
    args = [
        "generate",
        "--seed",
        "6020",
        "--services",
        "6",
        "--wild",
        "--traces",
        "30",
        "--out",
        str(tmp_path),
    ]
    res = runner.invoke(scenarios, [*args, "--cause", "cpu_saturation"])
    assert res.exit_code == 0, res.output
    doc = json.loads(
        (next(p for p in tmp_path.iterdir() if p.is_dir()) / "scenario.json").read_text()
    )
    assert doc["truth"]["cause"] == "cpu_saturation" and doc["truth"]["visible_in"] == [
        "metrics",
        "spans",
    ]
    assert doc["generator"]["wild"]["interval"] in (1, 15, 60)
    # the alert pages on an entry service, not on the faulty one
    topo = json.loads(
        (next(p for p in tmp_path.iterdir() if p.is_dir()) / "topology.json").read_text()
    )
    called = {e["target"] for e in topo["edges"]}
    paged = [
        v
        for k, v in doc["alerts"][0]["labels"].items()
        if k in ("service", "service_name", "job", "application")
    ]
    assert paged and paged[0] not in called
    no_wild = runner.invoke(
        scenarios, ["generate", "--seed", "1", "--cause", "code_fault", "--out", str(tmp_path)]
    )
    assert no_wild.exit_code == 2 and "--wild" in no_wild.output
    bad_mode = runner.invoke(scenarios, [*args, "--cause", "network_delay", "--mode", "exceptions"])
    assert bad_mode.exit_code == 2 and "no mode" in bad_mode.output


#: Digests of the classic ``leak`` fixture's files, as main generated them before wild.
CLASSIC_4242 = {
    "metrics.om": "b2e94908aadeed2d",
    "traces.otlp.jsonl": "c287a137b46f6a3a",
    "logs.otlp.jsonl": "b2b2a392ccb702ba",
}


@pytest.mark.parametrize(("seed", "named"), [(201, False), (200, True)])
def test_wild_a_dependency_no_metric_names_is_not_said_visible_in_metrics(
    tmp_path: Path, seed: int, named: bool
) -> None:
    """Without service-graph or client metrics (seed 201) no series names the failing
    dependency: the truth must not promise that metrics can see it. With them (200), the
    calls into it are measured and it can."""
    _, out = _wild(seed, tmp_path, cause="dependency_failure")
    doc = json.loads((out / "scenario.json").read_text())
    dep = doc["truth"]["service"]
    parsed = parse_openmetrics((out / "metrics.om").read_bytes())
    names_it = any(
        dep in label
        for group in parsed.by_name().values()
        for x in group
        for label in x.labels.values()
    )
    assert names_it is named
    assert ("metrics" in doc["truth"]["visible_in"]) is named
    if not named:  # seen where its callers' traces and logs name it
        assert {"spans", "logs"} <= set(doc["truth"]["visible_in"])


def _spans_touching(out: Path, service: str, since: float) -> int:
    """Spans in the emitted traces from ``since`` on that are ``service``'s or call it."""
    n = 0
    for line in (out / "traces.otlp.jsonl").read_text().splitlines():
        for rs in json.loads(line)["resourceSpans"]:
            attrs = {a["key"]: a["value"].get("stringValue") for a in rs["resource"]["attributes"]}
            for ss in rs["scopeSpans"]:
                for sp in ss["spans"]:
                    if int(sp["startTimeUnixNano"]) / 1e9 < since:
                        continue
                    peer = {a["key"]: a["value"].get("stringValue") for a in sp["attributes"]}
                    n += service in (attrs.get("service.name"), peer.get("peer.service"))
    return n


@pytest.mark.parametrize(("seed", "seen"), [(305, False), (302, True)])
def test_wild_a_service_no_kept_trace_reached_is_not_said_visible_in_spans(
    tmp_path: Path, seed: int, seen: bool
) -> None:
    """Thirty traces of an 8-service shop: seed 305's delayed pod belongs to a service
    called at 0.2/s, which no kept trace reached after the delay began; the truth must not
    promise that traces show it. Seed 302's service is in many of them."""
    _, out = _wild(seed, tmp_path, cause="network_delay", mode="pod", traces=30)
    doc = json.loads((out / "scenario.json").read_text())
    svc = doc["truth"]["service"]
    since = parse_time(doc["truth"]["start"])
    touching = _spans_touching(out, svc, since)
    assert (touching >= 5) is seen
    assert ("spans" in doc["truth"]["visible_in"]) is seen

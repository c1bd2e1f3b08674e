"""The PetShop converter, the baseline rankers and the real-data benchmark's scoring.

The converter runs on a tiny excerpt in the dataset's own layout, built here;
the shipped bundles in fixtures/petshop are checked for the format and the
attribution; the rankers run on small synthetic bundles whose answer is known.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest

from correlator.bundle import read_bundle, validate_bundle, write_bundle
from correlator.fingerprint import alert_fingerprint
from correlator.model import parse_time
from correlator.openmetrics import Family, render

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import baselines  # noqa: E402
import bench_real  # noqa: E402
import petshop  # noqa: E402

SHIPPED = ROOT / "fixtures" / "petshop"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
NODES = ("PetSite", "PetSearch_AWS::ECS::Fargate", "petInfo_AWS::DynamoDB::Table")
COLUMNS = [
    (m, s)
    for m, stats in (
        ("latency", ("Average", "p90", "p50", "p95", "p99")),
        ("requests", ("Sum",)),
        ("availability", ("Average",)),
    )
    for s in stats
]


def _csv(rows: list[tuple[float, dict[str, float]]]) -> str:
    """A metrics.csv in the dataset's layout: three header rows, then unix_timestamp rows."""
    cols = [(n, m, s) for m, s in COLUMNS for n in NODES]
    head = [
        "microservice," + ",".join(c[0] for c in cols),
        "metric," + ",".join(c[1] for c in cols),
        "statistic," + ",".join(c[2] for c in cols),
        "unix_timestamp" + "," * len(cols),
    ]
    body = []
    for ts, slow in rows:
        vals = []
        for node, metric, _stat in cols:
            if metric == "latency":
                vals.append(f"{0.05 * slow.get(node, 1.0):.6f}")
            elif metric == "requests":
                vals.append("120.0")
            elif node == "PetSearch_AWS::ECS::Fargate" and ts == 1_681_858_320.0:
                vals.append("")  # a missing value stays missing
            else:
                vals.append("100.0")
        body.append(f"{ts}," + ",".join(vals))
    return "\n".join(head + body) + "\n"


@pytest.fixture
def excerpt(tmp_path: Path) -> Path:
    """A two-scenario PetShop excerpt: one with normal data, one without."""
    root = tmp_path / "petshop-src"
    rng = np.random.default_rng(3)
    graph = ",".join(["", *NODES]) + "\n"
    for a in NODES:
        calls = {
            "PetSite": ("PetSearch_AWS::ECS::Fargate",),
            "PetSearch_AWS::ECS::Fargate": ("petInfo_AWS::DynamoDB::Table",),
        }.get(a, ())
        graph += a + "," + ",".join("1.0" if b in calls else "0.0" for b in NODES) + "\n"
    first = 1_681_857_120.0
    for scenario, with_normal in (("low_traffic", True), ("temporal_traffic1", False)):
        base = root / "dataset" / scenario
        (base / "test" / "issue_0").mkdir(parents=True)
        (base / "graph.csv").write_text(graph, encoding="utf-8")
        if with_normal:
            start = 1_692_608_400.0  # months later, on the 5-minute grid, as in the dataset
            rows = [(start + 300.0 * i, {"PetSite": 1 + rng.normal(0, 0.02)}) for i in range(40)]
            (base / "noissue").mkdir()
            (base / "noissue" / "metrics.csv").write_text(_csv(rows), encoding="utf-8")
        slow = {"PetSite": 4.0, "PetSearch_AWS::ECS::Fargate": 9.0}
        issue = [(first + 300.0 * i, slow if i >= 2 else {}) for i in range(5)]
        (base / "test" / "issue_0" / "metrics.csv").write_text(_csv(issue), encoding="utf-8")
        target = {
            "target": {
                "node": "PetSite",
                "metric": "latency",
                "agg": "Average",
                "timestamp": int(first + 485),
            },
            "root_cause": {"node": "PetSearch_AWS::ECS::Fargate", "metric": None},
            "metadata": {
                "reproducibility": {
                    "command": "aws ssm put-parameter --name '/petstore/searchdelay' --value '500'"
                }
            },
        }
        (base / "test" / "issue_0" / "target.json").write_text(json.dumps(target), "utf-8")
    (root / "LICENSE_DATASET").write_text("Attribution 4.0 International\n", encoding="utf-8")
    return root


def test_converter_writes_valid_bundles_with_truth_alert_and_attribution(
    excerpt: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "out"
    written = petshop.convert(excerpt, dest, baseline_hours=1.0)
    assert [p.name for p in written] == [
        "petshop-low-traffic-test-0",
        "petshop-temporal-traffic1-test-0",
    ]
    for folder in written:
        assert validate_bundle(folder) == []
        bundle = read_bundle(folder)
        assert bundle.truth == {
            "service": "PetSearch-AWS-ECS-Fargate",
            "cause": "injected_delay",
            "start": "2023-04-18T22:40:05Z",
        }
        alert = bundle.alerts[0]
        # the alert is on the entry node, never the faulty one, and fires after the fault
        assert alert.labels["service"] == "PetSite"
        assert alert.labels["alertname"] == "HighLatency"
        assert alert.fingerprint == alert_fingerprint(alert.labels)
        assert alert.starts_at > parse_time(bundle.truth["start"])
        assert "CC-BY-4.0" in bundle.description and "PetShop" in bundle.description
        topo = bundle.topology or {}
        assert {"source": "PetSite", "target": "PetSearch-AWS-ECS-Fargate"} in topo["edges"]
        kinds = {n["id"]: n["kind"] for n in topo["nodes"]}
        assert kinds["petInfo-AWS-DynamoDB-Table"] == "database"
        by_name = bundle.metrics.by_name()
        quantiles = {s.labels["quantile"] for s in by_name["request_duration_seconds"]}
        assert quantiles == {"0.5", "0.9", "0.95", "0.99"}
        for s in by_name["requests_total"]:
            assert np.all(np.diff(s.values) >= 0)  # a running sum, as a counter is
        ratio = np.concatenate([s.values for s in by_name["availability_ratio"]])
        assert ratio.max() == 1.0  # percent became a ratio
    spliced, short = (read_bundle(p) for p in written)
    # one hour of normal data, shifted to end one step before the issue, then the issue
    assert spliced.window[0] == 1_681_857_120.0 - 12 * 300.0
    assert spliced.scenario["source"]["normal_points"] == 12
    assert short.window[0] == 1_681_857_120.0  # no normal data: the short baseline is kept
    assert "CC-BY-4.0" in (dest / "NOTICE").read_text(encoding="utf-8")
    assert (dest / "LICENSE").is_file()
    assert "petshop-low-traffic-test-0" in (dest / "README.md").read_text(encoding="utf-8")


@pytest.mark.prometheus
def test_converted_metrics_backfill_into_prometheus(excerpt: Path, tmp_path: Path) -> None:
    if not Path(PROMTOOL).exists():
        pytest.skip("Debian's prometheus package (promtool) is not installed")
    folder = petshop.convert(excerpt, tmp_path / "out", baseline_hours=1.0, only="low-traffic")[0]
    om = tmp_path / "metrics.om"
    om.write_bytes(gzip.decompress((folder / "metrics.om.gz").read_bytes()))
    done = subprocess.run(
        [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(om), str(tmp_path / "tsdb")],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    samples = sum(len(v) for v in read_bundle(folder).metrics.values)
    # promtool's summary table: the block(s) hold every sample the bundle has
    table = [line.split() for line in done.stdout.splitlines() if line[:2].isalnum()]
    assert sum(int(row[4]) for row in table if row[4].isdigit()) == samples


def test_cause_words_follow_the_injection() -> None:
    assert petshop.cause_of("python -m issue_dynamo_db_requests -num_iterations=800") == (
        "db_overload"
    )
    assert petshop.cause_of("sed -E -i 's/sleep/...' index.js && cdk deploy ...") == "deployment"
    assert petshop.cause_of("aws ssm put-parameter --name '/petstore/errormode1'") == "code_fault"
    assert petshop.cause_of("aws ssm put-parameter --name '/petstore/delaymode1'") == (
        "injected_delay"
    )


def test_shipped_bundles_are_complete_and_attributed() -> None:
    folders = sorted(p for p in SHIPPED.glob("petshop-*") if p.is_dir())
    assert len(folders) == 68
    fingerprints = set()
    for folder in folders:
        doc = json.loads((folder / "scenario.json").read_text(encoding="utf-8"))
        alert = doc["alerts"][0]
        fingerprints.add(alert["fingerprint"])
        assert alert["labels"]["service"] == "PetSite" != doc["truth"]["service"]
        assert "CC-BY-4.0" in doc["description"]
        assert (folder / "metrics.om.gz").is_file() and (folder / "topology.json").is_file()
    assert len(fingerprints) == 68
    assert "CC-BY-4.0" in (SHIPPED / "NOTICE").read_text(encoding="utf-8")
    size = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert size < 15 * 2**20
    assert validate_bundle(SHIPPED / "petshop-high-traffic-test-10") == []


# --------------------------------------------------------------------------- baselines


def _bundle(tmp_path: Path, moved: str, counter: bool = False) -> Path:
    """Three services, 5-minute gauges with noise; ``moved`` shifts after the fault."""
    rng = np.random.default_rng(7)
    t0, step, n = 1_700_000_000.0, 300.0, 40
    alert_at = t0 + 36 * step
    gauge, count = [], []
    totals = dict.fromkeys(("front", "b", "c"), 0.0)
    for i in range(n):
        ts = t0 + i * step
        after = ts >= alert_at - 300.0
        for svc in ("front", "b", "c"):
            level = 0.1 * (1 + rng.normal(0, 0.03))
            if after and svc in (moved, "front") and not counter:
                level *= 3.0 + 0.3 * i / n if svc == moved else 1.5 + 0.15 * i / n
            gauge.append(("latency_seconds", {"service": svc}, ts, level))
            rate = (
                10 * (1 + rng.normal(0, 0.03)) * (4.0 if counter and after and svc == moved else 1)
            )
            totals[svc] += rate * step
            count.append(("calls_total", {"service": svc}, ts, totals[svc]))
    labels = {"alertname": "HighLatency", "service": "front"}
    alert = {
        "labels": labels,
        "annotations": {},
        "startsAt": "2023-11-15T01:13:20Z",
        "endsAt": "2023-11-15T01:28:20Z",
        "updatedAt": "2023-11-15T01:23:20Z",
        "fingerprint": alert_fingerprint(labels),
        "generatorURL": "http://prom:9090/graph?g0.expr="
        + quote('latency_seconds{service="front"} > 0.12', safe="")
        + "&g0.tab=1",
        "receivers": [{"name": "x"}],
        "status": {"state": "active", "silencedBy": [], "inhibitedBy": []},
    }
    assert parse_time(alert["startsAt"]) == alert_at
    scenario = {
        "name": "synthetic",
        "window": {"start": "2023-11-14T22:13:20Z", "end": "2023-11-15T01:28:20Z"},
        "alerts": [alert],
        "truth": {"service": moved, "cause": "unknown", "start": "2023-11-15T01:08:20Z"},
    }
    fams = [
        Family("latency_seconds", "gauge", tuple(gauge)),
        Family("calls", "counter", tuple(count)),
    ]
    return write_bundle(tmp_path / f"b-{moved}-{counter}", scenario, render(fams))


@pytest.mark.parametrize("moved", ["b", "c"])
def test_zscore_ranks_the_moved_service_first(tmp_path: Path, moved: str) -> None:
    ranking = baselines.zscore_ranking(_bundle(tmp_path, moved))
    assert ranking[0][0] == moved
    assert {s for s, _ in ranking} == {"front", "b", "c"}
    assert ranking[0][1] > 10 > ranking[-1][1]


def test_zscore_reads_counters_as_rates(tmp_path: Path) -> None:
    # only a counter's rate moves; its running total grows in every service either way
    ranking = baselines.zscore_ranking(_bundle(tmp_path, "c", counter=True))
    assert ranking[0][0] == "c"


def test_correlation_ranks_anomalous_nodes_correlated_with_the_target(tmp_path: Path) -> None:
    ranking = baselines.correlation_ranking(_bundle(tmp_path, "b"))
    assert [s for s, _ in ranking] == ["b"]  # c is not anomalous; front is the target


def test_correlation_target_is_the_series_the_alert_reads(tmp_path: Path) -> None:
    bundle = read_bundle(_bundle(tmp_path, "b"))
    assert baselines._alert_names(bundle)[:2] == ["latency_seconds", "service"]
    kpi = baselines._kpi(bundle, baselines._zscores(bundle))
    assert kpi is not None and (kpi.service, kpi.name) == ("front", "latency_seconds")


def test_correlation_on_a_shipped_case_finds_the_root() -> None:
    ranking = baselines.correlation_ranking(SHIPPED / "petshop-high-traffic-test-10")
    assert ranking[0][0] == "payforadoption-AWS-ECS-Container"


# --------------------------------------------------------------------------- scoring


def test_scoring_rule_and_ranks() -> None:
    assert bench_real.is_right("a", "unknown", "a", "code_fault")
    assert not bench_real.is_right("a", "memory_leak", "a", "deployment")
    assert bench_real.is_right("a", "deployment", "a", "deployment")
    assert not bench_real.is_right("b", "code_fault", "a", "code_fault")
    assert bench_real.rank_of(["x", "x", "y", "a"], "a") == 3
    assert bench_real.rank_of(["x"], "a") is None
    e, rows = bench_real.ece(np.array([0.9, 0.9, 0.1, 0.1]), np.array([1.0, 0.0, 0.0, 0.0]))
    assert e == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    assert rows == ["| 0.1-0.2 | 2 | 0.10 | 0.00 |", "| 0.9-1.0 | 2 | 0.90 | 0.50 |"]


def test_bench_case_on_a_shipped_bundle() -> None:
    case = bench_real.run_one(SHIPPED / "petshop-high-traffic-test-10")
    assert case.error == ""
    assert case.truth_service == "payforadoption-AWS-ECS-Container"
    assert case.truth_cause == "code_fault"
    assert case.rank("correlation") == 1
    assert case.rank("zscore") == 1
    assert case.chance[1] == pytest.approx(1 / 44)  # 44 node names over the four scenarios


def test_zscore_orders_constant_baseline_moves_first_then_by_finite_moves(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    t0, step = 1_700_000_000.0, 300.0
    errors, latency = [], []
    for i in range(40):
        ts, after = t0 + i * step, i >= 35
        for svc, errs, slower in (("a", True, 1.0), ("b", True, 3.0), ("c", False, 5.0)):
            errors.append(("errors_ratio", {"service": svc}, ts, 0.02 if errs and after else 0.0))
            level = 0.1 * (1 + rng.normal(0, 0.03)) * (slower if after else 1.0)
            latency.append(("latency_seconds", {"service": svc}, ts, level))
    labels = {"alertname": "X", "service": "a"}
    scenario = {
        "name": "ties",
        "window": {"start": "2023-11-14T22:13:20Z", "end": "2023-11-15T01:28:20Z"},
        "alerts": [
            {
                "labels": labels,
                "annotations": {},
                "startsAt": "2023-11-15T01:13:20Z",
                "fingerprint": alert_fingerprint(labels),
            }
        ],
    }
    fams = [
        Family("errors_ratio", "gauge", tuple(errors)),
        Family("latency_seconds", "gauge", tuple(latency)),
    ]
    ranking = baselines.zscore_ranking(write_bundle(tmp_path / "ties", scenario, render(fams)))
    assert [s for s, _ in ranking] == ["b", "a", "c"]
    assert ranking[0][1] == ranking[1][1] == float("inf") > ranking[2][1] > 10

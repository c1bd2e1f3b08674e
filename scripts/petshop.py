"""Convert the public PetShop RCA dataset into scenario bundles (fixtures/petshop/).

PetShop (Hardt et al., "The PetShop Dataset: Finding Causes of Performance
Issues across Microservices", Amazon.com, Inc. or its affiliates; CC-BY-4.0;
https://github.com/amazon-science/petshop-root-cause-analysis) holds 68
performance issues injected into a 41-component AWS application, with
latency, request and availability metrics at 5-minute resolution (from AWS
X-Ray / CloudWatch), the call graph, and the true root-cause node.

Each issue becomes one bundle (``scenario-bundle.md``): 25 minutes of the
issue's own data (two points before the fault), preceded, when the dataset
holds it, by ``--baseline-hours`` of the same traffic scenario's normal-operation
data shifted in time (by about a whole number of days, so the time of day is
kept) to end one step before the issue's data. The dataset's own ``noissue``
files are exactly what its authors train on. Where a scenario's ``noissue``
file is absent (large blobs may be missing from a mirror), its bundles carry
the 10-minute baseline alone (a short baseline, which readers must accept).

    python scripts/petshop.py SOURCE [--dest fixtures/petshop] [--baseline-hours 4]

``SOURCE`` is a checkout of the dataset repository (with ``dataset/``) or its
bare git directory (read with ``git show``). See ``fixtures/petshop/README.md``
for the mapping of nodes, metrics and issue types.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
DEST = ROOT / "fixtures" / "petshop"
STEP = 300.0
SCENARIOS = ("low_traffic", "high_traffic", "temporal_traffic1", "temporal_traffic2")
REPO = "https://github.com/amazon-science/petshop-root-cause-analysis"
ATTRIBUTION = (
    "Data from the PetShop dataset (M. Hardt, W. Orchard, P. Bloebaum, S. Kasiviswanathan, "
    "E. Kirschbaum: The PetShop Dataset - Finding Causes of Performance Issues across "
    f"Microservices), Copyright Amazon.com, Inc. or its affiliates, CC-BY-4.0, {REPO}; "
    "converted to a correlator scenario bundle by scripts/petshop.py (series renamed, "
    "availability percent as a ratio, request sums as a cumulative counter, normal data "
    "shifted in time to precede the issue)."
)

#: Series written per dataset (metric, statistic): (family, type, extra labels, scale).
SERIES: dict[tuple[str, str], tuple[str, str, dict[str, str], float]] = {
    ("latency", "Average"): ("request_duration_average_seconds", "gauge", {}, 1.0),
    ("latency", "p50"): ("request_duration_seconds", "summary", {"quantile": "0.5"}, 1.0),
    ("latency", "p90"): ("request_duration_seconds", "summary", {"quantile": "0.9"}, 1.0),
    ("latency", "p95"): ("request_duration_seconds", "summary", {"quantile": "0.95"}, 1.0),
    ("latency", "p99"): ("request_duration_seconds", "summary", {"quantile": "0.99"}, 1.0),
    ("requests", "Sum"): ("requests", "counter", {}, 1.0),
    ("availability", "Average"): ("availability_ratio", "gauge", {}, 0.01),
}
HELP = {
    "request_duration_average_seconds": "Mean response time of the node (X-Ray), per 5 minutes.",
    "request_duration_seconds": "Response time quantiles of the node (X-Ray), per 5 minutes.",
    "requests": "Requests served by the node (X-Ray), cumulative.",
    "availability_ratio": "Share of the node's requests without fault (X-Ray), per 5 minutes.",
}
#: The alert's series for each target metric the dataset names.
TARGET_SERIES = {
    "latency": ("request_duration_average_seconds", "HighLatency", ">"),
    "availability": ("availability_ratio", "LowAvailability", "<"),
}


def slug(node: str) -> str:
    """A node name as a label-safe service name (case kept: two nodes differ only by case)."""
    return re.sub(r"[^A-Za-z0-9]+", "-", node).strip("-")


def node_kind(node: str) -> str:
    """The topology ``kind`` of a PetShop node, from its AWS resource type suffix."""
    if "DynamoDB" in node or "Database::SQL" in node or node.startswith("PGSQL"):
        return "database"
    if "SQS::Queue" in node:
        return "queue"
    if "::Lambda" in node or "::ECS::" in node or "ApiGateway" in node or "StateMachine" in node:
        return "service"
    if node.endswith("_remote") or "_AWS::" in node:
        return "external"
    return "service"


def cause_of(command: str) -> str:
    """The cause word for an issue, from the dataset's reproduction command.

    Built-in causes where the injection truly is one: the DynamoDB request
    flood overloads a database; the Lambda changes ship through ``cdk deploy``
    (a bad deployment, though the data holds no version or deploy marker).
    The SSM parameter toggles make the service slow or fail in its own code.
    """
    if "issue_dynamo_db_requests" in command:
        return "db_overload"
    if "cdk deploy" in command:
        return "deployment"
    if "delay" in command:
        return "injected_delay"
    if "error" in command:
        return "code_fault"
    return "unknown"


def iso(ts: float) -> str:
    """Seconds since the epoch as RFC 3339 UTC."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- source


class Source:
    """The dataset's files, from a checkout or from a bare git directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.git = not (path / "dataset").is_dir() and (path / "HEAD").is_file()
        if not self.git and not (path / "dataset").is_dir():
            raise SystemExit(
                f"{path}: not a PetShop checkout (no dataset/) nor its git directory; "
                f"clone {REPO} and pass its folder"
            )

    def text(self, rel: str) -> str | None:
        """A file's text, ``None`` when absent (large blobs may be missing from a mirror)."""
        if not self.git:
            p = self.path / rel
            return p.read_text(encoding="utf-8") if p.is_file() else None
        done = subprocess.run(
            ["git", f"--git-dir={self.path}", "show", f"HEAD:{rel}"],
            capture_output=True,
            check=False,
        )
        return done.stdout.decode("utf-8") if done.returncode == 0 else None

    def issues(self, scenario: str) -> list[tuple[str, str]]:
        """(split, issue folder) pairs of a traffic scenario, in numeric order."""
        out = []
        for split in ("train", "test"):
            base = f"dataset/{scenario}/{split}"
            if self.git:
                done = subprocess.run(
                    ["git", f"--git-dir={self.path}", "ls-tree", "--name-only", f"HEAD:{base}"],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                names = done.stdout.split()
            else:
                d = self.path / base
                names = [p.name for p in d.iterdir() if p.is_dir()] if d.is_dir() else []
            names = [n for n in names if n.startswith("issue_")]
            out += [(split, n) for n in sorted(names, key=lambda n: int(n.split("_")[1]))]
        return out


def read_metrics(text: str) -> pd.DataFrame:
    """A dataset ``metrics.csv`` as a frame with (node, metric, statistic) columns."""
    frame = pd.read_csv(io.StringIO(text), header=[0, 1, 2], index_col=0)
    frame.index = frame.index.astype(float)
    return frame.sort_index()


def read_graph(text: str) -> list[tuple[str, str]]:
    """Caller -> callee edges of the dataset's adjacency matrix."""
    adj = pd.read_csv(io.StringIO(text), index_col=0)
    rows, cols = np.nonzero(adj.to_numpy(dtype=float))
    callers, callees = [str(x) for x in adj.index], [str(x) for x in adj.columns]
    pairs = ((callers[i], callees[j]) for i, j in zip(rows, cols, strict=True))
    return [(a, b) for a, b in pairs if a != b]


# --------------------------------------------------------------------------- conversion


@dataclass(frozen=True)
class Issue:
    """One dataset issue, ready to convert."""

    scenario: str
    split: str
    folder: str
    frame: pd.DataFrame
    target: dict[str, Any]

    @property
    def name(self) -> str:
        """The bundle's folder name."""
        num = self.folder.split("_")[1]
        return f"petshop-{self.scenario.replace('_', '-')}-{self.split}-{num}"


def normal_prefix(
    normal: pd.DataFrame | None, first: float, seconds: float
) -> tuple[pd.DataFrame, float]:
    """``seconds`` of normal data shifted to end one step before ``first``, and the shift.

    The segment is the one whose last point has the time of day closest to the
    step before ``first``, so the shift is about a whole number of days.
    """
    if normal is None or seconds <= 0 or normal.empty:
        return pd.DataFrame(), 0.0
    points = max(1, round(seconds / STEP))
    ts = normal.index.to_numpy(dtype=float)
    want = first - STEP
    usable = np.arange(min(points - 1, len(ts) - 1), len(ts))
    gap = np.abs(((ts[usable] - want) + 43200.0) % 86400.0 - 43200.0)
    end = int(usable[int(np.argmin(gap))])
    seg = normal.iloc[max(0, end - points + 1) : end + 1].copy()
    shift = float(want - ts[end])
    seg.index = seg.index + shift
    return seg, shift


def _families(frame: pd.DataFrame) -> Iterator[str]:
    """OpenMetrics text for every series of the frame, family by family."""
    from correlator.openmetrics import Family, format_family

    by_family: dict[str, list[tuple[str, dict[str, str], float, float]]] = {}
    types: dict[str, str] = {}
    for column in frame.columns:
        node, metric, stat = (str(part) for part in column)
        spec = SERIES.get((metric, stat))
        if spec is None:
            continue
        family, kind, extra, scale = spec
        col = frame[column].to_numpy(dtype=float)
        idx = frame.index.to_numpy(dtype=float)
        keep = ~np.isnan(col)
        if not keep.any():
            continue
        values = col[keep] * scale
        if kind == "counter":
            values = np.cumsum(values)
        labels = {"service": slug(node), **extra}
        sample = family + ("_total" if kind == "counter" else "")
        types[family] = kind
        by_family.setdefault(family, []).extend(
            (sample, labels, float(t), float(v)) for t, v in zip(idx[keep], values, strict=True)
        )
    for family in sorted(by_family):
        yield format_family(
            Family(family, types[family], tuple(by_family[family]), help=HELP.get(family, ""))
        )


def _alert(issue: Issue, target_svc: str, ends: float, baseline: pd.Series) -> dict[str, Any]:
    from correlator.fingerprint import alert_fingerprint

    metric = str(issue.target["target"]["metric"])
    series, alertname, op = TARGET_SERIES[metric]
    ref = float(np.nanmedian(baseline)) if baseline.notna().any() else float("nan")
    threshold = round(2 * ref, 4) if op == ">" else round(min(ref, 1.0) - 0.01, 4)
    expr = f'{series}{{service="{target_svc}"}} {op} {threshold}'
    labels = {
        "alertname": alertname,
        "service": target_svc,
        "severity": "page",
        "issue": issue.name,
    }
    what = "average latency above" if op == ">" else "availability below"
    fire = _fires_at(issue)
    return {
        "labels": labels,
        "annotations": {
            "summary": f"{target_svc}: {what} {threshold}",
            "description": f"{target_svc}: {what} {threshold} for the last 5 minutes.",
        },
        "startsAt": iso(fire),
        "endsAt": iso(ends + STEP),
        "updatedAt": iso(ends),
        "fingerprint": alert_fingerprint(labels),
        "generatorURL": "http://prometheus:9090/graph?g0.expr="
        + quote(expr, safe="")
        + "&g0.tab=1",
        "receivers": [{"name": "oncall"}],
        "status": {"state": "active", "silencedBy": [], "inhibitedBy": []},
    }


def _fires_at(issue: Issue) -> float:
    """When the alert fires: once the first 5-minute point after the fault is complete.

    The dataset's own methods analyse the first point at or after the fault
    (its third row); that point describes the 5 minutes that follow its
    timestamp, so an alert on it can fire one step later.
    """
    start = float(issue.target["target"]["timestamp"])
    ts = issue.frame.index.to_numpy(dtype=float)
    after = ts[ts >= start]
    first = float(after[0]) if len(after) else float(ts[-1])
    return min(first + STEP, float(ts[-1]))


def convert_issue(
    issue: Issue,
    normal: pd.DataFrame | None,
    edges: list[tuple[str, str]],
    baseline_seconds: float,
) -> tuple[dict[str, Any], Iterator[str], dict[str, Any]]:
    """(scenario.json, metrics text chunks, topology.json) of one issue."""
    prefix, shift = normal_prefix(normal, float(issue.frame.index[0]), baseline_seconds)
    frame = issue.frame if prefix.empty else pd.concat([prefix, issue.frame], join="outer")
    target = issue.target
    tnode, rnode = str(target["target"]["node"]), str(target["root_cause"]["node"])
    tsvc, rsvc = slug(tnode), slug(rnode)
    metric = str(target["target"]["metric"])
    start, end = float(frame.index[0]), float(frame.index[-1])
    truth_start = float(target["target"]["timestamp"])
    col = (tnode, metric, "Average")
    before = pd.Series(
        frame.loc[frame.index < truth_start, col] if col in frame.columns else [], dtype=float
    )
    alert = _alert(issue, tsvc, end, before)
    command = str(target.get("metadata", {}).get("reproducibility", {}).get("command", ""))
    cause = cause_of(command)
    kept = (
        f"{len(prefix) * STEP / 3600:.1f} hours of the scenario's normal-operation data, "
        f"shifted by {shift / 86400:+.2f} days "
        "to end one step before the issue's data, then "
        if not prefix.empty
        else ""
    )
    description = (
        f"PetShop {issue.scenario} {issue.split} {issue.folder}: a {cause} fault in {rsvc} "
        f"(injected with `{_short(command)}`) degraded {metric} of {tsvc}, the entry node, "
        f"from {iso(truth_start)}. The window holds {kept}the issue's own 25 minutes at "
        f"5-minute resolution. {ATTRIBUTION}"
    )
    scenario = {
        "format": "correlator-scenario/1",
        "name": issue.name,
        "description": description,
        "window": {"start": iso(start), "end": iso(end)},
        "alerts": [alert],
        "truth": {"service": rsvc, "cause": cause, "start": iso(truth_start)},
        "source": {
            "dataset": "PetShop",
            "license": "CC-BY-4.0",
            "url": REPO,
            "path": f"dataset/{issue.scenario}/{issue.split}/{issue.folder}",
            "root_cause_node": rnode,
            "target": {
                "node": tnode,
                "metric": metric,
                "statistic": str(target["target"].get("agg", "Average")),
                "series": TARGET_SERIES[metric][0],
            },
            "command": command,
            "normal_points": len(prefix),
            "shift_seconds": shift if not prefix.empty else None,
        },
    }
    nodes = sorted(
        {str(n) for n in frame.columns.get_level_values(0)} | {a for e in edges for a in e}
    )
    topology = {
        "nodes": [{"id": slug(n), "kind": node_kind(n)} for n in nodes],
        "edges": [{"source": slug(a), "target": slug(b)} for a, b in edges],
    }
    return scenario, _families(frame), topology


def _short(command: str) -> str:
    """The reproduction command without the deploy boilerplate and account details."""
    return command.split(" && ")[0].replace("../../", "")


def convert(source: Path, dest: Path, baseline_hours: float, only: str = "") -> list[Path]:
    """Convert every issue (or those whose bundle name contains ``only``); returns folders."""
    from correlator.bundle import write_bundle

    src = Source(source)
    dest.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    missing: list[str] = []
    for scenario in SCENARIOS:
        graph = src.text(f"dataset/{scenario}/graph.csv")
        edges = read_graph(graph) if graph else []
        normal_text = src.text(f"dataset/{scenario}/noissue/metrics.csv")
        if normal_text is None:
            missing.append(f"dataset/{scenario}/noissue/metrics.csv")
        normal = read_metrics(normal_text) if normal_text else None
        for split, folder in src.issues(scenario):
            base = f"dataset/{scenario}/{split}/{folder}"
            mtext, ttext = src.text(f"{base}/metrics.csv"), src.text(f"{base}/target.json")
            if mtext is None or ttext is None:
                missing.append(base)
                continue
            issue = Issue(scenario, split, folder, read_metrics(mtext), json.loads(ttext))
            if only and only not in issue.name:
                continue
            scen, lines, topo = convert_issue(issue, normal, edges, baseline_hours * 3600)
            out = write_bundle(dest / issue.name, scen, lines, topology=topo, compress=True)
            for gz in out.glob("*.gz"):  # reproducible bytes: no mtime in the gzip header
                gz.write_bytes(gzip.compress(gzip.decompress(gz.read_bytes()), 9, mtime=0))
            written.append(out)
    for line in missing:
        print(f"absent from the source (skipped or no normal data): {line}", file=sys.stderr)
    _write_notices(src, dest)
    _write_readme(dest, baseline_hours)
    return written


README = """# PetShop, as scenario bundles

The 68 labeled performance issues of the public PetShop dataset, converted by
`scripts/petshop.py` into scenario bundles (`scenario-bundle.md`) for
`scripts/bench_real.py`. Not part of the embedded default library
(`fixtures/scenarios/`), and not installed with the package.

Source: M. Hardt, W. Orchard, P. Bloebaum, S. Kasiviswanathan, E. Kirschbaum,
*The PetShop Dataset: Finding Causes of Performance Issues across
Microservices*; Copyright Amazon.com, Inc. or its affiliates; data licensed
CC-BY-4.0 (see `LICENSE`, `NOTICE`); {repo}.
The repository snapshot these were converted from (commit 1c5992d) lacked
the `noissue` (normal operation) files of the two `temporal_traffic`
scenarios (large blobs absent from the mirror); converting a full clone gives
those 16 bundles a normal baseline too.

Regenerate: `git clone {repo}` then
`python scripts/petshop.py <clone> --clean` (a bare git directory works too).

## What was converted, and how

- **Window.** Each issue's own 25 minutes (five 5-minute points, two before
  the fault). Before them, {hours:g} hours of the same traffic scenario's
  normal-operation data (`noissue`), shifted in time (by about a whole number
  of days, keeping the time of day) to end one step before the issue's first
  point. Without a scenario's `noissue` file (here `temporal_traffic1/2`)
  the bundles hold only the 10 minutes before the fault.
- **Nodes -> services.** Every node keeps its dataset name with each run of
  characters other than letters and digits replaced by `-`
  (`PetSearch_AWS::ECS::Fargate` -> `PetSearch-AWS-ECS-Fargate`); case is kept
  because two nodes differ only by case. `scenario.json` `source.root_cause_node`
  keeps the original name.
- **Metrics** (all with a `service` label; no `catalog.json`: the engine must
  read uncatalogued series):

  | dataset (metric, statistic) | series | type |
  |---|---|---|
  | latency Average (s) | `request_duration_average_seconds` | gauge |
  | latency p50/p90/p95/p99 (s) | `request_duration_seconds{{quantile="0.5"...}}` | summary (quantiles only) |
  | requests Sum (per 5 min) | `requests_total` (running sum) | counter |
  | availability Average (%) | `availability_ratio` (divided by 100) | gauge |

  Missing values stay missing (no sample). Timestamps are the dataset's own
  (one point per 5-minute period).
- **Topology.** `graph.csv` (row calls column) as `topology.json` edges, kinds
  from the AWS resource type (DynamoDB, RDS, PGSQL: database; SQS: queue;
  ECS, Lambda, API Gateway, Step Functions: service; other AWS APIs and
  `_remote` nodes: external).
- **Alert.** `HighLatency` (target metric latency) or `LowAvailability` on
  `PetSite`, the dataset's target (entry) node, never the faulty one; fires one
  step after the first point at or after the fault (when that 5-minute
  period is complete). The label `issue` names the bundle, so fingerprints are
  unique across the folder. `truth.start` is the dataset's target timestamp.
- **Cause words**, from the reproduction command:

  | injection | cause |
  |---|---|
  | `issue_dynamo_db_requests` (floods the petInfo DynamoDB table) | `db_overload` |
  | Lambda code edited (sleep, or raise errors) and shipped with `cdk deploy` | `deployment` (no deploy marker is in the data) |
  | SSM `searchdelay` / `delaymode1` (the service sleeps) | `injected_delay` |
  | SSM `searcherrorpercent` / `petlisterrorpercent` / `errormode1` (the service fails) | `code_fault` |

## Bundles

| bundle | root service | cause | alert | fingerprint |
|---|---|---|---|---|
"""


def _write_readme(dest: Path, hours: float) -> None:
    """README.md: the mapping and an index of the bundles in ``dest``."""
    rows = []
    for folder in sorted(dest.glob("petshop-*"), key=lambda p: _natural(p.name)):
        doc = json.loads((folder / "scenario.json").read_text(encoding="utf-8"))
        alert = doc["alerts"][0]
        rows.append(
            f"| {folder.name} | {doc['truth']['service']} | {doc['truth']['cause']} | "
            f"{alert['labels']['alertname']} on {alert['labels']['service']} | "
            f"`{alert['fingerprint']}` |"
        )
    text = README.format(repo=REPO, hours=hours) + "\n".join(rows) + "\n"
    (dest / "README.md").write_text(text, encoding="utf-8")


def _natural(name: str) -> tuple[str, int]:
    head, _, num = name.rpartition("-")
    return (head, int(num) if num.isdigit() else -1)


def _write_notices(src: Source, dest: Path) -> None:
    """The dataset's attribution and licence beside the converted bundles."""
    (dest / "NOTICE").write_text(ATTRIBUTION + "\n", encoding="utf-8")
    licence = src.text("LICENSE_DATASET")
    if licence:
        (dest / "LICENSE").write_text(licence, encoding="utf-8")


def main() -> int:
    """Command line: convert SOURCE into DEST."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path, help="dataset checkout or its bare git directory")
    ap.add_argument("--dest", type=Path, default=DEST)
    ap.add_argument("--baseline-hours", type=float, default=4.0)
    ap.add_argument("--only", default="", help="only bundles whose name contains this")
    ap.add_argument("--clean", action="store_true", help="remove old petshop-* bundles first")
    args = ap.parse_args()
    if args.clean and args.dest.is_dir():
        for old in args.dest.glob("petshop-*"):
            shutil.rmtree(old)
    written = convert(args.source, args.dest, args.baseline_hours, args.only)
    size = sum(p.stat().st_size for d in written for p in d.rglob("*") if p.is_file())
    print(f"{len(written)} bundles in {args.dest}, {size / 2**20:.1f} MiB")
    return 0 if written else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    raise SystemExit(main())

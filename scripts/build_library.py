"""Rebuild the bundled scenario library in fixtures/scenarios/ (seeds 1000-1999).

Seed ranges: library 1000-1999, calibration 2000-4999, evaluation 5000 and up.
Two bundles per built-in cause at different severities and sizes, plus faults
outside the six. Windows are one hour (30-40 minutes of baseline) and systems
8-12 services so the whole library stays under 25 MB, gzip included.

    python scripts/build_library.py            # rebuild everything
    python scripts/build_library.py --check    # only report sizes of what is there
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "fixtures" / "scenarios"
LIMIT = 25 * 2**20

#: (seed, services, cause, severity, window minutes)
PLAN: list[tuple[int, int, str, str, int]] = [
    (1001, 10, "deployment", "high", 60),
    (1002, 12, "deployment", "medium", 60),
    (1003, 8, "deployment", "low", 60),
    (1011, 10, "db_overload", "high", 60),
    (1012, 9, "db_overload", "medium", 60),
    (1021, 12, "az_failure", "high", 60),
    (1022, 9, "az_failure", "medium", 60),
    (1031, 10, "memory_leak", "high", 60),
    (1032, 8, "memory_leak", "medium", 60),
    (1044, 10, "dependency_failure", "high", 60),
    (1046, 12, "dependency_failure", "medium", 60),
    (1051, 9, "traffic_spike", "high", 60),
    (1052, 11, "traffic_spike", "medium", 60),
    (1061, 10, "cpu_contention", "high", 60),
    (1071, 10, "network_delay", "high", 60),
    (1081, 9, "code_exception", "medium", 60),
    (1082, 11, "code_exception", "high", 60),
]


def _recompress(folder: Path) -> None:
    """gzip -9 the data files (write_bundle uses a faster level)."""
    for path in folder.glob("*.gz"):
        data = gzip.decompress(path.read_bytes())
        path.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))


def size_of(folder: Path) -> int:
    """Bytes in a folder (recursive)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def build() -> list[dict[str, object]]:
    """Generate every planned bundle; returns one summary row per bundle."""
    from correlator.generator.api import generate, write

    for old in LIBRARY.iterdir():
        if old.is_dir() and (old / "scenario.json").exists():
            shutil.rmtree(old)
    rows: list[dict[str, object]] = []
    names: set[str] = set()
    for i, (seed, services, cause, severity, minutes) in enumerate(PLAN):
        assert 1000 <= seed <= 1999, "library seeds are 1000-1999"
        # one bundle per day, so all of them backfill into one Prometheus without overlapping
        start = datetime(2026, 3, 2, tzinfo=UTC) + timedelta(days=i, hours=8 + (i * 5) % 9)
        scen = generate(
            seed,
            services=services,
            duration=minutes * 60,
            cause=cause,
            severity=severity,
            traces=150,
            start=start,
        )
        name = scen.name
        if name in names:
            name = f"{name}-{severity}"
        scen.name = name
        names.add(name)
        path = write(scen, LIBRARY / name, compress=True)
        _recompress(path)
        rows.append(
            {
                "name": name,
                "seed": seed,
                "cause": cause,
                "severity": severity,
                "services": services,
                "truth": scen.truth["service"],
                "alert": scen.alerts[0]["fingerprint"],
                "alertname": scen.alerts[0]["labels"]["alertname"],
                "alert_service": scen.alerts[0]["labels"].get("service", ""),
                "bytes": size_of(path),
            }
        )
        print(
            f"{name:40s} {cause:20s} {services:3d} svc  {rows[-1]['alert']}  "
            f"{int(rows[-1]['bytes']) / 2**20:.2f} MiB",
            flush=True,
        )
    return rows


def write_readme(rows: list[dict[str, object]]) -> None:
    """fixtures/scenarios/README.md: the catalog of shipped bundles."""
    lines = [
        "# Bundled scenarios",
        "",
        "Written by `scripts/build_library.py` (seeds 1000-1999; calibration uses 2000-4999,",
        "evaluation 5000+). Each folder is a scenario bundle (see `scenario-bundle.md`);",
        "`correlator scenarios show <folder>` tells what happened.",
        "",
        "| bundle | cause | severity | services | truth | paging alert | fingerprint |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['cause']} | {r['severity']} | {r['services']} | {r['truth']} | "
            f"{r['alertname']} on {r['alert_service']} | `{r['alert']}` |"
        )
    (LIBRARY / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report sizes")
    args = parser.parse_args()
    if not args.check:
        rows = build()
        write_readme(rows)
        (LIBRARY / "index.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    fingerprints: dict[str, str] = {}
    for folder in sorted(p for p in LIBRARY.iterdir() if (p / "scenario.json").exists()):
        for alert in json.loads((folder / "scenario.json").read_text(encoding="utf-8"))["alerts"]:
            other = fingerprints.setdefault(alert["fingerprint"], folder.name)
            if other != folder.name:
                print(f"alert {alert['fingerprint']} is in both {other} and {folder.name}")
                return 1
    total = sum(size_of(p) for p in LIBRARY.iterdir() if p.is_dir())
    count = sum(1 for p in LIBRARY.iterdir() if (p / "scenario.json").exists())
    print(f"{count} bundles, {total / 2**20:.1f} MiB (limit {LIMIT / 2**20:.0f} MiB)")
    return 0 if total < LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())

"""Demo incidents: the engine and the z-score baseline on bundles recorded from the live demo.

Runs the engine over every bundle in a folder (default ``fixtures/demo``,
written by ``correlator demo record``) with :func:`bench_real.run_one` (the
engine on each bundle's first alert, as a user would, beside the rankers of
``scripts/baselines.py``), then scores:

- AC@1/AC@3: share of incidents whose true root service is among the first k
  distinct services of a ranking (engine, naive z-score, random);
- cause accuracy: the engine's top finding names the true service *and* the
  true cause by the project's scoring rule (``correlator.model.cause_matches``:
  ``unknown`` is right for a fault outside the original six causes);
- calibration of the top finding against that rule: ECE over 10 bins and a
  reliability table;
- the same per fault kind (``truth.kind``);
- the ``otlp_files`` adapter's read time for a 16-minute window (with its
  baseline) in a large, day-long OTLP/JSON file, plain and gzip: lines
  written by the real OpenTelemetry SDK (``tests/otlp_file_export.py``),
  repeated with shifted times.

Writes the ``## Demo incidents (live recordings)`` section of BENCHMARKS.md
(``--no-write`` to skip); ``--verbose`` prints one row per incident.

    python scripts/bench_demo.py [FOLDER] [--jobs 1] [--verbose] [--no-write] [--speed-mb 1000]
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from bench_real import Case, _as_k, _rel, _row, ece, run_folder  # noqa: E402

DEFAULT = ROOT / "fixtures" / "demo"
SECTION = "Demo incidents (live recordings)"


def _kind(path: Path) -> str:
    truth = json.loads((path / "scenario.json").read_text()).get("truth") or {}
    return str(truth.get("kind") or truth.get("cause") or "?")


def _cause_right(c: Case) -> bool:
    """The project's scoring rule (:func:`correlator.model.cause_matches`): the true service
    and its cause; ``unknown`` is right for a fault outside the original six causes."""
    from correlator.model import cause_matches

    top = c.top
    return top is not None and top[0] == c.truth_service and cause_matches(top[1], c.truth_cause)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def report(cases: list[Case], kinds: dict[str, str], sizes: dict[str, int], seconds: float,
           folder: Path) -> str:  # fmt: skip
    """The markdown section."""
    n = len(cases)
    engine_s = sum(c.seconds for c in cases)
    services = {c.truth_service for c in cases}
    size = np.array(list(sizes.values()), dtype=float)
    conf = np.array([c.top[2] if c.top else 0.0 for c in cases])
    right = np.array([_cause_right(c) for c in cases], dtype=float)
    e, rows = ece(conf, right)
    lines = [
        f"{n} incidents recorded from the live demo shop (`correlator demo record`, "
        f"`{_rel(folder)}`): {len(set(kinds.values()))} fault kinds on {len(services)} services, "
        "real OpenTelemetry SDK spans and logs, metrics read back from Prometheus, the real "
        f"Alertmanager alert. Bundles: median {np.median(size) / 1024:.0f} KiB, largest "
        f"{size.max() / 1024:.0f} KiB. Ran in {seconds:.0f} s wall ({engine_s:.0f} s in the "
        f"engine, {engine_s / max(n, 1):.2f} s per incident).",
        "",
        "| method | AC@1 | AC@3 |",
        "|---|---|---|",
        f"| correlator (engine) | {_as_k(cases, 'engine', 1):.3f} | "
        f"{_as_k(cases, 'engine', 3):.3f} |",
        f"| naive z-score (`scripts/baselines.py`) | {_as_k(cases, 'zscore', 1):.3f} | "
        f"{_as_k(cases, 'zscore', 3):.3f} |",
        f"| random (expected) | {_as_k(cases, 'random', 1):.3f} | "
        f"{_as_k(cases, 'random', 3):.3f} |",
        "",
        f"Top finding names the true service and cause (`cause_matches`): {right.mean():.3f}; "
        f"ECE (10 bins) against that: {e:.3f}; incidents with no finding: "
        f"{sum(1 for c in cases if not c.findings)}; engine errors: "
        f"{sum(1 for c in cases if c.error)}. Target (issue #15): AC@1 >= 0.90, "
        "ECE <= 0.08.",
        "",
        "By fault kind (engine AC@1 / z-score AC@1 / cause right):",
        "",
        "| kind | n | engine AC@1 | z-score AC@1 | cause right |",
        "|---|---|---|---|---|",
    ]
    by_kind: dict[str, list[Case]] = {}
    for c in cases:
        by_kind.setdefault(kinds[c.name], []).append(c)
    for kind in sorted(by_kind):
        cc = by_kind[kind]
        lines.append(
            f"| {kind} | {len(cc)} | {_as_k(cc, 'engine', 1):.2f} | "
            f"{_as_k(cc, 'zscore', 1):.2f} | {np.mean([_cause_right(c) for c in cc]):.2f} |"
        )
    lines += [
        "",
        "| confidence | n | mean confidence | right |",
        "|---|---|---|---|",
        *rows,
        "",
        "Per incident (truth; engine's top 3):",
        "",
        "| incident | truth | top 3 |",
        "|---|---|---|",
    ]
    for c in cases:
        top3 = "; ".join(f"{s}/{k} {p:.2f}" for s, k, p in c.findings[:3]) or c.error or "-"
        lines.append(f"| {c.name} | {c.truth_service}/{c.truth_cause} | {top3} |")
    lines += ["", "Rerun: `python scripts/bench_demo.py --verbose`."]
    return "\n".join(lines)


def _big_file(folder: Path, megabytes: int) -> tuple[Path, float, float, int]:
    """A day-long traces file of about ``megabytes``: SDK-written lines, shifted in time.

    Returns the file, its first and last time, and its line count.
    """
    sys.path.insert(0, str(ROOT / "tests"))
    from otlp_file_export import Service

    t0 = 1_790_000_000.0
    seed = Service(folder / "seed", "cart")
    for i in range(200):  # 200 requests over 100 s, one in ten failing
        seed.request(t0 + i * 0.5, error="boom" if i % 10 == 0 else None, peer="orders-db")
    seed.close()
    lines = seed.traces_path.read_bytes().splitlines()
    size = sum(len(x) + 1 for x in lines)
    copies = max(1, megabytes * 1_000_000 // size)
    step_ns = 86_400 * 1_000_000_000 // copies  # spread the copies over a day
    digits = re.compile(rb'(TimeUnixNano":")(\d+)')
    out = folder / "cart-0.traces.otlp.jsonl"
    with out.open("wb") as fh:
        for k in range(copies):
            shift = k * step_ns
            fh.write(
                b"\n".join(
                    digits.sub(lambda m, s=shift: m[1] + str(int(m[2]) + s).encode(), x)
                    for x in lines
                )
                + b"\n"
            )
    return out, t0, t0 + 86_400, copies * len(lines)


def adapter_speed(megabytes: int) -> str:
    """Markdown rows: the otlp_files adapter reading a window out of a large file."""
    from correlator.adapters.otlp_files import OtlpFilesAdapter

    from correlator.model import Window

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-otlp-") as tmp:
        folder = Path(tmp)
        path, first, last, n_lines = _big_file(folder, megabytes)
        shutil.rmtree(folder / "seed")
        mb = path.stat().st_size / 1e6
        gz = folder / "gz"
        gz.mkdir()
        with path.open("rb") as src, gzip.open(gz / (path.name + ".gz"), "wb", 6) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        gz_mb = (gz / (path.name + ".gz")).stat().st_size / 1e6
        for label, where, at in (
            ("plain, window at the end", folder, last - 60),
            ("plain, window in the middle", folder, (first + last) / 2),
            ("gzip, window at the end (scanned)", gz, last - 60),
        ):
            window = Window(start=at - 360, end=at, baseline_start=at - 960)
            adapter = OtlpFilesAdapter(str(where))
            t = time.perf_counter()
            frame = adapter.spans(window, limit=200)
            spans, _ = adapter.read("traces", window)
            took = time.perf_counter() - t
            size = gz_mb if where == gz else mb
            rows.append(
                f"| {label} | {size:.0f} MB | {took:.2f} s | {len(spans)} | "
                f"{frame['trace_id'].nunique()} |"
            )
    return "\n".join(
        [
            f"`otlp_files` adapter, one file of {mb:.0f} MB ({n_lines} lines, a day of one "
            "service), reading a 16-minute window (10 minutes of baseline, 6 of window); "
            "spans = spans read, traces = traces kept at the engine's limit (200 per period):",
            "",
            "| file | size | time | spans | traces |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )


def main() -> int:
    """Run every bundle, print the figures, write the section."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, nargs="?", default=DEFAULT)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--verbose", action="store_true", help="one row per incident")
    ap.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    ap.add_argument("--speed-mb", type=int, default=1000, help="size of the adapter's test file")
    args = ap.parse_args()
    ran = run_folder(
        args.folder,
        args.jobs,
        "record some with `correlator demo up` then `correlator demo record KIND --service S`",
    )
    if ran is None:
        return 2
    paths, cases, seconds = ran
    kinds = {p.name: _kind(p) for p in paths}
    sizes = {p.name: _size(p) for p in paths}
    if args.verbose:
        for c in cases:
            print(_row(c), f" {sizes[c.name] / 1024:.0f} KiB")
        print()
    body = report(cases, kinds, sizes, seconds, args.folder)
    body += "\n\n" + adapter_speed(args.speed_mb)
    print(body)
    if not args.no_write:
        from benchlib import write_section

        write_section(SECTION, body, "scripts/bench_demo.py")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Hostile backends: what investigations leave behind, and what 100 MB answers cost.

Two measurements against the hostile HTTP server of the tests
(``tests/hostile_server.py``, in a process of its own so that its threads and
sockets are not counted):

1. **Leaks.** 40 investigations, 4 at a time (as the service's workers run
   them), each reading metrics (Prometheus adapter), logs (Loki), traces
   (Tempo) and topology (Jaeger) from backends that trickle a byte every
   0.2 s, trickle their headers, or never answer. The backends' own timeout and
   ``source_timeout`` are long (30 s); the investigation's ``deadline`` (2 s)
   must cut every request. Threads, open file descriptors and sockets of this
   process are counted before, right after the last investigation returns,
   and one second later; with the median and longest investigation time.
2. **Memory.** In a fresh process each, one investigation whose log source
   (Loki adapter, two requests) answers 100 MB streamed without a
   Content-Length, at ``max_bytes`` of 1 MiB, the 64 MiB default, and 256 MiB
   (above the answer: read whole, what happened before there was a cap).
   Peak RSS (``ru_maxrss``) and RSS before the investigation.

    python scripts/bench_hostile.py [--write]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))

from benchlib import write_section  # noqa: E402

from hostile_server import hostile, resources  # noqa: E402

RUNS = 40
IN_FLIGHT = 4
DEADLINE = 2.0
ANSWER = 100 * 1000 * 1000
CAPS = {"1 MiB": 1 << 20, "64 MiB (default)": 64 << 20, "256 MiB (above the answer)": 256 << 20}


def _alert() -> object:
    from correlator.model import Alert

    return Alert(
        fingerprint="bench",
        labels={"alertname": "HighErrorRate", "service": "checkout"},
        starts_at=time.time() - 600,
    )


def leaks() -> dict[str, object]:
    """Measurement 1."""
    from correlator.adapters.jaeger import JaegerAdapter
    from correlator.adapters.loki import LokiAdapter
    from correlator.adapters.prometheus import PrometheusAdapter
    from correlator.adapters.tempo import TempoAdapter

    from correlator.config import Settings
    from correlator.engine import investigate
    from correlator.http import HttpSettings
    from correlator.sources import Sources

    with hostile(trickle=0.2) as url:
        kw = {"timeout": 30.0, "retries": 0}
        sources = Sources(
            metrics=[
                PrometheusAdapter(HttpSettings(name="prometheus", url=f"{url}/trickle", **kw))
            ],
            logs=[LokiAdapter(HttpSettings(name="loki", url=f"{url}/trickle-head", **kw))],
            traces=[TempoAdapter(HttpSettings(name="tempo", url=f"{url}/hang", **kw))],
            topology=[
                JaegerAdapter(HttpSettings(name="jaeger", url=f"{url}/trickle", **kw), api="legacy")
            ],
        )
        settings = Settings(source_timeout=30.0, deadline=DEADLINE)
        alert = _alert()
        before = resources()
        times: list[float] = []

        def one(_: int) -> None:
            t0 = time.monotonic()
            investigate(alert, sources, settings)  # type: ignore[arg-type]
            times.append(time.monotonic() - t0)

        with cf.ThreadPoolExecutor(IN_FLIGHT) as pool:
            list(pool.map(one, range(RUNS)))
        right_after = resources()
        time.sleep(1.0)
        later = resources()
        sources.close()
    return {
        "before": before,
        "right_after": right_after,
        "later": later,
        "median": statistics.median(times),
        "max": max(times),
    }


def _rss_child(url: str, cap: int) -> None:
    """In a fresh process: one investigation reading 100 MB answers; print RSS figures."""
    from correlator.adapters.loki import LokiAdapter

    from correlator.config import Settings
    from correlator.engine import investigate
    from correlator.http import HttpSettings
    from correlator.sources import Sources

    loki = LokiAdapter(
        HttpSettings(name="loki", url=f"{url}/big-stream/{ANSWER}", max_bytes=cap, retries=0)
    )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.monotonic()
    inv = investigate(
        _alert(),  # type: ignore[arg-type]
        Sources(logs=[loki]),
        Settings(source_timeout=120, deadline=240),
    )
    took = time.monotonic() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    gaps = [g.why for g in inv.gaps if g.source == "loki"]
    print(json.dumps({"before_kib": before, "peak_kib": peak, "seconds": took, "gaps": gaps}))


def memory() -> dict[str, dict[str, object]]:
    """Measurement 2, one fresh process per cap."""
    out: dict[str, dict[str, object]] = {}
    with hostile() as url:
        for label, cap in CAPS.items():
            proc = subprocess.run(
                [sys.executable, __file__, "--rss-child", url, str(cap)],
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
            )
            out[label] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def _mib(kib: object) -> str:
    return f"{int(kib) / 1024:.0f}"  # type: ignore[call-overload]


def report(leak: dict[str, object], mem: dict[str, dict[str, object]]) -> str:
    b, r, la = leak["before"], leak["right_after"], leak["later"]
    lines = [
        f"{RUNS} investigations, {IN_FLIGHT} at a time, against backends that trickle one byte "
        "every 0.2 s (Prometheus adapter: answer body; Jaeger: answer body), trickle their "
        "headers (Loki) or never answer (Tempo), from `tests/hostile_server.py` in a process "
        f"of its own. The backends' timeout and `source_timeout` are 30 s; the `deadline` "
        f"({DEADLINE:g} s) cuts every request whole (connect to last byte), so each collector "
        "thread ends at the deadline and closes its connection. Counts are of this process "
        "(Python threads, open file descriptors, sockets among them).",
        "",
        "| | threads | file descriptors | sockets |",
        "|---|---|---|---|",
        f"| before | {b[0]} | {b[1]} | {b[2]} |",  # type: ignore[index]
        f"| right after the 40th investigation returned | {r[0]} | {r[1]} | {r[2]} |",  # type: ignore[index]
        f"| one second later | {la[0]} | {la[1]} | {la[2]} |",  # type: ignore[index]
        "",
        f"Investigation time: median {leak['median']:.2f} s, longest {leak['max']:.2f} s "
        f"(deadline {DEADLINE:g} s). Before this change (issue #14) the same kind of run left "
        "267 threads and 272 file handles alive for good: the HTTP timeout was per read, and "
        "threads past the deadline were never stopped.",
        "",
        "Peak memory of one investigation whose log source (Loki adapter, two requests) answers "
        f"{ANSWER / 1e6:.0f} MB streamed without a Content-Length, each cap in a fresh process "
        "(`ru_maxrss`; RSS before the investigation includes the imported libraries). An answer "
        "that announces a Content-Length past the cap is refused before any of it is read.",
        "",
        "| `max_bytes` | RSS before (MiB) | peak RSS (MiB) | growth (MiB) | seconds | gap |",
        "|---|---|---|---|---|---|",
    ]
    for label, m in mem.items():
        gaps = m["gaps"] or ["(none)"]
        gap = str(gaps[0]).split(": ", 2)[-1]  # type: ignore[index]  # after "logs: Loki at URL: "
        gap = gap if len(gap) < 110 else gap[:107] + "..."
        growth = (int(m["peak_kib"]) - int(m["before_kib"])) / 1024  # type: ignore[call-overload]
        lines.append(
            f"| {label} | {_mib(m['before_kib'])} | {_mib(m['peak_kib'])} | {growth:.0f} | "
            f"{float(m['seconds']):.1f} | {gap.replace('|', '/')} |"  # type: ignore[arg-type]
        )
    lines += [
        "",
        "At the 256 MiB cap the answers are read whole (and parsed: the body is valid JSON, "
        "not the expected log streams); that is what every answer cost before there was a cap.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="write the BENCHMARKS.md section")
    parser.add_argument("--rss-child", nargs=2, metavar=("URL", "CAP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        _rss_child(args.rss_child[0], int(args.rss_child[1]))
        return
    leak = leaks()
    mem = memory()
    text = report(leak, mem)
    print(text)
    if args.write:
        write_section("Hostile backends", text, "scripts/bench_hostile.py")


if __name__ == "__main__":
    main()

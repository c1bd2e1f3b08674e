"""Show how the engine ranked one cached evaluation scenario (a tuning aid).

python scripts/explain_case.py /work/cache/dev/8087-20-traffic_spike.pkl
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    """Analyse the cached telemetry and print roots, candidates and anomalies."""
    from correlator.config import Settings
    from correlator.engine import analyse

    path = Path(sys.argv[1])
    with path.open("rb") as fh:
        data = pickle.load(fh)
    inv = analyse(
        data["alert"],
        data["window"],
        data["step"],
        data["telemetry"],
        Settings(top_n=8),
        data["catalog"],
    )
    truth = data["truth"]
    print(
        "truth:",
        truth.get("service"),
        truth.get("cause"),
        "alert on",
        inv.alert.service,
        inv.alert.name,
        "window",
        inv.window.start,
        inv.window.end,
    )
    print("findings:")
    for f in inv.findings:
        feats = {k: round(v, 2) for k, v in f.features.items()}
        print(f"  {f.confidence:.2f} {f.service}/{f.cause} score={f.score:.2f} {feats}")
    roots = getattr(inv, "roots", None)
    from correlator.topology import root_scores

    rs = root_scores(inv.topology, inv.anomalies, inv.alert.service)
    print("roots:")
    for r in rs[:8]:
        print(
            f"  {r.rank} {r.service} score={r.score:.2f} str={r.strength:.2f} "
            f"onset={r.onset - inv.window.start:+.0f} expl={r.explained:.2f} up={r.upstream} "
            f"pr={r.pagerank:.2f}"
        )
    a = inv.anomalies.copy()
    a["onset"] = a["onset"] - inv.window.start
    pd.set_option("display.width", 200)
    pd.set_option("display.max_rows", 80)
    print(a.head(60).to_string())
    show = [truth.get("service")] + [f.service for f in inv.findings[:2]]
    for s in dict.fromkeys(show):
        if s in inv.topology:
            print(
                s,
                "callers:",
                sorted(inv.topology.predecessors(s)),
                "callees:",
                sorted(inv.topology.successors(s)),
            )
    del roots
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

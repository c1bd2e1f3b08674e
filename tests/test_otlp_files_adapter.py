"""The ``otlp_files`` adapter over files written by the real OpenTelemetry SDK."""

from __future__ import annotations

import gzip
import json
import re
from functools import partial
from pathlib import Path

import pandas as pd
import pytest
from correlator.adapters.otlp_files import OtlpFilesAdapter, OtlpFilesSettings, clip_file

from correlator.api import build_sources
from correlator.catalog import Catalog
from correlator.config import load_settings
from correlator.engine import collect
from correlator.model import Window
from correlator.otlp import logs_from_otlp, spans_from_otlp
from correlator.sources import LogCountSource, LogSource, SourceError, TraceSource
from otlp_file_export import Service

T0 = 1_790_000_000.0
HOUR = 3600
FAULT = T0 + 3000
WINDOW = Window(start=T0 + 2900, end=T0 + 3300, baseline_start=T0 + 1800)


def _shop(folder: Path) -> None:
    """Two services over an hour, a request every 5 s each; cart fails after FAULT."""
    cart = Service(folder, "cart", "a")
    checkout = Service(folder, "checkout", "b", gz=True)
    t = T0
    while t < T0 + HOUR:
        cart.request(t, error="db timeout" if t >= FAULT else None, peer="orders-db")
        checkout.request(t + 1, duration=0.2, peer="cart")
        t += 5
    cart.close()
    checkout.close()


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("otlp")
    _shop(folder)
    return folder


def _every(path: Path, kind: str) -> pd.DataFrame:
    """Every span (record) of every file, by the plain reader: the oracle."""
    requests = []
    for f in sorted(path.glob(f"*.{kind}.otlp.jsonl*")):
        opener = gzip.open if f.name.endswith(".gz") else open
        with opener(f, "rt") as fh:
            requests += [json.loads(line) for line in fh if line.strip()]
    return spans_from_otlp(requests) if kind == "traces" else logs_from_otlp(requests)


def _in(frame: pd.DataFrame, col: str, window: Window) -> pd.DataFrame:
    return frame[(frame[col] >= window.baseline_start) & (frame[col] <= window.end)]


def test_spans_are_those_of_the_window_and_its_baseline(shop: Path) -> None:
    adapter = OtlpFilesAdapter(str(shop))
    got = adapter.spans(WINDOW, limit=10_000)
    want = _in(_every(shop, "traces"), "start", WINDOW)
    assert len(want) > 0
    assert sorted(got["span_id"]) == sorted(want["span_id"])
    assert set(got["service"]) == {"cart", "checkout"}, "the plain and the gzip file"
    assert got["start"].min() >= WINDOW.baseline_start and got["start"].max() <= WINDOW.end
    errors = got[got["status"] == 2]
    assert len(errors) > 0 and errors["start"].min() >= FAULT
    assert errors["error"].str.contains("db timeout").all()
    assert "warnings" not in got.attrs


def test_spans_are_sampled_per_period_like_bundles(shop: Path) -> None:
    got = OtlpFilesAdapter(str(shop)).spans(WINDOW, limit=10)
    firsts = got.groupby("trace_id")["start"].min()
    assert (firsts < WINDOW.start).sum() == 10 and (firsts >= WINDOW.start).sum() == 10
    assert any(w.startswith("traces: 20 of ") for w in got.attrs["warnings"])


def test_logs_and_counts(shop: Path) -> None:
    adapter = OtlpFilesAdapter(str(shop))
    every = _in(_every(shop, "logs"), "ts", WINDOW)
    errors = adapter.logs(WINDOW, min_severity=17)
    assert len(errors) == int((every["severity"] >= 17).sum()) > 0
    assert set(errors["service"]) == {"cart"} and errors["ts"].min() >= FAULT
    assert errors["trace_id"].notna().all(), "records carry their trace context"
    counts = adapter.log_counts(WINDOW, 60.0)
    assert counts["count"].sum() == len(every)
    assert set(counts["severity"]) == {9, 17}
    only = adapter.logs(WINDOW, services=["checkout"], min_severity=1)
    assert set(only["service"]) == {"checkout"}


def test_a_plain_file_is_searched_not_scanned(shop: Path) -> None:
    path = shop / "cart-a.traces.otlp.jsonl"
    total = path.read_bytes().count(b"\n")
    late = Window(start=T0 + HOUR - 200, end=T0 + HOUR, baseline_start=T0 + HOUR - 300)
    got = clip_file(path, "traces", late.baseline_start, late.end, slack=60)
    assert got.items == 2 * 60, "300 s of requests, a server and a client span each"
    assert got.lines_read < total / 4, (got.lines_read, total)
    assert got.lines_parsed <= 2 * 62


def test_garbled_and_unfinished_lines_are_gaps_not_crashes(tmp_path: Path) -> None:
    svc = Service(tmp_path, "cart")
    for i in range(40):
        svc.request(T0 + i * 60, error="boom" if i % 2 else None)
    svc.close()
    path = svc.traces_path
    lines = path.read_text().splitlines(keepends=True)
    # Line 31 becomes garbage; a writer is halfway through the last line.
    lines[30] = '{"resourceSpans": [{"startTimeUnixNano": "1790001800000000000", broken\n'
    path.write_text("".join(lines) + lines[0][:50])
    window = Window(start=T0 + 1500, end=T0 + 2400, baseline_start=T0)
    got = OtlpFilesAdapter(str(tmp_path)).spans(window, limit=1000)
    notes = got.attrs["warnings"]
    assert any(f"{path}:31: not an OTLP/JSON line" in n for n in notes), notes
    assert len(notes) == 1, "the unfinished last line is no error"
    assert len(got) == 39, "every other line's span"


def test_a_missing_folder_is_a_gap_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    # The config is accepted (a demo may not have made its folder yet); reads are gaps.
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"backends:\n  otlp: {{adapter: otlp_files, path: {missing}}}\n")
    settings = load_settings(cfg, env={})
    sources = build_sources(settings)
    (adapter,) = sources.traces
    assert isinstance(adapter, TraceSource) and isinstance(adapter, LogSource)
    assert isinstance(adapter, LogCountSource) and sources.logs == (adapter,)
    assert adapter.name == "otlp"
    with pytest.raises(SourceError, match=r"nowhere: no such file or folder; set backends\.otlp"):
        adapter.spans(WINDOW)
    tel, gaps = collect(sources, Catalog({}), WINDOW, 60.0, timeout=5.0, deadline=1e18)
    assert tel.spans.empty and tel.logs.empty
    assert {g.source for g in gaps} == {"otlp"} and all("nowhere" in g.why for g in gaps)


def test_the_cap_is_shared_by_files_and_named(shop: Path) -> None:
    adapter = OtlpFilesAdapter(OtlpFilesSettings(path=str(shop), max_spans=40))
    got = adapter.spans(WINDOW, limit=10_000)
    notes = got.attrs["warnings"]
    capped = [n for n in notes if n.endswith("(the cap of 20)")]
    assert len(capped) == 4, "both files, both periods"
    pattern = r"cart-a\.traces\.otlp\.jsonl: (\d+) spans kept from 1 in (\d+) of the 161 lines of "
    (match,) = [m for m in map(partial(re.search, pattern), capped) if m]
    assert 10 < int(match[1]) <= 20 and int(match[2]) in (8, 16)
    assert any(".gz: " in n for n in capped)
    assert len(got) <= 80 and set(got["service"]) == {"cart", "checkout"}
    # Kept lines are spread over each period: the window's end and the fault are there.
    assert got["start"].max() > WINDOW.end - 60 and got["start"].min() < WINDOW.baseline_start + 60
    assert (got["status"] == 2).any()


def test_a_single_file_is_a_source_too(shop: Path) -> None:
    path = shop / "checkout-b.traces.otlp.jsonl.gz"
    got = OtlpFilesAdapter(str(path)).spans(WINDOW, limit=10_000)
    assert set(got["service"]) == {"checkout"} and len(got) > 0
    logs = OtlpFilesAdapter(str(path)).logs(WINDOW)
    assert logs.empty and any("no *.logs.otlp.jsonl" in n for n in logs.attrs["warnings"])

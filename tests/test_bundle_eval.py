"""The lean bundle path: block-wise parsing, name filtering, and vectorised PromQL semantics."""

from __future__ import annotations

import io
import itertools
import threading
from pathlib import Path

import correlator.adapters.bundle as adapter
import numpy as np
import pandas as pd
import pytest
from correlator.adapters.bundle import (
    LOOKBACK,
    _aggregate,
    _histogram,
    _plan,
    _rates,
    evaluate_spec,
    name_filter,
)

from correlator.bundle import read_bundle, write_bundle
from correlator.catalog import SignalSpec, default_catalog
from correlator.model import Window
from correlator.openmetrics import (
    NameFilter,
    OpenMetricsError,
    parse_openmetrics,
    read_openmetrics,
)

T0 = 1772442000.0


def _text(lines: list[str]) -> bytes:
    return ("".join(lines) + "# EOF\n").encode()


def _mixed() -> bytes:
    lines = ["# TYPE req counter\n", "# HELP req Requests\n"]
    for i in range(40):
        lines.append(f'req_total{{service="s{i % 3}",path="/a b"}} {i} {T0 + 15 * (i // 3)}\n')
    lines.append(f'req_total{{service="s0",path="/a b"}} 7 {T0 + 1000} # {{trace_id="x"}} 1 {T0}\n')
    lines.append("# TYPE lat histogram\n")
    for t in range(5):
        for le in ("0.1", "1", "+Inf"):
            lines.append(
                f'lat_bucket{{service="s0",le="{le}"}} {t + float(le != "0.1")} {T0 + t}\n'
            )
        lines.append(f'lat_count{{service="s0"}} {t + 1} {T0 + t}\n')
    return _text(lines)


@pytest.mark.parametrize("block", [7, 64, 333, 1 << 20])
def test_block_size_does_not_change_the_result(block: int) -> None:
    whole = parse_openmetrics(_mixed())
    parts = read_openmetrics(io.BytesIO(_mixed()), block_size=block, threads=2)
    assert parts.names == whole.names
    assert [dict(x) for x in parts.labels] == [dict(x) for x in whole.labels]
    for a, b, c, d in zip(whole.times, parts.times, whole.values, parts.values, strict=True):
        assert a.tolist() == b.tolist() and c.tolist() == d.tolist()
    assert parts.types == {"req": "counter", "lat": "histogram"}
    # The exemplar line (parsed line by line) joined its series, in time order.
    s0 = whole.index["req_total"][0]
    assert whole.values[s0][-1] == 7 and whole.times[s0][-1] == T0 + 1000


def test_crlf_line_ends_parse_like_lf() -> None:
    lf = _mixed()
    crlf = read_openmetrics(io.BytesIO(lf.replace(b"\n", b"\r\n")), block_size=100)
    assert crlf.names == parse_openmetrics(lf).names
    assert crlf.sample_count == parse_openmetrics(lf).sample_count


def test_error_line_numbers_are_exact_across_blocks() -> None:
    lines = [f"a 1 {T0 + i}\n" for i in range(50)] + ['b{x="1} 2 3\n']
    with pytest.raises(OpenMetricsError) as info:
        read_openmetrics(io.BytesIO(_text(lines)), block_size=64)
    assert info.value.line == 51


def test_series_scraped_together_share_one_times_array() -> None:
    m = parse_openmetrics(_mixed())
    buckets = m.index["lat_bucket"]
    assert all(m.times[i] is m.times[buckets[0]] for i in buckets)
    assert not m.times[buckets[0]].flags.writeable


def test_name_filter_skips_unwanted_families_without_reading_them() -> None:
    lines = ["# TYPE junk gauge\n"]
    lines += [f'junk{{a="{i}"}} {i} {T0 + i}\n' for i in range(20)]
    lines += ['junk{a="broken} 1 2\n']  # never looked at: the family is skipped unread
    lines += ["# TYPE up gauge\n", f'up{{job="x"}} 1 {T0}\n']
    lines += ["# TYPE app_build_info gauge\n", f'app_build_info{{version="2"}} 1 {T0}\n']
    keep = NameFilter(frozenset({"up"}), (".+_build_info",))
    m = read_openmetrics(io.BytesIO(_text(lines)), keep=keep, block_size=80)
    assert set(m.names) == {"up", "app_build_info"}
    with pytest.raises(OpenMetricsError):
        read_openmetrics(io.BytesIO(_text(lines)))  # unfiltered, the broken line is an error


def test_a_family_holding_a_wanted_pattern_literal_is_read() -> None:
    lines = ["# TYPE odd gauge\n", f"odd 1 {T0}\n", f"odd_build_info 1 {T0}\n"]
    keep = NameFilter(frozenset({"up"}), (".+_build_info",))
    m = read_openmetrics(io.BytesIO(_text(lines)), keep=keep, block_size=16)
    assert m.names == ("odd_build_info",)


def test_default_catalog_filter_covers_every_spec() -> None:
    keep = name_filter(default_catalog())
    assert keep is not None
    for spec in default_catalog().all_specs():
        if spec.metric:
            assert keep(spec.metric + ("_bucket" if spec.kind == "histogram" else ""))
    assert keep("app_build_info") and not keep("go_gc_duration_seconds")


def _bundle(tmp_path: Path, lines: list[str]) -> Path:
    scenario = {
        "name": "t",
        "window": {"start": "2026-03-02T09:00:00Z", "end": "2026-03-02T11:00:00Z"},
        "alerts": [
            {
                "labels": {"alertname": "X", "service": "a"},
                "fingerprint": "0123456789abcdef",
                "startsAt": "2026-03-02T10:40:00Z",
            }
        ],
    }
    return write_bundle(tmp_path / "b", scenario, lines)


def test_lookback_keeps_a_sample_exactly_five_minutes_old(tmp_path: Path) -> None:
    t = 1772445600.0
    path = _bundle(tmp_path, [f'g{{service="a"}} 5 {t}\n'])
    metrics = read_bundle(path).metrics
    spec = SignalSpec("x", "g", "gauge")
    window = Window(start=t + LOOKBACK, end=t + LOOKBACK + 1, baseline_start=t)
    frame = evaluate_spec(metrics, spec, window, LOOKBACK)
    # Grid t, t+300: the sample is 0 s and exactly 300 s old at those instants.
    assert frame["ts"].tolist() == [t, t + LOOKBACK] and frame["value"].tolist() == [5, 5]
    later = Window(start=t + LOOKBACK + 1, end=t + LOOKBACK + 1, baseline_start=t + 0.5)
    assert evaluate_spec(metrics, spec, later, LOOKBACK + 0.5)["ts"].tolist() == [t + 0.5]


def _rate_reference(ts: np.ndarray, v: np.ndarray, grid: np.ndarray, rng: float) -> np.ndarray:
    """Prometheus 2.42 extrapolatedRate, one point at a time."""
    out = np.full(len(grid), np.nan)
    for j, t in enumerate(grid):
        inside = (ts >= t - rng) & (ts <= t)
        pts, vals = ts[inside], v[inside]
        if len(pts) < 2:
            continue
        result = vals[-1] - vals[0]
        for a, b in itertools.pairwise(vals):
            if b < a:
                result += a
        sampled = pts[-1] - pts[0]
        avg = sampled / (len(pts) - 1)
        to_start, to_end = pts[0] - (t - rng), t - pts[-1]
        if result > 0 and vals[0] >= 0:
            to_start = min(to_start, sampled * (vals[0] / result))
        interval = sampled
        interval += to_start if to_start < avg * 1.1 else avg / 2
        interval += to_end if to_end < avg * 1.1 else avg / 2
        out[j] = result * (interval / sampled) / rng
    return out


def test_vectorised_rate_matches_prometheus_point_by_point() -> None:
    rnd = np.random.default_rng(3)
    lines = []
    for s in range(6):
        value = 0.0
        for k in range(120):
            if rnd.random() < 0.15:
                continue  # a missed scrape
            value = 0.0 if rnd.random() < 0.03 else value + rnd.random() * 10  # resets
            lines.append(f'c_total{{service="a",pod="p{s}"}} {value!r} {T0 + 15 * k + s % 2}\n')
    metrics = parse_openmetrics(_text(lines))
    spec = SignalSpec("r", "c_total", "counter", dims={"pod": "pod"})
    plan = _plan(metrics, spec)
    grid = np.arange(T0, T0 + 1800, 30.0)
    got = _rates(metrics, plan, grid, 60.0)
    for row, i in enumerate(plan.rows):
        want = _rate_reference(metrics.times[i], metrics.values[i], grid, 60.0)
        np.testing.assert_allclose(got[row], want, rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("agg", ["sum", "max", "min", "mean"])
def test_aggregate_is_bit_identical_to_pandas_groupby(agg: str) -> None:
    rnd = np.random.default_rng(11)
    for _ in range(20):
        rows, cols, groups = 40, 12, 6
        codes = rnd.integers(0, groups, rows).astype(np.int64)
        m = rnd.normal(size=(rows, cols)) * 10.0 ** rnd.integers(-3, 12, size=(rows, cols))
        m[rnd.random((rows, cols)) < 0.2] = np.nan
        m[rnd.random((rows, cols)) < 0.03] = np.inf
        grouped = pd.DataFrame(m).groupby(codes)
        want = (grouped.sum(min_count=1) if agg == "sum" else getattr(grouped, agg)()).reindex(
            range(groups)
        )
        got = _aggregate(m, codes, groups, agg)
        np.testing.assert_array_equal(got, want.to_numpy(dtype=np.float64))


@pytest.mark.parametrize("agg", ["sum", "mean"])
def test_aggregate_single_row_groups_match_pandas_to_the_sign_of_zero(agg: str) -> None:
    special = [-0.0, 0.0, np.inf, -np.inf, np.nan, 1e300, -5e-324, 3.5]
    m = np.array([special, special[::-1]], dtype=np.float64)
    m = np.vstack([m, m[:, ::2].repeat(2, axis=1)])
    codes = np.array([3, 0, 2, 0], dtype=np.int64)  # groups 3 and 2: one row; 0: two; 1: none
    grouped = pd.DataFrame(m).groupby(codes)
    want = (grouped.sum(min_count=1) if agg == "sum" else grouped.mean()).reindex(range(4))
    want_arr = want.to_numpy(dtype=np.float64)
    got = _aggregate(m, codes, 4, agg)
    np.testing.assert_array_equal(got, want_arr)
    assert np.array_equal(np.signbit(got), np.signbit(want_arr))


def test_histogram_in_batches_equals_all_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    rnd = np.random.default_rng(5)
    lines = ["# TYPE lat histogram\n"]
    for svc in range(7):
        bounds = ("0.1", "0.5", "1", "+Inf") if svc % 3 else ("0.2", "1", "5", "10", "+Inf")
        if svc == 4:
            bounds = ("0.1", "oops", "+Inf")  # a group with a bound that is not a number
        for pod in range(1 + svc % 3):
            total = np.zeros(len(bounds))
            for k in range(40):
                total += np.sort(rnd.integers(0, 5, len(bounds)))
                for le, count in zip(bounds, np.maximum.accumulate(total), strict=True):
                    lines.append(
                        f'lat_bucket{{service="s{svc}",pod="p{pod}",le="{le}"}} {count} '
                        f"{T0 + 15 * k}\n"
                    )
    metrics = parse_openmetrics(_text(lines))
    spec = SignalSpec("latency", "lat", "histogram", quantile=0.95)
    plan = _plan(metrics, spec)
    grid = np.arange(T0 + 60, T0 + 600, 15.0)
    matrix = _rates(metrics, plan, grid, 60.0)
    whole = _histogram(plan, matrix, 0.95, len(plan.groups))
    monkeypatch.setattr(adapter, "_BATCH", 5)
    batched = _histogram(plan, matrix, 0.95, len(plan.groups))
    np.testing.assert_array_equal(batched, whole)
    bad = [i for i, g in enumerate(plan.groups) if g[0] == "s4"]
    assert bad and np.isnan(whole[bad]).all()
    assert np.isfinite(whole).any(axis=1).sum() == len(plan.groups) - 1


def test_concurrent_readers_share_one_parse(tmp_path: Path) -> None:
    path = _bundle(tmp_path, [f'up{{service="a"}} 1 {1772445600 + i}\n' for i in range(10)])
    bundle = read_bundle(path)
    keep = name_filter(default_catalog())
    got: list[object] = []
    threads = [
        threading.Thread(target=lambda: got.append(bundle.metrics_for(keep))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 4 and all(m is got[0] for m in got)
    assert bundle.metrics is not got[0]  # everything: a parse of its own
    assert bundle.metrics_for(keep) is bundle.metrics  # which now covers any request

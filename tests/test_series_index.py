"""detect.series_index: each aggregated series' rows, shared by topology and patterns."""

from __future__ import annotations

import dataclasses

import pandas as pd

from correlator.detect import aggregate, series_index
from synth import build
from test_patterns import context


def test_series_index_gives_each_series_rows() -> None:
    raw = pd.DataFrame(
        {
            "role": ["latency", "latency", "cpu", "latency"],
            "service": ["a", "a", "a", "b"],
            "peer": [None] * 4,
            "ts": [60.0, 0.0, 0.0, 0.0],
            "value": [2.0, 1.0, 0.5, 7.0],
            "detail": [""] * 4,
        }
    )
    signals = aggregate(raw)
    rows = series_index(signals)
    assert {k[:2] for k in rows} == {("latency", "a"), ("cpu", "a"), ("latency", "b")}
    for (role, service, _peer), at in rows.items():
        sub = signals.iloc[at]
        assert set(sub["role"].astype(str)) == {role}
        assert set(sub["service"].astype(str)) == {service}
    assert sum(len(v) for v in rows.values()) == len(signals)
    assert series_index(signals.iloc[0:0]) == {}


def test_patterns_read_the_same_series_through_a_shared_index() -> None:
    ctx = context(build("db_overload"))
    shared = dataclasses.replace(ctx, series_rows=series_index(ctx.signals))
    keys = list(series_index(ctx.signals))
    assert len(keys) > 20
    for role, service, peer in keys:
        pd.testing.assert_series_equal(
            shared.series(role, service, peer), ctx.series(role, service, peer)
        )
    got = shared.series(*keys[0])
    assert got.index.is_monotonic_increasing and len(got) > 10
    assert shared.series("latency", "nobody").empty

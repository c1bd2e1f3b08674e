"""Detection: robust baselines, onset, direction, ratios, on hand-built frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from correlator.detect import DetectConfig, aggregate, detect, grid_step
from correlator.model import ANOMALY_COLUMNS, SIGNAL_COLUMNS, Window

T0 = 1_700_000_000.0
TS = np.arange(T0, T0 + 4800.0, 15.0)
WINDOW = Window(start=T0 + 3600, end=T0 + 4800, baseline_start=T0)


def frame(role: str, service: str, values: np.ndarray, **dims: str) -> pd.DataFrame:
    d: dict[str, object] = {"role": role, "service": service, "ts": TS, "value": values}
    for c in SIGNAL_COLUMNS[4:]:
        d[c] = dims.get(c)
    return pd.DataFrame(d)


def noisy(level: float, sd: float, seed: int = 0) -> np.ndarray:
    return level + np.random.default_rng(seed).normal(0, sd, TS.size)


def test_step_change_found_with_onset_and_direction() -> None:
    v = noisy(0.1, 0.005)
    v[TS >= T0 + 3900] += 0.5
    out = detect(frame("latency", "api", v), WINDOW)
    assert list(out.columns) == list(ANOMALY_COLUMNS)
    assert len(out) == 1
    row = out.iloc[0]
    assert row["service"] == "api" and row["role"] == "latency" and row["direction"] == "up"
    assert abs(row["onset"] - (T0 + 3900)) <= 15
    assert row["baseline"] == pytest.approx(0.1, abs=0.01)
    assert row["peak"] > 0.55


def test_noise_and_single_spike_are_not_anomalies() -> None:
    v = noisy(100.0, 3.0, seed=1)
    v[np.searchsorted(TS, T0 + 4000)] = 500.0  # one scrape, not an incident
    assert detect(frame("request_rate", "api", v), WINDOW).empty


def test_direction_respects_role() -> None:
    # Latency falling is good news; ready pods falling is bad news.
    lat = noisy(0.5, 0.01)
    lat[TS >= T0 + 3900] = 0.05
    ready = np.full(TS.size, 3.0)
    ready[TS >= T0 + 3900] = 1.0
    out = detect(pd.concat([frame("latency", "a", lat), frame("pod_ready", "b", ready)]), WINDOW)
    assert list(out["service"]) == ["b"]
    assert out.iloc[0]["direction"] == "down"


def test_error_ratio_derived_and_flagged() -> None:
    req = noisy(200.0, 5.0)
    err = np.abs(noisy(0.2, 0.1, seed=2))
    err[TS >= T0 + 3900] = 40.0
    out = detect(
        pd.concat([frame("request_rate", "a", req), frame("error_rate", "a", err)]), WINDOW
    )
    ratio = out[out["role"] == "error_ratio"]
    assert len(ratio) == 1
    assert ratio.iloc[0]["peak"] == pytest.approx(0.2, abs=0.03)


def test_onset_refined_back_to_where_a_ramp_began() -> None:
    v = noisy(1e8, 1e6)
    ramp = np.clip((TS - (T0 + 3800)) / 900.0, 0, None)
    v = v + ramp * 5e8
    out = detect(frame("memory", "a", v), WINDOW)
    assert len(out) == 1
    onset = out.iloc[0]["onset"]
    # The first sustained crossing is later; the refined onset sits near the ramp start.
    assert T0 + 3780 <= onset <= T0 + 3900


def test_edge_roles_keep_the_caller() -> None:
    el = noisy(0.03, 0.002)
    el[TS >= T0 + 3900] = 2.0
    ok = noisy(0.03, 0.002, seed=3)
    sig = pd.concat(
        [
            frame("edge_latency", "db", el, peer="checkout"),
            frame("edge_latency", "db", ok, peer="cart"),
        ]
    )
    out = detect(sig, WINDOW)
    assert list(out["peer"]) == ["checkout"]


def test_aggregate_sums_pods_and_takes_max_latency() -> None:
    a = frame("cpu", "api", np.ones(TS.size), pod="api-1")
    b = frame("cpu", "api", np.ones(TS.size) * 2, pod="api-2")
    la = frame("latency", "api", np.full(TS.size, 0.1), pod="api-1")
    lb = frame("latency", "api", np.full(TS.size, 0.3), pod="api-2")
    agg = aggregate(pd.concat([a, b, la, lb]))
    assert agg[agg["role"] == "cpu"]["value"].unique().tolist() == [3.0]
    assert agg[agg["role"] == "latency"]["value"].unique().tolist() == [0.3]


def test_threshold_is_configurable_and_empty_input_is_fine() -> None:
    v = noisy(0.1, 0.005)
    v[TS >= T0 + 3900] += 0.15  # about 7 scales of the latency floor
    sig = frame("latency", "api", v)
    assert len(detect(sig, WINDOW)) == 1
    assert detect(sig, WINDOW, DetectConfig(threshold=50.0)).empty
    empty = pd.DataFrame({c: pd.Series(dtype="object") for c in SIGNAL_COLUMNS})
    assert detect(empty, WINDOW).empty
    assert grid_step(TS) == 15.0


def test_drifting_baseline_does_not_drag_the_onset_early() -> None:
    # A slow daily-shape drift (z around 2-3) for ten minutes, then a large step: the
    # onset is the step, not the start of the drift.
    v = noisy(100.0, 1.0, seed=4)
    drift = (TS >= T0 + 3600) & (TS < T0 + 4200)
    v[drift] += np.linspace(0.0, 6.0, int(drift.sum()))
    v[TS >= T0 + 4200] += 400.0
    out = detect(frame("request_rate", "api", v), WINDOW)
    assert len(out) == 1
    assert abs(out.iloc[0]["onset"] - (T0 + 4200)) <= 30


def test_a_blip_over_before_the_alert_is_dropped_and_anomalies_carry_their_end() -> None:
    blip = noisy(0.1, 0.005, seed=5)
    blip[(TS >= T0 + 3650) & (TS < T0 + 3750)] += 0.5  # over 10 minutes before the alert
    live = noisy(0.1, 0.005, seed=6)
    live[TS >= T0 + 4300] += 0.5
    both = pd.concat([frame("latency", "old", blip), frame("latency", "new", live)])
    alert_at = T0 + 4400
    assert set(detect(both, WINDOW)["service"]) == {"old", "new"}
    out = detect(both, WINDOW, alert_at=alert_at)
    assert list(out["service"]) == ["new"]
    assert out.iloc[0]["end"] >= alert_at


def test_onset_is_that_of_the_episode_holding_the_peak() -> None:
    # A latency episode 15 minutes before the incident resolves, then the incident starts.
    v = noisy(0.15, 0.01, seed=3)
    v[(TS >= T0 + 3000) & (TS < T0 + 3150)] += 0.4
    v[TS >= T0 + 3900] += 0.6
    row = detect(frame("latency", "geo", v), WINDOW).iloc[0]
    assert abs(row["onset"] - (T0 + 3900)) <= 30
    # A dip shorter than the episode gap (a leaking pod killed and climbing again)
    # keeps the first onset.
    m = noisy(2e8, 1e6, seed=4)
    climb = np.clip((TS - (T0 + 3300)) / 600.0, 0, None) * 2e8
    m = m + np.where(TS < T0 + 3960, climb, climb - np.interp(T0 + 3960, TS, climb))
    m[(TS >= T0 + 3960) & (TS < T0 + 4020)] = 2e8
    row = detect(frame("memory", "leaky", m), WINDOW).iloc[0]
    assert row["onset"] < T0 + 3500


def test_an_episode_ends_only_when_the_series_is_back_to_normal() -> None:
    # CPU throttling that swings between high and merely elevated (never back near its
    # baseline) is one episode from its first rise, not from its highest swing.
    v = noisy(0.25, 0.02, seed=5)
    on = TS >= T0 + 3660
    # High (z 9.5 over the 0.5 floor), then 7 minutes merely elevated (z 2.7), then high.
    swing = np.where((TS >= T0 + 4200) & (TS < T0 + 4620), 1.6, 5.0)
    v[on] = swing[on] + np.random.default_rng(6).normal(0, 0.1, int(on.sum()))
    v[(TS >= T0 + 4680) & (TS < T0 + 4740)] = 9.0  # the peak, in the later swing
    row = detect(frame("cpu_throttled", "auth", v), WINDOW).iloc[0]
    assert abs(row["onset"] - (T0 + 3660)) <= 30


def test_an_error_counter_born_mid_window_has_a_zero_baseline() -> None:
    # Prometheus has no series for errors until the first one: before it, the
    # requests were counted and the errors were zero, not unknown.
    calls = frame("edge_rate", "cart-redis", noisy(500.0, 10.0), peer="catalog")
    err = noisy(20.0, 1.0, seed=7)
    err[TS < T0 + 3900] = np.nan
    errors = frame("edge_errors", "cart-redis", err, peer="catalog").dropna(subset=["value"])
    agg = aggregate(pd.concat([calls, errors], ignore_index=True))
    e = agg[agg["role"] == "edge_errors"]
    assert len(e) == TS.size and (e.loc[e["ts"] < T0 + 3900, "value"] == 0.0).all()
    out = detect(pd.concat([calls, errors], ignore_index=True), WINDOW)
    row = out[out["role"] == "edge_errors"].iloc[0]
    assert row["peer"] == "catalog" and abs(row["onset"] - (T0 + 3900)) <= 15
    # A service whose errors were never counted gets no invented zeros.
    alone = aggregate(frame("request_rate", "api", noisy(100.0, 3.0)))
    assert set(alone["role"]) == {"request_rate"}


def test_the_alerted_service_own_symptom_is_confirmed_at_a_lower_bar() -> None:
    from correlator.detect import confirm_alert

    # A clean 17% latency step on a fast service: under the 20 ms floor of the general
    # bar, but the alert already says this service is slow.
    lat = noisy(0.150, 0.001, seed=8)
    lat[TS >= T0 + 3660] += 0.026
    other = noisy(0.150, 0.001, seed=9)
    other[TS >= T0 + 3660] += 0.026
    sig = pd.concat([frame("latency", "auth", lat), frame("latency", "geo", other)])
    agg = aggregate(sig)
    found = detect(sig, WINDOW, aggregated=agg)
    assert found.empty
    out = confirm_alert(found, agg, WINDOW, "auth")
    assert list(out["service"]) == ["auth"] and list(out["role"]) == ["latency"]
    assert abs(out.iloc[0]["onset"] - (T0 + 3660)) <= 30
    # Nothing to add when the general bar already found a symptom there.
    assert confirm_alert(out, agg, WINDOW, "auth") is out


def test_the_alerted_service_error_ratio_is_sized_by_its_own_requests() -> None:
    from correlator.detect import confirm_alert

    # 0.5 requests/s and no errors, then one failed request in 25: the ratio goes 0 ->
    # 0.04, about one error per rate range. Judged at the alert's lower bar it is a change
    # of a few binomial sigmas, not the hundredfold jump a flat-at-zero series would make.
    req = np.full(TS.size, 0.5)
    err = np.where(TS >= T0 + 3900, 0.02, 0.0)
    sig = pd.concat([frame("request_rate", "api", req), frame("error_rate", "api", err)])
    agg = aggregate(sig)
    out = confirm_alert(detect(sig, WINDOW, aggregated=agg).iloc[0:0], agg, WINDOW, "api")
    ratio = out[out["role"] == "error_ratio"]
    assert len(ratio) == 1
    assert 3.0 <= ratio.iloc[0]["score"] < 20.0


def test_one_value_written_two_ways_is_not_a_step_of_the_data() -> None:
    # A rare event's rate (GC seconds per second): zero, or one event's worth, computed
    # from sums that differ in the last bits. Its quantum is the event, not the rounding.
    rng = np.random.default_rng(11)
    one = 2e-5 * (1.0 + rng.integers(-2, 3, TS.size) * 2.0**-52)
    v = np.where(rng.random(TS.size) < 0.3, one, 0.0)
    out = detect(frame("gc_time", "api", v), WINDOW)
    assert out.empty or float(out["score"].max()) < 10.0


def _mixed() -> pd.DataFrame:
    """Per-pod, per-caller and plain series, interleaved, with gaps, NaN and a lost peer."""
    rng = np.random.default_rng(7)
    parts = []
    for svc in ("api", "db", "web"):
        for pod in ("a", "b", "c"):
            parts.append(frame("memory", svc, noisy(5e8, 1e6, seed=len(parts)), pod=f"{svc}-{pod}"))
            parts.append(frame("memory_limit", svc, np.full(TS.size, 1e9), pod=f"{svc}-{pod}"))
            parts.append(frame("cpu", svc, noisy(0.5, 0.01, seed=len(parts)), pod=f"{svc}-{pod}"))
        parts.append(frame("request_rate", svc, noisy(10.0, 0.5, seed=len(parts))))
        v = noisy(0.1, 0.01, seed=len(parts))
        v[TS >= T0 + 3900] += 2.0
        parts.append(frame("error_rate", svc, v))
        for caller in ("web", "api"):
            if caller != svc:
                parts.append(frame("edge_rate", svc, noisy(3.0, 0.1), peer=caller))
                parts.append(frame("edge_errors", svc, noisy(0.1, 0.01), peer=caller))
        parts.append(frame("edge_latency", svc, noisy(0.05, 0.001)))  # the caller is lost
    sig = pd.concat(parts, ignore_index=True)
    sig.loc[rng.random(len(sig)) < 0.02, "value"] = np.nan
    sig = sig.drop(index=rng.choice(len(sig), len(sig) // 10, replace=False))
    # Rows of a series mostly together, but not always.
    order = np.arange(len(sig))
    swap = rng.choice(len(sig), 200, replace=False)
    order[swap] = order[swap[::-1]]
    return sig.iloc[order].reset_index(drop=True)


def test_compact_frames_aggregate_and_detect_exactly_as_text_frames() -> None:
    import correlator.detect as d
    from correlator.model import compact_signals

    sig = _mixed()
    text = sig.astype({c: object for c in SIGNAL_COLUMNS if c not in ("ts", "value")})
    a, b = aggregate(text), aggregate(compact_signals(text))
    assert len(a) == len(b)
    for c in ("role", "service", "peer"):
        assert a[c].cat.categories.tolist() == b[c].cat.categories.tolist()
        assert np.array_equal(a[c].cat.codes.to_numpy(), b[c].cat.codes.to_numpy())
    for c in ("ts", "value"):
        assert np.array_equal(a[c].to_numpy(), b[c].to_numpy(), equal_nan=True)
    want = detect(text, WINDOW)
    assert len(want) > 0
    chunk = d._CHUNK
    try:
        for size in (chunk, 1, 5):
            d._CHUNK = size  # each series is judged on its own: any chunking gives the same
            pd.testing.assert_frame_equal(detect(compact_signals(text), WINDOW), want)
    finally:
        d._CHUNK = chunk

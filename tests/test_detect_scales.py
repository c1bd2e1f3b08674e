"""Detection learns its scales from the data: sample interval, noise, counts; no absolute floors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from correlator.detect import DetectConfig, baseline_end, detect
from correlator.model import SIGNAL_COLUMNS, Window

T0 = 1_700_000_000.0


def series(
    role: str, service: str, ts: np.ndarray, values: np.ndarray, **dims: str
) -> pd.DataFrame:
    d: dict[str, object] = {"role": role, "service": service, "ts": ts, "value": values}
    for c in SIGNAL_COLUMNS[4:]:
        d[c] = dims.get(c)
    return pd.DataFrame(d)


def test_tiny_absolute_values_count_when_they_move_far() -> None:
    # 0.001 cores doubling and 10 ms tripling are real changes, whatever their units.
    ts = np.arange(T0, T0 + 4800.0, 15.0)
    rng = np.random.default_rng(3)
    cpu = 0.001 + rng.normal(0, 0.00005, ts.size)
    lat = 0.010 + rng.normal(0, 0.0005, ts.size)
    cpu[ts >= T0 + 3900] += 0.002
    lat[ts >= T0 + 3900] += 0.020
    w = Window(start=T0 + 3600, end=T0 + 4800, baseline_start=T0)
    out = detect(pd.concat([series("cpu", "a", ts, cpu), series("latency", "b", ts, lat)]), w)
    assert set(zip(out["service"], out["role"], strict=True)) == {("a", "cpu"), ("b", "latency")}


def test_low_rate_counter_rise_is_a_signal_and_poisson_noise_is_not() -> None:
    # 0.04 requests/s going to 0.4 is real; the same rate's counting noise is not.
    ts = np.arange(T0, T0 + 4800.0, 15.0)
    rng = np.random.default_rng(5)
    rng_range = 60.0
    calm = rng.poisson(0.04 * rng_range, ts.size) / rng_range
    busy = calm.copy()
    busy[ts >= T0 + 3900] = rng.poisson(0.4 * rng_range, int((ts >= T0 + 3900).sum())) / rng_range
    w = Window(start=T0 + 3600, end=T0 + 4800, baseline_start=T0)
    cfg = DetectConfig(rate_range=rng_range)
    frame = pd.concat(
        [series("request_rate", "quiet", ts, calm), series("request_rate", "busy", ts, busy)]
    )
    out = detect(frame, w, cfg)
    assert list(out["service"]) == ["busy"]


def test_a_lasting_rise_smaller_than_one_noisy_sample_is_found_on_block_means() -> None:
    """One request a second scraped every 3 s and rated over 4 s: each sample is a count
    of about four, as noisy as the rise to 3x is large. No one sample (or 30 s of them)
    says much; five minutes of them say it for certain. The same rate left alone is not
    an anomaly, and the onset is dated on the samples, not on the blocks."""
    ts = np.arange(T0, T0 + 900.0, 3.0)
    rng = np.random.default_rng(11)
    r = 4.0
    calm = rng.poisson(1.0 * r, ts.size) / r
    fault = T0 + 450.0
    busy = calm.copy()
    after = ts >= fault
    busy[after] = rng.poisson(3.0 * r, int(after.sum())) / r
    w = Window(start=fault - 300.0, end=T0 + 900.0, baseline_start=T0)
    frame = pd.concat(
        [series("request_rate", "quiet", ts, calm), series("request_rate", "busy", ts, busy)]
    )
    out = detect(frame, w, DetectConfig(rate_range=r), alert_at=fault + 120.0)
    assert list(out["service"]) == ["busy"]
    assert abs(float(out.iloc[0]["onset"]) - fault) <= 30.0
    # Judged on single samples only, the rise is lost in the counting noise.
    fine = detect(frame, w, DetectConfig(rate_range=r, coarse_seconds=0.0), alert_at=fault + 120)
    assert "busy" not in set(fine["service"])


@pytest.mark.parametrize("interval", [1.0, 15.0, 60.0])
def test_step_found_at_any_sample_interval_with_a_short_baseline(interval: float) -> None:
    # Five minutes of normal data before the fault, the alert at the fault: the
    # baseline is what there is, and the onset is known to a sample or two.
    ts = np.arange(T0, T0 + 900.0, interval)
    rng = np.random.default_rng(int(interval))
    v = 0.2 + rng.normal(0, 0.01, ts.size)
    fault = T0 + 300.0
    v[ts >= fault] += 0.3
    w = Window(start=fault - 300.0, end=T0 + 900.0, baseline_start=fault - 3900.0)
    out = detect(series("latency", "api", ts, v), w, alert_at=fault)
    assert len(out) == 1
    assert abs(out.iloc[0]["onset"] - fault) <= max(2 * interval, 5.0)
    assert out.iloc[0]["baseline"] == pytest.approx(0.2, abs=0.02)


def test_baseline_ends_at_the_alert_when_little_data_precedes_the_window() -> None:
    w = Window(start=T0 + 300.0, end=T0 + 900.0, baseline_start=T0 - 3300.0)
    assert baseline_end(T0 + 60.0, w, alert_at=T0 + 600.0) == T0 + 600.0
    # Enough data before the window: the window's start, as always.
    assert baseline_end(T0 - 3300.0, w, alert_at=T0 + 600.0) == T0 + 300.0


def test_series_no_role_knows_are_judged_per_family() -> None:
    ts = np.arange(T0, T0 + 4800.0, 15.0)
    rng = np.random.default_rng(11)
    gc = 0.01 + rng.normal(0, 0.001, ts.size)
    gc[ts >= T0 + 3900] *= 6.0
    threads = 40 + rng.normal(0, 1.0, ts.size)
    frame = pd.concat(
        [
            series("series", "orders", ts, gc, detail="jvm_gc_pause_seconds_sum"),
            series("series", "orders", ts, threads, detail="jvm_threads_live_threads"),
        ]
    )
    w = Window(start=T0 + 3600, end=T0 + 4800, baseline_start=T0)
    out = detect(frame, w)
    assert list(out["role"]) == ["series"]
    assert list(out["signal"]) == ["jvm_gc_pause_seconds_sum"]
    assert out.iloc[0]["modality"] == "metrics"


def test_a_single_error_in_a_quiet_hour_is_not_an_incident_but_a_burst_is() -> None:
    ts = np.arange(T0, T0 + 4800.0, 15.0)
    r = 60.0
    one = np.zeros(ts.size)
    one[(ts >= T0 + 3900) & (ts < T0 + 3900 + r)] = 1.0 / r  # one error, seen for a range
    burst = np.zeros(ts.size)
    burst[ts >= T0 + 3900] = 10.0 / r  # ten errors a minute from then on
    w = Window(start=T0 + 3600, end=T0 + 4800, baseline_start=T0)
    frame = pd.concat([series("error_rate", "a", ts, one), series("error_rate", "b", ts, burst)])
    out = detect(frame, w, DetectConfig(rate_range=r))
    assert list(out["service"]) == ["b"]


def _few_requests_case(rps: float, blip: bool) -> pd.DataFrame:
    """A p95 latency sampled every 5 s (rates over 20 s) of a service serving ``rps``."""
    ts = np.arange(T0, T0 + 900.0, 5.0)
    rng = np.random.default_rng(11)
    # Buckets a few requests apart: the quantile sits at 10 ms or 25 ms by turns.
    lat = np.where(rng.random(ts.size) < 0.6, 0.0097, 0.024)
    if blip:
        # Two slow requests 15 s apart: each holds the quantile up for the 20 s it stays in
        # the rate range, 35 s in all.
        lat[(ts >= T0 + 500) & (ts < T0 + 535)] = 0.43
    else:
        # Calls three times as slow for five minutes.
        lat[ts >= T0 + 600] *= 3.0
    rate = np.full(ts.size, rps)
    return pd.concat(
        [series("latency", "checkout", ts, lat), series("request_rate", "checkout", ts, rate)]
    )


def test_a_quantile_of_few_requests_is_judged_by_how_many_it_is_of() -> None:
    w = Window(start=T0 + 420, end=T0 + 900, baseline_start=T0)
    cfg = DetectConfig(rate_range=20.0)

    def latency(rps: float, blip: bool) -> pd.DataFrame:
        out = detect(_few_requests_case(rps, blip), w, cfg, step=5.0)
        return out[out["role"] == "latency"]

    # Half a request per second: ten per range, whose p95 is about the slowest of them.
    # Two slow requests are no change; calls three times as slow for minutes are.
    assert latency(0.5, blip=True).empty
    assert not latency(0.5, blip=False).empty
    # At fifty requests per second, 35 s of a p95 at 0.43 s is a change too.
    assert not latency(50.0, blip=True).empty


def test_client_call_rates_size_the_client_latency_noise_and_are_not_judged() -> None:
    ts = np.arange(T0, T0 + 900.0, 5.0)
    w = Window(start=T0 + 420, end=T0 + 900, baseline_start=T0)
    lat = np.full(ts.size, 0.0097)
    lat[(ts >= T0 + 500) & (ts < T0 + 535)] = 0.43
    calls = np.full(ts.size, 0.5)
    calls[ts >= T0 + 600] = 5.0
    frames = [
        series("client_latency", "checkout", ts, lat, peer="inventory"),
        series("client_rate", "checkout", ts, calls, peer="inventory"),
    ]
    out = detect(pd.concat(frames), w, DetectConfig(rate_range=20.0), step=5.0)
    assert out.empty
    out = detect(frames[0], w, DetectConfig(rate_range=20.0), step=5.0)
    assert list(out["role"]) == ["client_latency"]

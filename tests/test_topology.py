"""Topology: graph merging from spans, declared edges and edge metrics; root scoring."""

from __future__ import annotations

import networkx as nx
import pandas as pd
import pytest

from correlator.model import SPAN_COLUMNS, Telemetry
from correlator.topology import (
    COUNT_TEST_WEIGHT,
    blast_radius,
    build_graph,
    order_scales,
    root_scores,
    service_summary,
)


def span(
    trace: str, sid: str, parent: str | None, svc: str, kind: int, **kw: object
) -> dict[str, object]:
    row: dict[str, object] = {c: None for c in SPAN_COLUMNS}
    row.update(
        trace_id=trace,
        span_id=sid,
        parent_span_id=parent,
        service=svc,
        kind=kind,
        name="op",
        start=0.0,
        duration=0.1,
        status=0,
    )
    row.update(kw)
    return row


def test_graph_from_spans_declared_and_metrics() -> None:
    spans = pd.DataFrame(
        [
            span("t1", "a", None, "frontend", 3, peer="checkout"),
            span("t1", "b", "a", "checkout", 2),
            span("t1", "c", "b", "checkout", 3, peer="orders-db", db_system="postgresql"),
            span("t1", "d", "b", "checkout", 3, peer="redis", db_system="redis"),
            span("t1", "e", "b", "checkout", 3, peer="api.stripe.com"),
        ]
    )
    tel = Telemetry(spans=spans)
    tel.edges = [("checkout", "payments", "service")]
    sig = pd.DataFrame(
        {
            "role": ["edge_rate"],
            "service": ["ledger"],
            "ts": [0.0],
            "value": [1.0],
            "peer": ["payments"],
        }
    )
    g = build_graph(tel, sig)
    assert set(g.edges) == {
        ("frontend", "checkout"),
        ("checkout", "orders-db"),
        ("checkout", "redis"),
        ("checkout", "api.stripe.com"),
        ("checkout", "payments"),
        ("payments", "ledger"),
    }
    assert g.nodes["orders-db"]["kind"] == "database"
    assert g.nodes["redis"]["kind"] == "cache"
    assert g.nodes["api.stripe.com"]["kind"] == "external"
    assert g.edges["frontend", "checkout"]["sources"] == {"traces"}


def anomalies(rows: list[tuple[str, str, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "service": s,
                "role": r,
                "onset": o,
                "score": sc,
                "direction": "up",
                "baseline": 0.0,
                "peak": 1.0,
                "peer": "",
            }
            for s, r, o, sc in rows
        ]
    )


def chain() -> Telemetry:
    return declared(
        ("frontend", "checkout", "service"),
        ("checkout", "payments", "service"),
        ("frontend", "search", "service"),
    )


def declared(*edges: tuple[str, str, str]) -> Telemetry:
    """Telemetry holding only declared topology edges ``(caller, callee, kind)``."""
    tel = Telemetry()
    tel.edges = list(edges)
    return tel


def test_deepest_earliest_anomalous_node_wins() -> None:
    g = build_graph(chain())
    a = anomalies(
        [
            ("payments", "error_ratio", 100.0, 40.0),
            ("checkout", "error_ratio", 115.0, 30.0),
            ("frontend", "latency", 130.0, 30.0),
        ]
    )
    roots = root_scores(g, a, alert_service="frontend")
    assert roots[0].service == "payments" and roots[0].rank == 1
    assert roots[0].explained == 0.0
    assert {r.service for r in roots} == {"payments", "checkout", "frontend"}
    assert blast_radius(g, "payments", {"payments", "checkout", "frontend"}) == [
        "payments",
        "checkout",
        "frontend",
    ]


def test_caller_with_its_own_earlier_trouble_beats_a_later_callee() -> None:
    g = build_graph(chain())
    # checkout breaks first; payments' blip comes 10 minutes later and cannot explain it.
    a = anomalies(
        [
            ("checkout", "error_ratio", 100.0, 40.0),
            ("frontend", "error_ratio", 110.0, 30.0),
            ("payments", "latency", 700.0, 6.0),
        ]
    )
    assert root_scores(g, a, "frontend")[0].service == "checkout"


def test_order_is_read_to_the_data_s_own_resolution() -> None:
    """checkout's CPU rose first; 15 s later payments, which it calls, slowed too. At a 3 s
    grid (1 s scrapes) that is five steps later: payments began after checkout and does not
    explain it. At a 15 s grid it is one step, which says nothing of order: a tie, and
    payments explains checkout's trouble in part."""
    g = build_graph(chain())
    a = anomalies(
        [
            ("checkout", "cpu", 100.0, 40.0),
            ("checkout", "latency", 103.0, 40.0),
            ("payments", "latency", 115.0, 40.0),
            ("frontend", "latency", 118.0, 30.0),
        ]
    )

    def checkout(step: float) -> float:
        tolerance, lag = order_scales(step)
        roots = root_scores(g, a, "frontend", onset_tolerance=tolerance, lag=lag)
        return next(r.explained for r in roots if r.service == "checkout")

    assert order_scales(15.0) == (60.0, 30.0) and order_scales(60.0) == (120.0, 120.0)
    assert checkout(3.0) == 0.0
    assert checkout(15.0) > 0.2


def test_span_and_log_scores_are_put_level_with_the_metrics() -> None:
    """checkout's calls got slow, as the traces show (a count test of 6); frontend's latency
    metric rose at a robust z of 20. A count test says how sure, a metric's z how big: put
    level, checkout's trouble is the stronger. With no metric at all, scores stand as they
    are."""
    rows = [
        {"service": "checkout", "role": "edge_latency", "modality": "spans", "score": 6.0},
        {"service": "frontend", "role": "latency", "modality": "metrics", "score": 20.0},
        {"service": "search", "role": "log_errors", "modality": "logs", "score": 6.0},
    ]
    a = pd.DataFrame(
        [
            {**r, "onset": 100.0, "direction": "up", "baseline": 0.0, "peak": 1.0, "peer": ""}
            for r in rows
        ]
    )
    both = service_summary(a)["strength"]
    assert both["checkout"] == pytest.approx(
        6.0 * COUNT_TEST_WEIGHT / (6.0 * COUNT_TEST_WEIGHT + 8)
    )
    assert both["checkout"] > both["frontend"] == pytest.approx(20.0 / 28.0)
    assert both["search"] == both["checkout"]
    alone = service_summary(a[a["modality"] != "metrics"])["strength"]
    assert alone["checkout"] == pytest.approx(6.0 / 14.0)


def test_a_faint_wobble_long_before_does_not_take_the_earliness_of_clear_trouble() -> None:
    """Traces only: search's operation was a little slower half an hour before (a count
    test of 2.4, under the bar of 4), payments' clearly slower just after the fault (4.8).
    Half the strongest is under the bar, but the bar still says what counts as trouble
    begun: payments is the root, not the faint early wobble."""
    rows = [("search", 100.0, 2.4), ("payments", 1900.0, 4.8)]
    a = pd.DataFrame(
        [
            {
                "service": svc,
                "role": "span_latency",
                "modality": "spans",
                "onset": at,
                "score": sc,
                "direction": "up",
                "baseline": 0.0,
                "peak": 1.0,
                "peer": "",
            }
            for svc, at, sc in rows
        ]
    )
    roots = root_scores(build_graph(chain()), a, "frontend")
    assert roots[0].service == "payments"


def _without_and_with_fired(
    rows: list[tuple[str, str, float, float]],
) -> tuple[dict[str, float], dict[str, float]]:
    """Root scores of ``rows`` on the chain, without and with an alert fired at 300 s."""
    g, a = build_graph(chain()), anomalies(rows)
    free = {r.service: r.score for r in root_scores(g, a, "frontend")}
    timed = {r.service: r.score for r in root_scores(g, a, "frontend", fired=300.0)}
    return free, timed


@pytest.mark.parametrize(
    "later",
    [
        # payments fails hard, but only 15 minutes after the page.
        [("payments", "error_ratio", 1000.0, 400.0)],
        # payments throttles hard only after the page; one faint log row (a caller's stray
        # line laid at its door) came before it: that row does not make its trouble early.
        [("payments", "cpu_throttled", 700.0, 800.0), ("payments", "log_notice", 90.0, 3.0)],
    ],
    ids=["late", "late-despite-a-faint-row-before"],
)
def test_trouble_that_began_after_the_alert_fired_is_not_its_root(
    later: list[tuple[str, str, float, float]],
) -> None:
    from correlator.topology import LATE

    # checkout's errors came first.
    first = [("checkout", "error_ratio", 100.0, 12.0), ("frontend", "latency", 110.0, 12.0)]
    free, timed = _without_and_with_fired(first + later)
    assert timed["payments"] == pytest.approx(LATE * free["payments"])
    assert timed["checkout"] == free["checkout"]
    assert max(timed, key=lambda s: timed[s]) == "checkout"


def test_all_faint_trouble_before_the_alert_is_not_made_late_by_later_noise() -> None:
    # A service whose trouble is all faint (callers' log lines) began with it, however
    # much a row of barely more weight (noise) came after the alert.
    free, timed = _without_and_with_fired(
        [
            ("frontend", "latency", 110.0, 12.0),
            ("search", "named_by_callers", 90.0, 5.0),
            ("search", "error_rate", 900.0, 8.5),
        ]
    )
    assert timed["search"] == free["search"]


def test_upstream_traffic_explains_downstream_load() -> None:
    g = build_graph(chain())
    a = anomalies(
        [
            ("frontend", "request_rate", 100.0, 30.0),
            ("checkout", "request_rate", 100.0, 30.0),
            ("payments", "request_rate", 100.0, 30.0),
        ]
    )
    assert root_scores(g, a, "frontend")[0].service == "frontend"


def test_no_anomalies_no_roots() -> None:
    assert (
        root_scores(
            build_graph(chain()),
            anomalies([]).reindex(
                columns=[
                    "service",
                    "role",
                    "onset",
                    "score",
                    "direction",
                    "baseline",
                    "peak",
                    "peer",
                ]
            ),
            None,
        )
        == []
    )


def _rows(rows: list[tuple[str, str, float, float, float, str]]) -> pd.DataFrame:
    """(service, role, onset, baseline, peak, peer) -> anomaly rows."""
    return pd.DataFrame(
        [
            {
                "service": s,
                "role": r,
                "onset": o,
                "end": o + 900.0,
                "score": 50.0,
                "direction": "up",
                "baseline": b,
                "peak": p,
                "peer": d,
            }
            for s, r, o, b, p, d in rows
        ]
    )


def test_edge_trouble_the_callee_never_saw_moves_to_the_caller() -> None:
    from correlator.topology import attribute_edges

    signals = pd.DataFrame(
        {"role": ["request_rate", "request_rate"], "service": ["auth", "redis-cache"]}
    )
    a = _rows(
        [
            # Callers see 150 failed calls/s into auth; auth's own side saw 2 more errors/s.
            ("auth", "edge_errors", 100.0, 1.0, 151.0, "bff"),
            ("auth", "error_rate", 160.0, 1.0, 3.0, ""),
            # An uninstrumented cache failing stays the cache's.
            ("redis", "edge_errors", 100.0, 0.0, 80.0, "bff"),
        ]
    )
    out = attribute_edges(a, signals)
    moved = out[out["role"] == "client_errors"]
    assert list(zip(moved["service"], moved["peer"], strict=True)) == [("bff", "auth")]
    assert ((out["service"] == "redis") & (out["role"] == "edge_errors")).any()
    # When the callee's own errors rose as much, the trouble is the callee's.
    same = _rows(
        [
            ("auth", "edge_errors", 100.0, 1.0, 151.0, "bff"),
            ("auth", "error_rate", 100.0, 1.0, 140.0, ""),
        ]
    )
    assert set(attribute_edges(same, signals)["role"]) == {"edge_errors", "error_rate"}


def test_edge_trouble_stays_with_a_starved_callee_but_not_a_busy_one() -> None:
    from correlator.topology import attribute_edges

    signals = pd.DataFrame({"role": ["request_rate"], "service": ["auth"]})
    # Callers time out on auth (a slow server records no error of its own) while
    # auth's CPU is throttled and it serves no more requests than before: starved.
    starved = _rows(
        [
            ("auth", "edge_errors", 100.0, 1.0, 151.0, "bff"),
            ("auth", "cpu_throttled", 90.0, 0.1, 2.5, ""),
        ]
    )
    out = attribute_edges(starved, signals)
    assert set(out["role"]) == {"edge_errors", "cpu_throttled"}
    # The same throttling that came with a jump in its requests (the caller's retries
    # through a bad network path) is load: the trouble moves to the caller.
    busy = pd.concat(
        [starved, _rows([("auth", "request_rate", 95.0, 50.0, 400.0, "")])], ignore_index=True
    )
    out = attribute_edges(busy, signals)
    moved = out[out["role"] == "client_errors"]
    assert list(zip(moved["service"], moved["peer"], strict=True)) == [("bff", "auth")]
    # Lost pods are strain whatever the traffic did.
    lost = _rows([("auth", "edge_errors", 100.0, 1.0, 151.0, "bff")])
    lost = pd.concat(
        [lost, _rows([("auth", "up", 100.0, 1.0, 0.0, "")]).assign(direction="down")],
        ignore_index=True,
    )
    assert "edge_errors" in set(attribute_edges(lost, signals)["role"])
    # Starvation that was over well before the calls failed does not explain them.
    over = _rows(
        [
            ("auth", "edge_errors", 1000.0, 1.0, 151.0, "bff"),
            ("auth", "cpu_throttled", 160.0, 0.1, 2.5, ""),
        ]
    )
    over.loc[over["role"] == "cpu_throttled", "end"] = 400.0
    assert "client_errors" in set(attribute_edges(over, signals)["role"])
    # Failed calls into a callee that was already slow itself timed out on it.
    slow = _rows(
        [
            ("auth", "edge_errors", 100.0, 1.0, 151.0, "bff"),
            ("auth", "latency", 80.0, 0.2, 1.5, ""),
        ]
    )
    assert set(attribute_edges(slow, signals)["role"]) == {"edge_errors", "latency"}


def test_a_rate_rise_after_the_service_began_failing_is_retries_not_demand() -> None:
    from correlator.topology import demand_rises

    a = _rows(
        [
            ("checkout", "error_rate", 100.0, 0.1, 50.0, ""),
            ("checkout", "request_rate", 160.0, 60.0, 200.0, ""),  # retries
            ("frontend", "request_rate", 100.0, 80.0, 400.0, ""),  # demand, then trouble
            ("frontend", "latency", 110.0, 0.2, 2.0, ""),
        ]
    )
    assert list(demand_rises(a, lag=30.0).index) == ["frontend"]


def test_calls_made_by_a_retrying_caller_are_not_demand_and_it_passes_on() -> None:
    from correlator.topology import amplified, demand_rises

    g = build_graph(
        declared(
            ("bff", "gift-cards", "service"),
            ("gift-cards", "rate-limiter", "service"),
            ("gift-cards", "geo-api", "external"),
            ("gateway", "search", "service"),
        )
    )
    a = _rows(
        [
            # geo-api fails first; bff retries into gift-cards, which retries into
            # rate-limiter: neither bff nor gateway receives more requests.
            ("geo-api", "edge_errors", 0.0, 0.0, 400.0, "gift-cards"),
            ("gift-cards", "latency", 0.0, 0.5, 10.0, ""),
            ("gift-cards", "edge_rate", 45.0, 50.0, 330.0, "bff"),
            ("gift-cards", "request_rate", 45.0, 50.0, 330.0, ""),
            ("rate-limiter", "edge_rate", 45.0, 47.0, 420.0, "gift-cards"),
            ("rate-limiter", "request_rate", 45.0, 60.0, 430.0, ""),
            ("rate-limiter", "error_rate", 45.0, 0.0, 150.0, ""),
            # Real demand: the gateway gets more requests and sends search more.
            ("gateway", "request_rate", 40.0, 100.0, 300.0, ""),
            ("search", "edge_rate", 40.0, 90.0, 280.0, "gateway"),
            ("search", "request_rate", 40.0, 90.0, 280.0, ""),
        ]
    )
    assert amplified(a) == {"gift-cards", "rate-limiter"}
    assert set(demand_rises(a, 30.0).index) == {"gateway", "search"}
    roots = root_scores(g, a, "bff")
    # rate-limiter fails under the retry storm; the failing dependency below gift-cards
    # that started it all ranks first.
    assert roots[0].service == "geo-api"
    limiter = next(r for r in roots if r.service == "rate-limiter")
    assert limiter.explained >= 0.7


def test_retries_that_follow_a_service_own_failure_do_not_explain_it() -> None:
    g = build_graph(declared(("partner-api", "search", "service"), ("search", "fraud", "service")))
    a = _rows(
        [
            ("search", "error_ratio", 120.0, 0.0, 0.5, ""),
            ("partner-api", "error_rate", 135.0, 0.1, 78.0, ""),
            # partner-api retries search after search began failing.
            ("search", "edge_rate", 150.0, 220.0, 340.0, "partner-api"),
            ("search", "request_rate", 150.0, 310.0, 430.0, ""),
            ("fraud", "edge_rate", 150.0, 250.0, 360.0, "search"),
            ("fraud", "cpu", 165.0, 1.2, 1.6, ""),
        ]
    )
    roots = root_scores(g, a, "partner-api")
    assert roots[0].service == "search"
    assert roots[0].explained < 0.5


def test_memory_growth_on_a_service_that_serves_fine_is_a_weak_suspect() -> None:
    g = build_graph(
        declared(("api", "tokenizer", "service"), ("tokenizer", "audit-log", "service"))
    )
    a = _rows(
        [
            ("audit-log", "memory_ratio", -255.0, 0.49, 0.61, ""),  # grows, serves fine
            ("tokenizer", "cpu_throttled", -15.0, 0.1, 33.0, ""),
            ("tokenizer", "latency", -15.0, 0.05, 0.5, ""),
            ("api", "error_rate", 15.0, 0.1, 39.0, ""),
        ]
    )
    a.loc[a["service"] == "audit-log", "score"] = 4.7
    roots = root_scores(g, a, "api")
    assert roots[0].service == "tokenizer"


def test_a_faint_early_wobble_does_not_date_a_service_trouble() -> None:
    from correlator.topology import service_summary

    a = _rows(
        [
            ("api", "client_latency", -480.0, 0.40, 0.51, "sync"),  # a few ms, faint
            ("api", "error_rate", 120.0, 0.1, 300.0, ""),
        ]
    )
    a.loc[a["role"] == "client_latency", "score"] = 5.0
    a.loc[a["role"] == "error_rate", "score"] = 500.0
    assert service_summary(a).loc["api", "onset"] == 120.0
    # Two anomalies of like weight: the first dates it.
    a.loc[a["role"] == "client_latency", "score"] = 400.0
    assert service_summary(a).loc["api", "onset"] == -480.0


def test_a_service_its_callers_log_errors_about_becomes_the_suspect() -> None:
    # Wrong return values: pricing's own requests succeed; its callers log that its
    # answers are invalid. Their words point at it.
    from correlator.detector import anomaly_frame
    from correlator.topology import named_by_callers

    rows = [
        {
            "service": caller,
            "role": "log_template",
            "onset": 100.0,
            "end": 400.0,
            "score": 9.0,
            "direction": "up",
            "baseline": 0.0,
            "peak": 3.0,
            "peer": "pricing",
            "modality": "logs",
            "signal": "invalid response from <svc>",
            "evidence": "new template",
        }
        for caller in ("checkout", "cart")
    ]
    out = named_by_callers(anomaly_frame(rows))
    named = out[out["role"] == "named_by_callers"]
    assert sorted(named["service"]) == ["pricing", "pricing"]
    assert sorted(named["peer"]) == ["cart", "checkout"]
    g = nx.DiGraph([("checkout", "pricing"), ("cart", "pricing")])
    assert root_scores(g, out, "checkout")[0].service == "pricing"


def test_a_service_named_in_the_errors_of_one_that_does_not_call_it_is_not_blamed() -> None:
    # search's own exception says "no currency for region HR": a word, not a call; search
    # calls pricing, never currency. cart, whose calls are not known, is taken at its word.
    from correlator.detector import anomaly_frame
    from correlator.topology import named_by_callers

    def row(svc: str, peer: str) -> dict[str, object]:
        return {
            "service": svc, "role": "log_template", "onset": 100.0, "end": 400.0,
            "score": 9.0, "direction": "up", "baseline": 0.0, "peak": 3.0, "peer": peer,
            "modality": "logs", "signal": "<exception> for <svc>", "evidence": "new template",
        }  # fmt: skip

    a = anomaly_frame([row("search", "currency"), row("search", "pricing"), row("cart", "tax")])
    callees = {"search": {"pricing"}, "checkout": {"currency"}}
    out = named_by_callers(a, callees=callees)
    named = out[out["role"] == "named_by_callers"]
    assert sorted(zip(named["service"], named["peer"], strict=True)) == [
        ("pricing", "search"),
        ("tax", "cart"),
    ]
    word = out[(out["service"] == "search") & (out["signal"] == "<exception> for <svc>")]
    assert sorted(word["peer"]) == ["", "pricing"]
    # Without the calls known, every name is taken at its word.
    everyone = named_by_callers(a)
    assert len(everyone[everyone["role"] == "named_by_callers"]) == 3


def test_a_dependency_slower_by_milliseconds_does_not_explain_a_caller_slower_by_seconds() -> None:
    g = build_graph(chain())
    g.add_edge("payments", "payments-db")
    # payments got a second slower; its database moved too, at the same time, less surely.
    rows = [
        ("frontend", "latency", 100.0, 0.2, 1.2, ""),
        ("checkout", "latency", 100.0, 0.15, 1.15, ""),
        ("payments", "latency", 100.0, 0.05, 1.05, ""),
    ]

    def scores(db_peak: float) -> dict[str, float]:
        a = _rows([*rows, ("payments-db", "latency", 100.0, 0.013, db_peak, "")])
        a.loc[a["service"] == "payments-db", "score"] = 12.0
        return {r.service: r.score for r in root_scores(g, a, "frontend")}

    tiny, big = scores(0.020), scores(1.013)  # slower by 7 ms, or by as much as payments
    assert max(tiny, key=tiny.__getitem__) == "payments"
    assert tiny["payments"] > big["payments"]


def test_a_significant_change_of_a_service_own_resources_dates_its_trouble() -> None:
    from correlator.topology import service_summary

    # A leak climbs for ten minutes (z 18) before the errors it causes (z 1000).
    a = _rows(
        [
            ("cart", "memory", -660.0, 4e8, 8e8, ""),
            ("cart", "error_rate", 60.0, 0.1, 20.0, ""),
        ]
    )
    a.loc[a["role"] == "memory", "score"] = 18.0
    a.loc[a["role"] == "error_rate", "score"] = 1000.0
    assert service_summary(a).loc["cart", "onset"] == -660.0
    # A symptom that faint, that early, still does not date it (see the faint wobble).
    a.loc[a["role"] == "memory", "role"] = "client_latency"
    assert service_summary(a).loc["cart", "onset"] == 60.0


def _rising(svc: str, role: str, peer: str = "", modality: str = "metrics") -> dict[str, object]:
    """An anomaly row that rose at 600 s, for the comovement tests."""
    return {
        "service": svc, "role": role, "onset": 600.0, "end": 1200.0, "score": 30.0,
        "direction": "up", "baseline": 1.0, "peak": 6.0, "peer": peer,
        "modality": modality, "signal": role,
    }  # fmt: skip


def test_a_service_only_its_callers_name_follows_the_symptom_as_they_do() -> None:
    from correlator.detector import anomaly_frame
    from correlator.topology import comovement, named_by_callers

    ts = [float(t) for t in range(0, 1200, 60)]
    rise = [1.0 if t < 600 else 5.0 + t / 600 for t in ts]
    signals = pd.DataFrame(
        {
            "ts": ts * 2,
            "value": rise + [1.0 + (i % 3) for i in range(len(ts))],
            "role": ["error_rate"] * (2 * len(ts)),
            "service": ["checkout"] * len(ts) + ["fraud"] * len(ts),
            "peer": [""] * (2 * len(ts)),
        }
    )

    a = named_by_callers(
        anomaly_frame(
            [
                _rising("checkout", "error_rate"),
                _rising("fraud", "error_rate"),
                _rising("checkout", "log_template", "pricing", "logs"),
            ]
        )
    )
    follows = comovement(a, signals, "checkout", 0.0)
    assert follows["checkout"] == pytest.approx(1.0)
    assert follows["pricing"] == follows["checkout"]  # inherited from the caller naming it
    assert follows["fraud"] < 0.5
    # Where a service sits in the graph does not lift one that keeps its own time: fraud,
    # called by everyone, stays below pricing.
    g = nx.DiGraph([("checkout", "pricing"), ("checkout", "fraud"), ("cart", "fraud")])
    g.add_edges_from([("web", "checkout"), ("web", "cart"), ("mobile", "fraud")])
    ranked = [r.service for r in root_scores(g, a, "checkout", comove=follows)]
    assert ranked.index("pricing") < ranked.index("fraud")


def test_a_faint_wobble_before_a_surge_does_not_make_the_surge_retries() -> None:
    from correlator.topology import demand_rises

    a = _rows(
        [
            ("gateway", "client_latency", 10.0, 0.09, 0.5, "tax"),  # a few sampled spans
            ("gateway", "request_rate", 105.0, 117.0, 574.0, ""),
            ("gateway", "error_rate", 135.0, 0.0, 554.0, ""),
        ]
    )
    a.loc[a["role"] == "client_latency", "score"] = 3.6
    assert "gateway" in demand_rises(a, lag=30.0).index
    # Slowness of some weight first is still no failure: nobody asks again for it.
    a.loc[a["role"] == "client_latency", "score"] = 40.0
    assert "gateway" in demand_rises(a, lag=30.0).index
    # Its calls failing (timeouts, as its callers saw them) first: the rise is callers
    # asking again.
    a.loc[a["role"] == "client_latency", "role"] = "edge_errors"
    assert "gateway" not in demand_rises(a, lag=30.0).index


def test_a_rate_rise_read_late_from_a_metric_is_dated_by_its_spans() -> None:
    from correlator.topology import demand_rises

    # 60 s scrapes: the request rate (a rate over a window) reads the surge at 300 s; the
    # entry's sampled spans rose in share at 181 s, errors began at 120 s (a step and a
    # bit before): the surge came with the errors, not after them as retries would.
    a = _rows(
        [
            ("gateway", "log_errors", 120.0, 0.0, 0.1, ""),
            ("gateway", "request_rate", 300.0, 2.6, 18.0, ""),
        ]
    )
    assert "gateway" not in demand_rises(a, lag=120.0).index
    spans = _rows([("gateway", "span_rate", 181.0, 0.005, 0.12, "")])
    assert "gateway" in demand_rises(pd.concat([a, spans]), lag=120.0).index
    # A share that rose long before the metric's rise dates nothing about it.
    old = spans.assign(onset=-300.0)
    assert "gateway" not in demand_rises(pd.concat([a, old]), lag=120.0).index


def test_a_caller_own_trouble_does_not_explain_the_alerted_callee() -> None:
    g = build_graph(chain())
    # frontend's calls got slower first (a wobble of its own); search, which it calls,
    # then began failing, and the alert is on search.
    a = anomalies([("frontend", "latency", 100.0, 40.0), ("search", "error_ratio", 250.0, 20.0)])
    assert root_scores(g, a, "frontend")[0].service == "frontend"
    on_search = root_scores(g, a, "search")
    assert on_search[0].service == "search"
    # More demand from the caller still can explain it.
    busy = pd.concat([a, anomalies([("frontend", "request_rate", 100.0, 40.0)])])
    scores = {r.service: r.score for r in root_scores(g, busy, "search")}
    assert scores["frontend"] > 0.5 * scores["search"]


def test_a_caller_errors_its_logs_blame_on_a_callee_carry_over_to_it() -> None:
    """frontend's requests fail because search answers wrong: its error lines all say so
    from the start. search inherits frontend's error strength; not when the calls failed
    on the way (client errors: judged as calls), nor when the blame came only later."""
    from correlator.detector import anomaly_frame
    from correlator.topology import named_by_callers

    def row(role: str, score: float, peak: float, onset: float, peer: str = "") -> dict:  # type: ignore[type-arg]
        modality = "logs" if role.startswith("log_") else "metrics"
        return {
            "service": "frontend", "role": role, "onset": onset, "end": 900.0, "score": score,
            "direction": "up", "baseline": 0.0, "peak": peak, "peer": peer,
            "modality": modality, "signal": role, "evidence": "",
        }  # fmt: skip

    rows = [
        row("error_ratio", 22.0, 0.12, 10.0),
        row("log_errors", 3.0, 0.08, 0.0),
        row("log_template", 2.9, 0.078, 0.8, peer="search"),
    ]

    def blame(frame: list[dict]) -> float:  # type: ignore[type-arg]
        out = named_by_callers(anomaly_frame(frame), lag=30.0)
        return float(out[(out["service"] == "search")]["score"].max())

    assert blame(rows) == pytest.approx(22.0 * 0.078 / 0.08)
    failed = [*rows, row("client_errors", 9.0, 0.5, 5.0, peer="search")]
    assert blame(failed) == pytest.approx(2.9)
    late = [*rows[:2], row("log_template", 2.9, 0.078, 200.0, peer="search")]
    assert blame(late) == pytest.approx(2.9)


def _product_route_surge() -> tuple[nx.DiGraph, pd.DataFrame]:
    """More product views: the frontend calls catalog, inventory and recommendations once
    each per view, recommendations call catalog too; its other routes' callees are flat."""
    g = build_graph(
        declared(
            *(
                ("frontend", callee, "service")
                for callee in ("catalog", "inventory", "recs", "cart", "search", "checkout")
            ),
            ("recs", "catalog", "service"),
        )
    )
    a = _rows(
        [
            ("frontend", "request_rate", 10.0, 13.0, 36.0, ""),
            ("catalog", "request_rate", 5.0, 20.0, 89.0, ""),
            ("recs", "request_rate", 5.0, 7.0, 29.0, ""),
            ("inventory", "request_rate", 10.0, 4.5, 27.0, ""),
            ("frontend", "latency", 20.0, 0.02, 0.2, ""),
            ("catalog", "latency", 15.0, 0.01, 0.15, ""),
        ]
    )
    return g, a


def test_a_surge_aimed_through_the_entry_at_one_route_is_the_routes() -> None:
    from correlator.topology import aimed_surges, rate_rises

    g, a = _product_route_surge()
    assert aimed_surges(g, *rate_rises(a)) == {"frontend": {"catalog", "recs", "inventory"}}
    roots = root_scores(g, a, "frontend")
    # The frontend only forwarded the surge: it explains nothing below it, and catalog,
    # which took most of the extra requests (directly and through recs), ranks first.
    assert roots[0].service == "catalog"
    assert next(r for r in roots if r.service == "catalog").explained < 0.5
    # The whole entry surging (every callee up alike) is the entry's: aimed at nobody.
    flat = pd.concat(
        [a, _rows([(c, "request_rate", 10.0, 10.0, 25.0, "") for c in ("cart", "search")])]
    )
    assert aimed_surges(g, *rate_rises(flat)) == {}


def test_calls_the_spans_lay_at_a_callee_door_become_its_trouble() -> None:
    from correlator.detector import anomaly_frame
    from correlator.topology import laid_at_callee

    def row(svc: str, role: str, onset: float, peer: str = "") -> dict[str, object]:
        return {
            "service": svc, "role": role, "onset": onset, "end": 1200.0, "score": 40.0,
            "direction": "up", "baseline": 0.05, "peak": 0.4, "peer": peer,
            "modality": "metrics", "signal": role,
        }  # fmt: skip

    a = anomaly_frame(
        [
            # Callers' client metrics: calls to audit slow from 600 s; one older and unrelated.
            row("search", "client_latency", 600.0, "audit"),
            row("catalog", "client_latency", 615.0, "audit"),
            row("catalog", "client_latency", 60.0, "audit"),
            row("catalog", "client_latency", 600.0, "tax"),
            # The spans: calls answered by one of audit's pods spent longer outside it.
            row("audit", "transit_latency", 605.0),
        ]
    )
    out = laid_at_callee(a, lag=30.0)
    moved = out[out["role"] == "edge_latency"]
    assert sorted(zip(moved["service"], moved["peer"], strict=True)) == [
        ("audit", "catalog"),
        ("audit", "search"),
    ]
    left = out[out["role"] == "client_latency"]
    assert sorted(zip(left["service"], left["peer"], left["onset"], strict=True)) == [
        ("catalog", "audit", 60.0),  # began long before: not this trouble
        ("catalog", "tax", 600.0),  # another callee: stays the caller's
    ]
    # Nothing laid at anyone's door: nothing moves.
    assert laid_at_callee(a[a["role"] != "transit_latency"]).equals(
        a[a["role"] != "transit_latency"]
    )


def test_calls_to_a_callee_we_see_nothing_of_are_laid_at_its_door() -> None:
    from correlator.detector import anomaly_frame
    from correlator.topology import instrumented, laid_at_shared_end

    def row(svc: str, role: str, onset: float, peer: str = "") -> dict[str, object]:
        return {
            "service": svc, "role": role, "onset": onset, "end": 1200.0, "score": 40.0,
            "direction": "up", "baseline": 0.05, "peak": 0.4, "peer": peer,
            "modality": "spans", "signal": role,
        }  # fmt: skip

    spans = pd.DataFrame(
        [span("t", "a", None, s, 2) for s in ("cart", "orders", "search", "ads", "geo")]
    )
    seen = instrumented(Telemetry(spans=spans))
    assert seen == {"cart", "orders", "search", "ads", "geo"}
    a = anomaly_frame(
        [
            # Two callers saw calls to orders-db (no spans or metrics of its own) fail.
            row("cart", "client_errors", 600.0, "orders-db"),
            row("orders", "client_latency", 610.0, "orders-db"),
            # One caller alone, nothing else going wrong for it: the cache's trouble.
            row("search", "client_latency", 600.0, "search-redis"),
            # One caller whose calls to everything went slow at once: its own.
            row("ads", "client_latency", 600.0, "ads-redis"),
            row("ads", "client_latency", 605.0, "geo"),
            # A callee seen from inside keeps its callers' views on the callers.
            row("cart", "client_latency", 600.0, "geo"),
            # The calls into a caller (edge rows on it) are not its calls elsewhere: the
            # API geo calls is still the one whose calls went wrong.
            row("geo", "client_latency", 600.0, "geo-ip-api"),
            row("geo", "edge_latency", 610.0, "cart"),
        ]
    )
    out = laid_at_shared_end(a, seen, lag=30.0)
    moved = out[out["role"].str.startswith("edge_") & (out["service"] != "geo")]
    assert sorted(zip(moved["service"], moved["role"], moved["peer"], strict=True)) == [
        ("geo-ip-api", "edge_latency", "geo"),
        ("orders-db", "edge_errors", "cart"),
        ("orders-db", "edge_latency", "orders"),
        ("search-redis", "edge_latency", "search"),
    ]
    left = out[out["role"].str.startswith("client_")]
    assert sorted(zip(left["service"], left["peer"], strict=True)) == [
        ("ads", "ads-redis"),
        ("ads", "geo"),
        ("cart", "geo"),
    ]


def test_calls_to_a_callee_seen_from_inside_are_laid_at_the_end_they_share() -> None:
    from correlator.detector import anomaly_frame
    from correlator.topology import laid_at_shared_end

    def row(svc: str, role: str, onset: float, peer: str) -> dict[str, object]:
        return {
            "service": svc, "role": role, "onset": onset, "end": 1200.0, "score": 40.0,
            "direction": "up", "baseline": 0.05, "peak": 0.4, "peer": peer,
            "modality": "metrics", "signal": role,
        }  # fmt: skip

    seen = {"web", "api", "pay", "shop", "img", "auth", "solo", "lone", "ads", "geo"}
    callees = {
        "web": {"pay", "auth"},
        "shop": {"img", "auth"},
        "api": {"pay"},
        "solo": {"lone"},
        "ads": {"geo", "ads-redis"},
    }
    a = anomaly_frame(
        [
            # Two callers saw their calls to pay slow: a delay in front of pay.
            row("web", "client_latency", 600.0, "pay"),
            row("api", "client_latency", 610.0, "pay"),
            # Its one caller's other calls (to auth) stayed fast: the delay is img's.
            row("shop", "client_errors", 900.0, "img"),
            # A caller that calls nothing else: nothing tells the two ends apart.
            row("solo", "client_latency", 600.0, "lone"),
            # All of a caller's calls slow at once: its own way out.
            row("ads", "client_latency", 600.0, "geo"),
            row("ads", "client_latency", 605.0, "ads-redis"),
        ]
    )
    out = laid_at_shared_end(a, seen, lag=30.0, callees=callees)
    moved = out[out["role"].str.startswith("edge_")]
    assert sorted(zip(moved["service"], moved["peer"], strict=True)) == [
        ("img", "shop"),
        ("pay", "api"),
        ("pay", "web"),
    ]
    left = out[out["role"].str.startswith("client_")]
    assert sorted(zip(left["service"], left["peer"], strict=True)) == [
        ("ads", "ads-redis"),
        ("ads", "geo"),
        ("solo", "lone"),
    ]
    # Without what each service calls, a callee seen from inside keeps the callers' views.
    assert laid_at_shared_end(a, seen, lag=30.0).equals(a)


def test_a_callee_only_its_callers_spans_show_follows_the_symptom_as_they_do() -> None:
    from correlator.detector import anomaly_frame
    from correlator.topology import comovement

    ts = [float(t) for t in range(0, 1200, 60)]
    rise = [1.0 if t < 600 else 5.0 + t / 600 for t in ts]
    signals = pd.DataFrame(
        {"ts": ts, "value": rise, "role": ["latency"] * len(ts), "service": ["edge"] * len(ts),
         "peer": [""] * len(ts)}
    )  # fmt: skip

    a = anomaly_frame(
        [
            _rising("edge", "latency", "", "metrics"),
            _rising("edge", "client_latency", "checkout", "spans"),
            _rising("checkout", "transit_latency", "", "spans"),
            _rising("edge", "client_latency", "ads", "metrics"),  # a metric series of its own
        ]
    )
    follows = comovement(a, signals, "edge", 0.0)
    assert follows["edge"] == pytest.approx(1.0)
    assert follows["checkout"] == follows["edge"]  # its callers' spans are its series
    assert "ads" not in follows  # metric rows follow their own series, none here


def test_a_call_row_moved_to_the_callee_follows_the_callers_series() -> None:
    """The callers' view of slow calls, laid at the callee's door, follows the callers'
    client series; the service-graph edge series of the same calls stayed flat (it saw
    the server side only)."""
    from correlator.detector import anomaly_frame
    from correlator.topology import comovement, laid_at_callee

    ts = [float(t) for t in range(0, 1200, 60)]
    rise = [1.0 if t < 600 else 5.0 + t / 600 for t in ts]
    flat = [0.095 + 0.001 * (i % 2) for i in range(len(ts))]

    def series(role: str, svc: str, peer: str, values: list[float]) -> pd.DataFrame:
        return pd.DataFrame({"ts": ts, "value": values, "role": role, "service": svc, "peer": peer})

    signals = pd.concat(
        [
            series("latency", "web", "", rise),
            series("client_latency", "checkout", "catalog", rise),
            series("edge_latency", "catalog", "checkout", flat),
        ],
        ignore_index=True,
    )

    a = laid_at_callee(
        anomaly_frame(
            [
                _rising("web", "latency", "", "metrics"),
                _rising("checkout", "client_latency", "catalog", "metrics"),
                _rising("catalog", "transit_latency", "", "spans"),
            ]
        )
    )
    moved = a[a["service"] == "catalog"]
    assert "edge_latency" in set(moved["role"])  # laid at its door
    follows = comovement(a, signals, "web", 0.0)
    assert follows["catalog"] == pytest.approx(1.0)


def test_a_callee_two_callers_errors_name_explains_them() -> None:
    """redis exports nothing; cart's and pricing's errors began together and both log
    errors naming it. Their agreement explains their trouble: redis is the root. One
    caller's words alone may be its own trouble talking: they explain nothing."""
    from correlator.topology import named_by_callers

    g = nx.DiGraph([("frontend", "cart"), ("frontend", "pricing"), ("cart", "redis")])
    g.add_edge("pricing", "redis")
    g.nodes["redis"]["kind"] = "cache"

    def rows(namers: tuple[str, ...]) -> pd.DataFrame:
        a = _rows(
            [(s, "error_ratio", 1000.0, 0.0, 0.5, "") for s in ("cart", "pricing")]
            + [("frontend", "error_ratio", 1010.0, 0.0, 0.3, "")]
            + [(s, "log_errors", 1000.0, 0.0, 0.2, "redis") for s in namers]
        )
        a["modality"] = ["metrics"] * 3 + ["logs"] * len(namers)
        a["signal"] = ""
        a["evidence"] = "call to redis failed: connection pool timeout"
        return named_by_callers(a)

    both = root_scores(g, rows(("cart", "pricing")), "frontend")
    assert both[0].service == "redis"
    assert {r.service: r.explained for r in both}["cart"] > 0.4
    one = {r.service: r for r in root_scores(g, rows(("cart",)), "frontend")}
    assert one["cart"].explained == 0.0


def test_memory_that_rose_in_most_services_at_once_is_set_aside() -> None:
    """Eight of ten services' memory rose within a minute (a whole system warming up
    after a restart); one service's own climb, later, stays, as does every other row."""
    from correlator.detector import anomaly_frame
    from correlator.topology import common_mode

    def row(svc: str, role: str, onset: float, signal: str = "") -> dict[str, object]:
        return {
            "service": svc, "role": role, "onset": onset, "end": onset + 600.0,
            "score": 12.0, "direction": "up", "baseline": 1.0, "peak": 2.0, "peer": "",
            "modality": "metrics", "signal": signal or role, "evidence": "",
        }  # fmt: skip

    services = [f"s{i}" for i in range(10)]
    rows = [row(s, "memory", 100.0 + 5 * i) for i, s in enumerate(services[:8])]
    rows += [row(s, "series", 110.0, "jvm_heap_used") for s in services[:8]]
    rows += [row("s9", "memory", 900.0), row("s0", "latency", 100.0)]
    signals = pd.DataFrame(
        {
            "role": ["memory"] * 10 + ["series:jvm_heap_used"] * 10 + ["latency"] * 10,
            "service": services * 3,
            "ts": 0.0,
            "value": 1.0,
        }
    )
    kept, notes = common_mode(anomaly_frame(rows), signals, tolerance=120.0)
    assert sorted(zip(kept["service"], kept["role"], strict=True)) == [
        ("s0", "latency"),
        ("s9", "memory"),
    ]
    assert sorted(n[0] for n in notes) == ["jvm_heap_used", "memory"]
    assert "8 of 10 services" in notes[0][1]
    # Four of ten at once is some services' story, not the system's.
    few = anomaly_frame(rows[:4] + rows[-2:])
    kept, notes = common_mode(few, signals, tolerance=120.0)
    assert len(kept) == len(few) and not notes


def test_a_root_whose_trouble_was_over_long_before_the_alert_keeps_part_of_its_score() -> None:
    """Two services hurting with equal strength, one's trouble over twenty minutes before
    the window ends (the alert still firing then): it keeps PASSED of its root score."""
    from correlator.detector import anomaly_frame
    from correlator.topology import PASSED, over_by

    def row(svc: str, end: float) -> dict[str, object]:
        return {
            "service": svc, "role": "latency", "peer": "", "onset": 100.0, "end": end,
            "score": 20.0, "direction": "up", "baseline": 0.1, "peak": 0.5,
            "modality": "metrics", "signal": "latency", "evidence": "",
        }  # fmt: skip

    frame = anomaly_frame([row("a", 3600.0), row("b", 2400.0)])
    g = nx.DiGraph()
    g.add_nodes_from(["a", "b"])
    over = over_by("firing", None, 3600.0, 15.0)
    assert over == pytest.approx(3300.0)
    plain = {r.service: r.score for r in root_scores(g, frame)}
    held = {r.service: r.score for r in root_scores(g, frame, over=over)}
    assert held["a"] == pytest.approx(plain["a"])
    assert held["b"] == pytest.approx(PASSED * plain["b"])
    # A resolved alert holds only until it resolved.
    assert over_by("resolved", 2600.0, 3600.0, 15.0) < 2400.0


def test_callers_of_a_dark_database_slowing_together_first_lay_it_at_its_door() -> None:
    """A database only the declared topology names (no series, spans or lines of its own,
    no caller's rows naming it): when all its callers began to slow together, before
    anything but their callers, their shared callee is where it began; it follows the
    symptom as they do and ranks first."""
    from correlator.detector import anomaly_frame
    from correlator.topology import comovement, laid_at_dark_callee

    g = nx.DiGraph([("web", "orders"), ("web", "users"), ("web", "search"), ("orders", "users-db")])
    g.add_edges_from([("users", "users-db"), ("search", "search-db")])
    seen = {"web", "orders", "users", "search"}

    def row(svc: str, role: str, onset: float, score: float = 300.0) -> dict[str, object]:
        return {
            "service": svc, "role": role, "onset": onset, "end": 1200.0, "score": score,
            "direction": "up", "baseline": 0.05, "peak": 2.0, "peer": "",
            "modality": "metrics", "signal": role,
        }  # fmt: skip

    together = [
        row("orders", "latency", 600.0),
        row("users", "latency", 615.0),
        row("users", "error_rate", 630.0, 80.0),
        row("web", "latency", 615.0),
    ]
    out = laid_at_dark_callee(anomaly_frame(together), g, seen, lag=30.0)
    got = out[out["service"] == "users-db"]
    assert sorted(zip(got["role"], got["peer"], strict=True)) == [
        ("edge_errors", "users"),
        ("edge_latency", "orders"),
        ("edge_latency", "users"),
    ]
    ts = [float(t) for t in range(0, 1200, 15)]
    rise = [0.05 if t < 600 else 2.0 for t in ts]
    signals = pd.concat(
        [
            pd.DataFrame({"ts": ts, "value": rise, "role": "latency", "service": s, "peer": ""})
            for s in ("web", "orders", "users")
        ],
        ignore_index=True,
    )
    follows = comovement(out, signals, "web", 0.0)
    assert follows["users-db"] == pytest.approx(1.0)  # the callers' series it came from
    ranked = root_scores(g, out, "web", comove=follows)
    assert ranked[0].service == "users-db"

    # Not when something else (not a caller of theirs) began first: search, whose own
    # database is another; nor when the callers began minutes apart; nor with one caller.
    first = anomaly_frame([*together, row("search", "latency", 540.0)])
    assert not (laid_at_dark_callee(first, g, seen, 30.0)["service"] == "users-db").any()
    apart = anomaly_frame([row("orders", "latency", 600.0), row("users", "latency", 900.0)])
    assert not (laid_at_dark_callee(apart, g, seen, 30.0)["service"] == "users-db").any()
    # Nor when something else they call hurt first (calls to it failed, as its callers saw).
    g.add_edge("users", "geo-api")
    called = anomaly_frame([*together, {**row("geo-api", "edge_errors", 560.0), "peer": "users"}])
    assert not (laid_at_dark_callee(called, g, seen, 30.0)["service"] == "users-db").any()
    g.remove_edge("users", "geo-api")
    # Nor when a caller logs errors of its own as its trouble begins: it says what failed,
    # and (nothing naming the database) it was something else.
    told = {**row("users", "log_template", 610.0, 20.0), "modality": "logs"}
    said = anomaly_frame([*together, {**told, "signal": "GET /u failed: connection refused"}])
    assert not (laid_at_dark_callee(said, g, seen, 30.0)["service"] == "users-db").any()
    # (lines that began long after are the failure's echo, not its story)
    late = anomaly_frame([*together, {**told, "onset": 900.0}])
    assert (laid_at_dark_callee(late, g, seen, 30.0)["service"] == "users-db").any()
    one = anomaly_frame([row("search", "latency", 600.0)])
    assert len(laid_at_dark_callee(one, g, seen, 30.0)) == 1
    # A database some row names already (a caller's client rows) is judged by those.
    named = anomaly_frame(
        [*together, {**row("orders", "client_latency", 600.0), "peer": "users-db"}]
    )
    assert not (laid_at_dark_callee(named, g, seen, 30.0)["service"] == "users-db").any()

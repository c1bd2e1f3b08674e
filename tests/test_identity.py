"""One name per service: callee names in calls resolved to the services that answer them."""

from __future__ import annotations

import pandas as pd

from correlator.identity import identity_key, peer_aliases, resolve_peers
from correlator.model import SIGNAL_COLUMNS, SPAN_COLUMNS, Telemetry, compact_signals


def test_spellings_of_one_service_share_a_key() -> None:
    keys = {
        identity_key(n)
        for n in (
            "payment-gateway",
            "PaymentGatewayService",
            "payment_gateway_svc",
            "paymentgatewayservice",
        )
    }
    assert keys == {"paymentgateway"}
    assert identity_key("service") == "service"  # nothing left to strip: kept whole


def test_callee_names_resolve_to_the_one_service_they_spell() -> None:
    services = {"currency", "payment-gateway", "cartservice", "orders"}
    peers = {
        "shop.CurrencyService",  # gRPC: package.Service
        "hipstershop.CartService",
        "currency:7000",  # host and port
        "currency.shop.svc.cluster.local",  # in-cluster DNS name
        "api.payment-gateway.example.com",  # a public host: an external API, never ours
        "orders-db",  # a database: no service of that name
        "orders",  # already a service
    }
    assert peer_aliases(peers, services) == {
        "shop.CurrencyService": "currency",
        "hipstershop.CartService": "cartservice",
        "currency:7000": "currency",
        "currency.shop.svc.cluster.local": "currency",
    }
    # Two services spelled alike: ambiguous, left as it is.
    assert peer_aliases({"shop.AuthService"}, {"auth", "auth-service"}) == {}


def test_resolved_everywhere_calls_name_a_callee() -> None:
    signals = pd.DataFrame(
        [
            {
                "role": "client_latency",
                "service": "pricing",
                "peer": "shop.CurrencyService",
                "ts": 0.0,
                "value": 0.1,
            },
            {"role": "latency", "service": "currency", "peer": None, "ts": 0.0, "value": 0.05},
        ]
    ).reindex(columns=list(SIGNAL_COLUMNS))
    spans = pd.DataFrame(
        [
            {
                "trace_id": "t",
                "span_id": "s",
                "service": "pricing",
                "kind": 3,
                "peer": "currency:7000",
                "start": 0.0,
                "duration": 0.1,
            }
        ]
    ).reindex(columns=list(SPAN_COLUMNS))
    tel = Telemetry(
        signals=compact_signals(signals),
        spans=spans,
        edges=[("pricing", "shop.CurrencyService", "service")],
        node_kinds={"shop.CurrencyService": "service", "currency": "service"},
    )
    out = resolve_peers(tel)
    assert list(out.signals["peer"].astype(object).fillna("")) == ["currency", ""]
    assert isinstance(out.signals["peer"].dtype, pd.CategoricalDtype)
    assert list(out.spans["peer"]) == ["currency"]
    assert out.edges == [("pricing", "currency", "service")]
    assert "shop.CurrencyService" not in out.node_kinds
    # The caller's telemetry is not changed.
    assert tel.edges == [("pricing", "shop.CurrencyService", "service")]
    empty = Telemetry()
    assert resolve_peers(empty) is empty  # nothing to resolve: the same object


def test_a_callee_known_only_from_spans_keeps_the_compact_frame_whole() -> None:
    signals = pd.DataFrame(
        [
            {
                "role": "client_latency",
                "service": "pricing",
                "peer": "shop.TaxService",
                "ts": 0.0,
                "value": 0.1,
            }
        ]
    ).reindex(columns=list(SIGNAL_COLUMNS))
    spans = pd.DataFrame(
        [
            {
                "trace_id": "t",
                "span_id": "s",
                "service": "tax",
                "kind": 2,
                "start": 0.0,
                "duration": 0.1,
            }
        ]
    ).reindex(columns=list(SPAN_COLUMNS))
    out = resolve_peers(Telemetry(signals=compact_signals(signals), spans=spans))
    assert list(out.signals["peer"].astype(object)) == ["tax"]
    assert out.signals["peer"].dtype == out.signals["service"].dtype  # still one shared dtype


def test_a_declared_external_api_called_by_its_proto_name_resolves_to_it() -> None:
    # The topology names an external API that has no telemetry of its own; a gRPC client
    # calls it by its proto service. A name that spells an instrumented service still
    # goes to that one, even when the topology declares another spelling of it.
    signals = pd.DataFrame(
        [
            {"role": "client_latency", "service": "events", "peer": p, "ts": 0.0, "value": 0.1}
            for p in ("shop.PaymentGatewayService", "shop.CurrencyService")
        ]
        + [{"role": "latency", "service": "currencyservice", "peer": None, "ts": 0.0, "value": 0.1}]
    ).reindex(columns=list(SIGNAL_COLUMNS))
    tel = Telemetry(
        signals=compact_signals(signals),
        node_kinds={"payment-gateway": "external", "currency": "service"},
    )
    out = resolve_peers(tel)
    assert list(out.signals["peer"].astype(object).fillna("")) == [
        "payment-gateway",
        "currencyservice",
        "",
    ]

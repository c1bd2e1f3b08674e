"""The signal catalog: default coverage, user extension, validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from correlator.catalog import ROLES, Catalog, Matcher, default_catalog, service_from_pod
from correlator.errors import ConfigError


def test_default_catalog_covers_every_role_with_known_exporters() -> None:
    cat = default_catalog()
    for role in ROLES:
        assert cat.specs(role), f"no default alternative for {role}"
    metrics = {s.metric for s in cat.all_specs()}
    for needed in (
        "traces_span_metrics_calls_total",
        "http_server_requests_seconds_count",
        "istio_requests_total",
        "container_memory_working_set_bytes",
        "kube_pod_container_status_restarts_total",
        "pg_stat_activity_count",
        "traces_service_graph_request_total",
    ):
        assert needed in metrics


@pytest.mark.parametrize(
    ("pod", "service"),
    [
        ("checkout-7d9f8b6c5d-x2k4q", "checkout"),
        ("payment-api-5c7b9d8f4-abcde", "payment-api"),
        ("orders-db-0", "orders-db"),
        ("standalone", "standalone"),
    ],
)
def test_service_from_pod(pod: str, service: str) -> None:
    assert service_from_pod(pod) == service


def test_matcher_semantics() -> None:
    assert Matcher("code", "=~", "5..").matches("503")
    assert not Matcher("code", "=~", "5..").matches("5031")  # anchored like PromQL
    assert Matcher("container", "!=", "").matches("app")
    assert not Matcher("container", "!=", "").matches(None)


def test_selector_escapes_hostile_values() -> None:
    spec = default_catalog().specs("request_rate")[0]
    hostile = type(spec)(
        role="x", metric="m", kind="gauge", matchers=(Matcher("a", "=", '"} or vector(1) #\\'),)
    )
    assert hostile.selector() == 'm{a="\\"} or vector(1) #\\\\"}'
    assert spec.selector().startswith("traces_span_metrics_calls_total{")


def test_user_catalog_extends_then_replaces(tmp_path: Path) -> None:
    f = tmp_path / "cat.json"
    f.write_text(
        json.dumps(
            {
                "signals": [
                    {"role": "request_rate", "metric": "my_requests_total", "kind": "counter"}
                ]
            }
        )
    )
    cat = Catalog.load(f)
    first = cat.specs("request_rate")[0]
    assert first.metric == "my_requests_total"
    assert len(cat.specs("request_rate")) == len(default_catalog().specs("request_rate")) + 1
    f.write_text(
        json.dumps(
            {
                "replace": True,
                "signals": [
                    {"role": "request_rate", "metric": "my_requests_total", "kind": "counter"}
                ],
            }
        )
    )
    assert len(Catalog.load(f).specs("request_rate")) == 1


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ({"role": "x", "metric": "m"}, "lacks 'kind'"),
        ({"role": "x", "metric": "m", "kind": "summary"}, "use counter, gauge, histogram or info"),
        ({"role": "x", "metric": "m", "kind": "gauge", "matchers": [["a", "==", "b"]]}, "op '=='"),
        (
            {"role": "x", "metric": "m", "kind": "gauge", "matchers": [["a", "=~", "("]]},
            "bad regex",
        ),
        (
            {"role": "x", "metric": "m", "kind": "gauge", "dims": {"colour": "c"}},
            "unknown dimension",
        ),
        ({"role": "x", "metric": "bad name", "kind": "gauge"}, "not a valid metric name"),
    ],
)
def test_bad_catalog_entries(tmp_path: Path, entry: dict[str, object], needle: str) -> None:
    f = tmp_path / "cat.json"
    f.write_text(json.dumps({"signals": [entry]}))
    with pytest.raises(ConfigError) as err:
        Catalog.load(f)
    assert needle in str(err.value)


def test_catalog_round_trips_through_json() -> None:
    cat = default_catalog()
    again, replace = Catalog.from_json(json.loads(json.dumps(cat.to_json())))
    assert not replace
    assert list(again.all_specs()) == list(cat.all_specs())

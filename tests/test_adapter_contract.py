"""The adapter contract: declared protocols, an open ``backends:`` config, shared stateless sources."""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest
from correlator.adapters.bundle import default_library
from correlator.adapters.prometheus import PrometheusAdapter, PrometheusSettings
from pydantic import BaseModel, ConfigDict, Field

import correlator
from correlator import plugins
from correlator.api import build_sources
from correlator.bundle import read_bundle
from correlator.catalog import Catalog
from correlator.cli import main as cli_main
from correlator.config import Settings, load_settings
from correlator.engine import collect, make_window
from correlator.errors import ConfigError
from correlator.model import Alert, Window
from correlator.service.cli import engine_investigator
from correlator.sources import (
    AlertSource,
    LogSource,
    MetricResult,
    MetricSource,
    Sources,
    TopologySource,
    TraceSource,
)
from synth import FAULT, build

pytest_plugins = ["servers"]

LIBRARY = default_library()


# --------------------------------------------------------------------------- a third-party adapter


class SynthSettings(BaseModel):
    """The settings model a third-party adapter declares."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "synth"
    cause: str
    root: str = "payments"
    seed: int = Field(0, ge=0)
    ui: str = "https://synth.example"


class SynthAdapter:
    """A plugin outside correlator: every source kind over a hand-built incident."""

    Settings = SynthSettings
    display_name = "Synthetic"
    local = False

    def __init__(self, settings: SynthSettings) -> None:
        self.settings = settings
        self.name = settings.name
        self.scenario = build(settings.cause, seed=settings.seed, root=settings.root)
        self.deadlines: list[float | None] = []

    def bind(self, alert: Alert) -> SynthAdapter:
        return self

    def close(self) -> None:
        pass

    def alerts(self) -> list[Alert]:
        return [self.scenario.alert]

    def alert(self, fingerprint: str) -> Alert | None:
        a = self.scenario.alert
        return a if a.fingerprint.startswith(fingerprint) else None

    def signals(
        self, catalog: Catalog, window: Window, step: float, *, deadline: float | None = None
    ) -> MetricResult:
        self.deadlines.append(deadline)
        tel = self.scenario.telemetry
        links = {role: f"{self.settings.ui}/graph/{role}" for role in catalog.roles}
        return MetricResult(tel.signals, step, queries={"error_rate": "synth(errors)"}, links=links)

    def logs(
        self,
        window: Window,
        services: Sequence[str] | None = None,
        min_severity: int = 13,
        limit: int = 5000,
        *,
        deadline: float | None = None,
    ) -> pd.DataFrame:
        self.deadlines.append(deadline)
        return self.scenario.telemetry.logs

    def spans(
        self,
        window: Window,
        services: Sequence[str] | None = None,
        limit: int = 200,
        *,
        deadline: float | None = None,
    ) -> pd.DataFrame:
        self.deadlines.append(deadline)
        return self.scenario.telemetry.spans

    def edges(
        self, window: Window, *, deadline: float | None = None
    ) -> tuple[list[tuple[str, str]], dict[str, str]]:
        self.deadlines.append(deadline)
        tel = self.scenario.telemetry
        return [(a, b) for a, b, _ in tel.edges], dict(tel.node_kinds)


class OldStyleAdapter:
    """An adapter written against the old, undeclared contract (no local, no bind)."""

    Settings = SynthSettings
    name = "old"

    def __init__(self, settings: SynthSettings) -> None:
        self.settings = settings

    def signals(self, catalog: Catalog, window: Window, step: float) -> pd.DataFrame:
        return pd.DataFrame()


class NoSettingsAdapter:
    name = "nosettings"


@pytest.fixture
def registered() -> Iterator[None]:
    plugins.register(plugins.ADAPTER_GROUP, "synth", SynthAdapter)
    plugins.register(plugins.ADAPTER_GROUP, "old", OldStyleAdapter)
    plugins.register(plugins.ADAPTER_GROUP, "nosettings", NoSettingsAdapter)
    yield
    for name in ("synth", "old", "nosettings"):
        plugins.unregister(plugins.ADAPTER_GROUP, name)


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "correlator.yaml"
    path.write_text(text)
    return path


def test_a_third_party_adapter_is_configured_and_investigates(
    tmp_path: Path, registered: None
) -> None:
    cfg = _config(
        tmp_path,
        "backends:\n  lab-incident: {adapter: synth, cause: db_overload, root: orders-db}\n",
    )
    settings = load_settings(cfg, env={})
    entry = settings.backends["lab-incident"]
    assert entry.adapter == "synth" and isinstance(entry.settings, SynthSettings)
    assert entry.settings.name == "lab-incident", "the key names the backend"
    sources = build_sources(settings)
    (adapter,) = sources.metrics
    assert isinstance(adapter, SynthAdapter) and adapter.name == "lab-incident"
    assert sources.logs == sources.traces == sources.topology == (adapter,)
    assert sources.alerts == (adapter,)
    # The alert id resolves through the plugin's AlertSource, like any other.
    fingerprint = adapter.scenario.alert.fingerprint
    inv = correlator.investigate(fingerprint, config=settings)
    assert (inv.findings[0].service, inv.findings[0].cause) == ("orders-db", "db_overload")
    # No source failed (detectors may still note what had no baseline).
    assert [g for g in inv.gaps if g.source == adapter.name] == []
    # The plugin's links reach the evidence (the queries too).
    urls = {e.url for f in inv.findings for e in f.evidence if e.kind == "metric"}
    assert any(u and u.startswith("https://synth.example/graph/") for u in urls), urls
    assert inv.telemetry.queries["error_rate"] == "synth(errors)"


def test_every_call_is_told_its_deadline() -> None:
    adapter = SynthAdapter(SynthSettings(cause="deployment"))
    window = make_window(adapter.scenario.alert, Settings(), now=FAULT + 3600)
    sources = Sources.from_backends(adapter)
    collect(sources, Catalog({}), window, 60.0, timeout=5.0, deadline=float("inf"))
    assert len(adapter.deadlines) == 4, "signals, logs, spans and edges"
    assert all(d is not None and d < float("inf") for d in adapter.deadlines), (
        "a remote source's deadline is its source_timeout, not the investigation's"
    )


def test_a_source_on_the_old_contract_is_named_not_dropped(
    tmp_path: Path, registered: None
) -> None:
    with pytest.raises(
        TypeError, match=r"'old' implements no source protocol.*missing: local, bind"
    ):
        Sources.from_backends(OldStyleAdapter(SynthSettings(cause="x")))
    settings = load_settings(_config(tmp_path, "backends:\n  old: {cause: x}\n"), env={})
    with pytest.raises(ConfigError, match=r"backends\.old: adapter 'old' \(.*OldStyleAdapter\)"):
        build_sources(settings)


def test_a_metric_source_returning_a_frame_is_a_gap() -> None:
    class FrameSource(SynthAdapter):
        def signals(self, *args: Any, **kwargs: Any) -> Any:
            return self.scenario.telemetry.signals

    adapter = FrameSource(SynthSettings(cause="deployment", name="frames"))
    window = make_window(adapter.scenario.alert, Settings(), now=FAULT + 3600)
    tel, gaps = collect(Sources(metrics=[adapter]), Catalog({}), window, 60.0, 5.0, 1e12)
    assert [(g.source, g.why) for g in gaps] == [
        ("frames", "metrics: returned DataFrame, not a MetricResult")
    ]
    assert tel.signals.empty


def test_every_builtin_adapter_declares_the_contract() -> None:
    expected = {
        "bundle": (MetricSource, LogSource, TraceSource, TopologySource, AlertSource),
        "prometheus": (MetricSource,),
        "loki": (LogSource,),
        "tempo": (TraceSource,),
        "jaeger": (TraceSource, TopologySource),
        "alertmanager": (AlertSource,),
    }
    found = plugins.load_group(plugins.ADAPTER_GROUP)
    assert set(expected) <= set(found)
    data_methods = {MetricSource: "signals", LogSource: "logs", TraceSource: "spans",
                    TopologySource: "edges"}  # fmt: skip
    for name, kinds in expected.items():
        cls = found[name]
        assert issubclass(cls.Settings, BaseModel), name
        raw = {} if name == "bundle" else {"url": "http://127.0.0.1:1"}
        backend = plugins.build_backend(name, name, cls.Settings.model_validate(
            {**raw, "name": name}))  # fmt: skip
        for kind in kinds:
            assert isinstance(backend, kind), (name, kind)
            method = data_methods.get(kind)
            if method:
                param = inspect.signature(getattr(backend, method)).parameters["deadline"]
                assert param.kind is inspect.Parameter.KEYWORD_ONLY, (name, method)
                assert isinstance(backend.local, bool)


# --------------------------------------------------------------------------- the config


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "backends: {grafana: {url: 'http://g'}}",
            "backends.grafana: no adapter named 'grafana' is installed (installed: alertmanager, "
            "bundle, jaeger, loki, |prometheus, synth, tempo); set `adapter:` to one of them, or "
            "install the package that provides 'grafana'",
        ),
        ("backends: {m: {adapter: promethus, url: 'http://p'}}", "backends.m: no adapter named"),
        (
            "backends: {m: {adapter: prometheus, url: 'http://p', concurrency: 0}}",
            "backends.m.concurrency: Input should be greater than or equal to 1 (got 0)",
        ),
        (
            "backends: {m: {adapter: prometheus, url: 'http://p', concurency: 2}}",
            "backends.m.concurency: unknown setting; check the spelling",
        ),
        ("backends: {m: {adapter: prometheus}}", "backends.m.url: Field required"),
        ("backends: {m: 'http://p'}", "backends.m: must be a mapping of settings"),
        ("backends: {m: {adapter: 3}}", "backends.m.adapter: name an installed adapter"),
        (
            "backends: {m: {adapter: prometheus, url: 'http://p', name: n}}",
            "backends.m.name: the entry's key names the backend; remove name:",
        ),
        ("backends: {bundle: {path: /no/such/dir}}", "backends.bundle.path: /no/such/dir does not"),
        ("backends: {tempo: {url: 'tempo:3200'}}", "backends.tempo.url: 'tempo:3200' is not an"),
        ("backends: {n: {adapter: nosettings}}", "declares no Settings model; its author must"),
        ("backends: {s: {adapter: synth}}", "backends.s.cause: Field required"),
    ],
)
def test_bad_backends_name_the_entry_and_the_fix(
    tmp_path: Path, registered: None, text: str, needle: str
) -> None:
    cfg = _config(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, env={})
    for part in needle.split("|"):
        assert part in str(err.value)
    assert str(err.value).startswith(f"{cfg}: ")


def test_a_bad_secret_is_named_but_never_shown(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "backends: {loki: {url: 'http://l', token: 987654321, timeout: x}}")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, env={})
    assert "backends.loki.token: Input should be a valid string" in str(err.value)
    assert "backends.loki.timeout: Input should be a valid number" in str(err.value)
    assert "987654321" not in str(err.value)


def test_a_bad_backend_is_one_message_and_exit_2_on_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, "backends: {prom: {adapter: prometheus, url: 'http://p', retries: -1}}")
    assert cli_main(["alerts", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {cfg}: backends.prom.retries: Input should be greater")
    assert "Traceback" not in err


def test_the_docstring_example_and_renamed_backends_work(tmp_path: Path) -> None:
    bundle = LIBRARY / "quotes-bad-deploy"
    cfg = _config(
        tmp_path,
        f"backends:\n"
        f"  bundle: {{path: {bundle}}}\n"
        f"  prom-eu: {{adapter: prometheus, url: 'http://prom-eu:9090', concurrency: 2}}\n"
        f"  alertmanager: {{url: 'http://alertmanager:9093', silenced: false}}\n",
    )
    env = {"CORRELATOR_PROM_EU_URL": "http://other:9090/", "CORRELATOR_PROM_EU_TOKEN": "tok"}
    settings = load_settings(cfg, env=env)
    prom = settings.backends["prom-eu"].settings
    assert isinstance(prom, PrometheusSettings)
    assert (prom.url, prom.token, prom.concurrency) == ("http://other:9090", "tok", 2)
    sources = build_sources(settings)
    metrics = {s.name: s for s in sources.metrics}
    assert set(metrics) == {"bundle", "prom-eu"}
    adapter = metrics["prom-eu"]
    assert isinstance(adapter, PrometheusAdapter) and adapter.concurrency == 2
    assert adapter.settings.display_name == "Prometheus (prom-eu)"
    names = {s.name for s in sources.alerts}
    assert names == {"bundle", "alertmanager"}
    bundled = next(s for s in sources.alerts if s.name == "bundle")
    assert [a.fingerprint for a in bundled.alerts()] == [
        a.fingerprint for a in read_bundle(bundle).alerts
    ]


def test_builtin_backends_still_come_from_their_variables() -> None:
    env = {"CORRELATOR_PROMETHEUS_URL": "http://prom:9090", "CORRELATOR_LOKI_URL": "http://l",
           "CORRELATOR_LOKI_TENANT": "t"}  # fmt: skip
    settings = load_settings(env=env)
    assert set(settings.backends) == {"prometheus", "loki"}
    assert settings.backends["prometheus"].settings.url == "http://prom:9090"  # type: ignore[attr-defined]
    assert settings.backends["loki"].settings.tenant == "t"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"backends\.loki\.url: Field required"):
        load_settings(env={"CORRELATOR_LOKI_TENANT": "t"})


def test_settings_built_in_code_validate_backends_too() -> None:
    s = Settings(backends={"metrics": {"adapter": "prometheus", "url": "http://p:9090/"}})
    assert s.backends["metrics"].settings.url == "http://p:9090"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=r"backends\.x: no adapter named 'x'"):
        Settings(backends={"x": {}})


# --------------------------------------------------------------------------- shared sources


def test_two_threads_investigate_two_bundles_through_one_shared_adapter() -> None:
    """The service's wiring: one set of sources, built once, shared by worker threads."""
    settings = Settings()
    run = engine_investigator(settings)
    sources = build_sources(settings)
    (shared,) = sources.alerts
    wanted = {"7b42a59bdaa8bdf3": ("ledger-db", "db_overload"),
              "f5deb674f46cadd6": ("quotes", "deployment")}  # fmt: skip
    alerts = {fp: shared.alert(fp) for fp in wanted}
    alone = {fp: run(a) for fp, a in alerts.items()}
    barrier = threading.Barrier(len(alerts))
    together: dict[str, Any] = {}
    spans: list[tuple[float, float]] = []

    def investigate(fp: str) -> None:
        barrier.wait()
        t0 = time.monotonic()
        together[fp] = run(alerts[fp])
        spans.append((t0, time.monotonic()))

    threads = [threading.Thread(target=investigate, args=(fp,)) for fp in alerts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert set(together) == set(wanted)
    assert max(a for a, _ in spans) < min(b for _, b in spans), "the two ran at the same time"
    for fp, truth in wanted.items():
        inv = together[fp]
        assert (inv.findings[0].service, inv.findings[0].cause) == truth
        assert inv.gaps == []
        assert inv.to_json()["findings"] == alone[fp].to_json()["findings"]
        mine = set(inv.telemetry.signals["service"].astype(str))
        assert mine == set(alone[fp].telemetry.signals["service"].astype(str))
    # Binding made views; the shared adapter still serves every bundle, unbound.
    assert sources.bind(alerts["7b42a59bdaa8bdf3"]).metrics[0] is not shared
    assert len(shared.alerts()) == len(correlator.api.alerts())


def test_resolving_an_alert_changes_nothing() -> None:
    sources = build_sources(Settings())
    (backend,) = sources.alerts
    first, second = backend.alerts()[0], backend.alerts()[-1]
    window = make_window(first, Settings())
    before = backend.signals(Catalog({}), window, 60.0)  # type: ignore[attr-defined]
    assert backend.alert(second.fingerprint) == second
    after = backend.signals(Catalog({}), window, 60.0)  # type: ignore[attr-defined]
    assert before.frame.equals(after.frame), "the alert() call did not move the backend"


# --------------------------------------------------------------------------- Prometheus links


@pytest.mark.prometheus
def test_prometheus_graph_links_reach_the_evidence(prometheus_server: Any) -> None:
    bundle = LIBRARY / "quotes-bad-deploy"
    server = prometheus_server(bundle)
    alert = read_bundle(bundle).alerts[0]
    settings = Settings(backends={"prometheus": {"url": server.url}})
    inv = correlator.investigate(alert, config=settings)
    assert inv.gaps == [] and inv.findings
    metric = [e for f in inv.findings for e in f.evidence if e.kind == "metric"]
    assert metric, "the findings cite metrics"
    for ev in metric:
        assert ev.url is not None and ev.url.startswith(f"{server.url}/graph?g0.expr="), ev
        shown = parse_qs(urlsplit(ev.url).query)["g0.expr"][0]
        assert shown == ev.query, "the link graphs the query the evidence cites"
    # The linked query is one Prometheus answers with the data the evidence is about.
    adapter = PrometheusAdapter(server.url)
    ev = metric[0]
    series = adapter.query_range(
        parse_qs(urlsplit(ev.url or "").query)["g0.expr"][0],
        inv.window.start,
        inv.window.end,
        60,
    )
    adapter.close()
    assert any(labels for labels, _, _ in series)

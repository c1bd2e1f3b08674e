"""The demo's fault API, state handling, CLI errors and OTLP file exporters (no servers).

A "running" demo here is a ``state.json`` whose supervisor is this test
process (its PID and kernel start time), so the checks that need a running
demo pass without starting one.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from correlator.cli import cli
from correlator.demo import FAULT_CAUSES, faults
from correlator.demo.state import DemoNotRunning, pid_alive, pid_start, write_json_atomic


def _fake_state(sdir: Path, **extra: Any) -> dict[str, Any]:
    sdir.mkdir(parents=True, exist_ok=True)
    me = os.getpid()
    state = {
        "status": "running",
        "supervisor_pid": me,
        "pids": [me],
        "pid_starts": {str(me): pid_start(me)},
        "started_at": time.time(),
        "prometheus_url": "http://127.0.0.1:1",
        "alertmanager_url": "http://127.0.0.1:2",
        "serve_url": "http://127.0.0.1:3",
        "otlp_dir": str(sdir / "otlp"),
        "services": {
            "frontend": {
                "framework": "starlette",
                "version": "1.4.0",
                "instances": [{"instance": "0", "url": "u", "metrics_url": "m", "pid": me}],
            },
            "catalog": {
                "framework": "flask",
                "version": "1.4.0",
                "instances": [{"instance": "0", "url": "u", "metrics_url": "m", "pid": me}],
            },
            "recommendation": {
                "framework": "starlette",
                "version": "1.4.0",
                "instances": [
                    {"instance": "0", "url": "u", "metrics_url": "m", "pid": me},
                    {"instance": "1", "url": "u", "metrics_url": "m", "pid": me},
                ],
            },
            "email": {
                "framework": "wsgi",
                "version": "1.4.0",
                "instances": [{"instance": "0", "url": "u", "metrics_url": "m", "pid": me}],
            },
        },
        **extra,
    }
    write_json_atomic(sdir / "state.json", state)
    return state


def _truth_lines(sdir: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (sdir / "faults.jsonl").read_text().splitlines()]


def test_inject_writes_flag_and_truth_then_clear_closes_it(tmp_path: Path) -> None:
    _fake_state(tmp_path)
    rec = faults.inject(tmp_path, "exception", "catalog", rate="0.5")
    assert rec["cause"] == "code_fault" and rec["params"] == {"rate": 0.5}
    assert rec["instance"] is None and rec["cleared_at"] is None
    assert set(rec) >= {
        "kind",
        "service",
        "instance",
        "cause",
        "started_at",
        "cleared_at",
        "params",
    }
    assert [f["id"] for f in faults.active_faults(tmp_path)] == [rec["id"]]
    assert _truth_lines(tmp_path) == [rec]

    cleared = faults.clear(tmp_path, "catalog")
    assert len(cleared) == 1 and cleared[0]["cleared_at"] >= rec["started_at"]
    assert faults.active_faults(tmp_path) == []
    lines = _truth_lines(tmp_path)
    assert len(lines) == 2 and lines[1]["id"] == rec["id"] and lines[1]["cleared_at"]
    assert faults.truth(tmp_path) == [lines[1]]
    assert faults.clear(tmp_path) == []


def test_latency_defaults_to_one_instance_and_defaults_params(tmp_path: Path) -> None:
    _fake_state(tmp_path)
    rec = faults.inject(tmp_path, "latency", "recommendation")
    assert rec["instance"] == "0" and rec["params"] == {"delay_ms": 800}
    assert rec["cause"] == "network_delay"
    other = faults.inject(tmp_path, "cpu_hog", "recommendation", instance="1")
    assert other["instance"] == "1"


@pytest.mark.parametrize(
    ("kind", "service", "kw", "message"),
    [
        ("explode", "catalog", {}, "unknown fault kind 'explode'; kinds: exception, wrong_return"),
        ("exception", "nowhere", {}, "no service 'nowhere' in the demo; services: catalog, email, frontend"),
        ("exception", "catalog", {"rate": "2"}, "rate=2 is outside 0.01..1"),
        ("exception", "catalog", {"rate": "lots"}, "rate='lots' is not a number"),
        ("exception", "catalog", {"delay_ms": "5"}, "exception has no parameter 'delay_ms'; its parameters: rate"),
        ("dependency_down", "catalog", {"x": "1"}, "it takes none"),
        ("db_lock", "email", {}, "db_lock needs a service with a database table; one of: catalog"),
        ("traffic_spike", "email", {}, "traffic_spike enters through the frontend"),
        ("traffic_spike", "frontend", {"instance": "0"}, "leave out --instance"),
        ("latency", "recommendation", {"instance": "7"}, "no instance '7'; instances: 0, 1"),
    ],
)  # fmt: skip
def test_bad_fault_requests_say_what_is_valid(
    tmp_path: Path, kind: str, service: str, kw: dict[str, str], message: str
) -> None:
    _fake_state(tmp_path)
    with pytest.raises(faults.FaultError, match=re.escape(message)):
        faults.inject(tmp_path, kind, service, **kw)
    assert not (tmp_path / "faults.jsonl").exists()


def test_same_fault_twice_is_refused(tmp_path: Path) -> None:
    _fake_state(tmp_path)
    faults.inject(tmp_path, "wrong_return", "catalog")
    with pytest.raises(faults.FaultError, match="already active on catalog"):
        faults.inject(tmp_path, "wrong_return", "catalog")
    assert len(faults.active_faults(tmp_path)) == 1


def test_no_demo_and_dead_demo_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DemoNotRunning, match=r"no demo runs from .*correlator demo up"):
        faults.inject(tmp_path, "exception", "catalog")
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    _fake_state(tmp_path, supervisor_pid=dead.pid, pid_starts={})
    with pytest.raises(DemoNotRunning, match=r"not running .*correlator demo down"):
        faults.clear(tmp_path)


def test_every_kind_maps_to_a_cause_and_has_params() -> None:
    assert set(faults.PARAMS) == set(FAULT_CAUSES) == set(faults.FAULT_KINDS)
    assert FAULT_CAUSES["db_lock"] == "db_overload"
    assert FAULT_CAUSES["dependency_down"] == "dependency_failure"


def _run(*args: str) -> tuple[int, str]:
    from correlator.cli import main

    runner = CliRunner()
    result = runner.invoke(cli, list(args), standalone_mode=False, catch_exceptions=True)
    # main() turns errors into messages and exit codes; call it for those.
    if result.exception is not None:
        import contextlib
        import io

        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(list(args))
        return code, err.getvalue()
    return 0, result.output


def test_cli_errors_are_messages_not_tracebacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from correlator.cli import main

    sdir = str(tmp_path / "none")
    cases = [
        (["demo", "fault", "bogus", "-s", "catalog", "--state-dir", sdir], "unknown fault kind 'bogus'"),
        (["demo", "fault", "exception", "--state-dir", sdir], "say which service to break"),
        (["demo", "fault", "exception", "-s", "catalog", "--state-dir", sdir], "no demo runs from"),
        (["demo", "fault", "--clear", "--state-dir", sdir], "no demo runs from"),
        (["demo", "fault", "exception", "-s", "catalog", "rate", "--state-dir", sdir], "NAME=VALUE"),
        (["demo", "status", "--state-dir", sdir], "no demo runs from"),
    ]  # fmt: skip
    for argv, message in cases:
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        assert message in err and "Traceback" not in err, (argv, err)


def test_cli_fault_and_clear_on_a_running_demo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from correlator.cli import main

    _fake_state(tmp_path)
    base = ["--state-dir", str(tmp_path)]
    assert main(["demo", "fault", "memory_leak", "-s", "catalog", "kb_per_request=64", *base]) == 0
    out = capsys.readouterr().out
    assert "memory_leak (memory_leak) on catalog" in out and "kb_per_request=64" in out
    assert main(["demo", "fault", "memory_leak", "-s", "nowhere", *base]) == 2
    assert "services: catalog, email, frontend, recommendation" in capsys.readouterr().err
    assert main(["demo", "fault", "--clear", *base]) == 0
    assert "cleared memory_leak on catalog" in capsys.readouterr().out
    assert main(["demo", "up", *base]) == 2
    assert "a demo already runs from" in capsys.readouterr().err


def test_down_stops_only_the_recorded_processes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from correlator.cli import main

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead_sup = subprocess.Popen([sys.executable, "-c", ""])
        dead_sup.wait()
        start = pid_start(sleeper.pid)
        write_json_atomic(
            tmp_path / "state.json",
            {
                "supervisor_pid": dead_sup.pid,
                "pids": [dead_sup.pid, sleeper.pid, bystander.pid],
                # The bystander's recorded start time is not its own: a reused PID.
                "pid_starts": {str(sleeper.pid): start, str(bystander.pid): 1},
            },
        )
        faults_file = tmp_path / "flags.json"
        write_json_atomic(faults_file, {"faults": [{"id": "x", "kind": "exception",
                                                    "service": "catalog", "started_at": 1.0}]})  # fmt: skip
        assert main(["demo", "down", "--state-dir", str(tmp_path)]) == 0
        sleeper.wait(10)
        assert not pid_alive(sleeper.pid)
        assert bystander.poll() is None, "a process whose start time differs was signalled"
        assert not (tmp_path / "state.json").exists()
        assert faults.truth(tmp_path)[0]["cleared_at"] is not None
        assert main(["demo", "down", "--state-dir", str(tmp_path)]) == 0
        assert "nothing to stop" in capsys.readouterr().out
    finally:
        for p in (sleeper, bystander):
            p.kill()
            p.wait()


def test_otlp_json_files_parse_as_bundle_traces_and_logs(tmp_path: Path) -> None:
    import logging

    from opentelemetry.instrumentation.logging.handler import LoggingHandler
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import SpanKind

    from correlator.demo.telemetry import (
        OtlpJsonLogExporter,
        OtlpJsonSpanExporter,
        PeerServiceProcessor,
        otlp_file,
    )
    from correlator.otlp import logs_from_otlp, spans_from_otlp

    resource = Resource.create({"service.name": "catalog", "service.version": "1.4.0",
                                "k8s.pod.name": "catalog-0"})  # fmt: skip
    traces = otlp_file(tmp_path, "catalog", "0", "traces")
    logs_path = otlp_file(tmp_path, "catalog", "0", "logs")
    assert traces.name == "catalog-0.traces.otlp.jsonl"
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(PeerServiceProcessor({"test-db": "postgres"}))
    tp.add_span_processor(SimpleSpanProcessor(OtlpJsonSpanExporter(traces)))
    lp = LoggerProvider(resource=resource)
    lp.add_log_record_processor(SimpleLogRecordProcessor(OtlpJsonLogExporter(logs_path)))
    logger = logging.getLogger("test-demo-otlp")
    handler = LoggingHandler(level=logging.INFO, logger_provider=lp)
    logger.addHandler(handler)
    tracer = tp.get_tracer("test")
    try:
        with tracer.start_as_current_span("GET /products", kind=SpanKind.SERVER) as server:
            with tp.get_tracer("test-db").start_as_current_span("SELECT", kind=SpanKind.CLIENT):
                pass
            try:
                raise KeyError("currency")
            except KeyError as err:
                server.record_exception(err)
                logger.error("request failed")
    finally:
        logger.removeHandler(handler)
        tp.shutdown()
        lp.shutdown()
    requests = [json.loads(line) for line in traces.read_text().splitlines()]
    assert len(requests) == 2  # one request per export (Simple: one per span)
    first = requests[0]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert len(first["traceId"]) == 32 and len(first["spanId"]) == 16  # hex, not base64
    assert isinstance(first["kind"], int) and isinstance(first["startTimeUnixNano"], str)
    spans = spans_from_otlp(requests)
    assert len(spans) == 2
    db = spans[spans.kind == 3].iloc[0]
    srv = spans[spans.kind == 2].iloc[0]
    assert db.peer == "postgres" and db.parent_span_id == srv.span_id
    assert srv.error == "KeyError: 'currency'" and srv.pod == "catalog-0" and srv.version == "1.4.0"
    logs = logs_from_otlp(json.loads(x) for x in logs_path.read_text().splitlines())
    assert list(logs.level) == ["error"] and list(logs.trace_id) == [srv.trace_id]


def test_a_service_follows_the_flags_file(tmp_path: Path) -> None:
    from correlator.demo.shop.runtime import Env, Faults

    me = Env(service="catalog", instance="0", port=1, metrics_port=2, version="1.4.0",
             state_dir=tmp_path, otlp_dir=tmp_path, db_url="", peers={})  # fmt: skip
    flags = tmp_path / "flags.json"

    def set_flags(*records: dict[str, Any]) -> None:
        write_json_atomic(flags, {"faults": list(records)})
        os.utime(flags, ns=(time.time_ns(), time.time_ns() + len(records)))
        f._poll()

    f = Faults(me)
    f.before()  # no flags: nothing happens
    assert not f.wrong()
    set_flags({"id": "a", "kind": "exception", "service": "catalog", "instance": None,
               "params": {"rate": 1.0}})  # fmt: skip
    with pytest.raises(KeyError, match="currency"):
        f.before()
    set_flags(
        {"id": "b", "kind": "wrong_return", "service": "catalog", "params": {"rate": 1.0}},
        {"id": "c", "kind": "latency", "service": "catalog", "instance": "1",
         "params": {"delay_ms": 5000}},
        {"id": "d", "kind": "exception", "service": "search", "params": {"rate": 1.0}},
    )  # fmt: skip
    t0 = time.monotonic()
    f.before()  # the latency is on instance 1, the exception on another service
    assert time.monotonic() - t0 < 1.0
    assert f.wrong()
    set_flags({"id": "e", "kind": "memory_leak", "service": "catalog",
               "params": {"kb_per_request": 64, "max_mb": 1}})  # fmt: skip
    for _ in range(40):
        f.before()
    assert 2**20 <= f._leaked_bytes < 2**20 + 64 * 1024 + 1  # stops at max_mb
    set_flags()
    assert f._leaked_bytes == 0 and not f.wrong()


def test_rules_and_scrape_config_pass_promtool(tmp_path: Path) -> None:
    from correlator.demo.stack import RULES, Instance, prometheus_config
    from correlator.lab import PROMTOOL_BIN

    if not Path(PROMTOOL_BIN).exists():
        pytest.skip("promtool missing (apt-get install prometheus)")
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    config = tmp_path / "prometheus.yml"
    insts = [Instance("recommendation", str(i), 1000 + i, 2000 + i, "1.4.0") for i in range(2)]
    config.write_text(prometheus_config(insts, 9093, rules))
    for what, path in (("rules", rules), ("config", config)):
        proc = subprocess.run([PROMTOOL_BIN, "check", what, str(path)],
                              capture_output=True, text=True, check=False)  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
    text = config.read_text()
    assert "pod: recommendation-1" in text and "version: '1.4.0'" in text
    assert "scrape_interval: 5s" in text


def test_missing_servers_name_their_debian_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from correlator.cli import main
    from correlator.demo import stack

    monkeypatch.setattr(stack, "ALERTMANAGER_BIN", str(tmp_path / "no-alertmanager"))
    code = main(["demo", "up", "--state-dir", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert code == 1 and "apt-get install -y prometheus-alertmanager" in err, err
    assert "Traceback" not in err and not (tmp_path / "d" / "state.json").exists()

"""``correlator demo``: start, inspect, break and stop the live demo shop."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from correlator.demo import faults as fault_api
from correlator.demo.state import (
    DemoError,
    DemoNotRunning,
    default_state_dir,
    pid_alive,
    read_state,
    running_state,
    stop_pids,
    usage,
)
from correlator.errors import UserInputError

__all__ = ["demo"]

#: Modules of the ``demo`` extra the shop's services import.
_DEMO_MODULES = (
    "flask",
    "opentelemetry.instrumentation.flask",
    "opentelemetry.instrumentation.starlette",
    "opentelemetry.instrumentation.wsgi",
    "opentelemetry.instrumentation.httpx",
    "opentelemetry.instrumentation.psycopg",
    "opentelemetry.instrumentation.logging",
    "opentelemetry.exporter.prometheus",
)


def _state_dir_option(f: Any) -> Any:
    return click.option(
        "--state-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Where the demo keeps its state, data and logs (default: $CORRELATOR_DEMO_DIR "
        "or ~/.local/state/correlator/demo).",
    )(f)


def _resolve(state_dir: Path | None) -> Path:
    return (state_dir or default_state_dir()).expanduser().resolve()


@click.group("demo")
def demo() -> None:
    """A live demo shop on real instrumentation: up, fault, status, down.

    `demo up` returns once everything runs; the demo keeps running in the
    background (a supervisor process and its children) until `demo down`.
    """


def _check_extra() -> None:
    missing = []
    for module in _DEMO_MODULES:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise DemoError(
            f"the demo needs correlator's 'demo' extra ({', '.join(missing)} missing): "
            "pip install 'correlator[demo]'"
        )


def _cleanup_stale(sdir: Path, state: dict[str, Any]) -> None:
    starts = state.get("pid_starts") or {}
    stop_pids(state.get("pids") or [], starts, grace=10)
    pg = state.get("postgres_dir")
    if pg and Path(pg).name.startswith("correlator-demo-pg-"):
        shutil.rmtree(pg, ignore_errors=True)
    (sdir / "state.json").unlink(missing_ok=True)


def _tail(path: Path, n: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


@demo.command()
@_state_dir_option
@click.option("--otlp-endpoint", default=None, help="Also send traces and logs to this "
              "OTLP/HTTP endpoint (e.g. http://127.0.0.1:4318).")  # fmt: skip
@click.option("--rps", type=click.FloatRange(0.5, 50), default=8.0, show_default=True,
              help="Mean requests per second of the load generator.")  # fmt: skip
@click.option("--timeout", type=click.FloatRange(10, 1800), default=240.0, show_default=True,
              help="Seconds to wait for everything to be ready.")  # fmt: skip
def up(state_dir: Path | None, otlp_endpoint: str | None, rps: float, timeout: float) -> None:
    """Start the demo shop, its PostgreSQL, Prometheus, Alertmanager and `correlator serve`."""
    from correlator.demo.stack import check_binaries

    sdir = _resolve(state_dir)
    old = read_state(sdir)
    if old is not None:
        with contextlib.suppress(DemoNotRunning):
            running_state(sdir)
            raise UserInputError(
                f"a demo already runs from {sdir} (supervisor pid {old.get('supervisor_pid')}); "
                "stop it with `correlator demo down`, or pass another --state-dir"
            )
        click.echo(f"cleaning up a demo of {sdir} that is no longer running", err=True)
        _cleanup_stale(sdir, old)
    check_binaries()
    _check_extra()
    (sdir / "logs").mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "correlator.demo.stack", "--state-dir", str(sdir),
            "--rps", str(rps)]  # fmt: skip
    if otlp_endpoint:
        argv += ["--otlp-endpoint", otlp_endpoint]
    log = sdir / "logs" / "supervisor.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    click.echo(f"starting the demo in {sdir} (supervisor pid {proc.pid}) ...", err=True)
    try:
        state = _await_running(sdir, proc, timeout, log)
    except BaseException:
        if proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(60)
        st = read_state(sdir)
        if st is not None:
            _cleanup_stale(sdir, st)
        raise
    _print_urls(sdir, state)


def _await_running(
    sdir: Path, proc: subprocess.Popen[bytes], timeout: float, log: Path
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(sdir) or {}
        if state.get("supervisor_pid") == proc.pid:
            if state.get("status") == "running":
                return state
            if state.get("status") == "failed":
                raise DemoError(f"the demo failed to start: {state.get('error')}\n{_tail(log)}")
        if proc.poll() is not None:
            raise DemoError(f"the demo's supervisor exited ({proc.returncode}):\n{_tail(log)}")
        time.sleep(0.5)
    raise DemoError(f"the demo was not ready within {timeout:g}s; see {log}")


def _print_urls(sdir: Path, state: dict[str, Any]) -> None:
    n = sum(len(s["instances"]) for s in state["services"].values())
    click.echo(f"demo running: {len(state['services'])} services, {n} processes")
    click.echo(f"  shop (frontend): {state['services']['frontend']['instances'][0]['url']}")
    click.echo(f"  Prometheus:      {state['prometheus_url']}")
    click.echo(f"  Alertmanager:    {state['alertmanager_url']}")
    click.echo(f"  correlator serve: {state['serve_url']}/investigations "
               f"(bearer token in {state['serve_token_file']})")  # fmt: skip
    click.echo(f"  traces and logs: {state['otlp_dir']}")
    click.echo(f"  state:           {sdir / 'state.json'}")
    click.echo("\nBreak something:  correlator demo fault exception --service catalog")
    click.echo("Stop everything:  correlator demo down")


@demo.command()
@_state_dir_option
def down(state_dir: Path | None) -> None:
    """Stop every process the demo started (by the PIDs in state.json)."""
    sdir = _resolve(state_dir)
    state = read_state(sdir)
    if state is None:
        click.echo(f"no demo runs from {sdir}; nothing to stop")
        return
    fault_api.clear_flags(sdir)
    starts = state.get("pid_starts") or {}
    sup = state.get("supervisor_pid")
    if isinstance(sup, int) and pid_alive(sup, starts.get(str(sup))):
        os.kill(sup, signal.SIGTERM)
        deadline = time.monotonic() + 90
        while pid_alive(sup, starts.get(str(sup))) and time.monotonic() < deadline:
            time.sleep(0.2)
    # The supervisor rewrote state.json with its last children; stop any still alive.
    state = read_state(sdir) or state
    pids = [int(p) for p in state.get("pids") or []]
    starts = state.get("pid_starts") or starts
    stop_pids(pids, starts)
    left = [p for p in pids if pid_alive(p, starts.get(str(p)))]
    pg = state.get("postgres_dir")
    if pg and Path(pg).name.startswith("correlator-demo-pg-"):
        shutil.rmtree(pg, ignore_errors=True)
    if left:
        raise DemoError(f"processes {left} did not stop; state kept in {sdir / 'state.json'}")
    (sdir / "state.json").unlink(missing_ok=True)
    click.echo(f"demo stopped ({len(pids)} processes); data and logs stay in {sdir}")


@demo.command()
@_state_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print state.json and usage as JSON.")
def status(state_dir: Path | None, as_json: bool) -> None:
    """Whether the demo runs, its URLs, processes, active faults and resource use."""
    sdir = _resolve(state_dir)
    state = running_state(sdir)
    pids = [int(p) for p in state.get("pids") or []]
    use = usage(pids)
    active = fault_api.active_faults(sdir)
    if as_json:
        click.echo(json.dumps({**state, "usage": use, "active_faults": active}, indent=2))
        return
    up_for = time.time() - float(state.get("started_at", time.time()))
    click.echo(f"demo {state.get('status')} for {up_for / 60:.1f} min from {sdir}")
    click.echo(f"  Prometheus {state['prometheus_url']}  Alertmanager {state['alertmanager_url']}"
               f"  serve {state['serve_url']}")  # fmt: skip
    for name, svc in state["services"].items():
        insts = ", ".join(
            f"{i['instance']}:{'up' if i['pid'] and pid_alive(i['pid']) else 'DOWN'}"
            for i in svc["instances"]
        )
        click.echo(f"  {name:<15} {svc['framework']:<10} v{svc['version']:<8} {insts}")
    click.echo(f"  {use['processes']:.0f} processes, {use['rss_bytes'] / 2**20:.0f} MiB resident "
               f"(PSS {use['pss_bytes'] / 2**20:.0f} MiB), "
               f"{use['cpu_seconds']:.0f} CPU seconds so far")  # fmt: skip
    for f in active:
        where = f"{f['service']}" + (f"/{f['instance']}" if f.get("instance") else "")
        click.echo(f"  fault: {f['kind']} on {where} since {time.ctime(f['started_at'])}")


@demo.command()
@click.argument("kind", required=False)
@click.argument("params", nargs=-1)
@click.option("--service", "-s", default=None, help="The service to break (or to clear).")
@click.option("--instance", "-i", default=None, help="Only this instance (e.g. 1).")
@click.option("--clear", is_flag=True, help="Turn off active faults (of --service, or all).")
@_state_dir_option
def fault(
    kind: str | None,
    params: tuple[str, ...],
    service: str | None,
    instance: str | None,
    clear: bool,
    state_dir: Path | None,
) -> None:
    """Turn on fault KIND in a service, with optional PARAM=VALUE settings; or --clear.

    \b
    Kinds (cause the investigator should find):
      exception        code_fault          rate=0.3
      wrong_return     code_fault          rate=0.5
      latency          network_delay       delay_ms=800 (one instance)
      cpu_hog          cpu_saturation      threads=1
      memory_leak      memory_leak         kb_per_request=256 max_mb=600
      db_lock          db_overload         (catalog, search, inventory, checkout, payment)
      bad_deploy       deployment          rate=0.3
      traffic_spike    traffic_spike       factor=3
      dependency_down  dependency_failure
    """
    sdir = _resolve(state_dir)
    if clear:
        if kind or params:
            raise UserInputError("--clear takes no KIND or PARAMS; add --service S to clear one")
        done = fault_api.clear(sdir, service)
        if not done:
            click.echo("no active faults" + (f" on {service}" if service else ""))
        for rec in done:
            click.echo(f"cleared {rec['kind']} on {rec['service']} "
                       f"(active {rec['cleared_at'] - rec['started_at']:.0f} s)")  # fmt: skip
        return
    if kind is None:
        raise UserInputError(
            "give a fault KIND (" + ", ".join(fault_api.FAULT_KINDS) + ") or --clear"
        )
    if kind not in fault_api.FAULT_KINDS:
        raise UserInputError(
            f"unknown fault kind {kind!r}; kinds: {', '.join(fault_api.FAULT_KINDS)}"
        )
    if service is None:
        raise UserInputError(
            f"say which service to break: correlator demo fault {kind} --service S"
        )
    values: dict[str, str] = {}
    for p in params:
        name, eq, value = p.partition("=")
        if not eq or not name:
            raise UserInputError(f"parameter {p!r} must be NAME=VALUE (e.g. rate=0.5)")
        values[name] = value
    rec = fault_api.inject(sdir, kind, service, instance=instance, **values)
    where = service + (f" instance {rec['instance']}" if rec["instance"] is not None else "")
    shown = ", ".join(f"{k}={v}" for k, v in rec["params"].items())
    click.echo(f"{kind} ({rec['cause']}) on {where} since {time.strftime('%H:%M:%S')}"
               + (f": {shown}" if shown else ""))  # fmt: skip
    click.echo(f"alerts reach correlator serve within ~2 min; clear with: "
               f"correlator demo fault --clear --service {service}")  # fmt: skip


def _add_record() -> None:
    try:
        mod = importlib.import_module("correlator.demo.record")
    except ImportError:
        return
    cmd = getattr(mod, "record", None)
    if isinstance(cmd, click.Command):
        demo.add_command(cmd)


_add_record()

"""The demo's supervisor: starts every process, keeps ``state.json``, applies restarts.

``correlator demo up`` runs ``python -m correlator.demo.stack --state-dir D`` as a
daemon (its own session, output in ``D/logs/supervisor.log``). The supervisor
starts, in order: PostgreSQL (a private cluster, initdb on a free port, data in
a temporary directory), the shop's services (:mod:`correlator.demo.shop`), a
Prometheus scraping them every 5 s with the demo's alerting rules, an
Alertmanager routing to ``correlator serve``, ``correlator serve`` itself and
the load generator; then it writes ``state.json`` with status ``running``.

Each child gets SIGTERM from the kernel if the supervisor dies
(``PR_SET_PDEATHSIG``), so killing the supervisor stops the whole demo. On
SIGTERM the supervisor stops its children (newest first) and exits.

While running it carries out the faults that need a process change:
``bad_deploy`` (restart the service's instances as a new version with a bug)
and ``dependency_down`` (stop them; start them again when cleared), and
acknowledges each in ``state.json`` under ``applied``.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from correlator.demo.faults import SUPERVISED, active_faults
from correlator.demo.shop import SERVICES
from correlator.demo.state import DemoError, pid_start, write_json_atomic
from correlator.lab import (
    ALERTMANAGER_BIN,
    PROMETHEUS_BIN,
    _free_port,
    _parent_death_signal,
)

__all__ = ["RULES", "Supervisor", "main", "prometheus_config"]

log = logging.getLogger("correlator.demo")

BASE_VERSION = "1.4.0"

#: Prometheus alerting rules of the demo (the shop's SLOs and symptoms).
RULES = """\
groups:
  - name: shop-recording
    rules:
      - record: service:http_requests:rate1m
        expr: sum by (service) (rate(http_server_request_duration_seconds_count[1m]))
      - record: service:http_errors:rate1m
        expr: sum by (service) (rate(http_server_request_duration_seconds_count{http_response_status_code=~"5.."}[1m]))
  - name: shop-alerts
    rules:
      - alert: FrontendErrorBudgetBurn
        expr: |
          (sum(rate(http_server_request_duration_seconds_count{service="frontend",http_response_status_code=~"5.."}[1m]))
            / sum(rate(http_server_request_duration_seconds_count{service="frontend"}[1m])) > 14.4 * 0.01)
          and
          (sum(rate(http_server_request_duration_seconds_count{service="frontend",http_response_status_code=~"5.."}[5m]))
            / sum(rate(http_server_request_duration_seconds_count{service="frontend"}[5m])) > 3 * 0.01)
        for: 30s
        labels: {severity: page, service: frontend, slo: availability-99}
        annotations:
          summary: "frontend burns its 99% availability error budget more than 14x too fast"
      - alert: HighErrorRatio
        expr: |
          service:http_errors:rate1m / service:http_requests:rate1m > 0.05
          and service:http_requests:rate1m > 0.2
        for: 30s
        labels: {severity: page}
        annotations:
          summary: "{{ $labels.service }}: {{ $value | humanizePercentage }} of requests fail"
      - alert: HighLatencyP95
        expr: |
          histogram_quantile(0.95, sum by (le, service) (rate(http_server_request_duration_seconds_bucket[1m]))) > 0.5
        for: 1m
        labels: {severity: page}
        annotations:
          summary: "{{ $labels.service }}: p95 latency {{ $value | humanizeDuration }}"
      - alert: HighLatencyP99
        expr: |
          histogram_quantile(0.99, sum by (le, service) (rate(http_server_request_duration_seconds_bucket[1m]))) > 1.5
        for: 1m
        labels: {severity: ticket}
        annotations:
          summary: "{{ $labels.service }}: p99 latency {{ $value | humanizeDuration }}"
      - alert: ServiceDown
        expr: up{service!=""} == 0
        for: 20s
        labels: {severity: page}
        annotations:
          summary: "{{ $labels.pod }} does not answer Prometheus"
      - alert: HighCpu
        expr: sum by (service, pod) (rate(process_cpu_seconds_total[1m])) > 0.6
        for: 1m
        labels: {severity: ticket}
        annotations:
          summary: "{{ $labels.pod }} uses {{ $value | humanize }} CPU cores"
      - alert: MemoryGrowth
        expr: deriv(process_resident_memory_bytes[2m]) > 5e5 and process_resident_memory_bytes > 1e8
        for: 1m
        labels: {severity: ticket}
        annotations:
          summary: "{{ $labels.pod }} grows by {{ $value | humanize1024 }}B/s"
      - alert: TrafficSurge
        expr: |
          service:http_requests:rate1m{service="frontend"}
            > 2 * avg_over_time(service:http_requests:rate1m{service="frontend"}[5m] offset 1m)
          and count_over_time(service:http_requests:rate1m{service="frontend"}[5m] offset 1m) > 40
        for: 30s
        labels: {severity: ticket}
        annotations:
          summary: "frontend takes {{ $value | humanize }} requests/s, twice its usual"
"""


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for path in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True):
        return path
    raise DemoError(f"PostgreSQL's {name} is missing; install it: apt-get install -y postgresql")


def check_binaries() -> None:
    """Raise :class:`DemoError` naming the Debian package of any missing server."""
    for binary, package in (
        (PROMETHEUS_BIN, "prometheus"),
        (ALERTMANAGER_BIN, "prometheus-alertmanager"),
    ):
        if not Path(binary).exists():
            raise DemoError(f"{binary} is missing; install it: apt-get install -y {package}")
    _pg_bin("initdb")
    _pg_bin("postgres")


@dataclass
class Instance:
    """One running process of a shop service."""

    service: str
    instance: str
    port: int
    metrics_port: int
    version: str
    bug_rate: float = 0.0
    proc: subprocess.Popen[bytes] | None = None
    down: bool = False

    @property
    def pod(self) -> str:
        return f"{self.service}-{self.instance}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def prometheus_config(instances: list[Instance], am_port: int, rules: Path) -> str:
    """prometheus.yml: one job per service, one target per instance (service, pod, version)."""
    jobs: dict[str, list[Instance]] = {}
    for inst in instances:
        jobs.setdefault(inst.service, []).append(inst)
    lines = [
        "global: {scrape_interval: 5s, evaluation_interval: 5s, scrape_timeout: 4s}",
        "alerting:",
        "  alertmanagers:",
        f"    - static_configs: [{{targets: ['127.0.0.1:{am_port}']}}]",
        f"rule_files: ['{rules}']",
        "scrape_configs:",
    ]
    for service, group in jobs.items():
        lines += [f"  - job_name: {service}", "    static_configs:"]
        for inst in group:
            labels = f"{{service: {service}, pod: {inst.pod}, version: '{inst.version}'}}"
            lines.append(
                f"      - {{targets: ['127.0.0.1:{inst.metrics_port}'], labels: {labels}}}"
            )
    return "\n".join(lines) + "\n"


@dataclass
class Supervisor:
    """Starts and watches the demo's processes; see the module docstring."""

    state_dir: Path
    otlp_endpoint: str | None = None
    base_rps: float = 8.0
    instances: list[Instance] = field(default_factory=list)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    pg_dir: Path | None = None
    stopping: bool = False

    # --- helpers -------------------------------------------------------------------
    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    def _spawn(self, name: str, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_parent_death_signal(),
                **kw,
            )
        self.procs[name] = proc
        log.info("started %s (pid %d)", name, proc.pid)
        return proc

    def _wait_http(self, name: str, url: str, timeout: float = 60.0) -> None:
        proc = self.procs[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace").splitlines()[-8:]
                raise DemoError(f"{name} exited ({proc.returncode}): " + " / ".join(tail))
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2.0).status_code == 200:
                    return
            time.sleep(0.2)
        raise DemoError(f"{name} was not ready at {url} within {timeout:g}s; see {self.logs}")

    # --- start -----------------------------------------------------------------------
    def start(self) -> None:
        """Start everything; write state.json with status running."""
        for sub in ("logs", "otlp", "prometheus", "alertmanager", "serve"):
            path = self.state_dir / sub
            if sub != "logs":
                shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True, exist_ok=True)
        for stale in ("flags.json",):
            (self.state_dir / stale).unlink(missing_ok=True)
        self.state = {
            "status": "starting",
            "state_dir": str(self.state_dir),
            "started_at": round(time.time(), 3),
            "supervisor_pid": os.getpid(),
            "otlp_dir": str(self.state_dir / "otlp"),
            "services": {},
            "applied": {},
        }
        self._write_state()
        db_url = self._start_postgres()
        from correlator.demo.shop.db import seed

        seed(db_url)
        self.state["postgres_url"] = db_url
        self._start_services(db_url)
        self._start_observability()
        self._start_loadgen()
        self.state["status"] = "running"
        self._write_state()
        log.info("demo running")

    def _start_postgres(self) -> str:
        initdb, postgres = _pg_bin("initdb"), _pg_bin("postgres")
        # A temporary directory, not the state dir: PostgreSQL refuses to run as root,
        # and the postgres user may not reach a state dir under root's home.
        self.pg_dir = Path(tempfile.mkdtemp(prefix="correlator-demo-pg-"))
        self.state["postgres_dir"] = str(self.pg_dir)
        data = self.pg_dir / "data"
        kw: dict[str, Any] = {}
        if os.geteuid() == 0:
            shutil.chown(self.pg_dir, "postgres", "postgres")
            kw = {"user": "postgres", "group": "postgres", "extra_groups": []}
        subprocess.run(
            [initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"],
            check=True,
            capture_output=True,
            **kw,
        )
        port = _free_port()
        self._spawn(
            "postgres",
            [
                postgres, "-D", str(data), "-p", str(port), "-k", str(self.pg_dir),
                "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                "-c", "shared_buffers=32MB", "-c", "max_connections=120",
            ],
            cwd=str(self.pg_dir),
            **kw,
        )  # fmt: skip
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        import psycopg

        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(url, connect_timeout=2).close()
                return url
            except psycopg.Error:
                if self.procs["postgres"].poll() is not None or time.monotonic() > deadline:
                    tail = (self.logs / "postgres.log").read_text(errors="replace")[-500:]
                    raise DemoError(f"PostgreSQL did not start: {tail}") from None
                time.sleep(0.2)

    def _service_env(
        self, inst: Instance, db_url: str, peers: dict[str, list[str]]
    ) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "DEMO_"))}
        env.update(
            DEMO_SERVICE=inst.service,
            DEMO_INSTANCE=inst.instance,
            DEMO_PORT=str(inst.port),
            DEMO_METRICS_PORT=str(inst.metrics_port),
            DEMO_VERSION=inst.version,
            DEMO_BUG_RATE=str(inst.bug_rate),
            DEMO_STATE_DIR=str(self.state_dir),
            DEMO_OTLP_DIR=str(self.state_dir / "otlp"),
            DEMO_DB_URL=db_url,
            DEMO_PEERS=json.dumps(peers),
            OTEL_SEMCONV_STABILITY_OPT_IN="http",
            PYTHONUNBUFFERED="1",
        )
        if self.otlp_endpoint:
            env["DEMO_OTLP_ENDPOINT"] = self.otlp_endpoint
        return env

    def _peers(self) -> dict[str, list[str]]:
        peers: dict[str, list[str]] = {}
        for inst in self.instances:
            peers.setdefault(inst.service, []).append(inst.url)
        return peers

    def _launch(self, inst: Instance) -> None:
        db_url = str(self.state["postgres_url"])
        inst.proc = self._spawn(
            inst.pod,
            [sys.executable, "-m", "correlator.demo.shop"],
            env=self._service_env(inst, db_url, self._peers()),
        )

    def _start_services(self, db_url: str) -> None:
        for service, (_framework, count) in SERVICES.items():
            for i in range(count):
                self.instances.append(
                    Instance(service, str(i), _free_port(), _free_port(), BASE_VERSION)
                )
        for inst in self.instances:
            self._launch(inst)
        for inst in self.instances:
            self._wait_http(inst.pod, inst.url + "/healthz", timeout=90)
        self._services_state()

    def _services_state(self) -> None:
        services: dict[str, Any] = {}
        for inst in self.instances:
            entry = services.setdefault(
                inst.service,
                {"framework": SERVICES[inst.service][0], "version": inst.version, "instances": []},
            )
            entry["version"] = inst.version
            entry["instances"].append(
                {
                    "instance": inst.instance,
                    "url": inst.url,
                    "metrics_url": f"http://127.0.0.1:{inst.metrics_port}/metrics",
                    "pid": inst.proc.pid if inst.proc and not inst.down else None,
                }
            )
        self.state["services"] = services

    def _start_observability(self) -> None:
        prom_dir = self.state_dir / "prometheus"
        am_dir = self.state_dir / "alertmanager"
        serve_dir = self.state_dir / "serve"
        am_port, prom_port, serve_port = _free_port(), _free_port(), _free_port()
        token = serve_dir / "token"
        token.write_text(secrets.token_hex(24))
        token.chmod(0o600)
        self.state["serve_token_file"] = str(token)

        rules = prom_dir / "rules.yml"
        rules.write_text(RULES)
        self.prom_config = prom_dir / "prometheus.yml"
        self.prom_config.write_text(prometheus_config(self.instances, am_port, rules))
        self._spawn(
            "prometheus",
            [
                PROMETHEUS_BIN,
                f"--config.file={self.prom_config}",
                f"--storage.tsdb.path={prom_dir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--log.level=warn",
            ],
            cwd=str(prom_dir),
        )
        (am_dir / "alertmanager.yml").write_text(
            "route:\n  receiver: correlator\n  group_by: [alertname, service]\n"
            "  group_wait: 5s\n  group_interval: 30s\n  repeat_interval: 4h\n"
            "receivers:\n  - name: correlator\n    webhook_configs:\n"
            f"      - url: http://127.0.0.1:{serve_port}/webhook\n"
            "        send_resolved: true\n"
            f"        http_config: {{authorization: {{type: Bearer, credentials_file: '{token}'}}}}\n"
        )
        self._spawn(
            "alertmanager",
            [
                ALERTMANAGER_BIN,
                f"--config.file={am_dir / 'alertmanager.yml'}",
                f"--storage.path={am_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            cwd=str(am_dir),
        )
        config = serve_dir / "correlator.yaml"
        config.write_text(serve_config(f"http://127.0.0.1:{prom_port}", self.state_dir / "otlp"))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CORRELATOR_", "OTEL_"))}
        self._spawn(
            "serve",
            [
                sys.executable, "-m", "correlator.service", "--config", str(config),
                "--host", "127.0.0.1", "--port", str(serve_port),
                "--store", str(serve_dir / "store.db"), "--workers", "2",
                "--token-file", str(token),
            ],
            cwd=str(serve_dir),
            env=env,
        )  # fmt: skip
        prom, am, serve = (f"http://127.0.0.1:{p}" for p in (prom_port, am_port, serve_port))
        self._wait_http("prometheus", prom + "/-/ready")
        self._wait_http("alertmanager", am + "/-/ready")
        self._wait_http("serve", serve + "/readyz", timeout=90)
        self.state.update(prometheus_url=prom, alertmanager_url=am, serve_url=serve)

    def _start_loadgen(self) -> None:
        frontend = next(i for i in self.instances if i.service == "frontend")
        proc = self._spawn(
            "loadgen",
            [
                sys.executable, "-m", "correlator.demo.shop.loadgen", frontend.url,
                str(self.state_dir), str(self.base_rps),
            ],
        )  # fmt: skip
        self.state["loadgen_pid"] = proc.pid

    def _write_state(self) -> None:
        pids = [os.getpid(), *(p.pid for p in self.procs.values() if p.poll() is None)]
        self.state["pids"] = pids
        self.state["pid_starts"] = {str(p): pid_start(p) for p in pids}
        write_json_atomic(self.state_dir / "state.json", self.state)

    # --- run ------------------------------------------------------------------------
    def _stop_proc(self, name: str, grace: float = 10.0) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT if name == "postgres" else signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.info("stopped %s", name)

    def _reload_prometheus(self) -> None:
        rules = self.state_dir / "prometheus" / "rules.yml"
        am = str(self.state["alertmanager_url"]).rsplit(":", 1)[1]
        self.prom_config.write_text(prometheus_config(self.instances, int(am), rules))
        proc = self.procs.get("prometheus")
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGHUP)

    def _apply(self, fault: dict[str, Any], clearing: bool) -> None:
        kind, service, target = fault["kind"], fault["service"], fault.get("instance")
        chosen = [
            i for i in self.instances
            if i.service == service and target in (None, i.instance)
        ]  # fmt: skip
        params = fault.get("params") or {}
        for inst in chosen:
            self._stop_proc(inst.pod)
            if kind == "dependency_down":
                inst.down = not clearing
                if clearing:
                    self._launch(inst)
            else:  # bad_deploy: roll out the new version, or roll back on clear
                inst.version = str(params["previous_version" if clearing else "version"])
                inst.bug_rate = 0.0 if clearing else float(params.get("rate", 0.3))
                self._launch(inst)
        for inst in chosen:
            if not inst.down:
                with contextlib.suppress(DemoError):
                    self._wait_http(inst.pod, inst.url + "/healthz", timeout=60)
        self._services_state()
        if kind == "bad_deploy":
            self._reload_prometheus()
        key = ("clear:" if clearing else "") + str(fault["id"])
        self.state["applied"][key] = round(time.time(), 3)
        self._write_state()
        log.info("%s %s on %s", "cleared" if clearing else "applied", kind, service)

    def run(self) -> None:
        """Watch flags and children until SIGTERM."""
        seen: dict[str, dict[str, Any]] = {}
        while not self.stopping:
            now = {
                str(f["id"]): f
                for f in active_faults(self.state_dir)
                if f.get("kind") in SUPERVISED
            }
            for fid, fault in now.items():
                if fid not in seen:
                    self._apply(fault, clearing=False)
            for fid, fault in seen.items():
                if fid not in now:
                    self._apply(fault, clearing=True)
            seen = now
            for inst in self.instances:
                if not inst.down and inst.proc is not None and inst.proc.poll() is not None:
                    log.warning("%s exited (%s); restarting it", inst.pod, inst.proc.returncode)
                    self._launch(inst)
                    self._services_state()
                    self._write_state()
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop every child, newest first; remove PostgreSQL's temporary directory."""
        self.stopping = True
        if self.state:
            self.state["status"] = "stopping"
            with contextlib.suppress(OSError):
                self._write_state()
        for name in ("loadgen", "serve", "alertmanager", "prometheus"):
            self._stop_proc(name)
        for inst in self.instances:
            self._stop_proc(inst.pod)
        self._stop_proc("postgres", grace=20)
        for name in list(self.procs):
            self._stop_proc(name)
        if self.pg_dir is not None:
            shutil.rmtree(self.pg_dir, ignore_errors=True)


def serve_config(prometheus_url: str, otlp_dir: Path) -> str:
    """``correlator serve``'s config: Prometheus, and the OTLP files when that adapter exists."""
    from correlator.plugins import ADAPTER_GROUP, names

    lines = ["backends:", f"  prometheus: {{url: '{prometheus_url}'}}"]
    if "otlp_files" in names(ADAPTER_GROUP):
        lines.append(f"  otlp: {{adapter: otlp_files, path: '{otlp_dir}'}}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the supervisor daemon."""
    parser = argparse.ArgumentParser(prog="python -m correlator.demo.stack")
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--otlp-endpoint", default=None)
    parser.add_argument("--rps", type=float, default=8.0)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s supervisor %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sup = Supervisor(args.state_dir.resolve(), args.otlp_endpoint, args.rps)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not sup.stopping:
            sup.stopping = True
            raise SystemExit(0)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    code = 0
    try:
        sup.start()
        sup.run()
    except SystemExit:
        pass
    except Exception as err:  # reported to `demo up` through state.json and the log
        log.exception("the demo failed")
        sup.state["error"] = str(err)
        code = 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sup.stop()
        if sup.state.get("error"):
            with contextlib.suppress(OSError):
                write_json_atomic(sup.state_dir / "state.json", {**sup.state, "status": "failed"})
    return code


if __name__ == "__main__":
    sys.exit(main())

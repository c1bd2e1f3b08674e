"""A local lab: real Prometheus, Alertmanager (and VictoriaMetrics) loaded from a bundle.

Each server runs as a child process bound to 127.0.0.1 on a free port, with
its data in a temporary directory. The context managers wait until the server
is ready and always stop it (terminate, then kill) on exit, even on errors.

* :func:`prometheus` backfills a TSDB from the bundle's ``metrics.om[.gz]`` with
  ``promtool tsdb create-blocks-from openmetrics`` and starts Prometheus on it
  with a 100-year retention (retention counts from the newest block, and
  bundles can be old).
* :func:`alertmanager` starts Alertmanager with a null receiver and clustering
  off (``--cluster.listen-address=``), so nothing listens beyond loopback.
* :func:`victoria_metrics` starts VictoriaMetrics when ``/usr/bin/victoria-metrics``
  exists; :func:`import_victoria_metrics` loads OpenMetrics text into it.
* :func:`run_lab` starts Prometheus and Alertmanager for a bundle, posts its
  alerts, and returns the URLs; the ``lab`` click command wraps it, and stops
  both servers and removes their directories on Ctrl-C, SIGTERM or SIGHUP.
  The servers it starts also get SIGTERM from the kernel if the lab process
  dies without cleaning up (``PR_SET_PDEATHSIG``, Linux).
"""

from __future__ import annotations

import contextlib
import ctypes
import gzip
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any

import click
import httpx

from correlator.errors import CorrelatorError, UserInputError

__all__ = [
    "ALERTMANAGER_BIN",
    "PROMETHEUS_BIN",
    "PROMTOOL_BIN",
    "STOP_SIGNALS",
    "VICTORIA_METRICS_BIN",
    "LabError",
    "LabStopped",
    "LabUrls",
    "Server",
    "alertmanager",
    "backfill_tsdb",
    "bundle_metrics_file",
    "import_victoria_metrics",
    "lab",
    "openmetrics_to_prometheus_text",
    "prepare_alerts",
    "prometheus",
    "run_lab",
    "victoria_metrics",
]

PROMETHEUS_BIN = "/usr/bin/prometheus"
PROMTOOL_BIN = "/usr/bin/promtool"
ALERTMANAGER_BIN = "/usr/bin/prometheus-alertmanager"
VICTORIA_METRICS_BIN = "/usr/bin/victoria-metrics"


class LabError(CorrelatorError):
    """A lab server could not be prepared or started; the message says why and what to do."""


class LabStopped(Exception):
    """A stop signal (SIGTERM, SIGINT, SIGHUP) arrived; raised to unwind and clean up."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


@dataclass(frozen=True)
class Server:
    """A running lab server."""

    name: str
    url: str
    pid: int
    data_dir: Path
    log_file: Path


@dataclass(frozen=True)
class LabUrls:
    """What :func:`run_lab` started."""

    prometheus: str
    alertmanager: str
    alerts: tuple[str, ...]
    """Fingerprints of the posted alerts."""


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out for outgoing connections (Linux; else 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_ISSUED: set[int] = set()
_ISSUED_LOCK = threading.Lock()


def _free_port() -> int:
    """A port on 127.0.0.1 free now, for a server this process starts a moment later.

    Picked below the kernel's ephemeral range, so that no outgoing connection
    (the demo's services call each other and PostgreSQL while the rest starts)
    can take it in between, and never the same port twice in one process. Falls
    back to a kernel-chosen port when nothing below the range is free.
    """
    low = _ephemeral_low()
    with _ISSUED_LOCK:
        if low > 11000:
            rng = random.Random()
            for _ in range(200):
                port = rng.randrange(10000, low)
                if port in _ISSUED:
                    continue
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    try:
                        s.bind(("127.0.0.1", port))
                    except OSError:
                        continue
                _ISSUED.add(port)
                return port
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            if port not in _ISSUED:
                _ISSUED.add(port)
                return port


def _require(binary: str, package: str) -> None:
    if not Path(binary).exists():
        raise LabError(f"{binary} is missing; install it with: apt-get install -y {package}")


def bundle_metrics_file(bundle: str | Path) -> Path:
    """The bundle's ``metrics.om`` or ``metrics.om.gz`` (or the path itself if it is a file)."""
    p = Path(bundle)
    if p.is_file():
        return p
    for name in ("metrics.om", "metrics.om.gz"):
        if (p / name).is_file():
            return p / name
    raise UserInputError(f"{p}: no metrics.om or metrics.om.gz; is this a scenario bundle?")


def _plain_copy(path: Path, dest_dir: Path) -> Path:
    """``path`` itself, or a decompressed copy in ``dest_dir`` when it is gzipped."""
    if path.suffix != ".gz":
        return path
    out = dest_dir / path.name.removesuffix(".gz")
    with gzip.open(path, "rb") as src, out.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    return out


def backfill_tsdb(metrics: str | Path, tsdb_dir: str | Path) -> None:
    """Create TSDB blocks in ``tsdb_dir`` from OpenMetrics text (``.gz`` is decompressed first)."""
    _require(PROMTOOL_BIN, "prometheus")
    tsdb = Path(tsdb_dir)
    tsdb.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="correlator-om-") as tmp:
        source = _plain_copy(Path(metrics), Path(tmp))
        proc = subprocess.run(
            [PROMTOOL_BIN, "tsdb", "create-blocks-from", "openmetrics", str(source), str(tsdb)],
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise LabError(f"promtool could not backfill {metrics}: {' / '.join(tail)}")


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                raise LabError(f"{url}: the server exited ({proc.returncode}): {' / '.join(tail)}")
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    raise LabError(f"{url} was not ready within {timeout:g}s; see {log}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel send SIGTERM to the child when we die (Linux)."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not (
        threading.main_thread()
    ):
        # The signal follows the *thread* that started the child: only the main
        # thread lives as long as the process.
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


@contextlib.contextmanager
def _serve(
    name: str,
    argv: list[str],
    ready_url: str,
    url: str,
    data_dir: Path,
    timeout: float,
    die_with_parent: bool = False,
) -> Iterator[Server]:
    log = data_dir / f"{name}.log"
    preexec = _parent_death_signal() if die_with_parent else None
    proc: subprocess.Popen[bytes] | None = None
    try:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, cwd=data_dir, preexec_fn=preexec
            )
        _wait_ready(ready_url, proc, log, timeout)
        yield Server(name=name, url=url, pid=proc.pid, data_dir=data_dir, log_file=log)
    finally:
        if proc is not None:
            _stop(proc)


@contextlib.contextmanager
def _workdir(path: str | Path | None, prefix: str) -> Iterator[Path]:
    if path is not None:
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        yield p
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


@contextlib.contextmanager
def prometheus(
    metrics: str | Path | None = None,
    *,
    data_dir: str | Path | None = None,
    port: int | None = None,
    timeout: float = 60.0,
    die_with_parent: bool = False,
    config: str | None = None,
) -> Iterator[Server]:
    """A Prometheus on 127.0.0.1 serving ``metrics`` (a bundle folder or an ``.om[.gz]`` file).

    ``config``: the ``prometheus.yml`` text (default: no scrape jobs).

    ``die_with_parent``: the kernel stops the server if this process dies
    without stopping it (Linux; only when called from the main thread).
    """
    _require(PROMETHEUS_BIN, "prometheus")
    with _workdir(data_dir, "correlator-prometheus-") as work:
        tsdb = work / "tsdb"
        tsdb.mkdir(exist_ok=True)
        if metrics is not None:
            backfill_tsdb(bundle_metrics_file(metrics), tsdb)
        config_file = work / "prometheus.yml"
        config_file.write_text(config or "global:\n  scrape_interval: 15s\nscrape_configs: []\n")
        port = port or _free_port()
        url = f"http://127.0.0.1:{port}"
        argv = [
            PROMETHEUS_BIN,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={tsdb}",
            "--storage.tsdb.retention.time=100y",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ]
        with _serve(
            "prometheus", argv, url + "/-/ready", url, work, timeout, die_with_parent
        ) as server:
            yield server


_AM_CONFIG = """\
route:
  receiver: "null"
  group_by: ["..."]
receivers:
  - name: "null"
"""


@contextlib.contextmanager
def alertmanager(
    *,
    data_dir: str | Path | None = None,
    port: int | None = None,
    timeout: float = 60.0,
    die_with_parent: bool = False,
) -> Iterator[Server]:
    """An Alertmanager on 127.0.0.1 with a null receiver and clustering off."""
    _require(ALERTMANAGER_BIN, "prometheus-alertmanager")
    with _workdir(data_dir, "correlator-alertmanager-") as work:
        config = work / "alertmanager.yml"
        config.write_text(_AM_CONFIG)
        storage = work / "data"
        storage.mkdir(exist_ok=True)
        port = port or _free_port()
        url = f"http://127.0.0.1:{port}"
        argv = [
            ALERTMANAGER_BIN,
            f"--config.file={config}",
            f"--storage.path={storage}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ]
        with _serve(
            "alertmanager", argv, url + "/-/ready", url, work, timeout, die_with_parent
        ) as server:
            yield server


@contextlib.contextmanager
def victoria_metrics(
    *, data_dir: str | Path | None = None, port: int | None = None, timeout: float = 60.0
) -> Iterator[Server]:
    """A VictoriaMetrics single node on 127.0.0.1 (``apt-get install -y victoria-metrics``)."""
    _require(VICTORIA_METRICS_BIN, "victoria-metrics")
    with _workdir(data_dir, "correlator-vm-") as work:
        port = port or _free_port()
        url = f"http://127.0.0.1:{port}"
        argv = [
            VICTORIA_METRICS_BIN,
            f"-httpListenAddr=127.0.0.1:{port}",
            f"-storageDataPath={work / 'data'}",
            "-retentionPeriod=100y",
            "-search.disableCache",
            "-loggerLevel=WARN",
        ]
        with _serve("victoria-metrics", argv, url + "/health", url, work, timeout) as server:
            yield server


def openmetrics_to_prometheus_text(lines: IO[str]) -> Iterator[str]:
    """OpenMetrics sample lines (timestamps in seconds) as Prometheus text (milliseconds).

    Comments, ``# EOF`` and exemplars are dropped; what VictoriaMetrics'
    ``/api/v1/import/prometheus`` needs is the samples.
    """
    for raw in lines:
        line = raw.rstrip("\n")
        if not line or line.startswith("#"):
            continue
        end = _series_end(line)
        head = line[:end]
        fields = line[end:].split(" # ", 1)[0].split()
        if len(fields) == 2:
            value, ts = fields
            yield f"{head} {value} {round(float(ts) * 1000)}\n"
        elif len(fields) == 1:
            yield f"{head} {fields[0]}\n"


def _series_end(line: str) -> int:
    """Index just past the series name and its label block (quoted values may hold ``}``)."""
    brace = line.find("{")
    space = line.find(" ")
    if brace < 0 or (0 <= space < brace):
        return space if space >= 0 else len(line)
    quoted = escaped = False
    for i in range(brace + 1, len(line)):
        ch = line[i]
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "}" and not quoted:
            return i + 1
    return len(line)


def import_victoria_metrics(url: str, metrics: str | Path, chunk_lines: int = 50_000) -> int:
    """Load an OpenMetrics file into VictoriaMetrics; returns the samples sent."""
    path = bundle_metrics_file(metrics)
    opener = gzip.open if path.suffix == ".gz" else open
    sent = 0
    with opener(path, "rt", encoding="utf-8") as fh, httpx.Client(timeout=120.0) as client:
        batch: list[str] = []

        def flush() -> None:
            if batch:
                r = client.post(url + "/api/v1/import/prometheus", content="".join(batch))
                if r.status_code >= 300:
                    raise LabError(f"VictoriaMetrics at {url} refused the import: {r.text[:200]}")
                batch.clear()

        for line in openmetrics_to_prometheus_text(fh):
            batch.append(line)
            sent += 1
            if len(batch) >= chunk_lines:
                flush()
        flush()
        # Make the samples searchable now rather than after the next periodic flush.
        with contextlib.suppress(httpx.HTTPError):
            client.get(url + "/internal/force_flush")
    return sent


def prepare_alerts(
    alerts: Sequence[Mapping[str, Any]], now: float | None = None
) -> list[dict[str, Any]]:
    """Bundle alerts as Alertmanager ``postableAlert`` objects it will keep.

    Alertmanager drops alerts whose ``endsAt`` has passed, so ``endsAt`` is set
    a day ahead; ``startsAt`` and the labels stay as they are, so the
    fingerprint does not change. The bundle's own ``endsAt`` goes into the
    ``correlator_ends_at`` annotation, which the Alertmanager adapter reads
    as the alert's end: an investigation through the lab covers the same
    window as one through the bundle.
    """
    from correlator.adapters.alertmanager import ENDS_AT_ANNOTATION

    now = time.time() if now is None else now
    ends = datetime.fromtimestamp(now + 86400, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = []
    for a in alerts:
        annotations = {str(k): str(v) for k, v in (a.get("annotations") or {}).items()}
        real_end = a.get("endsAt")
        if real_end and not str(real_end).startswith("0001-"):
            annotations[ENDS_AT_ANNOTATION] = str(real_end)
        post: dict[str, Any] = {
            "labels": dict(a.get("labels") or {}),
            "annotations": annotations,
            "endsAt": ends,
        }
        if a.get("startsAt"):
            post["startsAt"] = a["startsAt"]
        if a.get("generatorURL"):
            post["generatorURL"] = a["generatorURL"]
        out.append(post)
    return out


def _bundle_alerts(bundle: Path) -> list[dict[str, Any]]:
    scenario = bundle / "scenario.json"
    try:
        data = json.loads(scenario.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError(f"{bundle}: no scenario.json; is this a scenario bundle?") from None
    except json.JSONDecodeError as err:
        raise UserInputError(f"{scenario}:{err.lineno}: not valid JSON: {err.msg}") from None
    alerts = data.get("alerts") or []
    if not isinstance(alerts, list):
        raise UserInputError(f"{scenario}: 'alerts' must be a list")
    return alerts


@contextlib.contextmanager
def run_lab(bundle_path: str | Path, *, die_with_parent: bool = False) -> Iterator[LabUrls]:
    """Start Prometheus (backfilled) and Alertmanager (alerts posted) for a bundle.

    A context manager: both servers stop, and their temporary directories go,
    when the block ends, however it ends. ``die_with_parent`` as for
    :func:`prometheus`.
    """
    from correlator.adapters.alertmanager import AlertmanagerAdapter
    from correlator.http import HttpSettings

    bundle = Path(bundle_path)
    if not bundle.is_dir():
        raise UserInputError(f"{bundle} is not a bundle folder")
    alerts = _bundle_alerts(bundle)
    with (
        prometheus(bundle, die_with_parent=die_with_parent) as prom,
        alertmanager(die_with_parent=die_with_parent) as am,
    ):
        adapter = AlertmanagerAdapter(HttpSettings(name="alertmanager", url=am.url))
        try:
            adapter.post_alerts(prepare_alerts(alerts))
            posted = tuple(a.fingerprint for a in adapter.alerts())
        finally:
            adapter.close()
        yield LabUrls(prometheus=prom.url, alertmanager=am.url, alerts=posted)


#: The signals that stop the lab (SIGHUP: its terminal went away).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Turn the first stop signal into :class:`LabStopped`; ignore repeats while cleaning up.

    Raising from the handler unwinds every ``with`` block of :func:`run_lab`,
    wherever the main thread is (backfilling, waiting for a server, idle), so
    the servers are stopped and their directories removed. The previous
    handlers come back on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    stopping = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:
            return  # already cleaning up: let it finish
        stopping = True
        raise LabStopped(signum)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        stopping = True
        for sig, old in previous.items():
            signal.signal(sig, old)


@click.command("lab")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
def lab(bundle: Path) -> None:
    """Start a local Prometheus and Alertmanager loaded with BUNDLE; Ctrl-C stops them.

    SIGTERM and SIGHUP stop them too. Exit status 0 when stopped after
    starting, 128 + the signal number when stopped while starting.
    """
    ready = False
    try:
        with _stop_on_signals(), run_lab(bundle, die_with_parent=True) as urls:
            ready = True
            click.echo(f"Prometheus:   {urls.prometheus}")
            click.echo(f"Alertmanager: {urls.alertmanager}")
            click.echo("\nPoint correlator at them:")
            click.echo(f"  export CORRELATOR_PROMETHEUS_URL={urls.prometheus}")
            click.echo(f"  export CORRELATOR_ALERTMANAGER_URL={urls.alertmanager}")
            for fp in urls.alerts:
                click.echo(f"  correlator investigate {fp}")
            click.echo("\nCtrl-C stops both servers.")
            while True:
                time.sleep(3600)
    except LabStopped as stop:
        name = signal.Signals(stop.signum).name
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            click.echo(f"{name}: lab servers stopped, temporary directories removed.", err=True)
        if not ready:
            raise SystemExit(128 + stop.signum) from None
    except CorrelatorError as err:
        raise click.ClickException(str(err)) from err

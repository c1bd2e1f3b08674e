"""``correlator investigate --alert-file``: alerts saved from a real Alertmanager.

A real Alertmanager (Debian's ``prometheus-alertmanager``) holds the bundled
library's ``c92321709d13bd50`` alert (posted as ``correlator lab`` posts it)
and delivers its webhook notification to a loopback receiver. The captured
webhook body and the ``/api/v2/alerts`` listing are saved to files and
investigated through the CLI against the bundled library: the investigation
must be the one ``correlator investigate c92321709d13bd50`` gives. Bad files
exit 2 with one message naming the file and the problem.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from correlator import lab
from correlator.alerts import AlertFormatError, parse_alert, parse_alerts
from correlator.cli import main
from correlator.fingerprint import alert_fingerprint
from service_support import free_port, wait_for

pytest_plugins = ["servers"]
pytestmark = pytest.mark.alertmanager

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "fixtures" / "scenarios" / "feature-flags-bad-deploy"
ALERT_ID = "c92321709d13bd50"
OTHER = {"alertname": "DiskFilling", "service": "ledger", "severity": "warn"}


class _Receiver(BaseHTTPRequestHandler):
    """Keeps every webhook body it is sent."""

    bodies: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Receiver.bodies.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The webhook body and the API v2 listing of a real Alertmanager, saved as files."""
    from servers import loopback  # here, not at the top: pytest_plugins imports it first

    if not Path(lab.ALERTMANAGER_BIN).exists():
        pytest.skip("prometheus-alertmanager is not installed")
    tmp = tmp_path_factory.mktemp("alert-file")
    raw = json.loads((BUNDLE / "scenario.json").read_text())["alerts"]
    assert alert_fingerprint(raw[0]["labels"]) == ALERT_ID
    with loopback(_Receiver) as receiver, _alertmanager(tmp, receiver) as am:
        other = {"labels": OTHER, "startsAt": raw[0]["startsAt"]}
        r = httpx.post(f"{am}/api/v2/alerts", json=lab.prepare_alerts([raw[0], other]))
        assert r.status_code == 200, r.text
        wait_for(lambda: _firing_ids() >= {ALERT_ID}, 20, "the webhook notification")
        listing = httpx.get(f"{am}/api/v2/alerts", timeout=5).json()
    webhook = next(b for b in _Receiver.bodies if ALERT_ID in _ids(b))
    files = {"webhook": tmp / "webhook.json", "listing": tmp / "listing.json"}
    files["webhook"].write_text(json.dumps(webhook))
    files["listing"].write_text(json.dumps(listing))
    return files


def _ids(body: dict[str, Any]) -> set[str]:
    return {a["fingerprint"] for a in body["alerts"] if a["status"] == "firing"}


def _firing_ids() -> set[str]:
    return set().union(*(_ids(b) for b in _Receiver.bodies))


@contextlib.contextmanager
def _alertmanager(tmp: Path, receiver: str) -> Iterator[str]:
    """A real Alertmanager whose one receiver is a webhook to ``receiver``; yields its URL."""
    config = tmp / "alertmanager.yml"
    config.write_text(
        "route: {receiver: hook, group_by: [alertname], group_wait: 100ms, "
        "group_interval: 1s, repeat_interval: 1h}\n"
        f"receivers: [{{name: hook, webhook_configs: [{{url: '{receiver}/hook'}}]}}]\n"
    )
    port = free_port()
    with (tmp / "alertmanager.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                lab.ALERTMANAGER_BIN,
                f"--config.file={config}",
                f"--storage.path={tmp / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=log,
            stderr=log,
        )
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_for(ready, 20, "Alertmanager to be ready")
            yield url
        finally:
            proc.terminate()
            proc.wait(10)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``correlator ...`` in-process through its real entry point (``main``)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, err
    return code, out, err


@pytest.fixture(scope="module")
def by_id() -> dict[str, Any]:
    """``correlator investigate c92321709d13bd50 --format json``, the reference."""
    from correlator.api import investigate

    data: dict[str, Any] = investigate(ALERT_ID).to_json()
    return data


def _same_investigation(report: dict[str, Any], by_id: dict[str, Any]) -> None:
    assert report["alert"]["fingerprint"] == ALERT_ID
    assert report["window"] == by_id["window"]
    top, ref = report["findings"][0], by_id["findings"][0]
    assert (top["service"], top["cause"]) == (ref["service"], ref["cause"])
    assert (top["service"], top["cause"]) == ("feature-flags", "deployment")


@pytest.mark.parametrize("kind", ["webhook", "listing"])
def test_saved_alert_investigates_like_its_id(
    kind: str,
    saved: dict[str, Path],
    by_id: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Two alerts in each file: the bundled one is picked by its id prefix.
    code, out, err = cli(
        capsys, "investigate", ALERT_ID[:6], "--alert-file", str(saved[kind]), "--format", "json"
    )
    assert code == 0, err
    _same_investigation(json.loads(out), by_id)


def test_webhook_body_without_id_takes_the_first_firing_alert(
    saved: dict[str, Path], by_id: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    body = json.loads(saved["webhook"].read_text())
    assert body["version"] == "4" and len(body["alerts"]) == 1  # grouped by alertname
    resolved = {**body["alerts"][0], "status": "resolved", "labels": OTHER}
    del resolved["fingerprint"]
    body["alerts"].insert(0, resolved)
    path = saved["webhook"].with_name("two.json")
    path.write_text(json.dumps(body))
    code, out, err = cli(capsys, "investigate", "--alert-file", str(path), "--format", "json")
    assert code == 0, err
    _same_investigation(json.loads(out), by_id)


@pytest.mark.parametrize(
    ("content", "code", "needles"),
    [
        ('{"version": "4", "alerts": [', 2, ["bad.json:1", "not valid JSON"]),
        ('{"version": "5", "alerts": []}', 2, ["version '5' is not supported"]),
        ('{"version": "4", "alerts": []}', 2, ["holds no alerts"]),
        ('{"version": "4", "alerts": [{"startsAt": "2026-03-02T08:36:13Z"}]}', 2,
         ["alerts[0] has no 'labels' object", "alertname"]),
        ('[{"labels": {"alertname": "A"}, "startsAt": "yesterday"}]', 2,
         ["[0].startsAt 'yesterday' is not an RFC 3339 time"]),
        ('[{"labels": {"alertname": "A"}}]', 2, ["[0] has no 'startsAt'"]),
        ('{"labels": {"alertname": 3}, "startsAt": "2026-03-02T08:36:13Z"}', 2,
         ["the alert.labels.alertname must be text"]),
        ('"an alert"', 2, ["expected an Alertmanager webhook body"]),
        ('[{"labels": {"alertname": "A"}, "startsAt": 0, "fingerprint": "zz;drop"}]', 2,
         ["is not a hex fingerprint"]),
        ('[{"labels": {"alertname": "A"}, "startsAt": 0}]', 3,
         ["no alert with id 'ffff'", alert_fingerprint({"alertname": "A"})]),
    ],
)  # fmt: skip
def test_bad_alert_files_exit_with_one_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, code: int, needles: list[str]
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    args = ["investigate", "--alert-file", str(path)]
    got, out, err = cli(capsys, *([*args, "ffff"] if code == 3 else args))
    assert got == code and not out
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert str(path) in err
    for needle in needles:
        assert needle in err


def test_missing_file_or_no_alert_at_all(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, "investigate", "--alert-file", str(tmp_path / "none.json"))
    assert code == 2 and "cannot read alert file" in err and "none.json" in err
    code, _, err = cli(capsys, "investigate")
    assert code == 2 and "--alert-file" in err and "correlator alerts" in err


def test_the_one_parser_reads_every_shape_alike() -> None:
    v2 = {
        "labels": {"alertname": "A", "service": "s"},
        "startsAt": "2026-03-02T08:36:13.5Z",
        "endsAt": "2026-03-02T09:36:13Z",
        "status": {"state": "active", "silencedBy": [], "inhibitedBy": []},
        "fingerprint": "ABCDEF0123456789",
    }
    webhook = {**v2, "status": "firing", "endsAt": "0001-01-01T00:00:00Z"}
    a, b = parse_alert(v2), parse_alerts({"version": "4", "alerts": [webhook]})[0]
    assert a.fingerprint == b.fingerprint == "abcdef0123456789"
    assert a.status == b.status == "firing" and a.starts_at == b.starts_at == 1772440573.5
    assert a.ends_at == 1772444173.0 and b.ends_at is None
    # Listed by Alertmanager, an endsAt after now is a renewal deadline, not an end.
    assert parse_alert(v2, now=a.starts_at + 60).ends_at is None
    assert parse_alert(v2, now=a.starts_at + 7200).ends_at == 1772444173.0
    stored = parse_alerts([a.to_json()])[0]  # what the service stores reads back
    assert (stored.fingerprint, stored.labels, stored.ends_at) == (
        a.fingerprint,
        a.labels,
        a.ends_at,
    )
    with pytest.raises(AlertFormatError, match=r"alert \(A\) has no 'fingerprint'; .* would give"):
        parse_alert({**v2, "fingerprint": ""}, require_fingerprint=True)
    with pytest.raises(AlertFormatError, match="looks like milliseconds"):
        parse_alert({**v2, "startsAt": 1772440573500})

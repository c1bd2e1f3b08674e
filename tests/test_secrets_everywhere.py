"""No configured secret, in any of its forms, reaches any output.

Every credential form the config takes is configured at once: URL user info,
a query string, a header, a token file, and secrets named by ``*_env``.
Every backend echoes what it received (request line and headers) in its
error answers (tests/hostile_server.py), so each secret was *sent* and came
back. Then every output is read for every secret: the CLI's stdout and
stderr (text, JSON and HTML reports, run as a user would), the HTML file,
and every log record, at DEBUG, of an in-process run (httpx logs each URL).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostile_server import hostile

SECRETS = {
    "userinfo": "pw-userinfo-3141",
    "query": "qs-secret-2718",
    "header": "hdr-secret-1414",
    "file": "file-secret-1618",
    "token_env": "env-secret-1732",
    "password_env": "env-pw-2236",
}


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with hostile() as url:
        yield url


@pytest.fixture
def setup(tmp_path: Path, server: str) -> tuple[Path, Path, dict[str, str]]:
    """A config with every credential form, an alert file and the environment."""
    token_file = tmp_path / "loki.token"
    token_file.write_text(SECRETS["file"] + "\n")
    host = server.removeprefix("http://")
    config = {
        "source_timeout": 5,
        "deadline": 10,
        "backends": {
            "prometheus": {
                "url": f"http://promuser:{SECRETS['userinfo']}@{host}/echo-json",
                "retries": 0,
            },
            "loki": {
                "url": f"{server}/echo?api_key={SECRETS['query']}&region=eu",
                "token_file": str(token_file),
                "retries": 0,
            },
            "tempo": {
                "url": f"{server}/echo",
                "headers": {"X-Api-Key": SECRETS["header"]},
                "token_env": "TEMPO_TOKEN",
                "retries": 0,
            },
            "jaeger": {
                "url": f"{server}/echo-json",
                "username": "ju",
                "password_env": "JAEGER_PASSWORD",
                "api": "legacy",
                "retries": 0,
            },
        },
    }
    cfg = tmp_path / "correlator.json"
    cfg.write_text(json.dumps(config))
    alert = tmp_path / "alert.json"
    starts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 600))
    alert.write_text(
        json.dumps(
            [
                {
                    "labels": {"alertname": "HighErrorRate", "service": "checkout"},
                    "startsAt": starts,
                    "fingerprint": "f00d",
                }
            ]
        )
    )
    env = {"TEMPO_TOKEN": SECRETS["token_env"], "JAEGER_PASSWORD": SECRETS["password_env"]}
    return cfg, alert, env


def _leaks(text: str) -> list[str]:
    return [form for form, value in SECRETS.items() if value in text]


@pytest.mark.parametrize("fmt", ["text", "json", "html"])
def test_the_cli_prints_no_secret(setup: tuple[Path, Path, dict[str, str]], fmt: str) -> None:
    cfg, alert, extra = setup
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRELATOR_")}
    env.update(extra)
    out_file = cfg.parent / f"report.{fmt}"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "correlator.cli",
            "investigate",
            "--alert-file",
            str(alert),
            "--config",
            str(cfg),
            "--format",
            fmt,
            "-o",
            str(out_file),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = out_file.read_text(encoding="utf-8")
    # Every backend was asked and failed: the secrets were sent and echoed back.
    for backend in ("prometheus", "loki", "tempo", "jaeger"):
        assert backend in report.lower(), (backend, report[:2000])
    assert "500" in report
    for where, text in (("stdout", proc.stdout), ("stderr", proc.stderr), ("report", report)):
        assert not _leaks(text), (where, _leaks(text))


def test_logs_and_the_report_hold_no_secret(
    setup: tuple[Path, Path, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from correlator.cli import main

    cfg, alert, extra = setup
    for k, v in extra.items():
        monkeypatch.setenv(k, v)
    caplog.set_level(logging.DEBUG)
    html = cfg.parent / "in-process.html"
    code = main(
        [
            "investigate",
            "--alert-file",
            str(alert),
            "--config",
            str(cfg),
            "--format",
            "html",
            "-o",
            str(html),
        ]
    )
    assert code == 0
    out = capsys.readouterr()
    logged = "\n".join(caplog.messages) + "\n" + caplog.text
    # httpx logged every request's URL, query string included: the test saw them.
    assert "HTTP Request" in logged and "api_key=" in logged, logged[:2000]
    for where, text in (
        ("logs", logged),
        ("stdout", out.out),
        ("stderr", out.err),
        ("html", html.read_text(encoding="utf-8")),
    ):
        assert not _leaks(text), (where, _leaks(text))

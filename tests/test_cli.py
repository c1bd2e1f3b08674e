"""The CLI as a user runs it: real processes, real files, exit codes, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from correlator.bundle import read_bundle
from correlator.generator.api import generate, write
from correlator.model import BUILTIN_CAUSES


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated incident on disk (evaluation seed range)."""
    out = tmp_path_factory.mktemp("cli")
    return write(generate(5901, services=12, cause="memory_leak", duration=5400), out / "b")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `correlator ...` as a separate process, as a user would."""
    full_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CORRELATOR_") or k == "CORRELATOR_CACHE_DIR"
    }
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "correlator.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
        check=False,
    )


def no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stdout


def test_alerts_lists_bundle_ids(bundle: Path) -> None:
    proc = run("alerts", "--source", str(bundle))
    assert proc.returncode == 0, proc.stderr
    fp = read_bundle(bundle).alerts[0].fingerprint
    assert fp in proc.stdout


def test_investigate_json_contract(bundle: Path, tmp_path: Path) -> None:
    b = read_bundle(bundle)
    out = tmp_path / "r.json"
    proc = run(
        "investigate",
        b.alerts[0].fingerprint[:8],
        "--source",
        str(bundle),
        "--format",
        "json",
        "--output",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["alert"]["fingerprint"] == b.alerts[0].fingerprint
    assert set(data["window"]) == {"start", "end"}
    assert data["window"]["start"] < data["window"]["end"]
    assert data["findings"], "an investigation of a real fault must find something"
    confidences = [f["confidence"] for f in data["findings"]]
    assert all(0.0 <= c <= 1.0 for c in confidences)
    assert confidences == sorted(confidences, reverse=True), "findings are ranked best first"
    for f in data["findings"]:
        assert isinstance(f["service"], str) and f["service"]
        assert isinstance(f["cause"], str) and f["cause"]
        assert f["evidence"], f"finding {f['service']}/{f['cause']} has no evidence"
        for e in f["evidence"]:
            assert isinstance(e["kind"], str) and isinstance(e["summary"], str) and e["summary"]
    assert isinstance(data["blast_radius"], list)
    assert isinstance(data["gaps"], list)
    assert {"collect", "detect"} <= set(data["timings"])
    assert data["findings"][0]["service"] == b.truth["service"]


@pytest.mark.parametrize("fmt", ["text", "markdown"])
def test_human_formats_name_the_top_finding(bundle: Path, fmt: str) -> None:
    b = read_bundle(bundle)
    proc = run("investigate", b.alerts[0].fingerprint, "--source", str(bundle), "--format", fmt)
    assert proc.returncode == 0, proc.stderr
    assert b.truth["service"] in proc.stdout
    assert "%" in proc.stdout


def test_unknown_alert_id_exits_3_and_says_how_to_list(bundle: Path) -> None:
    proc = run("investigate", "ffffffffffffffff", "--source", str(bundle))
    assert proc.returncode == 3
    assert "correlator alerts" in proc.stderr
    no_traceback(proc)


def test_bad_config_value_exits_2(bundle: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("window: {before: lots}\n")
    proc = run("investigate", "x", "--source", str(bundle), "--config", str(cfg))
    assert proc.returncode == 2
    assert "window.before" in proc.stderr and str(cfg) in proc.stderr
    no_traceback(proc)
    proc = run("alerts", "--source", str(bundle), env={"CORRELATOR_DEADLINE": "soon"})
    assert proc.returncode == 2 and "CORRELATOR_DEADLINE" in proc.stderr
    no_traceback(proc)


def test_malformed_bundle_exits_2_naming_file_and_line(bundle: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in bundle.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    scenario = broken / "scenario.json"
    lines = scenario.read_text().splitlines()
    lines[2] = lines[2] + " oops"
    scenario.write_text("\n".join(lines))
    proc = run("alerts", "--source", str(broken))
    assert proc.returncode == 2
    assert "scenario.json:3" in proc.stderr
    no_traceback(proc)


def test_missing_source_exits_2(tmp_path: Path) -> None:
    proc = run("alerts", "--source", str(tmp_path / "nowhere"))
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr
    no_traceback(proc)


def test_patterns_lists_the_six_builtins() -> None:
    proc = run("patterns")
    assert proc.returncode == 0
    for name in BUILTIN_CAUSES:
        assert name in proc.stdout

"""The examples of docs/plugins.md work: each is installed as a real plugin and used."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from correlator.engine import investigate
from correlator.model import SIGNAL_COLUMNS
from correlator.pattern import load_patterns
from correlator.sources import Sources
from plugin_support import install_plugin
from synth import MemorySource, build

DOC = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"


def _python_blocks() -> dict[str, str]:
    """The doc's python code blocks, by the file name in their first comment line."""
    out = {}
    for block in re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S):
        first = block.splitlines()[0]
        out[first.removeprefix("# ").strip()] = block
    return out


def _entry_points() -> dict[str, tuple[str, str, str]]:
    """group -> (name, module, attr) from the doc's toml blocks."""
    out = {}
    for block in re.findall(r"```toml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S):
        group = re.search(r'entry-points\."([^"]+)"', block)
        line = re.search(r'^(\w+) = "(\w+):(\w+)"', block, re.M)
        assert group and line, block
        out[group.group(1)] = (line.group(1), line.group(2), line.group(3))
    return out


def _install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, group: str) -> str:
    name, module, attr = _entry_points()[group]
    source = _python_blocks()[f"{module}.py"]
    # install_plugin names the module <name>_plugin; the doc's entry point names it <module>.
    install_plugin(tmp_path, monkeypatch, group, name, source, attr)
    return name


def _with_series(
    tel_signals: pd.DataFrame, family: str, service: str, start: float
) -> pd.DataFrame:
    """The scenario's signals plus one series no role knows that climbs at ``start``."""
    ts = np.sort(tel_signals["ts"].astype(float).unique())
    v = 10.0 + np.random.default_rng(1).normal(0, 0.5, ts.size)
    v[ts >= start] += 200.0
    extra = pd.DataFrame({"role": "series", "service": service, "ts": ts, "value": v})
    for c in SIGNAL_COLUMNS[4:]:
        extra[c] = family if c == "detail" else None
    base = tel_signals.astype({c: object for c in SIGNAL_COLUMNS if c not in ("ts", "value")})
    return pd.concat([base, extra], ignore_index=True)


def test_the_pattern_example_is_loaded_and_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = _install(tmp_path, monkeypatch, "correlator.patterns")
    assert name in load_patterns()
    sc = build("deployment")
    inv = investigate(sc.alert, Sources.from_backends(MemorySource(sc.telemetry)))
    # No disk series in this scenario: the pattern says it could not judge, not "no".
    assert {"pattern": name, "why": "no disk_io signal (cAdvisor container_fs_*)"} in (
        inv.not_evaluated
    )
    assert inv.findings[0].service == "payments"


def test_the_detector_example_finds_its_series(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install(tmp_path, monkeypatch, "correlator.detectors")
    sc = build("deployment")
    sc.telemetry.signals = _with_series(
        sc.telemetry.signals, "queue_depth", "payments", sc.alert.starts_at - 240
    )
    inv = investigate(sc.alert, Sources.from_backends(MemorySource(sc.telemetry)))
    mine = inv.anomalies[inv.anomalies["evidence"].astype(str).str.startswith("queue depth")]
    assert list(mine["service"]) == ["payments"]
    assert float(mine["score"].iloc[0]) >= 4.0

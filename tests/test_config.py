"""Config: defaults, file, environment, and a clear error for every bad value."""

from __future__ import annotations

from pathlib import Path

import pytest
from correlator.adapters.loki import LokiSettings

from correlator.config import load_settings
from correlator.errors import ConfigError


def test_defaults_without_file_or_env() -> None:
    s = load_settings(env={})
    assert s.window.before == 300 and s.window.after == 300
    assert s.patterns.enabled is None
    assert s.backends == {}


def test_file_then_env_precedence(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("window: {before: 60, baseline: 7200}\ndeadline: 20\n")
    s = load_settings(cfg, env={"CORRELATOR_WINDOW_BEFORE": "90"})
    assert s.window.before == 90  # env wins over file
    assert s.window.baseline == 7200  # file wins over default
    assert s.deadline == 20


def test_backend_from_env_masks_secret_in_repr() -> None:
    s = load_settings(
        env={"CORRELATOR_LOKI_URL": "http://loki:3100/", "CORRELATOR_LOKI_TOKEN": "s3cr3t"}
    )
    assert s.backends["loki"].adapter == "loki"
    loki = s.backends["loki"].settings
    assert isinstance(loki, LokiSettings)
    assert loki.url == "http://loki:3100"
    assert loki.token == "s3cr3t"
    assert "s3cr3t" not in repr(s)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("window: {before: -5}", "window.before"),
        ("windw: {before: 5}", "windw: unknown setting"),
        ("deadline: soon", "deadline"),
        ("backends: {grafana: {url: 'http://g'}}", "backends.grafana: no adapter named 'grafana'"),
        (
            "backends: {loki: {url: 'loki:3100'}}",
            "backends.loki.url: 'loki:3100' is not an http(s)",
        ),
        ("window: [1, 2", "not valid YAML"),
        ("- just\n- a list\n", "must be a mapping"),
    ],
)
def test_bad_file_values_name_the_setting(tmp_path: Path, text: str, needle: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, env={})
    assert needle in str(err.value)
    assert str(cfg) in str(err.value)


def test_bad_env_number_names_variable() -> None:
    with pytest.raises(ConfigError, match="CORRELATOR_DEADLINE='soon' is not a number"):
        load_settings(env={"CORRELATOR_DEADLINE": "soon"})


def test_missing_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist; fix --config"):
        load_settings(tmp_path / "nope.yaml", env={})


def test_patterns_from_env() -> None:
    s = load_settings(env={"CORRELATOR_PATTERNS": "deployment, memory_leak"})
    assert s.patterns.enabled == ["deployment", "memory_leak"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-02T10:31:00Z", "2026-03-02T10:31:00Z"),
        ("2026-03-02T10:31:00.123456789+01:00", "2026-03-02T09:31:00.123456Z"),
        ("2026-03-02T10:31:00.5-02:30", "2026-03-02T13:01:00.500000Z"),
        ("2026-03-02T10:31:00", "2026-03-02T10:31:00Z"),
    ],
)
def test_parse_time_keeps_offsets_after_nanoseconds(text: str, expected: str) -> None:
    from correlator.model import format_time, parse_time

    assert format_time(parse_time(text)) == expected

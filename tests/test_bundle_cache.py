"""The parse cache: parsed bundle files kept between runs, never trusted blindly."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from correlator.adapters.bundle import name_filter

import correlator.bundle as bundle_mod
from correlator.bundle import CACHE_ENV, cache_dir, prune_cache, read_bundle
from correlator.catalog import default_catalog
from correlator.generator.api import generate, write
from correlator.openmetrics import (
    Metrics,
    load_metrics,
    parse_openmetrics,
    save_metrics,
)

T0 = 1772442000.0


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated incident (metrics, logs and traces)."""
    out = tmp_path_factory.mktemp("cache")
    return write(generate(5903, services=5, cause="deployment", duration=3600), out / "b")


@pytest.fixture
def bundle_path(source: Path, tmp_path: Path) -> Path:
    """A private copy of the bundle (tests change its files)."""
    return Path(shutil.copytree(source, tmp_path / "b"))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary cache that keeps every file, however small."""
    root = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(root))
    monkeypatch.setattr(bundle_mod, "CACHE_MIN_BYTES", 0)
    return root


def _entries(root: Path, kind: str) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob(f"{kind}-*") if p.is_dir() and bundle_mod._is_entry(p))


def _same_metrics(a: Metrics, b: Metrics) -> None:
    assert a.names == b.names
    assert [dict(x) for x in a.labels] == [dict(x) for x in b.labels]
    assert (a.types, a.help, a.units, a.has_eof) == (b.types, b.help, b.units, b.has_eof)
    for x, y in zip(a.values, b.values, strict=True):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(a.times, b.times, strict=True):
        np.testing.assert_array_equal(x, y)
    # Series scraped together share one times array, before and after.
    share_a = [next(j for j, t in enumerate(a.times) if t is ts) for ts in a.times]
    share_b = [next(j for j, t in enumerate(b.times) if t is ts) for ts in b.times]
    assert share_a == share_b


def _in_memory(m: Metrics) -> Metrics:
    """A copy of ``m`` in memory: parsed metrics are read back from (mapped onto) their cache
    entry, so a test that rewrites the entry's files in place needs its own copy first."""
    copies: dict[int, npt.NDArray[np.float64]] = {}
    times = tuple(copies.setdefault(id(t), np.array(t)) for t in m.times)
    return dataclasses.replace(m, times=times, values=tuple(np.array(v) for v in m.values))


def _never(*_: object) -> object:
    raise AssertionError("parsed although the cache holds this file")


# --------------------------------------------------------------------------- the cache location


def test_cache_dir_from_env_xdg_and_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.setenv(CACHE_ENV, "")
    assert cache_dir() is None
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "correlator"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "correlator"


# --------------------------------------------------------------------------- saved metrics


def test_saved_metrics_load_back_identical(tmp_path: Path) -> None:
    lines = ["# TYPE lat histogram\n# HELP lat Latency\n# UNIT lat seconds\n"]
    for t in range(6):
        for le in ("0.1", "1", "+Inf"):
            lines.append(f'lat_bucket{{svc="a",le="{le}"}} {t} {T0 + 15 * t}\n')
    lines += [f'up{{job="x y"}} {v} {T0 + 7 * v}\n' for v in (1, 0, float("nan"))]
    parsed = parse_openmetrics("".join(lines) + "# EOF\n")
    save_metrics(parsed, tmp_path)
    loaded = load_metrics(tmp_path)
    _same_metrics(parsed, loaded)
    assert all(not v.flags.writeable for v in loaded.values)
    assert load_metrics(tmp_path, mmap=False).sample_count == parsed.sample_count


def test_saved_empty_and_sampleless_series(tmp_path: Path) -> None:
    empty = np.zeros(0)
    m = Metrics(("a", "b"), ({}, {"x": "1"}), (empty, np.array([T0])), (empty, np.array([2.0])))
    for name in ("m", "e"):
        (tmp_path / name).mkdir()
    save_metrics(m, tmp_path / "m")
    save_metrics(Metrics(), tmp_path / "e")
    loaded = load_metrics(tmp_path / "m")
    assert len(loaded.values[0]) == 0 and loaded.values[1].tolist() == [2.0]
    assert loaded.times[1].tolist() == [T0] and dict(loaded.labels[1]) == {"x": "1"}
    assert len(load_metrics(tmp_path / "e")) == 0


@pytest.mark.parametrize(
    "damage",
    ["truncate values", "drop offsets", "bad json", "wrong dtype", "lengths disagree"],
)
def test_damaged_saved_metrics_are_refused(tmp_path: Path, damage: str) -> None:
    m = parse_openmetrics(f"a 1 {T0}\na 2 {T0 + 1}\nb 3 {T0}\n# EOF\n")
    save_metrics(m, tmp_path)
    if damage == "truncate values":
        data = (tmp_path / "values.npy").read_bytes()
        (tmp_path / "values.npy").write_bytes(data[:-8])
    elif damage == "drop offsets":
        (tmp_path / "offsets.npy").unlink()
    elif damage == "bad json":
        (tmp_path / "metrics.json").write_text('{"format": 1, "names": [')
    elif damage == "wrong dtype":
        np.save(tmp_path / "values.npy", np.arange(3, dtype=np.int32))
    else:
        np.save(tmp_path / "offsets.npy", np.array([0, 1, 3], dtype=np.int64))
    with pytest.raises((ValueError, OSError)):
        load_metrics(tmp_path)


# --------------------------------------------------------------------------- bundles and the cache


def test_second_read_comes_from_the_cache(bundle_path: Path, cache: Path) -> None:
    keep = name_filter(default_catalog())
    first = read_bundle(bundle_path)
    parsed = first.metrics_for(keep)
    spans, logs = first.spans, first.logs
    assert len(_entries(cache, "metrics")) == 1
    assert len(_entries(cache, "spans")) == 1 and len(_entries(cache, "logs")) == 1
    assert len(spans) and len(logs)

    again = read_bundle(bundle_path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bundle_mod, "_parse_metrics", _never)
        mp.setattr(bundle_mod, "_parse_otlp", _never)
        _same_metrics(parsed, again.metrics_for(keep))
        pd.testing.assert_frame_equal(again.spans, spans)
        pd.testing.assert_frame_equal(again.logs, logs)


def test_another_name_filter_is_another_entry(bundle_path: Path, cache: Path) -> None:
    read_bundle(bundle_path).metrics_for(name_filter(default_catalog()))
    everything = read_bundle(bundle_path).metrics
    assert len(_entries(cache, "metrics")) == 2
    assert len(everything) > len(
        read_bundle(bundle_path).metrics_for(name_filter(default_catalog()))
    )


def test_a_changed_file_is_parsed_again(bundle_path: Path, cache: Path) -> None:
    before = read_bundle(bundle_path).metrics
    om = bundle_path / "metrics.om"
    text = om.read_text()
    extra = f'cache_probe{{service="x"}} 42 {int(before.times[0][0])}\n'
    om.write_text(text.replace("# EOF\n", extra + "# EOF\n"))
    stat = om.stat()  # keep the old size out of it: same mtime, different size
    os.utime(om, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    after = read_bundle(bundle_path).metrics
    assert "cache_probe" in after.names and "cache_probe" not in before.names
    # The old entry was for a file that no longer exists as it was: pruned.
    (entry,) = _entries(cache, "metrics")
    assert json.loads((entry / "entry.json").read_text())["size"] == om.stat().st_size


def test_a_touched_file_is_parsed_again(bundle_path: Path, cache: Path) -> None:
    assert read_bundle(bundle_path).metrics.sample_count
    om = bundle_path / "metrics.om"
    st = om.stat()
    os.utime(om, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    parsed: list[Path] = []
    real = bundle_mod._parse_metrics

    def counting(path: Path, keep: object) -> Metrics:
        parsed.append(path)
        return real(path, keep)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bundle_mod, "_parse_metrics", counting)
        assert read_bundle(bundle_path).metrics.sample_count
    assert parsed == [om]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_a_corrupt_entry_is_parsed_again_and_replaced(
    bundle_path: Path, cache: Path, damage: str
) -> None:
    good = _in_memory(read_bundle(bundle_path).metrics)
    (entry,) = _entries(cache, "metrics")
    if damage == "garbage":
        (entry / "metrics.json").write_text("not json")
    elif damage == "truncated":
        values = entry / "values.npy"
        values.write_bytes(values.read_bytes()[:200])
    else:
        for f in entry.iterdir():
            f.write_bytes(b"")
    again = read_bundle(bundle_path).metrics
    _same_metrics(good, again)
    (fresh,) = _entries(cache, "metrics")
    _same_metrics(good, load_metrics(fresh))


def test_a_corrupt_frame_entry_is_parsed_again(bundle_path: Path, cache: Path) -> None:
    spans = read_bundle(bundle_path).spans
    (entry,) = _entries(cache, "spans")
    (entry / "frame.json").write_text('{"rows": 1, "columns": [], "text": {}}')
    pd.testing.assert_frame_equal(read_bundle(bundle_path).spans, spans)
    (entry,) = _entries(cache, "spans")  # written again
    assert json.loads((entry / "frame.json").read_text())["rows"] == len(spans)
    (entry / "col5.npy").write_bytes(b"\x93NUMPY")
    pd.testing.assert_frame_equal(read_bundle(bundle_path).spans, spans)


def test_an_unwritable_cache_only_costs_the_parse(
    bundle_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv(CACHE_ENV, str(blocker / "cache"))
    monkeypatch.setattr(bundle_mod, "CACHE_MIN_BYTES", 0)
    b = read_bundle(bundle_path)
    assert b.metrics.sample_count > 0 and len(b.spans) > 0
    assert blocker.read_text() == "x"


def test_cache_off_writes_nothing(
    bundle_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV, "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(bundle_mod, "CACHE_MIN_BYTES", 0)
    assert read_bundle(bundle_path).metrics.sample_count > 0
    assert not (tmp_path / "xdg").exists()


def test_small_files_are_not_cached(
    bundle_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = (bundle_path / "metrics.om").stat().st_size
    monkeypatch.setattr(bundle_mod, "CACHE_MIN_BYTES", size + 1)
    b = read_bundle(bundle_path)
    assert b.metrics.sample_count > 0
    assert _entries(cache, "metrics") == []


def test_prune_drops_stale_then_least_recently_used(bundle_path: Path, cache: Path) -> None:
    keep = name_filter(default_catalog())
    assert len(read_bundle(bundle_path).metrics_for(keep))
    assert len(read_bundle(bundle_path).metrics)
    assert len(read_bundle(bundle_path).spans)
    foreign = cache / "notes.txt"
    foreign.write_text("mine")
    (cache / "metrics-not-ours").mkdir()
    oldest = min(_entries(cache, "metrics"), key=lambda p: p.stat().st_mtime)
    os.utime(oldest, (1, 1))
    sizes = {p: sum(f.stat().st_size for f in p.iterdir()) for p in cache.glob("*-*")}
    total = sum(sizes.values())
    prune_cache(cache, limit=total - 1)
    assert not oldest.exists() and len(_entries(cache, "metrics")) == 1
    assert foreign.read_text() == "mine" and (cache / "metrics-not-ours").is_dir()
    (bundle_path / "traces.otlp.jsonl").unlink()
    prune_cache(cache)
    assert _entries(cache, "spans") == []  # its file is gone
    assert len(_entries(cache, "metrics")) == 1


# --------------------------------------------------------------------------- the CLI


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("CORRELATOR_")}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "correlator.cli", *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=180,
        check=False,
    )


def test_cli_second_run_reads_the_cache_and_answers_the_same(source: Path, tmp_path: Path) -> None:
    fp = read_bundle(source).alerts[0].fingerprint
    env = {CACHE_ENV: str(tmp_path / "c")}
    args = ("investigate", fp, "--source", str(source), "--format", "json")
    first = _cli(*args, env=env)
    assert first.returncode == 0, first.stderr
    assert _entries(tmp_path / "c", "metrics"), "a cold run leaves its parse in the cache"
    second = _cli(*args, env=env)
    assert second.returncode == 0, second.stderr
    off = _cli(*args, env={CACHE_ENV: ""})
    assert off.returncode == 0, off.stderr
    docs = [json.loads(p.stdout) for p in (first, second, off)]
    for d in docs:
        d.pop("timings")
    assert docs[0] == docs[1] == docs[2]


def test_cli_imports_only_what_investigate_needs() -> None:
    code = (
        "import sys, correlator.cli; "
        "print(sorted(m for m in sys.modules if m.startswith(('correlator.service', "
        "'correlator.generator', 'correlator.lab', 'matplotlib', 'sklearn'))))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert proc.stdout.strip() == "[]"
    listed = _cli("--help", env={})
    assert listed.returncode == 0
    for name in ("investigate", "alerts", "patterns", "scenarios", "lab", "serve"):
        assert f"  {name} " in listed.stdout


def test_a_cache_folder_that_cannot_be_looked_into_only_costs_the_parse(
    bundle_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests run as root here, so permissions cannot make the folder unreadable: fail the calls.
    real_is_dir = Path.is_dir

    def no_access(self: Path) -> bool:
        if cache in self.parents or self == cache:
            raise PermissionError(13, "Permission denied", str(self))
        return real_is_dir(self)

    def no_mkdir(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "is_dir", no_access)
    monkeypatch.setattr(Path, "mkdir", no_mkdir)
    b = read_bundle(bundle_path)
    assert b.metrics.sample_count > 0 and len(b.logs) > 0
    assert not cache.exists()

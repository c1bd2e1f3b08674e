"""`mypy --strict` stays clean on the whole package, with the project's own configuration.

pyproject.toml's ``[tool.mypy]`` names what plain ``mypy`` checks (src/correlator and the
adapters/, patterns/ and detectors/ directories installed as ``correlator.adapters`` etc.);
these tests run exactly that through mypy's API, so the suite, and CI with it, fails on a
typing regression.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from mypy import api

ROOT = Path(__file__).resolve().parents[1]
#: Directories setuptools installs under other names (package-dir): mypy cannot follow
#: that mapping, so their modules must import each other relatively.
MAPPED = {
    "adapters": "correlator.adapters",
    "patterns": "correlator.patterns",
    "detectors": "correlator.detectors",
}


def _config() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        tool: dict[str, Any] = tomllib.load(f)["tool"]["mypy"]
    return tool


@pytest.mark.slow
def test_mypy_strict_passes_on_everything_the_config_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    # A private cache: the result never rests on what another checkout left behind.
    out, err, status = api.run(
        ["--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(tmp_path)]
    )
    assert status == 0 and "Success: no issues found" in out, f"mypy:\n{out}{err}"
    # Every module of the four directories was checked, none left out by the config.
    expected = sum(len(list((ROOT / d).rglob("*.py"))) for d in ("src/correlator", *MAPPED))
    checked = re.search(r"in (\d+) source files?", out)
    assert checked is not None and int(checked.group(1)) == expected, out


def test_the_config_checks_the_whole_package_strictly() -> None:
    config = _config()
    assert config["strict"] is True
    assert config["mypy_path"] == "src"
    assert config["files"] == ["src/correlator", *MAPPED]
    # Loosening per module would hide errors the suite means to catch.
    for override in config.get("overrides", []):
        assert not override.get("ignore_errors") and override.get("strict", True), override


@pytest.mark.parametrize("directory", sorted(MAPPED))
def test_mapped_packages_import_their_own_modules_relatively(directory: str) -> None:
    """``from correlator.detectors._stats import x`` inside detectors/ resolves to nothing
    for mypy (silently ``Any``); ``from ._stats import x`` is the same module at runtime and
    is checked."""
    absolute = re.compile(rf"^{re.escape(MAPPED[directory])}(\.|$)")
    offenders = []
    for path in sorted((ROOT / directory).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            offenders += [
                f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names if absolute.match(n)
            ]
    assert not offenders, "import these relatively (from .x import ...):\n" + "\n".join(offenders)

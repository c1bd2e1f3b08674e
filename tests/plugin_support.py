"""Install a small third-party plugin for real: a module and a dist-info on ``sys.path``.

``importlib.metadata`` finds the distribution like any installed package, so the
plugin is loaded through the same entry-point groups the built-ins use.
"""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest


def install_plugin(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    group: str,
    name: str,
    source: str,
    attr: str,
) -> None:
    """Install module ``<name>_plugin`` holding ``source``, registering ``attr`` in ``group``."""
    module = f"{name}_plugin"
    root = tmp_path / f"site-{name}"
    root.mkdir()
    (root / f"{module}.py").write_text(dedent(source), encoding="utf-8")
    info = root / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        f"[{group}]\n{name} = {module}:{attr}\n", encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(root))

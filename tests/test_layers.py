"""The domain model never imports presentation; presentation modules import no loop.

Read from the source (every import statement, including those inside
functions), so a lazy import cannot hide a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "correlator"
PRESENTATION = {"report", "report_html", "plots", "notebook"}
#: Who may import whom among the presentation modules (a DAG).
ALLOWED = {
    "report": {"report_html"},
    "report_html": {"plots"},
    "plots": set(),
    "notebook": {"plots", "report_html"},
}


def _imports(module: str) -> set[str]:
    """The correlator modules ``module`` imports anywhere in its source (last name part)."""
    tree = ast.parse((SRC / f"{module}.py").read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "correlator":
                out.update(a.name for a in node.names)
            elif node.module.startswith("correlator."):
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("correlator."))
    return out


@pytest.mark.parametrize("module", ["model", "alerts", "engine", "api"])
def test_domain_and_pipeline_import_no_presentation(module: str) -> None:
    assert not _imports(module) & PRESENTATION


@pytest.mark.parametrize("module", sorted(PRESENTATION))
def test_presentation_modules_form_no_loop(module: str) -> None:
    assert _imports(module) & PRESENTATION <= ALLOWED[module]

"""The notebook experience: notebooks/explore.ipynb runs clean and gets its incident right.

The notebook is executed top to bottom in a real Jupyter kernel (nbclient,
ipykernel); any error fails the test. Its outputs must then show the right
answer: the top finding's service and cause equal the truth recorded in the
bundle the notebook walks through, and its plots must be there as images.
The notebook helpers (DataFrame accessors, ``_repr_html_``) are also tested
directly on a hand-built investigation.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

import correlator
from correlator.bundle import find_bundles
from correlator.model import Investigation
from correlator.notebook import NotebookInvestigation
from incident_factory import FAULT, build_investigation

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "explore.ipynb"
SCENARIOS = REPO / "fixtures" / "scenarios"


def _answer(nb: nbformat.NotebookNode) -> dict[str, str]:
    """What the notebook concluded (its ``ANSWER {...}`` line)."""
    line = next(line for line in _text(nb).splitlines() if line.startswith("ANSWER "))
    answer: dict[str, str] = ast.literal_eval(line.removeprefix("ANSWER "))
    return answer


def _truth(incident: str) -> dict[str, str]:
    """The truth recorded in the shipped bundle, read here independently of the notebook."""
    folder = next(b for b in find_bundles(SCENARIOS) if b.name == incident)
    truth: dict[str, str] = json.loads((folder / "scenario.json").read_text())["truth"]
    return truth


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> nbformat.NotebookNode:
    assert find_bundles(SCENARIOS), (
        f"no scenario bundles shipped in {SCENARIOS}: the notebook walks one"
    )
    assert hasattr(correlator, "investigate"), (
        "correlator must re-export investigate() and alerts()"
    )
    nb = nbformat.read(NOTEBOOK, as_version=4)
    workdir = tmp_path_factory.mktemp("notebook")
    client = NotebookClient(
        nb,
        timeout=180,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()  # raises CellExecutionError on any failing cell
    nb.metadata["workdir"] = str(workdir)
    return nb


def _outputs(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


def _text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for out in _outputs(nb):
        if out.output_type == "stream":
            parts.append(out.text)
        elif "data" in out:
            parts.append(out.data.get("text/plain", ""))
            parts.append(out.data.get("text/html", ""))
    return "\n".join(parts)


def test_notebook_runs_clean_and_finds_its_incident_truth(
    executed: nbformat.NotebookNode,
) -> None:
    outs = _outputs(executed)
    assert not [o for o in outs if o.output_type == "error"]
    assert not [o for o in outs if o.output_type == "stream" and o.name == "stderr"]
    answer = _answer(executed)
    truth = _truth(answer["incident"])
    assert truth["cause"] == "deployment"  # the walk-through is about a bad deploy
    assert (answer["service"], answer["cause"]) == (truth["service"], truth["cause"])


def test_notebook_shows_the_answer_tables_and_plots(executed: nbformat.NotebookNode) -> None:
    truth = _truth(_answer(executed)["incident"])
    text = _text(executed)
    assert f"Likely root cause: {truth['service']} ({truth['cause']})" in text
    assert "correlator-investigation" in text  # the _repr_html_ summary was displayed
    assert "onset_time" in text and "lead_s" in text  # the anomalies table
    images = [o for o in _outputs(executed) if "data" in o and "image/png" in o.data]
    assert len(images) >= 3  # signals, topology, evidence
    report = Path(executed.metadata["workdir"]) / "report.html"
    assert truth["service"] in report.read_text(encoding="utf-8")


# --- the helpers behind it, on a hand-built investigation -----------------------------------------


@pytest.fixture(scope="module")
def inv() -> NotebookInvestigation:
    # The model is plain data; the notebook layer adds the methods.
    return NotebookInvestigation.of(build_investigation())


def test_findings_frame_ranks_and_times(inv: NotebookInvestigation) -> None:
    df = inv.findings_frame()
    assert list(df["rank"]) == [1, 2]
    assert list(df["service"]) == ["checkout", "frontend"]
    assert df.loc[0, "onset_time"] == pd.Timestamp(FAULT, unit="s", tz="UTC")
    assert df.loc[0, "evidence"] == 4


def test_anomalies_frame_is_ordered_by_onset_with_lead(inv: NotebookInvestigation) -> None:
    df = inv.anomalies_frame()
    assert list(df["onset"]) == sorted(df["onset"])
    assert df.loc[0, "lead_s"] == pytest.approx(inv.alert.starts_at - FAULT)
    assert set(inv.anomalies_frame("frontend")["service"]) == {"frontend"}
    assert len(inv.anomalies) == 3  # the investigation's own frame is not changed


def test_signals_frame_filters_and_limits_to_the_window(inv: NotebookInvestigation) -> None:
    df = inv.signals_frame("checkout", "error_rate")
    assert set(df["role"]) == {"error_rate"} and set(df["service"]) == {"checkout"}
    assert df["ts"].min() >= inv.window.start - inv.window.duration
    assert len(inv.signals_frame("checkout", "error_rate", around=False)) > len(df)


def test_log_lines_match_text_and_severity(inv: NotebookInvestigation) -> None:
    errors = inv.log_lines("checkout", min_severity=17)
    assert len(errors) == 12 and set(errors["level"]) == {"ERROR"}
    assert list(errors["ts"]) == sorted(errors["ts"])
    assert len(inv.log_lines(contains="pricecalculator")) == 12
    assert len(inv.log_lines(contains="order placed")) == 0  # before the window
    assert len(inv.log_lines(contains="order placed", window_only=False)) == 1


def test_span_frame_errors_and_one_trace(inv: NotebookInvestigation) -> None:
    assert set(inv.span_frame(errors_only=True)["status"]) == {2}
    trace = inv.span_frame(trace_id=f"{0:032x}")
    assert list(trace["service"]) == ["frontend", "checkout"]


def test_evidence_frame_and_repr_html(inv: NotebookInvestigation) -> None:
    ev = inv.evidence_frame()
    assert list(ev["kind"]) == ["deploy", "metric", "log", "trace"]
    assert inv.evidence_frame(5).empty
    html = inv._repr_html_()
    assert "checkout" in html and "86%" in html and "frontend" in html


def test_plain_investigation_gains_methods_without_copying() -> None:
    plain = build_investigation()
    assert not hasattr(plain, "plot_signals")  # the model is data only
    rich = NotebookInvestigation.of(plain)
    assert isinstance(rich, Investigation) and NotebookInvestigation.of(rich) is rich
    assert rich.anomalies is plain.anomalies and rich.to_json() == plain.to_json()
    assert type(correlator.investigate).__module__ == "builtins"  # a function...
    assert correlator.investigate.__module__ == "correlator.notebook"  # ...of the notebook layer


def test_ipython_shows_a_plain_investigation_richly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    from correlator import notebook

    monkeypatch.setenv("IPYTHONDIR", str(tmp_path))  # never the developer's ~/.ipython
    config = Config()
    config.HistoryManager.enabled = False
    shell = InteractiveShell.instance(config=config)
    try:
        notebook._show_every_investigation_richly()  # what importing it inside IPython does
        data, _ = shell.display_formatter.format(build_investigation())
    finally:
        InteractiveShell.clear_instance()
    assert "correlator-investigation" in data["text/html"]

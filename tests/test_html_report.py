"""The HTML report, opened in a real headless Chromium (Debian's ``chromium``).

The page must load without console messages (it has no scripts, so any
message is an error or a Content-Security-Policy violation, i.e. something
that tried to load from outside), show the top finding, its confidence and
the plots, and reference nothing external except evidence links.

The screenshot is kept at ``build/screenshots/report.png`` for people to look at.
"""

from __future__ import annotations

import base64
import html
import io
import os
import shutil
import subprocess
from dataclasses import replace
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import correlator
from correlator.bundle import find_bundles, read_bundle
from correlator.cli import cli
from correlator.model import Investigation
from correlator.report import percent
from correlator.report_html import render_html
from incident_factory import build_investigation

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "build" / "screenshots"

needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"),
    reason="Debian chromium is not installed (apt-get install chromium); CI installs it",
)


def _chromium(tmp: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
        url,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=True)


def _console(stderr: str) -> list[str]:
    """Console messages Chromium logged (``...:CONSOLE:<line>] "text", source: ...``)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


class _Refs(HTMLParser):
    """Every src/href in a page, with the element's class."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        a = {k: v or "" for k, v in attrs}
        for key in ("src", "href", "action", "poster", "data"):
            if key in a:
                self.refs.append((tag, key, a[key], a.get("class", "")))


SCENARIOS = REPO / "fixtures" / "scenarios"


def _shipped_bundle() -> Path:
    """A shipped bundle to investigate for real: a bad deploy if there is one."""
    bundles = find_bundles(SCENARIOS)
    assert bundles, f"no scenario bundles shipped in {SCENARIOS}"
    for b in bundles:
        if (read_bundle(b).truth or {}).get("cause") == "deployment":
            return b
    return bundles[0]


@pytest.fixture(scope="module")
def bundle() -> Path:
    return _shipped_bundle()


@pytest.fixture(scope="module")
def investigation(bundle: Path) -> Investigation:
    """A real investigation of a shipped bundle (the library, the engine, the bundle backend)."""
    return correlator.investigate(read_bundle(bundle).alerts[0], source=bundle)


@pytest.fixture(scope="module")
def synthetic() -> Investigation:
    """A hand-built investigation, for cases no bundle has (no finding, hostile names)."""
    return build_investigation()


@pytest.fixture(scope="module")
def page(investigation: Investigation) -> str:
    return render_html(investigation)


@pytest.fixture(scope="module")
def browser_run(page: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Open the page once for a screenshot (with console logging) and once for the DOM."""
    tmp = tmp_path_factory.mktemp("chromium")
    html = tmp / "report.html"
    html.write_text(page, encoding="utf-8")
    shot = tmp / "report.png"
    run = _chromium(tmp, html.as_uri(), f"--screenshot={shot}", "--window-size=1280,2400")
    dom = _chromium(tmp, html.as_uri(), "--dump-dom", "--virtual-time-budget=2000")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, SCREENSHOTS / "report.png")
    return {"stderr": run.stderr + dom.stderr, "dom": dom.stdout, "shot": shot}


@needs_chromium
def test_page_loads_in_chromium_without_console_messages(browser_run: dict[str, object]) -> None:
    assert _console(str(browser_run["stderr"])) == []
    assert "</html>" in str(browser_run["dom"])


@needs_chromium
def test_the_console_check_catches_a_bad_page(tmp_path: Path, page: str) -> None:
    """The same harness on a page that loads from outside reports it: the check can fail."""
    bad = page.replace("</main>", '<img src="https://example.invalid/pixel.png"></main>')
    html = tmp_path / "bad.html"
    html.write_text(bad, encoding="utf-8")
    run = _chromium(tmp_path, html.as_uri(), "--dump-dom")
    messages = _console(run.stderr)
    assert any("example.invalid" in m for m in messages), run.stderr[-2000:]


@needs_chromium
def test_rendered_page_shows_the_top_finding_and_its_confidence(
    browser_run: dict[str, object], investigation: Investigation
) -> None:
    dom = str(browser_run["dom"])
    top = investigation.findings[0]
    assert f'id="root-service">{top.service}<' in dom
    assert f"<b>{top.cause}</b>" in dom
    assert f'id="confidence">{html.escape(percent(top.confidence))}<' in dom
    for service in investigation.blast_radius:
        if service != top.service:
            assert f'class="chip blast">{service}<' in dom
    for e in top.evidence:
        assert escape(e.summary, quote=False) in dom
    images = [line for line in dom.split("<img")[1:] if 'src="data:image/png;base64,' in line]
    assert len(images) >= 2  # topology + at least one suspect's signals


@needs_chromium
def test_screenshot_is_not_blank_and_shows_the_colours_of_the_answer(
    browser_run: dict[str, object], investigation: Investigation
) -> None:
    img = np.asarray(Image.open(str(browser_run["shot"])).convert("RGB")).astype(int)
    assert img.shape[:2] == (2400, 1280)
    assert img.std() > 20

    def near(rgb: tuple[int, int, int], tol: int = 12) -> int:
        return int((np.abs(img - np.array(rgb)).max(axis=2) <= tol).sum())

    assert near((0xC0, 0x39, 0x2B)) > 2000  # root cause: heading, verdict bar, graph node
    if set(investigation.blast_radius) - {investigation.findings[0].service}:
        assert near((0xF3, 0x9C, 0x12)) > 300  # blast radius: chip and graph node


def test_page_references_nothing_external(page: str) -> None:
    parser = _Refs()
    parser.feed(page)
    assert "script" not in parser.tags
    assert "url(" not in page.split("</style>")[0]
    external = [r for r in parser.refs if not r[2].startswith(("data:", "#"))]
    for tag, key, value, cls in external:
        assert (tag, key, cls) == ("a", "href", "evidence-link"), (tag, key, value)
    assert all(v.startswith("data:image/png;base64,") for t, k, v, _ in parser.refs if k == "src")


def test_inline_plots_are_real_pictures(page: str) -> None:
    parser = _Refs()
    parser.feed(page)
    pngs = [v.split(",", 1)[1] for t, k, v, _ in parser.refs if t == "img"]
    assert len(pngs) >= 2
    for data in pngs:
        picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("L"))
        assert picture.shape[0] > 200 and picture.shape[1] > 500
        assert picture.std() > 10


def test_evidence_links_are_the_only_outbound_references(synthetic: Investigation) -> None:
    parser = _Refs()
    parser.feed(render_html(synthetic))
    external = [r for r in parser.refs if not r[2].startswith(("data:", "#"))]
    assert [(t, k, c) for t, k, _, c in external] == [("a", "href", "evidence-link")]


def test_a_page_with_no_finding_says_so(synthetic: Investigation) -> None:
    html = render_html(replace(synthetic, findings=[], blast_radius=[]))
    assert "None found" in html
    assert "could not see" in html


def test_hostile_names_are_escaped(synthetic: Investigation) -> None:
    evil = "<script>alert(1)</script>"
    top = replace(synthetic.findings[0], service=evil)
    html = render_html(replace(synthetic, findings=[top, *synthetic.findings[1:]]))
    assert evil not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_cli_writes_the_same_page(
    bundle: Path, tmp_path: Path, investigation: Investigation
) -> None:
    out = tmp_path / "report.html"
    alert = read_bundle(bundle).alerts[0]
    args = ["investigate", alert.fingerprint, "--source", str(bundle), "--format", "html"]
    result = CliRunner().invoke(cli, [*args, "--output", str(out)])
    assert result.exit_code == 0, result.output
    html = out.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert f'id="root-service">{escape(investigation.findings[0].service)}<' in html

"""``report.html`` alone, offline, in headless Chromium: nothing fetched, the embedded run scrubs, code hidden.

Each report is made by the ``chromaviz`` command in a subprocess (small parameters), and only
``report.html`` is copied into an empty folder before the browser opens it, so any file the page
needed beside it would show up as a failed request.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from browser_support import browser_available, chromium_page, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.notebook]

SMALL = ["-p", "steps", "12", "-p", "size", "32", "-p", "batch", "4"]
STEPS = 12
LOCAL = ("file:", "data:", "about:", "blob:")


def chromaviz_command() -> list[str]:
    """The installed ``chromaviz`` console script of this environment (or ``python -m chromaviz.cli``)."""
    script = Path(sys.executable).with_name("chromaviz")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "chromaviz.cli"]


def make_report(folder: Path, *options: str) -> tuple[Path, str]:
    """Run ``chromaviz report`` into ``folder / "made"``; copy report.html alone into ``folder / "alone"``."""
    made = folder / "made"
    proc = subprocess.run([*chromaviz_command(), "report", *SMALL, "-o", str(made), "--quiet", *options],
                          capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    alone = folder / "alone"
    alone.mkdir()
    shutil.copy(made / "report.html", alone / "report.html")
    return alone / "report.html", output


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    reason = browser_available()
    if reason:
        pytest.skip(reason)
    return {
        "default": make_report(tmp_path_factory.mktemp("report")),
        "code": make_report(tmp_path_factory.mktemp("report-code"), "--show-code"),
    }


def open_offline(page, html: Path) -> dict[str, list[str]]:
    """Open ``html`` with the network cut off; returns the requests made, failed and refused, and page errors."""
    seen: dict[str, list[str]] = {"requests": [], "failed": [], "refused": [], "errors": []}
    page.context.set_offline(True)

    def refuse(route):
        seen["refused"].append(route.request.url)
        route.abort()

    page.context.route("http*://**/*", refuse)
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.on("requestfailed", lambda r: seen["failed"].append(f"{r.url} ({r.failure})"))
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
    page.goto(html.as_uri(), wait_until="load")
    return seen


def frame_images(frame) -> list[str]:
    """The ``src`` of every image in the frame (bokeh draws inside shadow roots: locators pierce them)."""
    return frame.locator("img").evaluate_all("imgs => imgs.map(i => i.getAttribute('src') || '')")


def scrub(frame, page, presses: int) -> None:
    """Move the run's step slider ``presses`` steps to the right with the keyboard."""
    slider = frame.locator("input[type=range]")
    handle = slider if slider.count() else frame.locator(".noUi-handle")
    handle.first.focus()
    for _ in range(presses):
        page.keyboard.press("ArrowRight")


def test_report_html_alone_is_offline_scrubs_and_hides_code(reports):
    html, output = reports["default"]
    assert "without encryption" not in output and "Kernel is running over TCP" not in output, output
    with chromium_page(1280, 900) as page:
        seen = open_offline(page, html)
        frame = page.frame(name="chromaviz-run")
        assert frame is not None, "the run page is not embedded in report.html"
        deadline = time.time() + 30
        while len(frame_images(frame)) < 2 and time.time() < deadline:
            page.wait_for_timeout(100)
        before = frame_images(frame)
        assert len(before) >= 2, "the embedded run shows no images"
        scrub(frame, page, 5)
        deadline = time.time() + 10
        while frame_images(frame) == before and time.time() < deadline:
            page.wait_for_timeout(50)
        after = frame_images(frame)
        page.wait_for_timeout(300)
        screenshot(page, "report-offline")
        assert after != before, "scrubbing did not change the images"
        assert frame.get_by_text(f"step 6/{STEPS}").count() >= 1, "the caption does not name the step scrubbed to"

        text = page.locator("main").inner_text()
        assert page.locator(".jp-InputArea-editor").count() == 0
        assert "import " not in text and "display(" not in text, "code is visible in the default report"
        assert "Chromatograms" in text and "Step by step" in text
        assert page.locator("main img").count() >= 5  # the figures, inline

    assert not seen["failed"], seen["failed"]
    assert not seen["refused"], f"the page tried the network: {seen['refused']}"
    assert all(url.startswith(LOCAL) for url in seen["requests"]), seen["requests"]
    assert [u for u in seen["requests"] if u.startswith("file:")] == [html.as_uri()], "report.html fetched another file"
    assert not seen["errors"], seen["errors"]


def test_show_code_keeps_the_code(reports):
    html, _ = reports["code"]
    with chromium_page(1280, 900) as page:
        seen = open_offline(page, html)
        assert page.locator(".jp-InputArea-editor").count() >= 5
        text = page.locator("main").inner_text()
        assert "from chromaviz" in text and "embedded_page(" in text
        assert page.frame(name="chromaviz-run") is not None
    assert not seen["failed"] and not seen["refused"], seen

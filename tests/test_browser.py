"""The explorer in a real JupyterLab, and the exported page, driven in headless Chromium.

Screenshots go to ``test-artifacts/``. Select with ``-m browser``, skip with ``-m "not browser"``.
Playwright's CSS selectors reach into the shadow roots bokeh renders into.
"""

import re
import time

import pytest

from browser_support import (
    ROOT, browser_available, chromium_page, collapse_left_sidebar, jupyter_lab, open_notebook, run_all_cells, screenshot,
    write_notebook,
)

reason = browser_available()
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.skipif(reason is not None, reason=reason or "")]

EXPLORER = ".chromaviz-explorer"
BUSY_CELL = {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
             "source": "import time\nprint('kernel busy')\ntime.sleep(600)"}


def caption(page) -> str:
    return page.inner_text(f"{EXPLORER} .chromaviz-caption >> nth=0")


def status(page) -> str:
    return page.inner_text(f"{EXPLORER} .chromaviz-status")


def x0_src(page) -> str:
    """The x̂0 image of run A (the second image of its frame)."""
    return page.eval_on_selector_all(f"{EXPLORER} .chromaviz-run img", "els => els.length > 1 ? els[1].src : ''")


def progress(page) -> float:
    width = page.eval_on_selector(f"{EXPLORER} .progress-bar", "e => e.style.width") or "0%"
    return float(width.rstrip("%") or 0)


def wait_until(page, predicate, timeout=120.0, every=0.05):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        page.wait_for_timeout(every * 1000)
    raise AssertionError("timed out")


def scrub(page, key: str, times: int) -> None:
    page.locator(f"{EXPLORER} .chromaviz-scrubber .noUi-handle").focus()
    for _ in range(times):
        page.keyboard.press(key)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    write_notebook(ROOT / "notebooks" / "explorer.ipynb", root / "explorer.ipynb", model_name="exemplars",
                   prompt="cat", second_prompt="moon", steps=40, size=128)
    busy = write_notebook(ROOT / "notebooks" / "explorer.ipynb", root / "busy.ipynb", model_name="exemplars",
                          prompt="cat", second_prompt="moon", steps=30, size=32, autorun=True)
    import json

    nb = json.loads(busy.read_text())
    nb["cells"].append(BUSY_CELL)
    busy.write_text(json.dumps(nb))
    with jupyter_lab(root) as server:
        yield server


def test_explorer_live_run_scrub_switch_errors_stop(lab):
    url, token = lab
    with chromium_page(1280, 800) as page:
        sent = []  # sizes of the messages the page sends to the server
        page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(len(payload))))
        open_notebook(page, url, token, "explorer.ipynb")
        collapse_left_sidebar(page)
        run_all_cells(page)
        try:
            page.wait_for_selector(f"{EXPLORER} button.widget-button:text-is('Run')", timeout=180_000)
        finally:
            screenshot(page, "explorer-1-loaded")

        # Run: the progress bar moves and the x̂0 frame changes while sampling. Every width the bar
        # takes and every x̂0 image it shows are noted in the page, since a fast run can end
        # between two polls from here.
        page.eval_on_selector(f"{EXPLORER} .progress-bar", """bar => {
            window.__progress_widths = [];
            new MutationObserver(() => window.__progress_widths.push(parseFloat(bar.style.width) || 0))
                .observe(bar, {attributes: true, attributeFilter: ['style']});
        }""")
        page.eval_on_selector_all(f"{EXPLORER} .chromaviz-run img", """imgs => {
            const panel = imgs[1].getRootNode();  // the run's panel, inside bokeh's shadow root
            window.__x0_sources = [];
            new MutationObserver(() => window.__x0_sources.push(panel.querySelectorAll('img')[1].src))
                .observe(panel, {attributes: true, attributeFilter: ['src'], subtree: true});
        }""")
        sent_before = len(sent)
        page.click(f"{EXPLORER} button.widget-button:text-is('Run')")
        seen_previews, seen_progress, shots = set(), set(), []

        def finished():
            seen_previews.add(x0_src(page))
            seen_progress.update(page.evaluate("window.__progress_widths"))
            seen_previews.update(page.evaluate("window.__x0_sources"))
            seen_progress.add(now := progress(page))
            if 20 < now < 80 and not shots:
                shots.append(screenshot(page, "explorer-2-running"))
            return "done" in status(page)

        wait_until(page, finished, timeout=240)
        assert any(0 < p < 100 for p in seen_progress), f"progress never seen mid-run: {sorted(seen_progress)}"
        assert len(seen_previews - {""}) >= 3, "the x̂0 frame did not change while sampling"
        wait_until(page, lambda: re.search(r"step 40/40 .* prompt 'cat'", caption(page)), timeout=30)
        # The browser sends the kernel what changed there (the scrubber following the frames), not
        # the frames and columns the kernel sent it: those echoes were megabytes per run.
        assert sum(sent[sent_before:]) < 100_000, f"the page sent {sum(sent[sent_before:])} bytes during the run"

        # One screen at 1280×800: with the explorer scrolled to the top of the notebook's view, the
        # scrubber, x̂0, the bands and the chromatography plot are all inside the window.
        page.locator(EXPLORER).evaluate("e => e.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(300)
        for what in (".chromaviz-scrubber", ".chromaviz-run img >> nth=1", ".chromaviz-run img >> nth=2",
                     ".chromaviz-chromatography"):
            box = page.locator(f"{EXPLORER} {what}").bounding_box()
            assert box and box["y"] >= 0 and box["y"] + box["height"] <= 800, (what, box)
        page.screenshot(path=str(ROOT / "test-artifacts" / "explorer-1280x800.png"))

        # Scrub back with the keyboard on the step slider: images and caption follow, in the browser.
        before = x0_src(page)
        scrub(page, "ArrowLeft", 10)
        wait_until(page, lambda: "step 30/40" in caption(page), timeout=20)
        assert x0_src(page) != before
        assert x0_src(page).startswith("data:image/webp;base64,")  # every step is drawn once the run has ended
        screenshot(page, "explorer-4-scrubbed")

        # A prompt the model refuses, then a prompt schedule that does not parse: the message is in
        # the widget and the previous run stays on screen.
        prompt_a = page.locator(f"{EXPLORER} .widget-text:has(label:text-is('prompt A')) input")
        for text, message in (("a dog", "names none of the built-in photographs"), ("[cat:moon", "error:")):
            prompt_a.fill(text)
            page.wait_for_timeout(500)
            page.click(f"{EXPLORER} button.widget-button:text-is('Run')")
            wait_until(page, lambda: message in status(page), timeout=30)
            assert "step 30/40" in caption(page)
        screenshot(page, "explorer-5-error")
        prompt_a.fill("cat")
        page.wait_for_timeout(500)

        # Flip the prompt switch (default: hand over to 'moon' at the birth of level 8) and run again.
        page.click(f"{EXPLORER} button:text-is('switch A → B')")
        page.click(f"{EXPLORER} button.widget-button:text-is('Run')")
        wait_until(page, lambda: "done" in status(page) and "step 40/40" in caption(page), timeout=240)
        assert "prompt 'moon'" in caption(page)

        # Stop mid-run (a long run: 200 steps): the partial run is kept and stays scrubbable.
        page.locator(f"{EXPLORER} .chromaviz-steps .noUi-handle").focus()
        page.keyboard.press("End")
        page.wait_for_function("() => document.querySelector('.chromaviz-steps .widget-readout').textContent.trim() === '200'",
                               timeout=10_000)
        page.click(f"{EXPLORER} button.widget-button:text-is('Run')")
        page.wait_for_selector(f"{EXPLORER} button.widget-button:text-is('Stop'):not([disabled])", timeout=30_000)
        wait_until(page, lambda: progress(page) > 0, timeout=60, every=0.02)
        page.click(f"{EXPLORER} button.widget-button:text-is('Stop')")
        wait_until(page, lambda: "cancelled" in status(page), timeout=60)
        kept = int(re.search(r"run A: cancelled \((\d+) steps\)", status(page)).group(1))
        assert 0 < kept < 200
        wait_until(page, lambda: f"step {kept}/200" in caption(page), timeout=20)
        screenshot(page, "explorer-6-stopped")


def test_scrubbing_needs_no_kernel(lab):
    """The kernel is busy (then interrupted) after the run: scrubbing still works, in the browser."""
    url, token = lab
    with chromium_page(1920, 1080) as page:
        open_notebook(page, url, token, "busy.ipynb")
        collapse_left_sidebar(page)
        run_all_cells(page)
        page.wait_for_selector("text=kernel busy", timeout=300_000)
        wait_until(page, lambda: "step 30/30" in caption(page), timeout=60)
        assert page.query_selector('.jp-Notebook-ExecutionIndicator[data-status="busy"]')
        page.locator(EXPLORER).evaluate("e => e.scrollIntoView({block: 'start'})")
        page.screenshot(path=str(ROOT / "test-artifacts" / "explorer-1920x1080.png"))
        before = x0_src(page)
        scrub(page, "ArrowLeft", 5)
        wait_until(page, lambda: "step 25/30" in caption(page), timeout=10)
        assert x0_src(page) != before
        page.click('.jp-NotebookPanel-toolbar [data-command="notebook:interrupt-kernel"]')
        wait_until(page, lambda: page.query_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]'), timeout=30)
        scrub(page, "Home", 1)
        wait_until(page, lambda: "step 1/30" in caption(page), timeout=10)


def test_exported_page_scrubs_without_a_kernel(tmp_path):
    from chromaviz import ExemplarMixture, sample
    from chromaviz.widgets import export_html

    model = ExemplarMixture(size=32)
    a = sample(model, "[cat:moon:0.5]", num_inference_steps=12)
    b = sample(model, "cat", num_inference_steps=12, scheduler="euler")
    path = export_html({"A": a, "B": b}, model, tmp_path / "run.html")
    with chromium_page(1280, 900) as page:
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(path.as_uri())
        page.wait_for_selector(".chromaviz-caption", timeout=30_000)
        captions = lambda: page.eval_on_selector_all(".chromaviz-caption", "els => els.map(e => e.textContent)")  # noqa: E731
        assert len(captions()) == 2 and all("step 1/12" in c for c in captions())  # runs A and B, one scrubber
        page.locator(".chromaviz-scrubber .noUi-handle").focus()
        for _ in range(7):
            page.keyboard.press("ArrowRight")
        wait_until(page, lambda: all("step 8/12" in c for c in captions()), timeout=10)
        assert "prompt 'moon'" in captions()[0] and "prompt 'cat'" in captions()[1]
        cursor = lambda: page.evaluate("""() => { for (const m of Bokeh.documents[0].all_models)
                                      if (m.constructor.__name__ === 'Span') return m.location; }""")  # noqa: E731
        assert cursor() == 7
        page.click(".chromaviz-run button:text-is('log-SNR λ')")
        wait_until(page, lambda: cursor() == pytest.approx(a.steps[7].log_snr, rel=1e-6), timeout=10)
        page.click(".chromaviz-run button:text-is('▶ Play')")
        wait_until(page, lambda: "step 8/12" not in captions()[0], timeout=10)
        screenshot(page, "export-scrubbed")
        assert not errors, errors

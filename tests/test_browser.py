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


def scrub(page, key: str, times: int, where: str = EXPLORER) -> None:
    page.locator(f"{where} .chromaviz-scrubber .noUi-handle").focus()
    for _ in range(times):
        page.keyboard.press(key)


MEASURE_JS = """
() => {
  // What a projector shows: type sizes, image sizes and the level colours' contrast, read in the page.
  const px = (el) => el ? parseFloat(getComputedStyle(el).fontSize) : null;
  const deep = (root, sel, out = []) => {  // querySelectorAll into bokeh's shadow roots
    for (const el of root.querySelectorAll('*')) {
      if (el.matches(sel)) out.push(el);
      if (el.shadowRoot) deep(el.shadowRoot, sel, out);
    }
    return out;
  };
  const lum = (rgb) => {
    const c = rgb.match(/[0-9.]+/g).slice(0, 3).map((v) => v / 255).map((v) => v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  };
  const contrast = (rgb) => 1.05 / (lum(rgb) + 0.05);
  const text = [...deep(document, '.chromaviz-caption, .chromaviz-band-labels span, .chromaviz-how-to-read, .chromaviz-title'),
                ...document.querySelectorAll('.chromaviz-explorer .widget-label, .chromaviz-status, .chromaviz-explorer button')]
    .filter((el) => el.offsetParent !== null || el.getClientRects().length);
  const swatches = deep(document, '.chromaviz-band-labels b');
  const imgs = deep(document, '.chromaviz-frame img[data-key=x0]').filter((el) => el.getClientRects().length);
  const doc = Bokeh.documents[Bokeh.documents.length - 1];
  const models = [...doc.all_models];
  const ticks = models.filter((m) => m.major_label_text_font_size !== undefined).map((m) => parseFloat(m.major_label_text_font_size));
  const legend = models.filter((m) => m.constructor.__name__ === 'LegendItem').map((m) => m.label?.value ?? m.label);
  const plot = deep(document, '.chromaviz-chromatography').filter((el) => el.getClientRects().length)[0];
  return {
    min_text_px: Math.min(...text.map(px)), text_count: text.length,
    x0_width: Math.min(...imgs.map((el) => el.getBoundingClientRect().width)),
    min_tick_px: Math.min(...ticks), legend,
    contrasts: swatches.map((el) => contrast(getComputedStyle(el).color)),
    plot: plot ? plot.getBoundingClientRect().toJSON() : null,
  };
}
"""


def measure(page) -> dict:
    return page.evaluate(MEASURE_JS)


def panels(page, where: str = EXPLORER) -> list:
    """The bounding boxes of the runs' frames shown (run A first)."""
    return [b for b in (page.locator(f"{where} .chromaviz-frame >> nth={k}").bounding_box() for k in range(2)) if b]


def x_range(page) -> tuple[float, float]:
    """The chromatography plot's x range (start, end)."""
    return tuple(page.evaluate("""() => { const doc = Bokeh.documents[Bokeh.documents.length - 1];
        for (const m of doc.all_models) if (m.constructor.__name__ === 'Figure' && m.title?.text?.startsWith('chromatography'))
          return [m.x_range.start, m.x_range.end]; }"""))


KEYS = ("m² law", "latest each band can form", "replay (consistency check)", "measured, run A")


def check_projection(page, width: int) -> dict:
    """Sizes and contrast as measured in the page: text ≥ 16 px, x̂0 ≥ 256 px, level colours ≥ 3:1,
    the plot's ticks ≥ 16 px, a key for every line style, band and marker."""
    found = measure(page)
    print(f"{width}px window:", {k: v for k, v in found.items() if k != "legend"})
    assert found["min_text_px"] >= 16 and found["text_count"] > 10, found
    assert found["x0_width"] >= 256, found
    assert found["min_tick_px"] >= 16, found
    assert found["contrasts"] and min(found["contrasts"]) >= 3, found
    assert all(key in found["legend"] for key in KEYS) and any("expected" in k for k in found["legend"]), found["legend"]
    return found


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
        yield (*server, root)


def test_explorer_live_run_scrub_switch_errors_stop(lab):
    url, token, lab_root = lab
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
        # between two polls from here; each change's previous width too, since several changes
        # applied in one task reach the observer together.
        page.eval_on_selector(f"{EXPLORER} .progress-bar", """bar => {
            window.__progress_widths = [];
            const width = style => parseFloat((/width:\\s*([\\d.]+)%/.exec(style || '') || [0, 0])[1]);
            new MutationObserver(records => {
                for (const r of records) window.__progress_widths.push(width(r.oldValue));
                window.__progress_widths.push(parseFloat(bar.style.width) || 0);
            }).observe(bar, {attributes: true, attributeFilter: ['style'], attributeOldValue: true});
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
        # Refreshes come as often as their cost allows (a 128×128 frame costs the run ~0.2 s here), and
        # the first step is drawn at once: a frame while sampling, then the run's last one.
        assert len(seen_previews - {""}) >= 1, "no x̂0 frame was shown while sampling"
        wait_until(page, lambda: re.search(r"step 40/40 .* prompt 'cat'", caption(page)), timeout=30)
        seen_previews.update(page.evaluate("window.__x0_sources"))
        assert len(seen_previews - {""}) >= 2, "the x̂0 frame did not change during the run"
        # The browser sends the kernel what changed there (the scrubber following the frames), not
        # the frames and columns the kernel sent it: those echoes were megabytes per run.
        assert sum(sent[sent_before:]) < 100_000, f"the page sent {sum(sent[sent_before:])} bytes during the run"

        # One screen at 1280×800, sized for a projector: with the explorer scrolled to the top of the
        # notebook's view, the scrubber, x_t, x̂0, the band tiles and the chromatography plot beside
        # them are inside the window, above JupyterLab's status bar.
        page.locator(EXPLORER).evaluate("e => e.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(300)
        page.screenshot(path=str(ROOT / "test-artifacts" / "explorer-1280x800.png"))
        bottom = page.locator("#jp-main-statusbar").bounding_box()["y"]
        for what in (".chromaviz-scrubber", ".chromaviz-run img >> nth=0", ".chromaviz-run img >> nth=1",
                     ".chromaviz-frame img[data-key=bands] >> nth=0"):
            box = page.locator(f"{EXPLORER} {what}").bounding_box()
            assert box and box["y"] >= 0 and box["y"] + box["height"] <= bottom and box["x"] + box["width"] <= 1280, (what, box)
        box = page.locator(f"{EXPLORER} .chromaviz-chromatography").bounding_box()  # beside x̂0, its top half on screen
        assert box["x"] + box["width"] <= 1280 and 0 <= box["y"] <= 800 - box["height"] / 2, box
        found = check_projection(page, 1280)
        assert found["plot"]["width"] >= 500  # beside the images, the width they leave

        # Scrub back with the keyboard on the step slider: images and caption follow, in the browser;
        # the slider's number is the caption's, and Home, End, PageUp and PageDown go where they say.
        before = x0_src(page)
        scrub(page, "ArrowLeft", 10)
        wait_until(page, lambda: "step 30/40" in caption(page), timeout=20)
        assert x0_src(page) != before
        assert x0_src(page).startswith("data:image/webp;base64,")  # every step is drawn once the run has ended
        readout = lambda: page.inner_text(f"{EXPLORER} .chromaviz-scrubber .bk-slider-title").strip().rstrip(":")  # noqa: E731
        assert readout() == "step 30 of 40"
        for key, expected in (("Home", 1), ("PageUp", 5), ("ArrowRight", 6), ("End", 40), ("PageDown", 36)):
            scrub(page, key, 1)
            wait_until(page, lambda: f"step {expected}/40" in caption(page), timeout=10)
            assert readout() == f"step {expected} of 40", (key, readout())
        scrub(page, "ArrowLeft", 6)
        wait_until(page, lambda: "step 30/40" in caption(page), timeout=10)
        # The axis buttons: the timestep axis runs from noisy (high t, left) to clean, the range fitted.
        page.click(f"{EXPLORER} button:text-is('timestep t')")
        wait_until(page, lambda: x_range(page)[0] > 500 > x_range(page)[1], timeout=10)
        page.click(f"{EXPLORER} button:text-is('step')")
        wait_until(page, lambda: x_range(page)[0] < 1 and 40 < x_range(page)[1] < 42, timeout=10)
        screenshot(page, "explorer-4-scrubbed")

        # Export: the page is written and offered for download; its axis buttons, title and key work there.
        page.click(f"{EXPLORER} button.widget-button:text-is('Export')")
        link = page.wait_for_selector(f"{EXPLORER} a.chromaviz-download", timeout=60_000)
        exported = lab_root / link.get_attribute("download")
        assert exported.exists() and link.get_attribute("href").startswith("data:text/html;base64,")
        check_exported_page(exported, steps=40, browser=page.context.browser)

        # The notebook saved after the run holds no megabytes of BokehJS.
        page.keyboard.press("Control+s")
        page.wait_for_timeout(2000)
        assert (lab_root / "explorer.ipynb").stat().st_size < 300_000, (lab_root / "explorer.ipynb").stat().st_size

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

        # Flip the prompt switch (default: hand over to 'moon' at the birth of level 8) and run again,
        # with run B beside A: the same prompts without the switch. A and B stand side by side, and
        # run A's panel says where each band came from.
        page.click(f"{EXPLORER} button:text-is('switch A → B')")
        page.click(f"{EXPLORER} button:text-is('More settings')")  # run B's settings are folded away at first
        page.click(f"{EXPLORER} .widget-checkbox:has-text('run B beside A') input")
        page.select_option(f"{EXPLORER} .widget-dropdown:has(label:text-is('B differs by')) select",
                           label="same prompts without the switch")
        page.wait_for_timeout(500)
        page.click(f"{EXPLORER} button.widget-button:text-is('Run')")
        wait_until(page, lambda: "done" in status(page) and "step 40/40" in caption(page), timeout=300)
        assert "prompt 'moon'" in caption(page)
        page.wait_for_selector(f"{EXPLORER} .chromaviz-provenance", timeout=60_000)
        page.locator(EXPLORER).evaluate("e => e.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(500)
        a, b = panels(page)
        # side by side (the runs' titles may wrap to different heights): B right of A, level with it, on screen
        assert abs(a["y"] - b["y"]) < a["height"] / 4 and b["x"] >= a["x"] + a["width"] and b["x"] + b["width"] <= 1280, (a, b)
        screenshot(page, "explorer-3-side-by-side")
        page.click(f"{EXPLORER} .widget-checkbox:has-text('run B beside A') input")

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
    """The kernel is busy (then interrupted) after the run: scrubbing still works, in the browser; at
    1920×1080 the view grows with the window."""
    url, token, _ = lab
    with chromium_page(1920, 1080) as page:
        open_notebook(page, url, token, "busy.ipynb")
        collapse_left_sidebar(page)
        run_all_cells(page)
        page.wait_for_selector("text=kernel busy", timeout=300_000)
        wait_until(page, lambda: "step 30/30" in caption(page), timeout=60)
        assert page.query_selector('.jp-Notebook-ExecutionIndicator[data-status="busy"]')
        page.locator(EXPLORER).evaluate("e => e.scrollIntoView({block: 'start'})")
        page.screenshot(path=str(ROOT / "test-artifacts" / "explorer-1920x1080.png"))
        found = check_projection(page, 1920)
        assert found["x0_width"] > 300 and found["plot"]["width"] > 800  # wider than at 1280: it scales
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
        assert cursor() == 8  # step 8, as the captions count
        page.click(".chromaviz-run button:text-is('log-SNR λ')")
        wait_until(page, lambda: cursor() == pytest.approx(a.steps[7].log_snr, rel=1e-6), timeout=10)
        finite = [s.log_snr for s in (*a.steps, *b.steps) if abs(s.log_snr) < float("inf")]
        low, high = x_range(page)
        assert low < min(finite) and max(finite) < high < max(finite) + 1  # fitted to the new axis
        page.select_option(".chromaviz-run .chromaviz-speed select", label="40 steps/s")
        page.click(".chromaviz-run button:text-is('▶ Play')")
        wait_until(page, lambda: "step 8/12" not in captions()[0], timeout=10)
        screenshot(page, "export-scrubbed")
        assert not errors, errors


def check_exported_page(path, steps: int, browser) -> None:
    """The explorer's exported page at 1280×800 and 1920×1080 (new pages of ``browser``): the title,
    the key, the sizes, the keys and the axis buttons work there as in the explorer."""
    from contextlib import closing

    for width, height in ((1280, 800), (1920, 1080)):
        with closing(browser.new_page(viewport={"width": width, "height": height})) as page:
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(path.as_uri())
            page.wait_for_selector(".chromaviz-caption", timeout=30_000)
            page.wait_for_timeout(500)
            assert page.inner_text(".chromaviz-header h2").startswith("chromaviz")
            found = measure(page)
            assert found["min_text_px"] >= 16 and found["x0_width"] >= 256 and min(found["contrasts"]) >= 3, found
            assert all(key in found["legend"] for key in KEYS), found["legend"]
            scrub(page, "Home", 1, where=".chromaviz-run")
            wait_until(page, lambda: f"step 1/{steps}" in page.inner_text(".chromaviz-caption >> nth=0"), timeout=10)
            scrub(page, "End", 1, where=".chromaviz-run")
            wait_until(page, lambda: f"step {steps}/{steps}" in page.inner_text(".chromaviz-caption >> nth=0"), timeout=10)
            page.click(".chromaviz-run button:text-is('timestep t')")
            wait_until(page, lambda: x_range(page)[0] > 500 > x_range(page)[1], timeout=10)
            page.click(".chromaviz-run button:text-is('log-SNR λ')")
            wait_until(page, lambda: x_range(page)[1] < 30 and x_range(page)[0] < 0, timeout=10)
            page.screenshot(path=str(ROOT / "test-artifacts" / f"explorer-export-{width}x{height}.png"))
            assert not errors, errors


def test_chromaviz_explore_opens_the_app_runs_scrubs_and_exports(tmp_path):
    """``chromaviz explore``: the explorer alone as a Voilà app on loopback, with the default model and
    no code: it runs, scrubs and exports there."""
    import os
    import signal
    import subprocess
    import sys
    import urllib.request

    from browser_support import _free_port

    port = _free_port()
    env = {**os.environ, "BROWSER": "true"}
    server = subprocess.Popen([sys.executable, "-m", "chromaviz.cli", "explore", "--no-browser", f"--port={port}"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    try:
        assert f"http://127.0.0.1:{port}/" in server.stdout.readline()  # one line: where it is
        url = f"http://127.0.0.1:{port}/"
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(url, timeout=5)
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, "the app did not start"
                time.sleep(0.5)
        with chromium_page(1280, 800) as page:
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url, timeout=180_000)
            page.wait_for_selector(f"{EXPLORER} button.widget-button:text-is('Run')", timeout=180_000)
            assert "from chromaviz" not in page.inner_text("body")  # no code on screen
            loaded = page.evaluate("""() => performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))
                                       .reduce((sum, e) => sum + (e.decodedBodySize || 0), 0)""")
            print(f"chromaviz explore: the app's page and what it loaded: {loaded / 1e6:.1f} MB")
            page.click(f"{EXPLORER} button.widget-button:text-is('Run')")
            wait_until(page, lambda: "done" in status(page), timeout=240)
            wait_until(page, lambda: re.search(r"step (\d+)/\1 ", caption(page)), timeout=60)  # every step drawn
            check_projection(page, 1280)
            n = int(re.search(r"step (\d+)/(\d+)", caption(page)).group(2))
            scrub(page, "Home", 1)
            wait_until(page, lambda: f"step 1/{n}" in caption(page), timeout=10)
            scrub(page, "End", 1)
            wait_until(page, lambda: f"step {n}/{n}" in caption(page), timeout=10)
            page.click(f"{EXPLORER} button.widget-button:text-is('Export')")
            link = page.wait_for_selector(f"{EXPLORER} a.chromaviz-download", timeout=60_000)
            assert link.get_attribute("href").startswith("data:text/html;base64,")
            screenshot(page, "explore-app-1280x800")
            assert not errors, errors
    finally:
        server.send_signal(signal.SIGTERM)  # as Ctrl-C: the app and its kernels stop
        server.wait(30)

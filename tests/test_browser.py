"""The explorer in a real JupyterLab, and the exported page, driven in headless Chromium.

Screenshots go to ``test-artifacts/``. Select with ``-m browser``, skip with ``-m "not browser"``.
"""

import re
import time

import pytest

from browser_support import (
    ROOT, browser_available, chromium_page, jupyter_lab, open_notebook, run_all_cells, screenshot, write_notebook,
)

reason = browser_available()
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.skipif(reason is not None, reason=reason or "")]

EXPLORER = ".chromaviz-explorer"


def caption(page) -> str:
    return page.inner_text(f"{EXPLORER} .widget-html:has-text('prompt') >> nth=-1")


def status(page) -> str:
    return page.evaluate("""sel => { const els = [...document.querySelectorAll(sel + ' .widget-html')];
                            return els.map(e => e.innerText).join('\\n'); }""", EXPLORER)


def images(page) -> list[str]:
    return page.eval_on_selector_all(f"{EXPLORER} img", "els => els.map(e => e.src)")


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


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    write_notebook(ROOT / "notebooks" / "explorer.ipynb", root / "explorer.ipynb", model_name="exemplars",
                   prompt="cat", second_prompt="moon", steps=40, size=128)
    with jupyter_lab(root) as server:
        yield server


def test_explorer_live_run_scrub_switch_stop(lab):
    url, token = lab
    with chromium_page() as page:
        open_notebook(page, url, token, "explorer.ipynb")
        run_all_cells(page)
        try:
            page.wait_for_selector(f"{EXPLORER} button.widget-button:text-is('Run')", timeout=180_000)
        finally:
            screenshot(page, "explorer-1-loaded")

        # Run: the progress bar moves and the x̂0 preview changes while sampling.
        page.click(f"{EXPLORER} button.widget-button:text-is('Run')")
        seen_previews, seen_progress, shots = set(), set(), []

        def finished():
            seen_previews.add(images(page)[1])
            seen_progress.add(now := progress(page))
            if 20 < now < 80 and not shots:
                shots.append(screenshot(page, "explorer-2-running"))
            return "done" in status(page)

        wait_until(page, finished, timeout=180)
        assert any(0 < p < 100 for p in seen_progress), f"progress never seen mid-run: {sorted(seen_progress)}"
        assert len(seen_previews) >= 3, "the x̂0 preview did not change while sampling"
        assert re.search(r"step 40/40 .* prompt 'cat'", caption(page))
        screenshot(page, "explorer-3-done")

        # Scrub back with the keyboard on the step slider: images and caption follow.
        before = images(page)[1]
        page.locator(f"{EXPLORER} .chromaviz-scrub .noUi-handle").focus()
        for _ in range(10):
            page.keyboard.press("ArrowLeft")
        wait_until(page, lambda: "step 30/40" in caption(page), timeout=20)
        assert images(page)[1] != before
        screenshot(page, "explorer-4-scrubbed")

        # Flip the prompt switch (default: hand over to 'moon' at the birth of level 8) and run again.
        page.click(f"{EXPLORER} button:text-is('switch A → B')")
        assert "mod-active" in page.get_attribute(f"{EXPLORER} button:text-is('switch A → B')", "class")
        page.click(f"{EXPLORER} button.widget-button:text-is('Run')")
        wait_until(page, lambda: "done" in status(page) and "step 40/40" in caption(page), timeout=180)
        assert "prompt 'moon'" in caption(page)
        screenshot(page, "explorer-5-switched")

        # Stop mid-run (a long run: 200 steps, set with the keyboard on the steps slider):
        # the partial run is kept and stays scrubbable.
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
        assert f"step {kept}/200" in caption(page)
        screenshot(page, "explorer-6-stopped")


def test_exported_page_scrubs_without_a_kernel(tmp_path):
    from chromaviz import ExemplarMixture, sample
    from widgets import export_html
    from widgets.imaging import data_uri, png_bytes, sample_rgb

    model = ExemplarMixture(size=32)
    traj = sample(model, "[cat:moon:0.5]", num_steps=12)
    path = export_html(traj, model, tmp_path / "run.html")
    with chromium_page(1000, 900) as page:
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(path.as_uri())
        page.wait_for_selector(".chromaviz-caption", timeout=30_000)
        assert "step 1/12" in page.inner_text(".chromaviz-caption")
        page.locator(".noUi-handle").focus()
        for _ in range(7):
            page.keyboard.press("ArrowRight")
        wait_until(page, lambda: "step 8/12" in page.inner_text(".chromaviz-caption"), timeout=10)
        assert "prompt 'moon'" in page.inner_text(".chromaviz-caption")
        expected = data_uri(png_bytes(sample_rgb(traj.steps[7].x0[0], model.to_rgb)))
        assert expected in page.eval_on_selector_all("img", "els => els.map(e => e.src)")
        cursor = page.evaluate("""() => { for (const m of Bokeh.documents[0].all_models)
                                      if (m.constructor.__name__ === 'Span') return m.location; }""")
        assert cursor == 7
        screenshot(page, "export-scrubbed")
        assert not errors, errors

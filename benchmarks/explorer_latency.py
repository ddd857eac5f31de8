"""The explorer in a real browser: scrub latency, live preview rate, and what the live UI costs.

Starts JupyterLab on loopback and drives headless Chromium (Debian's, at /usr/bin/chromium, or
$CHROMAVIZ_CHROMIUM). Prints one table:

- scrub latency: a key press on the step slider until the new x̂0 image has loaded and a frame
  has been painted, in JupyterLab (through the kernel) and in the exported standalone page;
- live sampling: the sampling time of the explorer's default model with the live UI attached,
  against the same run in the explorer's worker thread with no UI (the UI's own cost) and
  against ``chromaviz.sample`` on the kernel's main thread, alternating; preview updates per
  second. (With torch's 2 CPU threads, sampling in any secondary thread is slower here than on
  the main thread; the third row shows that separately from the UI's cost.)

    python benchmarks/explorer_latency.py [--trials 40] [--steps 50] [--size 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from browser_support import (  # noqa: E402
    ROOT, browser_available, chromium_page, jupyter_lab, open_notebook, run_all_cells, write_notebook,
)

MEASURE_JS = """
img => {
  const out = []; let t0 = null;
  document.addEventListener('keydown', () => { t0 = performance.now(); }, true);
  img.addEventListener('load', () => {
    if (t0 === null) return;
    const start = t0; t0 = null;
    requestAnimationFrame(() => out.push(performance.now() - start));
  });
  window.__chromaviz_latencies = out;
}
"""

EXPORT_JS = """
() => {
  // Bokeh renders the frame inside nested shadow roots: search them all, every animation frame.
  const deep = (root) => { const hit = root.querySelector('.chromaviz-caption'); if (hit) return hit;
    for (const el of root.querySelectorAll('*')) if (el.shadowRoot) { const h = deep(el.shadowRoot); if (h) return h; }
    return null; };
  window.__chromaviz_latencies = []; let t0 = null, last = null;
  document.addEventListener('keydown', () => { t0 = performance.now(); }, true);
  const poll = () => {
    const cap = deep(document);
    if (cap && cap.textContent !== last) {
      last = cap.textContent;
      if (t0 !== null) { const start = t0; t0 = null;
        const imgs = [...cap.parentNode.querySelectorAll('img')];
        Promise.all(imgs.map(i => i.decode())).then(() =>
          requestAnimationFrame(() => window.__chromaviz_latencies.push(performance.now() - start))); }
    }
    requestAnimationFrame(poll);
  };
  poll();
}
"""

LIVE_CELL = """
import json, time
from chromaviz import sample
from widgets.worker import PromptSwitch, RunSettings, SamplingJob

def worker_alone():
    done = {{}}
    runs = [("A", RunSettings(num_steps=steps, size=size, seed=seed), PromptSwitch(prompt))]
    SamplingJob(model, runs, lambda *a: None, lambda name, traj, err: done.update(traj=traj)).start().join()
    return done["traj"].metadata["elapsed_seconds"]

times = {{"main": [], "worker": [], "live": []}}
updates = []
for r in range({rounds}):
    for mode in (("main", "worker", "live") if r % 2 == 0 else ("live", "worker", "main")):
        time.sleep(1.0)  # let the browser finish drawing the previous run before the next one starts
        if mode == "main":
            times["main"].append(sample(model, prompt, num_steps=steps, height=size, width=size, seed=seed).metadata["elapsed_seconds"])
        elif mode == "worker":
            times["worker"].append(worker_alone())
        else:
            explorer.preview_updates = 0
            explorer.run(); explorer.wait()
            times["live"].append(explorer.trajectories["A"].metadata["elapsed_seconds"])
            updates.append(explorer.preview_updates - 1)  # the last redraw comes after sampling ended
print("BENCH" + json.dumps({{**times, "updates": updates}}))
"""


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def scrub(page, handle, img, trials: int) -> list[float]:
    page.evaluate(MEASURE_JS, img)
    handle.focus()
    for i in range(trials):
        page.keyboard.press("ArrowLeft" if (i // 10) % 2 == 0 else "ArrowRight")
        page.wait_for_timeout(250)
    return page.evaluate("() => window.__chromaviz_latencies")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if (reason := browser_available()) is not None:
        raise SystemExit(f"cannot run: {reason}")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_notebook(ROOT / "notebooks" / "explorer.ipynb", root / "explorer.ipynb", steps=args.steps, size=args.size,
                       autorun=True, export_path=str(root / "run.html"))
        nb = json.loads((root / "explorer.ipynb").read_text())
        nb["cells"].append({"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                            "source": LIVE_CELL.format(rounds=args.rounds)})
        (root / "explorer.ipynb").write_text(json.dumps(nb))
        with jupyter_lab(root) as (url, token), chromium_page() as page:
            open_notebook(page, url, token, "explorer.ipynb")
            run_all_cells(page)
            page.wait_for_selector("text=/^BENCH/", timeout=600_000)
            live = json.loads(page.inner_text("text=/^BENCH/")[len("BENCH"):])
            explorer = ".chromaviz-explorer"
            handle = page.locator(f"{explorer} .chromaviz-scrub .noUi-handle")
            img = page.locator(f"{explorer} img").nth(1).element_handle()
            lab = scrub(page, handle, img, args.trials)
        with chromium_page(1000, 900) as page:
            page.goto((root / "run.html").as_uri())
            page.wait_for_selector(".chromaviz-caption", timeout=30_000)
            handle = page.locator(".noUi-handle")
            page.evaluate(EXPORT_JS)
            handle.focus()
            for i in range(args.trials):
                page.keyboard.press("ArrowRight" if (i // 10) % 2 == 0 else "ArrowLeft")
                page.wait_for_timeout(150)
            export = page.evaluate("() => window.__chromaviz_latencies")

    main_t, worker_t, live_t = (statistics.median(live[k]) for k in ("main", "worker", "live"))
    rate = [u / t for u, t in zip(live["updates"], live["live"])]
    n = len(live["live"])
    print(f"explorer default model (exemplar mixture), {args.steps} steps, {args.size}×{args.size}, headless Chromium\n")
    print(f"{'measure':52s} {'median':>9s} {'p95':>9s} {'n':>4s}")
    print(f"{'scrub latency, JupyterLab (ms)':52s} {statistics.median(lab):9.1f} {percentile(lab, 0.95):9.1f} {len(lab):4d}")
    print(f"{'scrub latency, exported HTML (ms)':52s} {statistics.median(export):9.1f} {percentile(export, 0.95):9.1f} {len(export):4d}")
    print(f"{'sampling alone, kernel main thread (s)':52s} {main_t:9.3f} {'':9s} {n:4d}")
    print(f"{'sampling alone, explorer worker thread, no UI (s)':52s} {worker_t:9.3f} {'':9s} {n:4d}")
    print(f"{'sampling with the live UI (s)':52s} {live_t:9.3f} {'':9s} {n:4d}")
    print(f"{'live UI / worker alone (the UI cost; target ≤ 1.05)':52s} {live_t / worker_t:9.3f}")
    print(f"{'live UI / main thread (UI + worker thread)':52s} {live_t / main_t:9.3f}")
    print(f"{'preview updates per second while sampling':52s} {statistics.median(rate):9.1f}")

if __name__ == "__main__":
    main()

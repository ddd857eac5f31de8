"""The explorer in a real browser: scrub latency, live preview rate, and what the live UI costs.

Starts JupyterLab on loopback and drives headless Chromium (Debian's, at /usr/bin/chromium, or
$CHROMAVIZ_CHROMIUM). Prints one table:

- scrub latency: a key press on the step slider until the new x̂0 image has loaded and a frame
  has been painted, in JupyterLab (through the kernel) and in the exported standalone page;
- live sampling: the sampling time of the explorer's default model with the live UI attached
  (previews, progress, measured points refreshed from the sampling thread), against
  ``chromaviz.sample`` alone in the same kernel, alternating; preview updates per second.

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
bare, live, updates = [], [], []
for r in range({rounds}):
    for mode in (("bare", "live") if r % 2 == 0 else ("live", "bare")):
        if mode == "bare":
            traj = sample(model, prompt, num_steps=steps, height=size, width=size, seed=seed)
            bare.append(traj.metadata["elapsed_seconds"])
        else:
            explorer.preview_updates = 0
            explorer.run(); explorer.wait()
            live.append(explorer.trajectories["A"].metadata["elapsed_seconds"])
            updates.append(explorer.preview_updates)
print("BENCH" + json.dumps({{"bare": bare, "live": live, "updates": updates}}))
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

    bare, live_t = statistics.median(live["bare"]), statistics.median(live["live"])
    rate = [u / t for u, t in zip(live["updates"], live["live"])]
    print(f"explorer default model (exemplar mixture), {args.steps} steps, {args.size}×{args.size}, headless Chromium\n")
    print(f"{'measure':48s} {'median':>9s} {'p95':>9s} {'n':>4s}")
    print(f"{'scrub latency, JupyterLab (ms)':48s} {statistics.median(lab):9.1f} {percentile(lab, 0.95):9.1f} {len(lab):4d}")
    print(f"{'scrub latency, exported HTML (ms)':48s} {statistics.median(export):9.1f} {percentile(export, 0.95):9.1f} {len(export):4d}")
    print(f"{'sampling alone (s)':48s} {bare:9.3f} {'':9s} {len(live['bare']):4d}")
    print(f"{'sampling with the live UI (s)':48s} {live_t:9.3f} {'':9s} {len(live['live']):4d}")
    print(f"{'live UI / alone (ratio, target ≤ 1.05)':48s} {live_t / bare:9.3f}")
    print(f"{'preview updates per second while sampling':48s} {statistics.median(rate):9.1f}")


if __name__ == "__main__":
    main()

"""The explorer in a real browser: scrub latency, live frames, what the live UI costs, page size.

Starts JupyterLab on loopback and drives headless Chromium (Debian's, at /usr/bin/chromium, or
$CHROMAVIZ_CHROMIUM). Prints one table:

- scrub latency: a key press on the step scrubber until the new x̂0 is loaded and the next frame
  begins (``requestAnimationFrame`` after the change: the frame that paints it), in JupyterLab and in
  the exported standalone page, at two step counts. ``img.decode()`` is not waited for: its promise
  settles only after a round trip to the compositor, a frame later, even for an image the page
  already holds decoded. Scrubbing runs in the browser in both (bokeh ``CustomJS`` over frames
  already there), so JupyterLab is measured with the kernel busy;
- live sampling: the same run with the live UI attached, in the explorer's worker thread without a
  UI, and as ``chromaviz.sample`` on the kernel's main thread, with the kernel's intra-op threads and
  with the worker's (one core fewer: 2 OpenMP threads on 2 cores that the browser shares wait at
  every barrier), alternating, each once the machine is idle again, medians; frames per
  second while sampling, the time from Run until every step is drawn, and whether every step is
  in the scrubber at the end; with ``--refresh-intervals``, the live UI at each interval between
  refreshes too (what a refresh costs the run: the browser shares the machine's cores); and what
  the page sent the kernel meanwhile (the browser's own changes only, no echo of the kernel's). The
  refresh interval adapts to what a refresh costs the run, measured in its step times
  (``chromaviz.widgets.explorer.RefreshPacer``); ``--refresh-intervals`` sets the shortest it may
  take, and the table prints the rate reached and the cost measured;
- the size of ``run.html`` of the default report's run (Gaussian model, 50 steps, 64×64, batch 8).

    python benchmarks/explorer_latency.py [--trials 40] [--steps 50 200] [--size 64] [--rounds 3] [--live-steps 200]
                                          [--model exemplars] [--refresh-intervals 0.1 0.2 0.5]
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
    ROOT, browser_available, chromium_page, collapse_left_sidebar, jupyter_lab, open_notebook, run_all_cells,
    write_notebook,
)

MEASURE_JS = """
caption => {
  // The frame is drawn inside bokeh's shadow root: watch it. After a key press, once the caption and
  // the x̂0 image have changed, wait until the new image is loaded (it is at once when the page has
  // it in its memory cache), then for the next animation frame: the frame that paints it.
  const out = []; let t0 = null;
  document.addEventListener('keydown', () => { t0 = performance.now(); }, true);
  new MutationObserver(() => {
    if (t0 === null) return;
    const start = t0; t0 = null;
    const img = caption.getRootNode().querySelectorAll('img')[1];
    const loaded = img.complete ? Promise.resolve() : new Promise((done) => img.addEventListener('load', done, {once: true}));
    loaded.then(() => requestAnimationFrame(() => out.push(performance.now() - start)));
  }).observe(caption.getRootNode(), {childList: true, subtree: true, characterData: true, attributes: true});
  window.__chromaviz_latencies = out;
}
"""

LIVE_CELL = """
import json, time, torch
from chromaviz import sample
from chromaviz.widgets.worker import SamplingJob, sampling_threads

def worker_alone():
    runs = explorer._plan_runs()
    SamplingJob(model, list(runs.values()), lambda *a: None, lambda state, traj, err: setattr(state, "trajectory", traj)).start().join()
    return runs["A"].trajectory.metadata["elapsed_seconds"]

def on_main(threads=None):
    s = explorer.settings()  # the explorer's own settings: the same run as the others
    kept = torch.get_num_threads()
    torch.set_num_threads(threads or kept)
    if threads is None:
        used.append(kept)
    try:
        return sample(model, explorer.prompt.value or None, num_inference_steps=s.steps, scheduler=s.scheduler,
                      guidance=s.guidance, seed=s.seed, height=s.size, width=s.size,
                      device=s.device or None).metadata["elapsed_seconds"]
    finally:
        torch.set_num_threads(kept)

def quiet(most=30.0):
    # wait until the machine is idle again (the browser done drawing the last run): 90 % of the cores'
    # time idle over half a second, at most `most` seconds (/proc/stat; elsewhere 2 s)
    def ticks():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return v[3] + v[4], sum(v)
    try:
        before = ticks()
    except OSError:
        time.sleep(2.0)
        return
    end = time.monotonic() + most
    while time.monotonic() < end:
        time.sleep(0.5)
        now = ticks()
        if (now[0] - before[0]) / max(1, now[1] - before[1]) > 0.9:
            return
        before = now

explorer.steps.value = steps = {live_steps}
intervals = {intervals}
used = []  # intra-op threads of each sample() on the main thread
lives = [f"live {{x}}" for x in intervals]
times = {{"main": [], "main_threads": [], "worker": [], "drawn": [], **{{k: [] for k in lives}}}}
rates, complete, reached, costs = {{k: [] for k in lives}}, [], {{k: [] for k in lives}}, {{k: [] for k in lives}}
modes = ["main", "main_threads", "worker", *lives]
for r in range({rounds}):
    for mode in (modes if r % 2 == 0 else modes[::-1]):
        quiet()  # the browser draws the previous run's frames after it ended: not during the next one
        if mode == "main":
            times["main"].append(on_main())
        elif mode == "main_threads":
            times["main_threads"].append(on_main(sampling_threads()))
        elif mode == "worker":
            times["worker"].append(worker_alone())
        else:
            explorer.preview_interval = float(mode.split()[1])
            explorer.preview_updates = 0
            start = time.perf_counter()
            explorer.run(); explorer.wait()
            elapsed = explorer.runs["A"].trajectory.metadata["elapsed_seconds"]
            times[mode].append(elapsed)
            rates[mode].append(explorer.refresh_rate or 0.0)  # refreshes per second the adaptive rate reached
            reached[mode].append(explorer.refresh_interval)
            costs[mode].append(explorer.refresh_cost)
            if mode == lives[0]:
                times["drawn"].append(time.perf_counter() - start)
                complete.append(len(explorer.view) == len(explorer.runs["A"].trajectory))
explorer.preview_interval = intervals[0]
explorer.steps.value = {short}
explorer.run(); explorer.wait()
print("BENCH" + json.dumps({{**times, "rates": rates, "complete": complete, "intervals": reached, "costs": costs,
                            "threads": [used, sampling_threads()]}}))
time.sleep(60)  # the kernel is busy while the browser scrubs
explorer.steps.value = {long}
explorer.run(); explorer.wait()
print("READY" + str(len(explorer.view)))
time.sleep(3600)
"""


def printed(page, marker: str) -> str:
    """Wait for a line starting with ``marker`` in the notebook's output, and return the rest of it.

    It is looked for in the output areas only, every 2 s: a text selector over the whole of
    JupyterLab would take the browser's main thread for ~10 ms at each look, while it samples."""
    find = """marker => {
      for (const out of document.querySelectorAll('.jp-OutputArea-output'))
        for (const line of out.textContent.split('\\n')) if (line.startsWith(marker)) return [line.slice(marker.length)];
      return null;
    }"""
    return page.wait_for_function(find, arg=marker, polling=2000, timeout=1_800_000).json_value()[0]


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def scrub(page, root: str, trials: int, pause_ms: int = 150) -> list[float]:
    caption = page.locator(f"{root} .chromaviz-caption").first.element_handle()
    page.evaluate(MEASURE_JS, caption)
    page.locator(f"{root} .chromaviz-scrubber .noUi-handle").focus()
    for i in range(trials):
        page.keyboard.press("ArrowLeft" if (i // 10) % 2 == 0 else "ArrowRight")
        page.wait_for_timeout(pause_ms)
    return page.evaluate("() => window.__chromaviz_latencies")


def export_pages(root: Path, steps: list[int], size: int) -> dict[str, Path]:
    from chromaviz import ExemplarMixture, GaussianPowerLaw, sample
    from chromaviz.widgets import export_html

    pages = {}
    model = ExemplarMixture(size=size)
    for n in steps:
        traj = sample(model, model.example_prompts[0], num_inference_steps=n, height=size, width=size)
        pages[f"exemplars-{n}"] = export_html(traj, model, root / f"run-{n}.html")
    gaussian = GaussianPowerLaw()
    traj = sample(gaussian, num_inference_steps=50, batch_size=8, height=64, width=64)
    pages["report"] = export_html(traj, gaussian, root / "report-run.html")
    return pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--steps", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", choices=("exemplars", "shapes", "gaussian"), default="exemplars",
                        help="built-in model of the explorer in JupyterLab (the exported pages use the exemplar mixture)")
    parser.add_argument("--live-steps", type=int, default=200,
                        help="steps of the live-sampling runs (200: about 0.4 s, four refreshes or more; at 50 "
                             "the exemplar model is done in 0.1 s, before the first refresh)")
    parser.add_argument("--refresh-intervals", type=float, nargs="+", default=[0.1],
                        help="seconds between the live view's refreshes (Explorer.preview_interval), each measured; "
                             "the first (default 0.1, the explorer's) is the live UI of the table's main rows")
    args = parser.parse_args()
    if any(not x > 0 for x in args.refresh_intervals):
        parser.error(f"--refresh-intervals must be positive, got {args.refresh_intervals}")
    if (reason := browser_available()) is not None:
        raise SystemExit(f"cannot run: {reason}")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pages = export_pages(root, args.steps, args.size)
        for n in args.steps:
            with chromium_page(1280, 900) as page:
                page.goto(pages[f"exemplars-{n}"].as_uri())
                page.wait_for_selector(".chromaviz-caption", timeout=60_000)
                rows.append((f"scrub latency, exported page, {n} steps (ms)", scrub(page, ".chromaviz-run", args.trials)))

        n = args.steps[0]
        write_notebook(ROOT / "notebooks" / "explorer.ipynb", root / "explorer.ipynb", model_name=args.model,
                       steps=n, size=args.size, autorun=True)
        nb = json.loads((root / "explorer.ipynb").read_text())
        nb["cells"].append({"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                            "source": LIVE_CELL.format(rounds=args.rounds, short=n, long=args.steps[-1], live_steps=args.live_steps,
                                                   intervals=args.refresh_intervals)})
        (root / "explorer.ipynb").write_text(json.dumps(nb))
        with jupyter_lab(root) as (url, token), chromium_page(1280, 900) as page:
            sent = []  # sizes of the messages the page sends (to the kernel, through the server)
            page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(len(payload))))
            open_notebook(page, url, token, "explorer.ipynb")
            collapse_left_sidebar(page)
            before = len(sent)
            run_all_cells(page)
            live = json.loads(printed(page, "BENCH"))
            sent_kb = sum(sent[before:]) / 1e3
            explorer = ".chromaviz-explorer"
            page.locator(explorer).evaluate("e => e.scrollIntoView({block: 'start'})")
            rows.append((f"scrub latency, JupyterLab, kernel busy, {n} steps (ms)", scrub(page, explorer, args.trials)))
            if args.steps[-1] != n:
                printed(page, "READY")
                rows.append((f"scrub latency, JupyterLab, kernel busy, {args.steps[-1]} steps (ms)",
                             scrub(page, explorer, args.trials)))
        sizes = {name: path.stat().st_size for name, path in pages.items()}

    print(f"explorer: {args.model} model in JupyterLab, exemplar mixture in the exported pages, {args.size}×{args.size}, "
          "headless Chromium, this machine\n")
    print(f"{'measure':58s} {'median':>9s} {'p95':>9s} {'n':>4s}")
    for name, values in rows:
        if not values:  # no key press changed the frame (the scrubber did not take the keys)
            print(f"{name:58s} {'none':>9s} {'none':>9s} {0:4d}")
            continue
        print(f"{name:58s} {statistics.median(values):9.1f} {percentile(values, 0.95):9.1f} {len(values):4d}")
    print(f"{'(scrub target: p95 ≤ 20 ms)':58s}")
    first = f"live {args.refresh_intervals[0]}"
    main_t, threads_t, worker_t, live_t = (statistics.median(live[k]) for k in ("main", "main_threads", "worker", first))
    k = len(live[first])
    own, fewer = live["threads"]
    own = "/".join(map(str, sorted(set(own))))
    costs = [c for c in live["costs"][first] if c is not None]
    print(f"{f'sampling {args.live_steps} steps, kernel main thread, sample() ({own} threads) (s)':58s} {main_t:9.3f} {'':9s} {k:4d}")
    print(f"{f'  the same at the worker thread count ({fewer}) (s)':58s} {threads_t:9.3f} {'':9s} {k:4d}")
    print(f"{'sampling, explorer worker thread, no UI (s)':58s} {worker_t:9.3f} {'':9s} {k:4d}")
    print(f"{'sampling, explorer with the live UI (s)':58s} {live_t:9.3f} {'':9s} {k:4d}")
    print(f"{'  the same, from Run until every step is drawn (s)':58s} {statistics.median(live['drawn']):9.3f} {'':9s} {k:4d}")
    print(f"{'live UI / sample() on the main thread (target ≤ 1.10)':58s} {live_t / main_t:9.3f}")
    print(f"{f'live UI / sample() on the main thread, {fewer} thread(s)':58s} {live_t / threads_t:9.3f}")
    print(f"{'live UI / worker alone':58s} {live_t / worker_t:9.3f}")
    print(f"{'worker alone / main thread':58s} {worker_t / main_t:9.3f}")
    print(f"{'refreshes per second reached while sampling (adaptive)':58s} {statistics.median(live['rates'][first]):9.1f}")
    print(f"{'  seconds between refreshes at the end of the run':58s} {statistics.median(live['intervals'][first]):9.3f}")
    if costs:
        print(f"{'  what one refresh cost the run, measured (ms)':58s} {1e3 * statistics.median(costs):9.1f}")
    print(f"{'every step in the scrubber at the end':58s} {str(all(live['complete'])):>9s}")
    print(f"{'page → kernel during all the notebook runs (kB)':58s} {sent_kb:9.1f}")
    for name, size in sizes.items():
        print(f"{'size of run.html, ' + name + ' (MB)':58s} {size / 1e6:9.2f}")
    if len(args.refresh_intervals) > 1:
        print(f"\n{'live UI, least seconds between refreshes':36s} {'refreshes/s':>11s} {'live UI / main thread':>22s}")
        for x in args.refresh_intervals:
            mode = f"live {x}"
            print(f"{x:36g} {statistics.median(live['rates'][mode]):11.1f} {statistics.median(live[mode]) / main_t:22.3f}")
    print("\nframes: x_t, x̂0 and the band grid as lossy WebP data URIs at the sample's own size "
          "(quality 50/80/60), spectra as float32; BokehJS (bokeh + widgets bundles) inline, gzip-compressed")


if __name__ == "__main__":
    main()

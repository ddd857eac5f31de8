"""What the explorer's live view costs a run, on the kernel's side, without a browser.

The same run (model, prompt, steps, scheduler, guidance, seed, size, device) three ways, in
alternating order, medians of the seconds ``sample()`` itself took (``elapsed_seconds``: from its
start until the last step is recorded on the host):

- ``sample()`` on the main thread: the baseline;
- the explorer's worker thread with no view (``chromaviz.widgets.worker.SamplingJob``);
- ``Explorer.run()`` with its live refresher drawing the newest step into the bokeh document as it
  goes and every step at the end (no frontend attached, so nothing is sent anywhere).

Below the table: the time from ``Explorer.run()`` until every step is drawn, refreshes per second while sampling and whether every step is in the scrubber at the end.
``benchmarks/explorer_latency.py`` measures the same with JupyterLab and Chromium attached.

    python benchmarks/explorer_sampling.py                                  # exemplar model, CPU
    python benchmarks/explorer_sampling.py --model sd15 --fp16 --device cuda --steps 50
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from chromaviz.models import BUILTIN, load_builtin  # noqa: E402
from chromaviz.sampling import sample  # noqa: E402
from ratio_table import machine, print_ratios  # noqa: E402

MODELS = (*BUILTIN, "sd-small", "sd15")


def load_model(name: str, device: str, dtype: torch.dtype, folder: Path):
    """A built-in model, or a StableDiffusionPipeline with random weights (small, or SD-1.5 sizes)."""
    if name in BUILTIN:
        return load_builtin(name).to(device)
    import diffusers_models as tiny

    from chromaviz.models.diffusers.adapter import from_pipeline

    pipe = tiny.benchmark_sd(folder, sd15=name == "sd15").to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return from_pipeline(pipe, name=f"{name}-random")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="exemplars")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--size", type=int, default=None, help="pixels (default: the model's own)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fp16", action="store_true", help="float16 weights (diffusers models)")
    args = parser.parse_args()

    from chromaviz.widgets import Explorer
    from chromaviz.widgets.worker import SamplingJob

    dtype = torch.float16 if args.fp16 else torch.float32
    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(args.model, args.device, dtype, Path(tmp))
    size = args.size or model.default_size[0]
    explorer = Explorer(model, num_steps=args.steps, size=size, device=args.device)
    settings = explorer.settings()
    prompt = explorer.prompt.value or None

    def main_thread() -> float:
        traj = sample(model, prompt, num_inference_steps=settings.steps, scheduler=settings.scheduler,
                      guidance=settings.guidance, seed=settings.seed, height=size, width=size, device=args.device)
        return traj.metadata["elapsed_seconds"]

    def worker() -> float:
        done = []
        runs = explorer._plan_runs()
        SamplingJob(model, list(runs.values()), lambda *a: None, lambda state, traj, error: done.append(traj)).start().join()
        return done[0].metadata["elapsed_seconds"]

    rates, complete, drawn = [], [], []

    def live() -> float:
        explorer.preview_updates = 0
        start = time.perf_counter()
        explorer.run()
        explorer.wait()
        drawn.append(time.perf_counter() - start)
        state = explorer.runs["A"]
        if state.error:
            raise SystemExit(f"the explorer's run failed: {state.error}")
        elapsed = state.trajectory.metadata["elapsed_seconds"]
        rates.append(explorer.preview_updates / elapsed)
        complete.append(explorer.view.count("A") == len(state.trajectory))
        return elapsed

    modes = {"sample(), main thread": main_thread, "explorer worker, no view": worker, "explorer, live view": live}
    for fn in modes.values():  # warm-up: kernels, allocator, first drawing
        fn()
    del rates[:], complete[:], drawn[:]
    times: dict[str, list[float]] = {name: [] for name in modes}
    for r in range(args.rounds):
        for name in (list(modes) if r % 2 == 0 else list(reversed(modes))):
            times[name].append(modes[name]())

    print(f"machine: {machine(args.device)}; device {args.device}; torch {torch.__version__}")
    print(f"model: {model.name}, {size}×{size}, {args.steps} steps ({settings.scheduler}), guidance {settings.guidance}; "
          f"median of {args.rounds} alternating rounds after one warm-up\n")
    base = print_ratios(times, "sample(), main thread", args.steps)
    t = statistics.median(drawn)
    print(f"\nfrom Explorer.run() until every step is drawn: {t:.3f} s ({t / base:.3f} × the main thread's run)")
    print(f"\nrefreshes per second while sampling (live view): {statistics.median(rates):.1f}")
    print(f"every step in the scrubber at the end: {all(complete)}")


if __name__ == "__main__":
    main()

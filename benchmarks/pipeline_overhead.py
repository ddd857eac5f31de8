"""chromaviz's recorded sampling of a diffusers pipeline against a bare ``pipe(...)`` call.

Same model, scheduler (the pipeline's own), steps, guidance and seed; the two run side by side in
alternating order and the table gives median seconds, steps/s and the ratio (target ≤ 1.05).
``pipe(...)`` returns latents (``output_type="latent"``), chromaviz records x_t, x̂0 and ε of every
step (and, in a second row, x̂0 only, pooled 2×), so both stop at the same point.

    python benchmarks/pipeline_overhead.py                       # small SD-architecture model, CPU
    python benchmarks/pipeline_overhead.py --device cuda --fp16 --sd15   # SD-1.5 UNet, 512×512, GPU

Weights are random (the speed does not depend on them) and nothing is downloaded: the tokenizer is
written from local files by tests/diffusers_models.py.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import diffusers_models as tiny  # noqa: E402
from ratio_table import machine, print_ratios  # noqa: E402

from chromaviz.models.diffusers.adapter import from_pipeline  # noqa: E402
from chromaviz.sampling import sample  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fp16", action="store_true", help="float16 weights (CUDA)")
    parser.add_argument("--sd15", action="store_true", help="SD-1.5 UNet/VAE/text sizes at 512×512")
    parser.add_argument("--size", type=int, default=None, help="pixels (default 512 with --sd15, else 64)")
    args = parser.parse_args()

    dtype = torch.float16 if args.fp16 else torch.float32
    size = args.size or (512 if args.sd15 else 64)
    with tempfile.TemporaryDirectory() as tmp:
        pipe = tiny.benchmark_sd(Path(tmp), sd15=args.sd15).to(args.device, dtype)
    pipe.set_progress_bar_config(disable=True)
    model = from_pipeline(pipe, name="sd15-random" if args.sd15 else "sd-small-random")
    prompt = "a photo of a cat"
    common = dict(num_inference_steps=args.steps, guidance=args.guidance, height=size, width=size, device=args.device, seed=0)

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    runs = {
        "pipe(...)": lambda: pipe(prompt, num_inference_steps=args.steps, guidance_scale=args.guidance, height=size, width=size,
                                  generator=torch.Generator().manual_seed(0), output_type="latent"),
        "chromaviz, record x_t, x̂0, ε": lambda: sample(model, prompt, **common),
        "chromaviz, record x̂0 pooled 2×": lambda: sample(model, prompt, record=("x0",), record_scale=2, **common),
    }
    for fn in runs.values():  # warm-up: kernels, allocator, the linear preview is not touched
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(args.rounds):
        names = list(runs) if r % 2 == 0 else list(reversed(runs))
        for name in names:
            sync()
            start = time.perf_counter()
            runs[name]()
            sync()
            times[name].append(time.perf_counter() - start)

    print(f"machine: {machine(args.device)}; device {args.device}; {str(dtype).replace('torch.', '')}; torch {torch.__version__}")
    print(f"model: {'SD-1.5' if args.sd15 else 'small SD'}-architecture UNet, random weights, {size}×{size} pixels "
          f"({size // model.vae_scale_factor}² latents), DDIM {args.steps} steps, guidance {args.guidance}; "
          f"median of {args.rounds} alternating rounds\n")
    print_ratios(times, "pipe(...)", args.steps)


if __name__ == "__main__":
    main()

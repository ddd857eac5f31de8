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
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import diffusers_models as tiny  # noqa: E402

from chromaviz.models.diffusers.adapter import from_pipeline  # noqa: E402
from chromaviz.sampling import sample  # noqa: E402


def build(sd15: bool, folder: Path):
    """A StableDiffusionPipeline with random weights: SD-1.5 sizes, or a small CPU-sized one."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    tok = tiny.clip_tokenizer(folder / "tokenizer", max_length=77)
    if sd15:
        unet = UNet2DConditionModel(
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=768, attention_head_dim=8,
        )
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4, sample_size=512)
        text = tiny._text_config(tok, hidden=768)
        text.num_hidden_layers, text.num_attention_heads, text.intermediate_size = 12, 12, 3072
    else:
        unet = tiny.sd_unet((64, 128), cross_attention_dim=64, layers_per_block=1, sample_size=32)
        vae = tiny._vae()
        text = tiny._text_config(tok, hidden=64)
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(vae=vae, text_encoder=CLIPTextModel(text).eval(), tokenizer=tok, unet=unet,
                                   scheduler=sched, safety_checker=None, feature_extractor=None, requires_safety_checker=False)


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
        pipe = build(args.sd15, Path(tmp)).to(args.device, dtype)
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

    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
    print(f"machine: {where}; device {args.device}; {str(dtype).replace('torch.', '')}; torch {torch.__version__}")
    print(f"model: {'SD-1.5' if args.sd15 else 'small SD'}-architecture UNet, random weights, {size}×{size} pixels "
          f"({size // model.vae_scale_factor}² latents), DDIM {args.steps} steps, guidance {args.guidance}; "
          f"median of {args.rounds} alternating rounds\n")
    base = statistics.median(times["pipe(...)"])
    print(f"{'':34s} {'seconds':>8s} {'steps/s':>8s} {'ratio':>7s}")
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"{name:34s} {t:8.3f} {args.steps / t:8.2f} {t / base:7.3f}")


if __name__ == "__main__":
    main()

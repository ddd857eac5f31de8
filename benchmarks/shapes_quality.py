"""Quality and speed of the bundled shapes model, measured by the analytic checker.

For each guidance scale, 256 captions drawn from a held-out seed are sampled (50 DDIM steps, the
pipeline's own ``__call__``, 16 prompts per batch) and read back by ``chromaviz.models.shapes.checker``;
the table gives the fraction of images whose shape colour, shape, background colour and texture
match the caption. The first row is the checker on the dataset's own images of the same captions
(the checker's accuracy). Then seconds per 50-step chromaviz run (recording every step) at batch 1
and batch 16.

    python benchmarks/shapes_quality.py [--samples 256] [--guidance 1 3 5] [--folder runs/shapes/pipeline]
"""

from __future__ import annotations

import argparse
import time

import torch

from chromaviz import sample
from chromaviz.models.shapes import checker as shapes_checker
from chromaviz.models.shapes import dataset as shapes
from chromaviz.models.shapes.model import EXAMPLE_PROMPTS, GUIDANCE, load_shapes

ATTRIBUTES = ("colour", "shape", "background", "texture", "all")


def model_accuracy(model, scenes, guidance: float, steps: int, batch: int, seed: int) -> dict[str, float]:
    """Checker accuracy of the model's samples of ``scenes``' captions."""
    readings = []
    for start in range(0, len(scenes), batch):
        chunk = scenes[start:start + batch]
        images = model.pipe([s.caption for s in chunk], num_inference_steps=steps, guidance_scale=guidance,
                            generator=torch.Generator().manual_seed(seed + start), output_type="pt").images
        readings += shapes_checker.read_batch(images)
    return shapes_checker.accuracy(readings, scenes)


def seconds_per_run(model, batch_size: int, steps: int, guidance: float, repeats: int = 3) -> float:
    """Median wall time of a recorded chromaviz run."""
    times = []
    for r in range(repeats):
        start = time.perf_counter()
        sample(model, EXAMPLE_PROMPTS[0], num_inference_steps=steps, guidance=guidance, batch_size=batch_size, seed=r, device="cpu")
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, GUIDANCE, 5.0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=2026, help="held-out seed for the captions (training uses 0)")
    parser.add_argument("--folder", default=None, help="a pipeline folder from the training script (default: the bundled model)")
    parser.add_argument("--no-timing", action="store_true")
    args = parser.parse_args()

    model = load_shapes(folder=args.folder)
    generator = torch.Generator().manual_seed(args.seed)
    scenes = shapes.random_scenes(args.samples, generator)
    data = shapes_checker.accuracy(shapes_checker.read_batch(shapes.render(scenes, 32, generator)), scenes)
    rows = [("dataset (checker's own accuracy)", data)]
    for g in args.guidance:
        start = time.perf_counter()
        acc = model_accuracy(model, scenes, g, args.steps, args.batch, args.seed)
        rows.append((f"model, guidance {g:g} ({time.perf_counter() - start:.0f} s)", acc))
    print(f"\n{args.samples} captions, {args.steps} DDIM steps; fraction read right\n")
    print(f"| {'images':<40} | " + " | ".join(f"{a:>10}" for a in ATTRIBUTES) + " |")
    print(f"|{'-' * 42}|" + "|".join("-" * 12 for _ in ATTRIBUTES) + "|")
    for name, acc in rows:
        print(f"| {name:<40} | " + " | ".join(f"{acc[a]:>10.3f}" for a in ATTRIBUTES) + " |")
    if not args.no_timing:
        print(f"\nseconds per {args.steps}-step chromaviz run (guidance {GUIDANCE:g}, recording x_t, x̂0, ε), "
              f"{torch.get_num_threads()} torch threads\n")
        print("| batch | seconds | seconds per image |\n|---|---|---|")
        for b in (1, 16):
            s = seconds_per_run(model, b, args.steps, GUIDANCE)
            print(f"| {b} | {s:.2f} | {s / b:.3f} |")


if __name__ == "__main__":
    main()

"""Every case against its references: the table of the closing note of the prediction work.

One row per run: the largest |G − E|/σ and the share of cells within E ± 2σ (the expected band, the
headline), the replay residual max |G − p| (a consistency check), the largest |G − i| and the share
of cells within i ± 2σ (the model's ideal process, where there is one), and whether the run was
flagged as suspect. Cases: the Gaussian model under DDIM, DPM-Solver++, SDE-DPM-Solver++, DDPM and
Euler ancestral; the wrong runs (a scheduler instance with its own β on the SD schedule, Heun with 2
steps); the exemplar model; the bundled shapes model; a random-weight diffusers pipeline.

    python benchmarks/reference_table.py [--size 32] [--batch 8] [--steps 25]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
import warnings
from pathlib import Path


def _cases(args):
    import diffusers

    from chromaviz.models import ExemplarMixture, GaussianPowerLaw, load_shapes

    from chromaviz.noise import make_scheduler

    gauss = GaussianPowerLaw(size=args.size)
    for name in ("ddim", "dpmsolver++", "ddpm", "euler_ancestral"):
        yield f"gaussian, {name}", gauss, {"scheduler": name}
    sde = diffusers.DPMSolverMultistepScheduler.from_config(make_scheduler("dpmsolver++", gauss.schedule).config,
                                                           algorithm_type="sde-dpmsolver++")
    yield "gaussian, sde-dpmsolver++", gauss, {"scheduler": sde}
    yield ("gaussian, DDIMScheduler(clip_sample=False) instance (linear β)", gauss,
           {"scheduler": diffusers.DDIMScheduler(clip_sample=False)})
    heun = diffusers.HeunDiscreteScheduler.from_config(make_scheduler("ddim", gauss.schedule).config)
    yield "gaussian, HeunDiscreteScheduler, 2 steps", gauss, {"scheduler": heun, "num_inference_steps": 2}
    yield "exemplars, 'cat'", ExemplarMixture(size=args.size), {"prompt": "cat"}
    shapes = load_shapes()
    yield f"shapes, {shapes.example_prompts[0]!r}", shapes, {"prompt": shapes.example_prompts[0], "height": 32, "width": 32}
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import diffusers_models as tiny

    from chromaviz.models.diffusers.adapter import load_pipeline

    folder = tiny.save_sd(Path(tempfile.mkdtemp()) / "sd")
    yield "random-weight SD pipeline (latents)", load_pipeline(folder), {"prompt": "a photo of a cat", "height": 32, "width": 32}


def _fmt(value: float, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=25)
    args = parser.parse_args()

    from chromaviz import compare, sample

    header = ["case", "max |G−E|/σ", "in E±2σ", "replay |G−p|", "max |G−i|", "in i±2σ", "suspect", "s"]
    rows = [header]
    for name, model, options in _cases(args):
        start = time.perf_counter()
        kwargs = {"num_inference_steps": args.steps, "batch_size": args.batch, "device": "cpu", "seed": 0, **options}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                traj = sample(model, **kwargs)
            except ValueError as err:
                rows.append([name, f"refused before sampling: {str(err)[:70]}…", "", "", "", "", "", ""])
                continue
            c = compare(traj, model)
        suspect = "yes" if c.suspect or any("suspect" in str(w.message).lower() or "not a sample" in str(w.message)
                                            for w in caught) else "no"
        replay = _fmt(c.max_deviation, ".1e") + ("" if c.prediction_kind == "exact" else f" ({c.prediction_kind})")
        rows.append([name, _fmt(c.max_z, ".2f"), _fmt(c.coverage, ".0%"), replay,
                     _fmt(c.max_deviation_ideal, ".3f"), _fmt(c.ideal_coverage, ".0%"), suspect,
                     f"{time.perf_counter() - start:.1f}"])
    widths = [max(len(r[k]) for r in rows if r[2] or k == 0 or r is header) for k in range(len(header))]
    print(f"{args.size}×{args.size} (shapes and the pipeline 32×32), batch {args.batch}, {args.steps} steps, seed 0, CPU")
    for i, row in enumerate(rows):
        print("  ".join(c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    main()

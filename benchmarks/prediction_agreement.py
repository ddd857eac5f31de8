"""Measured chromatography against the as-sampled prediction and the continuous theory, case by case.

For each case (Gaussian power-law model with unit pixel variance at 64×64, batch 16, seed 0, CPU):
max |G − p| (p: the run as it was sampled, :func:`chromaviz.prediction.predict_run`) and
max |G − s| (s: the continuous-time spectrum-aware theory), both as fractions of the data power, and
the same for the normalised form (each curve ÷ its end). Stochastic samplers are pooled over 4 seeds
(G and p averaged over the seeds before the difference). ``tests/test_prediction.py`` checks a
subset of these cases against the bounds 0.01 (deterministic) and 0.03 (stochastic, pooled).

    python benchmarks/prediction_agreement.py            # every case (about 10 minutes on 2 idle cores)
    python benchmarks/prediction_agreement.py --quick    # without the 200-step cases
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

from chromaviz import GaussianPowerLaw, compare, sample
from chromaviz.noise import Schedule

SCHEDULES = {
    "scaled_linear": ("ddim", "euler", "dpmsolver++", "ddpm", "euler_ancestral"),
    "cosine": ("ddim", "euler", "dpmsolver++"),
    "zero_snr": ("ddim", "euler", "dpmsolver++", "ddpm"),
    "flow_shift3": ("flow_euler",),
}
STOCHASTIC = {"ddpm", "euler_ancestral"}


def schedule(name: str) -> Schedule:
    return {"cosine": lambda: Schedule.preset("squaredcos_cap_v2"),
            "zero_snr": lambda: Schedule.preset("scaled_linear").zero_terminal_snr(),
            "flow_shift3": lambda: Schedule.flow_matching(3.0)}.get(name, lambda: Schedule.preset(name))()


def model_for(alpha: float, sched: str) -> GaussianPowerLaw:
    base = GaussianPowerLaw(exponent=alpha, amplitude=1.0)
    return GaussianPowerLaw(exponent=alpha, amplitude=1.0 / base.power(64, 64).mean(), schedule=schedule(sched))


def cases(quick: bool):
    """α, size and step count vary on the DDIM / Stable Diffusion line; every other sampler and schedule
    runs rings at 50 steps and the pyramid at 20, and a few at 200 (``quick``: no 200-step case)."""
    long = () if quick else (200,)
    for alpha, size in itertools.product((1.5, 2.0, 2.5), ((32, 32), (64, 64), (32, 64))):
        yield "ddim", "scaled_linear", alpha, size, "rings", 50
    for n in (20, 50, *long):
        yield "ddim", "scaled_linear", 2.0, (64, 64), "pyramid", n
    for n in (20, *long):
        yield "ddim", "scaled_linear", 2.5, (64, 64), "rings", n
    for sched, samplers in SCHEDULES.items():
        for sampler in samplers:
            if (sched, sampler) != ("scaled_linear", "ddim"):
                yield sampler, sched, 2.0, (64, 64), "rings", 50
                yield sampler, sched, 2.0, (64, 64), "pyramid", 20
    for sampler, sched in (("dpmsolver++", "scaled_linear"), ("ddim", "zero_snr"), ("flow_euler", "flow_shift3")):
        for n in long:
            yield sampler, sched, 2.0, (64, 64), "rings", n


def measure(sampler, sched, alpha, size, method, n) -> list[str]:
    model = model_for(alpha, sched)
    seeds = range(4) if sampler in STOCHASTIC else range(1)
    runs = [compare(sample(model, num_inference_steps=n, scheduler=sampler, batch_size=16, height=size[0], width=size[1],
                           device="cpu", seed=s, record=("x0",)), model, method=method) for s in seeds]
    g = np.mean([c.measured for c in runs], 0)
    p = np.mean([c.predicted for c in runs], 0)
    s = runs[0].spectrum_aware
    norm = [c.normalised() for c in runs]
    gn, pn, sn = (np.mean([getattr(c, k) for c in norm], 0) for k in ("measured", "predicted", "spectrum_aware"))
    return [sampler, sched, f"{alpha:g}", f"{size[0]}×{size[1]}", method, str(n), runs[0].prediction_kind, str(len(seeds)),
            f"{np.abs(g - p).max():.1e}", f"{np.abs(g - s).max():.4f}", f"{np.abs(gn - pn).max():.1e}",
            f"{np.abs(gn - sn).max():.4f}", f"{runs[0].inheritance.missing_measured[-1]:.3f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 and 50 steps only")
    args = parser.parse_args()
    header = ["sampler", "schedule", "α", "size", "bands", "N", "prediction", "seeds", "max|G−p|", "max|G−s|",
              "norm |G−p|", "norm |G−s|", "missing M"]
    rows = [header]
    start = time.perf_counter()
    for case in cases(args.quick):
        rows.append(measure(*case))
        print("  ".join(rows[-1]), flush=True)
    print(f"\nfractions of the data power (norm: each curve ÷ its end); p: as sampled, s: continuous "
          f"spectrum-aware; missing M: 1 − the coarsest level's final fraction; {time.perf_counter() - start:.0f} s\n")
    widths = [max(len(r[k]) for r in rows) for k in range(len(header))]
    for i, row in enumerate(rows):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


if __name__ == "__main__":
    main()

"""The learned and non-Gaussian models against their own ideal process (issue 25, item 4).

Prints, per model, the run's measured G, the model's ideal process i and the spectrum-aware lower
bound s (fractions of each step's prompt's data power), with max/mean |G − i| and min (i − s), and
the band births against the m² law's. ``python benchmarks/ideal_process.py [--size 32] [--steps 25]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from chromaviz import sample, theory
from chromaviz.analysis import compare
from chromaviz.models import ExemplarMixture, load_shapes


def report(name: str, model, prompt: str, size: int, steps: int, batch: int, guidance: float = 1.0) -> None:
    t0 = time.perf_counter()
    traj = sample(model, prompt, num_inference_steps=steps, batch_size=batch, height=size, width=size,
                  guidance=guidance, device="cpu", seed=0)
    t1 = time.perf_counter()
    c = compare(traj, model)
    t2 = time.perf_counter()
    gap = np.abs(c.measured - c.ideal)
    print(f"\n== {name}, prompt {prompt!r}, {size}×{size}, DDIM {steps} steps, batch {batch}, guidance {guidance:g}"
          f" (run {t1 - t0:.1f} s, compare incl. ideal {t2 - t1:.1f} s)")
    print(c.format_table(8))
    print(f"max |G − i| = {gap.max():.3f}, mean {gap.mean():.3f}; per level max "
          + ", ".join(f"m={m}: {g:.3f}" for m, g in zip(c.levels, gap.max(0))))
    print(f"min (i − s) = {np.nanmin(c.ideal - c.spectrum_aware):+.3f}, mean {np.nanmean(c.ideal - c.spectrum_aware):+.3f}")
    print("final G: " + ", ".join(f"{v:.3f}" for v in c.measured_final))
    if c.band_birth_log_snr is not None:
        m2 = -2 * np.log(np.array(c.levels, dtype=float))
        print("band birth λ − m² law birth λ: " + ", ".join(
            f"m={m}: {b - a:+.2f}" for m, a, b in zip(c.levels, m2, c.band_birth_log_snr)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    report("exemplars", ExemplarMixture(size=args.size), "cat", args.size, args.steps, args.batch)
    shapes = load_shapes()
    report("shapes", shapes, "a red circle on blue stripes", 32, args.steps, args.batch, guidance=1.0)
    report("shapes", shapes, "a red circle on blue stripes", 32, args.steps, args.batch, guidance=3.0)
    from chromaviz.models import GaussianPowerLaw
    from chromaviz.noise import Schedule

    print("\n== band births, SD schedule, unit-variance α = 2 data at 64×64")
    power = GaussianPowerLaw(size=64).power(64, 64)
    for method in ("rings", "pyramid"):
        for lt in theory.level_timings(Schedule.preset("scaled_linear"), (1, 2, 4, 8, 16, 32), power=power,
                                       method=method):
            print(f"{method:8s} m={lt.level:2d}: m² law λ {lt.birth_log_snr:+.2f} (t {lt.birth_timestep:5.0f}), band λ "
                  f"{lt.band_birth_log_snr:+.2f} (t {lt.band_birth_timestep:5.0f}): {lt.band_delay:+.2f} nats later")


if __name__ == "__main__":
    main()

"""Prompt composing on every built-in prompt-conditional model: the switch level m against the crossover measured.

For each model, guidance scale and switch level m (every level of the model's default size that has
a coarser level above it), three runs from one seed: prompt A alone, prompt B alone and
``by_resolution(coarse=A, fine=B, level=m)`` (the model's ``example_prompts``). ``band_provenance``
fits each box-pyramid band of the composed samples as a·A + b·B; ``crossover_level`` is where b
overtakes a, walking from the coarsest band to the finest (inf: B wins every band; 0: A wins every
band). A switch composes as the theory says when A keeps the coarsest band (a ≥ 0.7), B supplies the
finest (b ≥ 0.7), and the crossover lies within one level of m (m/2 ≤ crossover ≤ 2m).

For a model that declares its exact spectrum, without guidance, the column "law" is the crossover of
:func:`chromaviz.apps.composing.switch_law`'s prediction of the composed samples from the A-only and
B-only runs (the per-mode law for prompts sharing one covariance), measured by the same band fit: a
prediction the composed run can fail.

``python benchmarks/composing_crossover.py [--models layout exemplars shapes] [--guidance 1 3 7.5]
[--steps 50] [--batch 4]``: the table of ``docs/composing.md`` (CPU, DDIM, seed 0).
"""

from __future__ import annotations

import argparse
import math
import time

from chromaviz import spectral
from chromaviz.apps.composing import band_provenance, by_resolution, measure_switch, plan, switch_law
from chromaviz.models import MODELS, load_builtin
from chromaviz.noise import plan_steps

SHARE = 0.7
"""A's weight in the coarsest band and B's in the finest a composing switch reaches (issue 26's check)."""


def switch_levels(model) -> list[int]:
    """The levels m ≥ 2 of the model's default size with at least one coarser level (the bands A can keep)."""
    levels = spectral.levels_for(*model.latent_size(*model.default_size))
    return list(levels[1:-1])


def crossover_text(x: float, provenance=None) -> str:
    """The crossover as the table shows it; with the provenance, a one-sided result says which side."""
    a, b = (None, None) if provenance is None else (provenance.weight_a, provenance.weight_b)
    if math.isinf(x):
        if a is not None and (b < a).any():
            return "none (B wins the coarsest band, A a finer one)"
        return "> coarsest (B everywhere)"
    if x == 0:
        return "< finest (A everywhere)"
    return f"{x:.2f}"


def rows(name: str, guidances: list[float], steps: int, batch: int):
    """One table row per (guidance, m) for the built-in model ``name``."""
    model = load_builtin(name)
    a, b = model.example_prompts
    h, w = model.latent_size(*model.default_size)
    power = model.data_power(h, w)
    step_plan = plan_steps(model.schedule, steps)
    for guidance in guidances:
        for m in switch_levels(model):
            t0 = time.perf_counter()
            p, runs = measure_switch(model, a, b, m, num_inference_steps=steps, guidance=guidance, batch_size=batch)
            (switch,) = plan(by_resolution(coarse=a, fine=b, level=m), model, step_plan=step_plan)
            law = math.nan
            if power is not None and guidance == 1 and switch.step < len(step_plan.log_snr):
                predicted = switch_law(runs["A"], runs["B"], power, step_plan.log_snr[switch.step], step_plan.log_snr[0])
                law = band_provenance(predicted, runs["A"], runs["B"]).crossover()
            x = p.crossover()
            within = m / 2 <= x <= 2 * m
            composes = p.weight_a[-1] >= SHARE and p.weight_b[0] >= SHARE and within
            yield (name, guidance, m, switch.step, crossover_text(x, p), law, within, float(p.weight_a[-1]),
                   float(p.weight_b[0]), composes, time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    conditional = [n for n in MODELS if n != "gaussian"]  # the Gaussian power law takes no prompt
    parser.add_argument("--models", nargs="+", default=conditional, choices=conditional)
    parser.add_argument("--guidance", nargs="+", type=float, default=[1.0, 3.0, 7.5])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    print(f"DDIM {args.steps} steps, batch {args.batch}, seed 0, CPU; prompts: each model's example_prompts")
    print("| model | guidance | switch at birth of m | switch step | crossover | law | within one level | "
          "A in the coarsest band | B in the finest band | composes |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        for model, g, m, step, x, law, within, wa, wb, ok, seconds in rows(name, args.guidance, args.steps, args.batch):
            print(f"| {model} | {g:g} | {m} | {step} | {x} | "
                  f"{'–' if math.isnan(law) else crossover_text(law)} | {'yes' if within else 'no'} | {wa:.2f} | "
                  f"{wb:.2f} | {'yes' if ok else 'no'} |", flush=True)


if __name__ == "__main__":
    main()

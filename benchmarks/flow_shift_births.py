"""Where each level is born under a Flux-style dynamic shift at 256², 512² and 1024² (docs/chromatography.md).

A flow-matching Gaussian model (``GaussianPowerLaw``, α = 2, one channel) on Flux's latent grid: an
H×W image is an (H/8)×(W/8) latent grid cut into 2×2 patches, (H/16)·(W/16) tokens. Its schedule is
FLUX.1's scheduler (flow matching, dynamic shifting with base_shift 0.5 at 256 tokens, max_shift 1.15
at 4096, σ spaced linspace(1, 1/N, N) before the shift), sampled with 28 Euler steps.

For each resolution and three rules for the shift μ (σ' = e^μ·σ/(1 + (e^μ − 1)·σ), i.e. λ' = λ − 2μ):

- ``fixed``: μ = 0.5 at every size (no resolution dependence);
- ``flux``: diffusers' ``calculate_shift``, linear in the token count (what the Flux pipeline does);
- ``m-law``: μ = 0.5 + ln m for an m-fold larger image (s' = m·s, what keeps the m² law's births in place),

it prints, for the levels of the same *relative* size (1/16, 1/8, 1/4 and 1/2 of the image width), the
first step at which the m² law says the level is born (λ_i ≥ −2·ln m) and the first step at which the
measured signal fraction of its ring band reaches ½ (``compare(...).measured``, 16 samples).

Run: ``python benchmarks/flow_shift_births.py`` (CPU, about a minute).
"""

from __future__ import annotations

import math

from chromaviz import GaussianPowerLaw, sample
from chromaviz.analysis import compare
from chromaviz.noise import Schedule, plan_steps
from chromaviz.noise.levels import born_steps, first_born_step
from chromaviz.noise.schedulers import STEP_SIGMAS, dynamic_shift_mu, image_seq_len

STEPS = 28
FLUX = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0,
        "use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15, "base_image_seq_len": 256,
        "max_image_seq_len": 4096, STEP_SIGMAS: "1/N"}
PIXELS = (256, 512, 1024)
RELATIVE = (16, 8, 4, 2)  # a level of 1/16, 1/8, 1/4, 1/2 of the image width


def rules(pixels: int) -> dict[str, float]:
    m = pixels / PIXELS[0]
    return {"fixed": 0.5, "flux": dynamic_shift_mu(FLUX, image_seq_len(pixels // 8, pixels // 8, 2)),
            "m-law": 0.5 + math.log(m)}


def main() -> None:
    schedule = Schedule.from_config(FLUX)
    print(f"flow-matching Gaussian (α = 2), Flux latent grid, {STEPS} Euler steps; birth step of each level "
          "(m² law / measured ring band)")
    header = " ".join(f"{'1/' + str(r):>9s}" for r in RELATIVE)
    print(f"{'image':>6s} {'latents':>8s} {'rule':>6s} {'μ':>6s} {'shift':>6s} | {header}")
    for pixels in PIXELS:
        n = pixels // 8
        model = GaussianPowerLaw(schedule=schedule, channels=1, size=n)
        levels = [n // r for r in RELATIVE]
        for rule, mu in rules(pixels).items():
            plan = plan_steps(model.schedule, STEPS, mu=mu)
            traj = sample(model, num_inference_steps=STEPS, batch_size=16, seed=0, device="cpu", record=("x0",), plan=plan)
            c = compare(traj, model, levels=[2**k for k in range(int(math.log2(n)))], predict=False, ideal=False)
            births = dict(zip(c.levels, born_steps(c.measured)))
            measured = [births.get(m) for m in levels]
            law = [first_born_step(plan.log_snr, m) for m in levels]
            cells = " ".join(f"{str(a):>4s}/{str(b):<4s}" for a, b in zip(law, measured))
            print(f"{pixels:>5d}² {n:>7d}² {rule:>6s} {mu:6.3f} {math.exp(mu):6.2f} | {cells}")


if __name__ == "__main__":
    main()

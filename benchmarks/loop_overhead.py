"""What the sampler's loop itself costs per step: ``sample()`` with a model that does almost nothing.

With a free model, the time per step is the loop's own work (scheduler step, x̂0/ε conversion,
the non-finite checks, host copies, records). CPU time of the process (one torch thread), minimum
over rounds, so that a busy machine changes the figures little; for no recording and for recording
x_t, x̂0 and ε. Runs whichever chromaviz is importable, so a before/after comparison is two runs
with different ``PYTHONPATH``.

    python benchmarks/loop_overhead.py                 # DDIM, 200 steps, batch 4, 3×64×64, 7 rounds
    python benchmarks/loop_overhead.py --size 16 --rounds 15
"""

from __future__ import annotations

import argparse
import inspect
import platform
import time

import torch

from chromaviz.models import GaussianPowerLaw
from chromaviz.sampling import sample


class Free(GaussianPowerLaw):
    """Predicts x̂0 = x_t / 2: no model cost, finite everywhere."""

    name = "free"

    def __call__(self, x_t, noise, cond=None):
        return x_t * 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--scheduler", default="ddim")
    args = parser.parse_args()

    torch.set_num_threads(1)
    model = Free(size=args.size)
    steps_name = "num_inference_steps" if "num_inference_steps" in inspect.signature(sample).parameters else "num_steps"
    run = {steps_name: args.steps, "batch_size": args.batch, "device": "cpu", "scheduler": args.scheduler}
    sample(model, **{**run, steps_name: 2})  # warm-up
    times: dict[str, list[float]] = {"no recording": [], "recording x_t, x̂0, ε": []}
    for _ in range(args.rounds):
        for name, record in (("no recording", ()), ("recording x_t, x̂0, ε", ("x_t", "x0", "eps"))):
            start = time.process_time()
            sample(model, record=record, **run)
            times[name].append(time.process_time() - start)

    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread, CPU")
    print(f"free model, {args.scheduler} {args.steps} steps, batch {args.batch}, 3×{args.size}×{args.size}; "
          f"CPU time, minimum of {args.rounds} rounds\n")
    print(f"{'':24s} {'CPU ms/step':>11s}")
    for name, values in times.items():
        print(f"{name:24s} {1000 * min(values) / args.steps:11.3f}")


if __name__ == "__main__":
    main()

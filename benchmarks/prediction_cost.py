"""What predicting a run as it was sampled costs, against the run's own sampling time.

Gaussian power-law model (α = 2), DDIM on Stable Diffusion's schedule, batch 16, CPU by default.
For each size and step count: the median wall time of ``sample(...)`` and of
``predict_run(traj, model)`` for ring and pyramid bands, and their ratio (target ≤ 10 % at 64×64,
50 steps). Sampling and prediction alternate so that both see the same machine state.

    python benchmarks/prediction_cost.py                          # 64 and 128, 50 and 200 steps, 3 rounds
    python benchmarks/prediction_cost.py --sizes 64 --steps 50 --rounds 5
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from chromaviz import GaussianPowerLaw, sample
from chromaviz.prediction import predict_run


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--steps", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"device {args.device}, batch {args.batch}, DDIM, scaled_linear, α = 2; median of {args.rounds} rounds")
    header = ["size", "N", "sampling s", "rings s", "rings %", "pyramid s", "pyramid %"]
    rows = [header]
    for size in args.sizes:
        model = GaussianPowerLaw(size=size)
        for steps in args.steps:
            times: dict[str, list[float]] = {"sample": [], "rings": [], "pyramid": []}
            for r in range(args.rounds):
                t, traj = timed(lambda: sample(model, num_inference_steps=steps, batch_size=args.batch,
                                               device=args.device, seed=r, record=("x0",)))
                times["sample"].append(t)
                for method in ("rings", "pyramid"):
                    times[method].append(timed(lambda: predict_run(traj, model, method=method))[0])
            med = {k: statistics.median(v) for k, v in times.items()}
            rows.append([f"{size}×{size}", str(steps), f"{med['sample']:.3f}", f"{med['rings']:.3f}",
                         f"{100 * med['rings'] / med['sample']:.1f}", f"{med['pyramid']:.3f}",
                         f"{100 * med['pyramid'] / med['sample']:.1f}"])
    widths = [max(len(r[k]) for r in rows) for k in range(len(header))]
    for i, row in enumerate(rows):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    main()

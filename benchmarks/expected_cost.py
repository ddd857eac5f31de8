"""What the three references of a run cost, against the run's own sampling time.

For each size and step count, the median wall time of ``sample(...)`` and, as a percentage of it (target
≤ 10 % each):

- **expected**: :func:`chromaviz.prediction.expected_run`, E[G] and std[G] from the plan alone, for
  ring and pyramid bands (Gaussian power-law model, α = 2, Stable Diffusion's schedule);
- **replay**: :func:`chromaviz.prediction.predict_run`, the run replayed from its own noise (the
  consistency check), rings and pyramid, on the same Gaussian runs;
- **ideal**: :func:`chromaviz.analysis.ideal_process` of the exemplar mixture (prompt "cat"), against
  that model's own run (for Gaussian data the ideal process is a closed form and costs nothing).

Batch 16, CPU by default. Each reference is timed right after the run it belongs to, so both see the
same machine state. With ``--calibration`` it prints instead the share of (step, level) cells within ±2σ
of the expectation over true runs seed by seed (each its own ``sample()`` call), per sampler and batch:
the table of tests/test_expected.py, measured the long way.

    python benchmarks/expected_cost.py                           # 64 and 128, 50 and 200 steps, DDIM
    python benchmarks/expected_cost.py --scheduler euler_ancestral --sizes 64 --steps 50
    python benchmarks/expected_cost.py --calibration --seeds 20   # 16×16, 20 steps, batch 1, 4, 16
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch

from chromaviz import GaussianPowerLaw, sample
from chromaviz.analysis import compare, ideal_process
from chromaviz.models import ExemplarMixture
from chromaviz.noise import plan_steps
from chromaviz.prediction import expected_run, predict_run


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def table(rows: list[list[str]]) -> None:
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def cost(args) -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"device {args.device}, batch {args.batch}, {args.scheduler}; median of {args.rounds} rounds; "
          "references in % of their run's sampling time")
    rows = [["size", "N", "Gaussian run s", "expected rings %", "expected pyramid %", "replay rings %",
             "replay pyramid %", "exemplar run s", "ideal %"]]
    import scipy.interpolate  # noqa: F401  (imported once, not timed: expected_run's spline above 256 powers)
    exemplars = ExemplarMixture()
    for model, prompt in ((GaussianPowerLaw(size=16), None), (exemplars, "cat")):  # first calls, not timed
        sample(model, prompt, num_inference_steps=2, batch_size=2, height=16, width=16, device=args.device)
    for size in args.sizes:
        model = GaussianPowerLaw(size=size)
        power = model.data_power(size, size)
        for steps in args.steps:
            plan = plan_steps(model.schedule, steps, args.scheduler)
            exemplar_plan = plan_steps(exemplars.schedule, steps, args.scheduler)
            times: dict[str, list[float]] = {k: [] for k in rows[0][2:]}
            for r in range(args.rounds):
                t, traj = timed(lambda: sample(model, num_inference_steps=steps, batch_size=args.batch,
                                               scheduler=args.scheduler, plan=plan, device=args.device, seed=r,
                                               record=("x0",)))
                times["Gaussian run s"].append(t)
                for method in ("rings", "pyramid"):
                    times[f"expected {method} %"].append(100 / t * timed(lambda: expected_run(
                        plan.scheduler, plan.noise, power, batch_size=args.batch, channels=model.channels,
                        method=method))[0])
                    times[f"replay {method} %"].append(100 / t * timed(lambda: predict_run(
                        traj, model, method=method, plan=plan))[0])
                t, run = timed(lambda: sample(exemplars, "cat", num_inference_steps=steps, batch_size=args.batch,
                                              height=size, width=size, scheduler=args.scheduler, plan=exemplar_plan,
                                              device=args.device, seed=r))
                times["exemplar run s"].append(t)
                times["ideal %"].append(100 / t * timed(lambda: ideal_process(run, exemplars))[0])
            rows.append([f"{size}×{size}", str(steps)] + [
                f"{statistics.median(v):.{3 if k.endswith(' s') else 1}f}" for k, v in times.items()])
    table(rows)


def calibration(args) -> None:
    size, steps = args.calibration_size, args.calibration_steps
    model = GaussianPowerLaw(size=size)
    print(f"share of (step, level) cells with |G − expected| ≤ 2·expected_std over {args.seeds} runs (seeds 0…), "
          f"{size}×{size}, {steps} steps, {args.method} bands, Gaussian α = 2; and the largest z of any run")
    rows = [["sampler", "batch", "coverage", "runs in band", "max z"]]
    for name in ("ddim", "dpmsolver++", "ddpm", "euler_ancestral"):
        plan = plan_steps(model.schedule, steps, name)
        for batch in (1, 4, 16):
            inside, cells, zs, verdicts = 0, 0, [], 0
            for seed in range(args.seeds):
                traj = sample(model, num_inference_steps=steps, batch_size=batch, scheduler=name, plan=plan, seed=seed,
                              record=("x0",), device="cpu")
                c = compare(traj, model, method=args.method, predict=False, ideal=False, plan=plan)
                z = np.abs(c.measured - c.expected) / c.expected_std
                inside += int((z <= 2).sum())
                cells += z.size
                zs.append(float(z.max()))
                verdicts += bool(c.agreement.inside)
            rows.append([name, str(batch), f"{inside / cells:.3f}", f"{verdicts}/{args.seeds}", f"{max(zs):.2f}"])
    table(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--steps", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--scheduler", default="ddim")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--calibration", action="store_true", help="print the calibration table instead")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--calibration-size", type=int, default=16)
    parser.add_argument("--calibration-steps", type=int, default=20)
    parser.add_argument("--method", default="rings")
    args = parser.parse_args()
    calibration(args) if args.calibration else cost(args)


if __name__ == "__main__":
    main()

"""The replay residual max |G − predicted| per scheduler: every scheduler chromaviz accepts, stochastic ones included.

``Comparison.predicted`` replays a run mode by mode from its own noise (initial, and the noise each
stochastic step injected, drawn again from the seed by the run's scheduler). For the Gaussian model it
must equal the measurement to float rounding (≤ 1e-5): a consistency check of the model and the code.

    python benchmarks/replay_residual.py [--size 16] [--batch 2] [--steps 10]
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from test_replay import CASES, _case

    from chromaviz.analysis import compare
    from chromaviz.models import GaussianPowerLaw
    from chromaviz.sampling import sample

    print(f"GaussianPowerLaw, {args.size}×{args.size}, batch {args.batch}, {args.steps} steps, seed 0, CPU")
    print(f"{'scheduler':38s} {'kind':12s} {'rings':>9s} {'pyramid':>9s}")
    for name in CASES:
        scheduler, schedule, options = _case(name)
        model = GaussianPowerLaw(schedule=schedule)
        traj = sample(model, scheduler=scheduler, num_inference_steps=args.steps, batch_size=args.batch,
                      height=args.size, width=args.size, device="cpu", record=("x0",), **options)
        cells = []
        for method in ("rings", "pyramid"):
            c = compare(traj, model, method=method)
            residual = max(np.abs(c.measured - c.predicted).max(), np.abs(c.measured_final - c.predicted_final).max())
            cells.append(f"{residual:9.1e}")
        print(f"{name:38s} {c.prediction_kind:12s} {' '.join(cells)}")


if __name__ == "__main__":
    main()

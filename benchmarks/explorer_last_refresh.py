"""The explorer's wait after a run: from Run until every step is on the scrubber and the run is measured.

Without a browser (the kernel's side alone): an ``Explorer`` in a fresh process per model and size
runs three times in a row, as a teacher clicks Run; the first run also builds what the model keeps
(the exemplar model's photo bank, its data's moments, the ideal process at the run's noise levels).
Each row gives the run's own sampling time and the seconds from ``run()`` until ``wait()`` returns;
the ratio is of that to the sampling, the baseline (1.0 would be no wait at all). What the last
refresh does: every step's frame (x_t, x̂0, band tiles as WebP), and ``compare()`` of the run (the
expected band, the replay, the ideal process).

    python benchmarks/explorer_last_refresh.py                       # exemplars and layout, 64 and 128
    python benchmarks/explorer_last_refresh.py --models exemplars --sizes 128 --steps 200
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

RUN = """
import json, sys, time
from chromaviz.models.registry import load_model
from chromaviz.widgets import Explorer
model, size, steps, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
explorer = Explorer(load_model(model, size=size), num_steps=steps, size=size)
rows = []
for _ in range(repeats):
    start = time.perf_counter()
    explorer.run()
    explorer.wait()
    rows.append((explorer.runs["A"].trajectory.metadata["elapsed_seconds"], time.perf_counter() - start))
print(json.dumps(rows))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["exemplars", "layout"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"explorer without a browser: {args.steps} steps, {args.repeats} runs in a row per model and size\n")
    print(f"{'model':10s} {'size':>5s} {'run':>4s} {'sampling s':>11s} {'Run → drawn s':>14s} {'ratio':>7s}")
    for model in args.models:
        for size in args.sizes:
            out = subprocess.run([sys.executable, "-c", RUN, model, str(size), str(args.steps), str(args.repeats)],
                                 capture_output=True, text=True, check=True)
            for i, (sampling, drawn) in enumerate(json.loads(out.stdout.strip().splitlines()[-1])):
                print(f"{model:10s} {size:5d} {i + 1:4d} {sampling:11.2f} {drawn:14.2f} {drawn / sampling:7.2f}")


if __name__ == "__main__":
    main()

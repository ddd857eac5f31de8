"""What recording every step costs: sampling with full recording against sampling without it.

Built-in exemplar mixture ("cat"), DDIM, run side by side in alternating order so that both see
the same machine state. Prints a table of median wall times and the ratio (target ≤ 1.10), plus
the cost of the band analysis of the recorded run.

    python benchmarks/recording_overhead.py            # 50 steps, batch 8, 128×128, 5 rounds
    python benchmarks/recording_overhead.py --size 64 --rounds 3
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from chromaviz import ExemplarMixture, compare, sample
from chromaviz.sampling.trajectory import RECORDABLE


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    model = ExemplarMixture(size=args.size)
    run = dict(num_inference_steps=args.steps, batch_size=args.batch, device=args.device, seed=0)
    setup, _ = timed(lambda: sample(model, "cat", **{**run, "num_steps": 1}))  # builds the photo bank once

    bare, recorded, analysis = [], [], []
    for r in range(args.rounds):
        order = [("bare", ()), ("recorded", RECORDABLE)] if r % 2 == 0 else [("recorded", RECORDABLE), ("bare", ())]
        for name, record in order:
            seconds, traj = timed(lambda: sample(model, "cat", record=record, **run))
            (bare if name == "bare" else recorded).append(seconds)
            if name == "recorded":
                seconds, _ = timed(lambda: (compare(traj, method="rings"), compare(traj, method="pyramid")))
                analysis.append(seconds)

    t_bare, t_rec, t_an = (statistics.median(v) for v in (bare, recorded, analysis))
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, device {args.device}")
    print(f"model: exemplar mixture 'cat', DDIM {args.steps} steps, batch {args.batch}, RGB {args.size}×{args.size}; "
          f"median of {args.rounds} alternating rounds; one-off photo bank setup {setup:.2f} s\n")
    rows = [
        ("sampling, no recording", t_bare, 1.0),
        ("sampling, recording x_t, x̂0, ε", t_rec, t_rec / t_bare),
        ("band analysis (rings + pyramid)", t_an, None),
        ("recording + analysis", t_rec + t_an, (t_rec + t_an) / t_bare),
    ]
    print(f"{'':34s} {'seconds':>8s} {'steps/s':>8s} {'ratio':>7s}")
    for name, seconds, ratio in rows:
        rate = f"{args.steps / seconds:8.1f}" if "sampling" in name else " " * 8
        print(f"{name:34s} {seconds:8.3f} {rate} {'' if ratio is None else f'{ratio:7.3f}'}")
    print(f"\nrecording overhead ratio: {t_rec / t_bare:.3f} (target ≤ 1.10)")


if __name__ == "__main__":
    main()

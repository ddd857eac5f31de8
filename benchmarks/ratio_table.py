"""The table the sampling benchmarks print: median seconds, steps per second and the ratio to a
baseline row, and a line naming the machine."""

from __future__ import annotations

import platform
import statistics

import torch


def machine(device: str) -> str:
    """The GPU's name on CUDA, else the processor and torch's intra-op threads."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"


def print_ratios(times: dict[str, list[float]], baseline: str, steps: int) -> float:
    """One row per entry of ``times`` (seconds of each round); returns the baseline's median."""
    base = statistics.median(times[baseline])
    width = max(map(len, times)) + 2
    print(f"{'':{width}s} {'seconds':>8s} {'steps/s':>8s} {'ratio':>7s}")
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"{name:{width}s} {t:8.3f} {steps / t:8.2f} {t / base:7.3f}")
    return base

"""What the prompt language costs: parsing and per-step resolution, and encoding with weights.

Prints one table: milliseconds to parse a prompt and resolve it for a 50-step run, and to encode
a prompt with the bundled shapes model, plain (the pipeline's ``encode_prompt``) and with emphasis
weights (compel), each the median of a few repeats.

    python benchmarks/prompt_language.py
"""

from __future__ import annotations

import statistics
import time
import warnings

from chromaviz.models.shapes import load_shapes
from chromaviz.prompts import PromptSchedule

N = 50
REPEATS = 5
PROMPTS = {
    "plain": "a red circle on blue stripes",
    "one switch": "a [red:yellow:0.5] circle on blue stripes",
    "nested, every unit": "a [red:[yellow:green:m=4]:t=700] circle on [blue|green] [stripes:checks:0.3]",
    "AND, 3 terms": "a red circle AND blue stripes:0.5 AND [a star|a square]:0.3",
    "200 groups": " ".join(f"[w{k}:v{k}:{k % 40}]" for k in range(200)),
}


def median_ms(fn) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    timesteps = [999 - 999 * k / (N - 1) for k in range(N)]
    log_snrs = [-8 + 16 * k / (N - 1) for k in range(N)]
    print(f"{'prompt':<22}{'chars':>7}{'parse ms':>10}{f'resolve {N} ms':>16}")
    for name, text in PROMPTS.items():
        schedule = PromptSchedule.parse(text)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            resolve = median_ms(lambda: schedule.prompts_for_steps(timesteps, log_snrs))
        print(f"{name:<22}{len(text):>7}{median_ms(lambda: PromptSchedule.parse(text)):>10.3f}{resolve:>16.3f}")

    model = load_shapes()
    print(f"\n{'encoding (shapes model)':<40}{'ms':>8}")
    for label, text in [("plain", "a red circle on blue stripes"),
                        ("weights (compel)", "a (red:1.4) circle on [blue] stripes"),
                        ("weights, nested ((…))", "a ((red)) circle on ((blue stripes))")]:
        model.encode([text])  # first call builds compel's providers
        print(f"{label:<40}{median_ms(lambda: model.encode([text])):>8.2f}")


if __name__ == "__main__":
    main()

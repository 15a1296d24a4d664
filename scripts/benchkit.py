"""Small helpers the benchmarks share: free ports, percentiles, summaries, progress lines."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bus.sockets import free_port as free_port  # the benchmarks import it from here

NUMBER_WORDS = [
    *[
        "seven",
        "twelve",
        "forty",
        "ninety",
        "three",
        "sixty",
        "eighteen",
        "fifty",
        "eleven",
        "thirty",
        "nine",
        "twenty",
    ],
    *[
        "eighty",
        "fifteen",
        "seventy",
        "four",
        "sixteen",
        "two",
        "nineteen",
        "thirteen",
        "five",
        "six",
        "eight",
        "ten",
    ],
    *["fourteen", "seventeen", "one"],
    "forty two",
    "fifty five",
    "sixty six",
    "seventy seven",
    "eighty eight",
    "ninety nine",
]
"""Words that make each benchmark text new, so the TTS phrase cache never answers."""


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summary(
    values: Sequence[float],
    *,
    unit: str = "ms",
    scale: float = 1000.0,
    quantiles: tuple[int, ...] = (50, 95),
    count_key: str = "samples",
) -> dict[str, float]:
    """``{"p50_ms": ..., "p95_ms": ..., "max_ms": ..., "samples": n}`` of ``values`` x ``scale``."""
    scaled = [v * scale for v in values] or [0.0]
    out = {f"p{q}_{unit}": round(percentile(scaled, q), 1) for q in quantiles}
    out[f"max_{unit}"] = round(max(scaled), 1)
    out[count_key] = len(values)
    return out


def progress(name: str) -> Callable[[str], None]:
    """A function printing ``name: message`` progress lines on stderr."""

    def log(message: str) -> None:
        print(f"{name}: {message}", file=sys.stderr, flush=True)

    return log

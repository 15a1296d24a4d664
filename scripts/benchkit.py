"""Small helpers the benchmarks share: free ports, percentiles, summaries, progress lines."""

from __future__ import annotations

import random
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

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


def free_port() -> int:
    """A TCP port on loopback that is free now, below the kernel's ephemeral range: actors
    that bind port 0 (inboxes, metrics) draw from that range, and a port picked there could be
    handed to one of them before its owner binds it."""
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(max(1024, low - 12_000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


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
